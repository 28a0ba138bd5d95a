"""The passes of the lowering pipeline, grouped by level.

A pass is a small class: typed DaCe properties (so it round-trips through JSON
for the GUI and recipes), ``apply(sdfg, model) -> number of changes``, and a
one-line ``_detail`` of what it did. :func:`level_passes` lists each level.
"""
import logging
from typing import Dict, List

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.transformation.base import Pass, _onnx_nodes, _single_consumer  # noqa: F401 (re-exported)
from daceml.transformation.conv_bn import FoldBatchNormIntoConv
from daceml.transformation.eliminate import EliminateLayoutOps
from daceml.transformation.epilogue import FuseEpilogues
from daceml.transformation.hoist import HoistWeightComputations
from daceml.transformation.horizontal import FuseSiblingGemms
from daceml.transformation.linear import MatMulAddToGemm
from daceml.transformation.memory import PlanMemory
from daceml.transformation.operands import FoldTransposesIntoMatMul
from daceml.transformation.pad import FoldPadIntoConv
from daceml.transformation.patterns import RecognizeDecomposedOps
from daceml.transformation.views import ReshapesAsViews
from daceml.transformation.winograd import WinogradConvs

log = logging.getLogger(__name__)


# --- level 1: graph ------------------------------------------------------------------------------


@properties.make_properties
class RemoveIdentities(Pass):
    """Removes Identity nodes (and single-output Dropout in inference) between transients."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        removed = 0
        for node, state in list(_onnx_nodes(sdfg)):
            if node.schema.name not in ("Identity", "Dropout") or len(node.out_connectors) != 1:
                continue
            if node.schema.name == "Dropout" and len(node.in_connectors) > 1:
                continue  # ratio/training_mode inputs: not provably inference
            (ie, ) = state.in_edges(node)
            (oe, ) = state.out_edges(node)
            src, dst = ie.src, oe.dst
            if not (isinstance(src, sdnodes.AccessNode) and isinstance(dst, sdnodes.AccessNode)):
                continue
            if not sdfg.arrays[dst.data].transient:
                continue
            if sdfg.arrays[src.data].shape != sdfg.arrays[dst.data].shape:
                continue
            for e in list(state.out_edges(dst)):
                state.add_edge(src, e.src_conn, e.dst, e.dst_conn, sdfg.make_array_memlet(src.data))
                state.remove_edge(e)
            state.remove_node(node)
            state.remove_node(dst)
            if not any(n.data == dst.data for s in sdfg.states() for n in s.data_nodes()):
                sdfg.remove_data(dst.data, validate=False)
            removed += 1
        self._detail = f"{removed} identity node(s)"
        return removed


@properties.make_properties
class FoldShapeInputs(Pass):
    """Shape-computation elimination: the ``shape`` input of Reshape/Expand/ConstantOfShape
    becomes a constant when the output shape is static (the subgraph that computed it is
    then dead and removed by RemoveDeadNodes). Needs the ONNXModel (to add the constant)."""
    LEVEL = 1
    SHAPE_INPUTS = {"Reshape": "shape", "Expand": "shape", "ConstantOfShape": "input"}

    def apply(self, sdfg, model=None) -> int:
        import numpy as np
        from daceml.onnx.ops.common import constant_input
        if model is None:
            self._detail = "needs an ONNXModel"
            return 0
        folded = 0
        for node, state in list(_onnx_nodes(sdfg)):
            conn = self.SHAPE_INPUTS.get(node.schema.name)
            if conn is None or conn not in node.in_connectors or constant_input(node, state, sdfg, conn) is not None:
                continue
            out = node.out_desc(state, sdfg, node.output_connectors()[0])
            try:
                shape = [int(d) for d in out.shape]
            except TypeError:
                continue  # symbolic: the value is only known at run time
            if any(d == 0 for d in shape):
                continue
            onnx_out = next(iter(state.out_edges(node))).data.data
            edge = next(iter(state.in_edges_by_connector(node, conn)))
            name = model.add_weight(f"{onnx_out}__static_{conn}", np.array(shape, dtype=np.int64))
            state.add_edge(state.add_read(name), None, node, conn, sdfg.make_array_memlet(name))
            state.remove_edge(edge)
            if state.degree(edge.src) == 0:
                state.remove_node(edge.src)
            folded += 1
        self._detail = f"{folded} shape input(s) made constant"
        return folded


@properties.make_properties
class RemoveDeadNodes(Pass):
    """Removes ONNX nodes whose outputs nobody reads (transients only), repeatedly."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        removed = 0
        changed = True
        while changed:
            changed = False
            for node, state in list(_onnx_nodes(sdfg)):
                outs = [e.dst for e in state.out_edges(node)]
                if not all(isinstance(d, sdnodes.AccessNode) and sdfg.arrays[d.data].transient and
                           state.out_degree(d) == 0 and state.in_degree(d) == 1 for d in outs):
                    continue
                sources = [e.src for e in state.in_edges(node)]
                for d in outs:
                    state.remove_node(d)
                state.remove_node(node)
                for src in sources:
                    if state.degree(src) == 0:
                        state.remove_node(src)
                removed += 1
                changed = True
        used = {n.data for st in sdfg.states() for n in st.data_nodes()}
        for name, desc in list(sdfg.arrays.items()):
            if desc.transient and name not in used:
                sdfg.remove_data(name, validate=False)
        self._detail = f"{removed} dead node(s)"
        return removed


# --- level 2: operator ---------------------------------------------------------------------------

#: per device: op -> implementation names to prefer when they apply (else the registry's order).
#: CPU GEMMs go to OpenBLAS 0.3.34 (scipy-openblas32 wheel) run single-threaded and split between
#: the program's OpenMP threads (cpu_support/openblas_gemm.h), else oneMKL (GNU OpenMP layer).
#: Measured by `python examples/gemm_libraries.py` (2 threads, GFLOP/s, pure / OpenBLAS / MKL / torch):
#: 1024x768x768 175 / 183 / 164 / 168; 1024x3072x768 146 / 188 / 172 / 166; 64x3136x576 (a ResNet-50
#: conv) 138 / 141 / 98 / 101; 512x49x4608 124 / 154 / 103 / 113; 256x1024x1024 158 / 162 / 164 / 171.
#: Whole models (`python examples/blas_ab.py`, one process, interleaved; MKL -> OpenBLAS, ms): BERT layer 100.6 -> 80.7, its
#: training step 253.6 -> 239.4, ResNet-50 77.8 -> 65.0, MobileNetV2 8.4 -> 7.1.
#: Without the wheels the pure tiled kernels are used.
FAST_IMPLEMENTATIONS: Dict[str, Dict[str, List[str]]] = {
    "cpu": {"MatMul": ["blas", "mkl"], "Gemm": ["blas", "mkl"], "Conv": ["blas", "mkl"]},
    "cuda": {},
}


@properties.make_properties
class ChooseImplementations(Pass):
    """Sets each ONNX node's implementation to the fastest one that applies (by device): the first
    of FAST_IMPLEMENTATIONS that applies and, where the implementation defines ``profitable``,
    is measured to pay off for the node's shapes."""
    LEVEL = 2
    device = properties.Property(dtype=str, default="cpu", desc="target device (cpu or cuda)")

    def apply(self, sdfg, model=None) -> int:
        from daceml.onnx.ops import registry
        chosen = 0
        prefs = FAST_IMPLEMENTATIONS.get(self.device, {})
        if self.device == "cuda":  # device code wherever a CUDA implementation applies
            prefs = {op: ["cuda"] + names for op, names in prefs.items()} or {}
        picks: Dict[str, int] = {}
        for node, state in _onnx_nodes(sdfg):
            if node.implementation:
                continue
            impls = registry.implementations(node.schema.name)
            wanted = prefs.get(node.schema.name, ["cuda"] if self.device == "cuda" else [])
            for name in wanted:
                if name in impls and registry._reason(impls[name], node, state, sdfg) is None and \
                        getattr(impls[name], "profitable", lambda *a: True)(node, state, sdfg):
                    node.implementation = name
                    chosen += 1
                    picks[f"{node.schema.name}->{name}"] = picks.get(f"{node.schema.name}->{name}", 0) + 1
                    break
        self._detail = ", ".join(f"{k} x{v}" for k, v in sorted(picks.items()))
        return chosen


@properties.make_properties
class ExpandLibraryNodes(Pass):
    """Expands every library node into DaCe-native dataflow (through the registry)."""
    LEVEL = 2

    keep_views = properties.Property(dtype=bool, default=True,
                                     desc="leave the reshapes that can be views to ReshapesAsViews (level 4)")

    def apply(self, sdfg, model=None) -> int:
        from daceml.transformation.views import can_be_view
        count = kept = 0
        for node, state in list(_onnx_nodes(sdfg)):
            if self.keep_views and can_be_view(state, node):
                kept += 1
                continue
            node.expand(state.sdfg, state)
            count += 1
        # what the expansions made: library nodes inside their nested SDFGs, or at the top level
        changed = True
        while changed:
            changed = False
            for state in sdfg.states():
                for node in list(state.nodes()):
                    if isinstance(node, sdnodes.NestedSDFG):
                        node.sdfg.expand_library_nodes(recursive=True)
                    elif isinstance(node, sdnodes.LibraryNode) and not (self.keep_views and
                                                                       can_be_view(state, node)):
                        node.expand(sdfg, state)
                        changed = True
        self._detail = f"{count} node(s) expanded" + (f", {kept} reshape(s) kept for views" if kept else "")
        return count


# --- level 3: fusion -----------------------------------------------------------------------------


@properties.make_properties
class InlineAndSimplify(Pass):
    """Inlines the nested SDFGs of the expansions and runs DaCe's simplification."""
    LEVEL = 3

    def apply(self, sdfg, model=None) -> int:
        from dace.sdfg.utils import inline_sdfgs
        from dace.transformation.passes.simplify import SimplifyPass
        before = len(list(sdfg.all_sdfgs_recursive()))
        # Single-state inlining first: DaCe's InlineSDFGs tries the multi-state inliner first even for
        # one-state nested SDFGs, and that one fissions the parent state and re-infers the symbols of
        # every interstate edge against every array per inlining (274 s for MobileNetV2's 637
        # expansions; 12 s this way). What remains (multi-state ones) goes through SimplifyPass.
        inline_sdfgs(sdfg, multistate=False)
        # Dead dataflow elimination trips over pointer connectors of C++ tasklets in DaCe 1.0.2;
        # dead ONNX nodes are removed at level 1 (RemoveDeadNodes) instead.
        SimplifyPass(validate=True, skip={"DeadDataflowElimination"}).apply_pass(sdfg, {})
        after = len(list(sdfg.all_sdfgs_recursive()))
        self._detail = f"nested SDFGs {before} -> {after}"
        return max(before - after, 0) or 1


@properties.make_properties
class FuseMaps(Pass):
    """Fuses producer/consumer maps with matching ranges (elementwise chains) through DaCe's MapFusion."""
    LEVEL = 3

    def apply(self, sdfg, model=None) -> int:
        from dace.sdfg import propagation
        from dace.transformation.dataflow import MapFusion
        from dace.transformation.passes.pattern_matching import match_patterns
        fused = 0
        # In rounds: every match found in one search is applied if its nodes are still there (and
        # it still applies), memlets are propagated once per round. A search and a propagation
        # per fusion made this quadratic in the program size (minutes for EfficientNet-B0).
        while True:
            candidates = []
            for xform in match_patterns(sdfg, MapFusion, states=None):
                state = xform._sdfg.node(xform.state_id)
                if self._plain(state, xform):
                    candidates.append((xform._sdfg, state, {name: getattr(xform, name) for name in
                                                            ("first_map_exit", "array", "second_map_entry")}))
            applied = 0
            touched = set()
            fused_maps = {}
            for owner, state, where in candidates:
                nodes = list(where.values())
                if any(n not in state.nodes() or n in touched for n in nodes):
                    continue
                # the maps around the array change: leave their other matches to the next round
                first_entry = state.entry_node(where["first_map_exit"])
                touched.update(nodes + [state.exit_node(where["second_map_entry"]), first_entry])
                fused_maps.setdefault((owner, state), []).extend([first_entry, where["second_map_entry"]])
                try:
                    MapFusion.apply_to(owner, verify=True, annotate=False, save=False, **where)
                except ValueError:  # no longer applies
                    continue
                applied += 1
            if not applied:
                break
            fused += applied
            # only the fused maps' outer memlets changed: propagating the whole program instead
            # costs O(arrays) per memlet (symbols_defined_at), a minute for MobileNetV2
            for (owner, state), entries in fused_maps.items():
                tree = state.scope_tree()
                scopes = [tree[e] for e in dict.fromkeys(entries) if e in tree]
                propagation.propagate_memlets_scope(owner, state, scopes)
        self._detail = f"{fused} fusion(s)"
        return fused

    @staticmethod
    def _plain(state, xform) -> bool:
        """Only maps whose tasklets take single elements by value: the array kernels of the
        implementations (pointer connectors over whole arrays) are not fused."""
        entries = [n for n in xform.subgraph.values()]
        for index in entries:
            node = state.node(index)
            if not isinstance(node, (sdnodes.MapEntry, sdnodes.MapExit)):
                continue
            entry = state.entry_node(node) if isinstance(node, sdnodes.MapExit) else node
            for inner in state.scope_subgraph(entry).nodes():
                if isinstance(inner, sdnodes.Tasklet) and any(
                        isinstance(t, dace.pointer) for t in list(inner.in_connectors.values()) +
                        list(inner.out_connectors.values())):
                    return False
        return True


# --- level 4: data movement ----------------------------------------------------------------------


@properties.make_properties
class PersistentTransients(Pass):
    """Allocates top-level transients of parameter-determined size once per program, not per call."""
    LEVEL = 4

    def apply(self, sdfg, model=None) -> int:
        from dace.transformation.auto.auto_optimize import make_transients_persistent
        result = make_transients_persistent(sdfg, dace.DeviceType.CPU)
        n = sum(len(v) for v in result.values())
        self._detail = f"{n} array(s) made persistent"
        return n


PASSES = {c.__name__: c for c in (RemoveIdentities, FoldShapeInputs, RemoveDeadNodes, MatMulAddToGemm,
                                  FoldBatchNormIntoConv, EliminateLayoutOps, FoldPadIntoConv, RecognizeDecomposedOps,
                                  ChooseImplementations, ReshapesAsViews, ExpandLibraryNodes, InlineAndSimplify, FuseMaps,
                                  PersistentTransients, PlanMemory, HoistWeightComputations, FuseEpilogues,
                                  FoldTransposesIntoMatMul, WinogradConvs, FuseSiblingGemms)}


def level_passes(level: int, device: str = "cpu") -> List[Pass]:
    """A fresh list of the passes of ``level``, in order."""
    if level == 1:
        return [RemoveIdentities(), FoldShapeInputs(), RemoveDeadNodes(), RecognizeDecomposedOps(),
                EliminateLayoutOps(), FoldPadIntoConv(), MatMulAddToGemm(), FoldBatchNormIntoConv()]
    if level == 2:
        hoist = [WinogradConvs(), HoistWeightComputations()] if device == "cpu" else []
        return hoist + [ChooseImplementations(device=device), FuseEpilogues(), FoldTransposesIntoMatMul(),
                        ExpandLibraryNodes()]
    if level == 3:
        return [InlineAndSimplify(), FuseMaps()]
    if level == 4:
        return [ReshapesAsViews(), PersistentTransients(), PlanMemory()]
    raise ValueError(f"no level {level}; levels are 1..4")
