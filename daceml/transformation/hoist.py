"""Computations on weights alone, run once per parameter version instead of on every call.

After level 1, part of a program may read nothing but weights: BatchNormalization folded
into a convolution (:mod:`daceml.transformation.conv_bn`) computes ``W * s`` and the new bias
from the live parameters, exported models cast or reshape weights, and so on. For a
batch-1 ResNet-50 the folded conv weights alone are 100 MB read and written per call.

:class:`HoistWeightComputations` moves those ONNX nodes into a second, small program (the
model's :class:`WeightPrep`). What they produce for the main program becomes a weight of
the model (a buffer it owns, passed like any weight). The prep program runs

- once when the pass runs (so the buffers hold the values for the current weights), and
- before a call whenever a parameter it reads changed: a torch tensor is identified by
  its data pointer and version counter (every in-place update, ``optimizer.step()``
  and ``load_state_dict`` included, bumps it), so changed parameters are seen; weights
  given as numpy arrays cannot be tracked and re-run it on every call.

Nodes that are not deterministic (random generators) and onnxruntime fallbacks stay in
the main program. Training programs (built from the level-1 graph) are not affected.
"""
import copy
import logging
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import numpy as np

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp
from daceml.transformation.base import Pass

log = logging.getLogger(__name__)

#: ops whose result is not a function of their inputs
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
                    "Multinomial", "Dropout"}
#: ops that move no data once reshapes are views: hoisting only these gains nothing
FREE = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def _version_key(value: Any) -> Any:
    """What identifies the contents of a weight: (pointer, version) of a torch tensor; for
    anything else a fresh object (its contents cannot be tracked: always re-run)."""
    version = getattr(value, "_version", None)
    if version is None:
        return object()
    return (value.data_ptr(), version)


class WeightPrep:
    """The program computing a model's weight-derived buffers (see the module docstring).

    :param sdfg: the prep program; its arrays are named as in the main program.
    :param sources: ONNX names of the model weights it reads.
    :param derived: array name -> ONNX weight name of the model, for what it writes.
    """

    def __init__(self, sdfg: dace.SDFG, sources: List[str], derived: Dict[str, str]):
        self.sdfg = sdfg
        self.sources = list(sources)
        self.derived = dict(derived)
        self._program = None
        self._key: Optional[Tuple[Any, ...]] = None
        self.runs = 0

    def program(self):
        from daceml import compiler
        if self._program is None:
            self._program = compiler.compile_sdfg(self.sdfg)
        return self._program

    def run(self, model, live: Optional[Dict[str, Any]] = None) -> None:
        """Computes the derived weights of ``model`` from its weights, ``live`` ones (ONNX name ->
        tensor or array) replacing them."""
        live = live or {}
        args: Dict[str, Any] = {}
        for name in self.sources:
            value = live.get(name)
            if value is None:
                value = model._weight_array(name, model.weights[name])
            elif hasattr(value, "detach"):
                value = value.detach()
                value = value if value.is_contiguous() else value.contiguous()
            args[model._array(name)] = value
        for array, onnx_name in self.derived.items():
            args[array] = model.weights[onnx_name]
        self.program()(**args)
        self.runs += 1

    def refresh(self, model, live: Dict[str, Any]) -> None:
        """Runs the prep program if a weight it reads changed since its last run."""
        self.refresh_key(model, tuple(_version_key(live[s]) if s in live else None for s in self.sources),
                         lambda: live)

    def refresh_key(self, model, key: Tuple[Any, ...], live: Callable[[], Dict[str, Any]]) -> None:
        """:meth:`refresh` with the key already made by the caller: per source in order,
        ``(data pointer, version)`` of its live tensor or ``None``; ``live()`` gives the tensors
        (called only when the prep must run)."""
        if key != self._key:
            self.run(model, live())
            self._key = key


@properties.make_properties
class HoistWeightComputations(Pass):
    """Nodes that read only weights -> a prep program run once per parameter version; what
    they produce for the rest becomes a model-owned weight buffer. Needs the ONNXModel."""
    LEVEL = 2

    def apply(self, sdfg, model=None) -> int:
        if model is None:
            self._detail = "needs an ONNXModel"
            return 0
        if getattr(model, "weight_prep", None) is not None or sdfg is not model.sdfg:
            self._detail = "already hoisted"
            return 0
        if len(sdfg.states()) != 1:
            self._detail = "programs of one state only"
            return 0
        state = sdfg.states()[0]
        hoisted, produced = self._hoistable(sdfg, state, model)
        if not hoisted or all(n.schema.name in FREE for n in hoisted):
            self._detail = "nothing computed from weights alone"
            return 0
        # what the remaining program reads of the hoisted results becomes a weight
        moved = set(hoisted)
        keep = {n for n in state.nodes() if n not in moved and not (isinstance(n, sdnodes.AccessNode)
                                                                    and n.data in produced)}
        derived_data: Set[str] = set()
        for node in state.nodes():
            if isinstance(node, sdnodes.AccessNode) and node.data in produced:
                if any(e.dst in keep for e in state.out_edges(node)):
                    derived_data.add(node.data)
        if not derived_data:
            self._detail = "nothing computed from weights alone is used"
            return 0
        if any(dace.symbolic.issymbolic(s) for d in derived_data for s in sdfg.arrays[d].shape):
            self._detail = "derived weights of symbolic shape are not hoisted"
            return 0
        prep, sources = self._prep_sdfg(sdfg, state, model, hoisted, produced, derived_data)
        derived = self._rewire(sdfg, state, model, hoisted, produced, derived_data)
        model.weight_prep = WeightPrep(prep, sources, derived)
        from daceml.transformation.pipeline import optimize, pipeline
        # levels 2 and 4 only: the prep program runs once per parameter version, and fusing its
        # hundreds of tiny maps (MobileNetV2: 52 folded batch norms) took ~55 s of the build
        levels = pipeline(4, "cpu")
        optimize(prep, passes=[levels[1], levels[3]])
        model.weight_prep.run(model)
        self._detail = (f"{len(hoisted)} node(s) -> a prep program reading {len(sources)} weight(s), "
                        f"{len(derived)} derived weight(s)")
        return len(hoisted)

    @staticmethod
    def _hoistable(sdfg, state, model) -> Tuple[List[ONNXOp], Set[str]]:
        from daceml.onnx.ops.onnxruntime_fallback import CALLBACK_CONNECTOR
        weights = {model._array(w) for w in model.weights}
        hoisted: List[ONNXOp] = []
        produced: Set[str] = set()
        writers: Dict[str, int] = {}
        for n in state.data_nodes():
            if state.in_degree(n) > 0:
                writers[n.data] = writers.get(n.data, 0) + 1
        import networkx as nx
        for node in nx.topological_sort(state.nx):
            if not isinstance(node, ONNXOp) or node.schema.name in NONDETERMINISTIC:
                continue
            if CALLBACK_CONNECTOR in node.in_connectors:
                continue
            ins, outs = state.in_edges(node), state.out_edges(node)
            if not ins or not outs:
                continue
            if not all(isinstance(e.src, sdnodes.AccessNode) and (e.src.data in weights or e.src.data in produced)
                       for e in ins):
                continue
            if not all(isinstance(e.dst, sdnodes.AccessNode) and sdfg.arrays[e.dst.data].transient and
                       state.in_degree(e.dst) == 1 for e in outs):
                continue
            if any(writers.get(e.dst.data, 0) != 1 for e in outs):
                continue  # written elsewhere too
            hoisted.append(node)
            produced.update(e.dst.data for e in outs)
        return hoisted, produced

    @staticmethod
    def _prep_sdfg(sdfg, state, model, hoisted, produced, derived_data) -> Tuple[dace.SDFG, List[str]]:
        from daceml.onnx.ops.common import record_constant
        prep = dace.SDFG(f"{sdfg.name}_weight_prep")
        pstate = prep.add_state("main")
        onnx_of = {model._array(w): w for w in model.weights}
        constants = getattr(sdfg, "_daceml_constants", {})
        accesses: Dict[str, sdnodes.AccessNode] = {}
        sources: List[str] = []

        def access(data: str) -> sdnodes.AccessNode:
            if data not in accesses:
                desc = copy.deepcopy(sdfg.arrays[data])
                desc.transient = data in produced and data not in derived_data
                prep.add_datadesc(data, desc)
                if data in onnx_of and data not in produced:
                    sources.append(onnx_of[data])
                    if data in constants:
                        record_constant(prep, data, constants[data])
                accesses[data] = pstate.add_access(data)
            return accesses[data]

        for node in hoisted:
            new = copy.deepcopy(node)
            pstate.add_node(new)
            for e in state.in_edges(node):
                pstate.add_edge(access(e.src.data), None, new, e.dst_conn, copy.deepcopy(e.data))
            for e in state.out_edges(node):
                pstate.add_edge(new, e.src_conn, access(e.dst.data), None, copy.deepcopy(e.data))
        return prep, sources

    @staticmethod
    def _rewire(sdfg, state, model, hoisted, produced, derived_data) -> Dict[str, str]:
        from daceml.onnx import dtypes as odt
        derived: Dict[str, str] = {}
        for data in sorted(derived_data):
            desc = sdfg.arrays[data]
            value = np.zeros([int(s) for s in desc.shape], dtype=odt.to_numpy(desc.dtype))
            derived[data] = model.adopt_weight(data, value)
        sources = {e.src for n in hoisted for e in state.in_edges(n)}
        for node in hoisted:
            state.remove_node(node)
        for node in list(state.data_nodes()):
            if node.data in produced and node.data not in derived_data and state.degree(node) == 0:
                state.remove_node(node)
            elif node.data in derived_data and state.in_degree(node) == 0 and state.out_degree(node) == 0:
                state.remove_node(node)
        for node in sources:
            if node in state.nodes() and state.degree(node) == 0:
                state.remove_node(node)
        for data in list(produced - derived_data):
            if not any(n.data == data for n in state.data_nodes()):
                sdfg.remove_data(data, validate=False)
        return derived
