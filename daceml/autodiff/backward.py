"""Reverse-mode automatic differentiation of SDFGs of ONNX library nodes.

``add_backward_pass(sdfg, inputs, outputs)`` takes an SDFG with one state of ONNX
library nodes between access nodes (what :class:`daceml.ONNXModel` builds) and

1. finds the *active* nodes: those on a floating-point path from an array of
   ``inputs`` to an array of ``outputs``. Integer and bool values (shapes, indices,
   masks, ArgMax results) carry no gradient; paths through them are skipped with a
   log line;
2. checks that every active node has a gradient rule
   (:mod:`daceml.autodiff.registry`); all nodes without one are reported at once,
   by op, node name and opset;
3. builds the backward state: the active nodes in reverse topological order, each
   differentiated by its rule. A value read by several nodes gets one gradient
   contribution per use; they are summed when the gradient is complete;
4. makes the forward store what the backward reads: forward transients the rules
   read become non-transient arrays of the forward program (``BackwardResult.stored``).
   With ``recompute=True``, values that an elementwise or data-movement node computes
   from values stored anyway (or from inputs and weights) are recomputed in the
   backward pass instead (``BackwardResult.recomputed``): the store only shrinks.

With ``separate=True`` (the default) the backward pass is a new SDFG whose arguments
are the gradients of ``outputs`` (``BackwardResult.given_gradients``), the stored
forward values (by their forward names) and the gradients of ``inputs``
(``BackwardResult.required_gradients``, written). With ``separate=False`` the
backward state is appended to ``sdfg`` (one program computing both passes).
"""
import dataclasses
import logging
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

import dace
from dace import data as dt
from dace.sdfg import nodes as sdnodes
from dace.sdfg import utils as sdutils

from daceml.analysis.dataflow import array_bytes, transient_memory
from daceml.errors import DacemlError
from daceml.onnx import nodes as onnx_nodes
from daceml.onnx.ops.common import safe_name

log = logging.getLogger(__name__)

FLOAT_TYPES = (dace.float16, dace.float32, dace.float64)

#: ops besides the elementwise ones whose outputs ``recompute=True`` recomputes in the
#: backward pass instead of storing them (when their inputs are available there anyway)
RECOMPUTABLE = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"}
#: ops whose outputs are views of their inputs after optimization: always recomputed
VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}


class AutodiffError(DacemlError, ValueError):
    """The SDFG or the request cannot be differentiated (the message says why)."""


class NoGradientRuleError(DacemlError, NotImplementedError):
    """Active nodes whose op has no (applicable) gradient rule; lists all of them."""

    def __init__(self, missing: Sequence[Tuple[str, str, int, str]], supported: Sequence[str]):
        #: list of (op, node name, opset version, detail)
        self.missing = list(missing)
        lines = [f"  - {op} (node {name!r}, opset version {version}): {detail}"
                 for op, name, version, detail in self.missing]
        super().__init__(f"{len(self.missing)} node(s) on the differentiated path have no gradient rule:\n"
                         + "\n".join(lines) + f"\nops with gradient rules: {', '.join(supported)}")


@dataclasses.dataclass
class BackwardResult:
    """What :func:`add_backward_pass` built."""
    #: the forward SDFG (the one given, changed to store what the backward needs)
    forward_sdfg: dace.SDFG
    #: the backward SDFG (the forward SDFG itself if ``separate=False``)
    backward_sdfg: dace.SDFG
    #: output array -> its gradient array (an input of the backward pass)
    given_gradients: Dict[str, str]
    #: input array -> its gradient array (written by the backward pass)
    required_gradients: Dict[str, str]
    #: forward arrays the backward pass reads (same names in both SDFGs)
    saved: List[str]
    #: of ``saved``, the forward transients made non-transient (extra outputs of the forward)
    stored: List[str]
    #: forward transients that the backward recomputes instead of storing
    recomputed: List[str]
    #: labels of the forward nodes that were differentiated, in backward order
    differentiated: List[str]
    #: log of skipped paths (non-differentiable values)
    skipped: List[str]
    #: inputs no output depends on (their gradient arrays are filled with zeros)
    unreached: List[str] = dataclasses.field(default_factory=list)

    def stored_bytes(self, symbols: Optional[Dict[str, int]] = None) -> int:
        """Bytes of the forward transients stored for the backward pass."""
        return array_bytes(self.forward_sdfg, self.stored, symbols)

    def transient_bytes(self, symbols: Optional[Dict[str, int]] = None) -> Tuple[int, int]:
        """Bytes of the transients of the forward and of the backward SDFG (top level, views
        excluded): what each program allocates while it runs, beyond its arguments."""
        return transient_memory(self.forward_sdfg, symbols), transient_memory(self.backward_sdfg, symbols)


def is_float(desc: dt.Data) -> bool:
    return desc.dtype in FLOAT_TYPES


class _Copy:
    """An access-node-to-access-node copy in the forward state, differentiated as Identity."""

    def __init__(self, src: str, dst: str):
        self.src, self.dst = src, dst
        self.label = f"copy_{src}_to_{dst}"


def add_backward_pass(sdfg: dace.SDFG, inputs: Sequence[str], outputs: Sequence[str], *, separate: bool = True,
                      recompute: bool = False) -> BackwardResult:
    """Adds reverse-mode differentiation of ``outputs`` with respect to ``inputs`` (array
    names of ``sdfg``); see the module docstring. ``sdfg`` is changed in place (copy it
    first to keep the original)."""
    return _BackwardPass(sdfg, list(inputs), list(outputs), separate, recompute).run()


class _BackwardPass:

    def __init__(self, sdfg: dace.SDFG, inputs: List[str], outputs: List[str], separate: bool, recompute: bool):
        states = list(sdfg.states())
        if len(states) != 1:
            raise AutodiffError(f"SDFG {sdfg.name!r} has {len(states)} states; add_backward_pass differentiates "
                                "SDFGs with one state of ONNX library nodes (as ONNXModel builds them), before "
                                "their nodes are expanded")
        self.fsdfg = sdfg
        self.fstate = states[0]
        self.separate = separate
        self.recompute = recompute
        for kind, names in (("input", inputs), ("output", outputs)):
            for n in names:
                if n not in sdfg.arrays:
                    raise AutodiffError(f"{kind} {n!r} is no array of SDFG {sdfg.name!r}; arrays: "
                                        f"{sorted(a for a, d in sdfg.arrays.items() if not d.transient)}")
        if not outputs:
            raise AutodiffError("no outputs to differentiate")
        self.skipped: List[str] = []
        self.inputs = []
        for n in inputs:
            if not is_float(sdfg.arrays[n]):
                self._skip(f"input {n!r} has element type {sdfg.arrays[n].dtype.to_string()}: "
                           "not differentiable, no gradient computed")
            elif n not in self.inputs:
                self.inputs.append(n)
        self.outputs = []
        for n in outputs:
            if not is_float(sdfg.arrays[n]):
                self._skip(f"output {n!r} has element type {sdfg.arrays[n].dtype.to_string()}: "
                           "not differentiable, ignored")
            elif n not in self.outputs:
                self.outputs.append(n)
        self._analyse()

    def _skip(self, message: str) -> None:
        self.skipped.append(message)
        log.info("autodiff: %s", message)

    # --- analysis ----------------------------------------------------------------------------

    def _analyse(self) -> None:
        state = self.fstate
        self.producer: Dict[str, Tuple[object, Optional[str]]] = {}
        self.uses: Dict[str, List[Tuple[object, str]]] = {}
        bad = []
        ops: List[object] = []
        for node in sdutils.dfs_topological_sort(state):
            if isinstance(node, onnx_nodes.ONNXOp):
                ops.append(node)
                for e in state.in_edges(node):
                    self._check_edge(e, node)
                    self.uses.setdefault(e.data.data, []).append((node, e.dst_conn))
                for e in state.out_edges(node):
                    self._check_edge(e, node)
                    self._set_producer(e.data.data, node, e.src_conn)
            elif isinstance(node, sdnodes.AccessNode):
                for e in state.out_edges(node):
                    if isinstance(e.dst, sdnodes.AccessNode):
                        copy = _Copy(node.data, e.dst.data)
                        ops.append(copy)
                        self.uses.setdefault(copy.src, []).append((copy, "input"))
                        self._set_producer(copy.dst, copy, "output")
            else:
                bad.append(f"{type(node).__name__} {node.label!r}")
        if bad:
            raise AutodiffError(f"SDFG {self.fsdfg.name!r}: add_backward_pass differentiates ONNX library nodes "
                                f"between access nodes (before expansion); found {', '.join(bad)}")
        self.ops = ops
        arrays = self.fsdfg.arrays

        # forward: values that depend on an input through floating-point values
        depends: Set[str] = set(self.inputs)
        for op in ops:
            ins = self.value_inputs(op)
            if not any(a in depends for _, a in ins):
                continue
            for conn, a in self.op_outputs(op):
                if is_float(arrays[a]):
                    depends.add(a)
                else:
                    self._skip(f"{self.describe(op)}: output {conn!r} ({a}) has element type "
                               f"{arrays[a].dtype.to_string()}; not differentiable, the path through it is skipped")
        # backward: values the outputs depend on
        needed: Set[str] = set(self.outputs)
        for op in reversed(ops):
            if any(a in needed for _, a in self.op_outputs(op)):
                needed.update(a for _, a in self.value_inputs(op) if is_float(arrays[a]))
        self.active: Set[str] = depends & needed
        self.active_ops = [op for op in ops
                           if any(a in self.active for _, a in self.value_inputs(op))
                           and any(a in self.active for _, a in self.op_outputs(op))]
        half = sorted(a for a in self.active if arrays[a].dtype == dace.float16)
        if half:
            raise AutodiffError(f"float16 values on the differentiated path ({', '.join(half)}) are not supported "
                                "by autodiff yet; differentiate the model in float32")
        for n in self.inputs:
            if n not in self.active:
                self._skip(f"no output depends on input {n!r} through floating-point values; its gradient is zero")
        # rules
        from daceml.autodiff import registry
        self.rules = {}
        missing = []
        for op in self.active_ops:
            if isinstance(op, _Copy):
                continue
            rule, reasons = registry.select(op, state, self.fsdfg)
            if rule is None:
                detail = "; ".join(f"rule {n!r}: {r}" for n, r in reasons.items()) or "no gradient rule registered"
                missing.append((op.schema.name, op.onnx_node_name or op.label, op.schema.since_version, detail))
            self.rules[op] = rule
        if missing:
            raise NoGradientRuleError(missing, registry.differentiable_ops())

    def _check_edge(self, e, node) -> None:
        other = e.src if e.dst is node else e.dst
        if not isinstance(other, sdnodes.AccessNode):
            raise AutodiffError(f"{node.describe()}: connector {e.dst_conn if e.dst is node else e.src_conn!r} "
                                f"is connected to a {type(other).__name__}, not an access node")
        desc = self.fsdfg.arrays[e.data.data]
        if e.data.subset is not None and e.data.subset.num_elements() != desc.total_size and \
                tuple(e.data.subset.size()) != tuple(desc.shape):
            raise AutodiffError(f"{node.describe()}: memlet {e.data} does not cover the whole array "
                                f"{e.data.data!r}; only whole-array edges are supported")

    def _set_producer(self, array: str, op, conn: str) -> None:
        if array in self.producer:
            raise AutodiffError(f"array {array!r} is written twice in the forward state (by "
                                f"{self.describe(self.producer[array][0])} and {self.describe(op)}); "
                                "in-place updates are not supported by autodiff")
        self.producer[array] = (op, conn)

    def op_inputs(self, op) -> List[Tuple[str, str]]:
        if isinstance(op, _Copy):
            return [("input", op.src)]
        return [(e.dst_conn, e.data.data) for e in self.fstate.in_edges(op)]

    def value_inputs(self, op) -> List[Tuple[str, str]]:
        """The inputs whose values reach ``op``'s outputs (not those only read for their type or
        shape, see :data:`daceml.autodiff.registry.VALUE_FREE_INPUTS`)."""
        from daceml.autodiff.registry import VALUE_FREE_INPUTS
        free = () if isinstance(op, _Copy) else VALUE_FREE_INPUTS.get(op.schema.name, ())
        return [(conn, a) for conn, a in self.op_inputs(op) if conn not in free]

    def op_outputs(self, op) -> List[Tuple[str, str]]:
        if isinstance(op, _Copy):
            return [("output", op.dst)]
        return [(e.src_conn, e.data.data) for e in self.fstate.out_edges(op)]

    @staticmethod
    def describe(op) -> str:
        return op.label if isinstance(op, _Copy) else op.describe()

    # --- building ----------------------------------------------------------------------------

    def new_name(self, base: str) -> str:
        base = safe_name(base)
        name, k = base, 0
        while name in self.fsdfg.arrays or name in self.bsdfg.arrays or name in self.fsdfg.symbols or \
                name in self.bsdfg.symbols:
            k += 1
            name = f"{base}_{k}"
        return name

    def add_array(self, base: str, shape, dtype, transient: bool = True) -> str:
        name = self.new_name(base)
        self.bsdfg.add_array(name, shape, dtype, transient=transient)
        return name

    def read(self, array: str) -> sdnodes.AccessNode:
        node = self._last.get(array)
        if node is None:
            node = self.bstate.add_read(array)
            self._last[array] = node
        return node

    def write(self, array: str) -> sdnodes.AccessNode:
        if array in self._written:
            raise AutodiffError(f"internal error: backward array {array!r} written twice")
        self._written.add(array)
        node = self.bstate.add_write(array)
        self._last[array] = node
        return node

    def forward_value(self, array: str) -> str:
        """The backward SDFG's name of forward array ``array`` (recorded as saved)."""
        if array not in self.saved:
            self.saved.append(array)
            if self.separate and array not in self.bsdfg.arrays:
                desc = self.fsdfg.arrays[array].clone()
                desc.transient = False
                self.bsdfg.add_datadesc(array, desc)
        return array

    def run(self) -> BackwardResult:
        fsdfg = self.fsdfg
        if self.separate:
            self.bsdfg = dace.SDFG(safe_name(fsdfg.name + "_backward"))
            for sym, stype in fsdfg.symbols.items():
                self.bsdfg.add_symbol(sym, stype)
            self.bsdfg._daceml_constants = dict(getattr(fsdfg, "_daceml_constants", {}))
            self.bstate = self.bsdfg.add_state("backward")
        else:
            self.bsdfg = fsdfg
            self.bstate = fsdfg.add_state_after(self.fstate, "backward")
        self._last: Dict[str, sdnodes.AccessNode] = {}
        self._written: Set[str] = set()
        self.saved: List[str] = []
        self.counter = 0
        arrays = fsdfg.arrays
        # gradient arrays of the outputs (given) and inputs (required)
        self.given: Dict[str, str] = {}
        for o in self.outputs:
            d = arrays[o]
            self.given[o] = self.add_array(f"grad_{o}", d.shape, d.dtype, transient=False)
            self._written.add(self.given[o])
        self.required: Dict[str, str] = {}
        for i in self.inputs:
            d = arrays[i]
            self.required[i] = self.add_array(f"grad_{i}", d.shape, d.dtype, transient=False)
        # contributions expected per active value (an upper bound: a rule may produce none)
        self.expected: Dict[str, int] = {}
        for op in self.active_ops:
            for _, a in self.value_inputs(op):
                if a in self.active:
                    self.expected[a] = self.expected.get(a, 0) + 1
        for o in self.outputs:
            self.expected[o] = self.expected.get(o, 0) + 1
        self.contributions: Dict[str, List[str]] = {o: [g] for o, g in self.given.items()}
        self.final: Dict[str, Optional[str]] = {}
        differentiated = []
        for op in reversed(self.active_ops):
            out_grads = {conn: self.finalize(a) for conn, a in self.op_outputs(op) if a in self.active}
            if all(g is None for g in out_grads.values()):
                log.debug("autodiff: no gradient reaches %s", self.describe(op))
                continue
            grad_inputs = [conn for conn, a in self.value_inputs(op) if a in self.active]
            if isinstance(op, _Copy):
                self.contributions.setdefault(op.src, []).append(out_grads["output"])
                differentiated.append(op.label)
                continue
            ctx = BackwardContext(self, op, out_grads, grad_inputs)
            self.rules[op].backward(ctx)
            for conn in grad_inputs:
                if conn not in ctx.produced:
                    raise AutodiffError(f"gradient rule {self.rules[op].__qualname__} of {op.describe()} did not "
                                        f"produce the gradient of input {conn!r}")
                array = ctx.input_array(conn)
                self.contributions.setdefault(array, []).append(ctx.produced[conn])
            differentiated.append(op.label)
        for i in self.inputs:
            self.finalize(i)
        recomputed = self._recompute(views_only=not self.recompute) if self.separate else []
        stored = []
        if self.separate:
            for a in self.saved:
                if a in recomputed:
                    continue
                if fsdfg.arrays[a].transient:
                    fsdfg.arrays[a].transient = False
                    stored.append(a)
        saved = [a for a in self.saved if a not in recomputed]
        log.info("autodiff: %d node(s) differentiated, %d value(s) stored, %d recomputed", len(differentiated),
                 len(stored), len(recomputed))
        return BackwardResult(fsdfg, self.bsdfg, dict(self.given), dict(self.required), saved, stored, recomputed,
                              differentiated, list(self.skipped), [i for i in self.inputs if i not in self.active])

    def finalize(self, array: str) -> Optional[str]:
        """The complete gradient of forward ``array`` (its contributions summed), or None if
        no gradient reaches it and it is not required."""
        if array in self.final:
            return self.final[array]
        from daceml.autodiff import kernels
        contribs = self.contributions.get(array, [])
        required = self.required.get(array)
        if not contribs:
            result = None
            if required is not None:
                kernels.fill(self, required, 0)
                result = required
        elif len(contribs) == 1:
            result = contribs[0]
            if required is not None and result != required:
                kernels.copy(self, result, required)
                result = required
        else:
            target = required
            if target is None:
                d = self.fsdfg.arrays[array]
                target = self.add_array(f"grad_{array}", d.shape, d.dtype)
            kernels.accumulate(self, contribs, target)
            result = target
        self.final[array] = result
        return result

    def contribution_array(self, array: str) -> str:
        """A fresh array for one gradient contribution to forward ``array`` (the required
        gradient array itself if this is its only contribution)."""
        required = self.required.get(array)
        if required is not None and self.expected.get(array, 0) == 1 and required not in self._written:
            return required
        d = self.fsdfg.arrays[array]
        return self.add_array(f"grad_{array}", d.shape, d.dtype)

    # --- store or recompute ----------------------------------------------------------------------

    def _recompute(self, views_only: bool = False) -> List[str]:
        """Recomputes, in the backward state, stored forward transients that an elementwise
        or data-movement node (:data:`RECOMPUTABLE`) computes from values stored anyway or
        from non-transient ones (inputs, weights): the store gets smaller, never larger.

        Reshapes (:data:`VIEWS`) are recomputed always (``views_only`` when ``recompute`` is
        off), also from an input not stored yet, which is then stored in their place (the same
        bytes): a reshape of a stored value is a free view, while storing the reshape's output
        would make it a copy in the forward program."""
        from daceml.autodiff.rules.elementwise import forward_expression
        recomputed: List[str] = []
        changed = True
        while changed:
            changed = False
            for a in list(self.saved):
                if a in recomputed or not self.fsdfg.arrays[a].transient or a not in self.producer:
                    continue
                op, _ = self.producer[a]
                if isinstance(op, _Copy) or (forward_expression(op.schema.name) is None and
                                             op.schema.name not in RECOMPUTABLE):
                    continue
                view = op.schema.name in VIEWS
                if views_only and not view:
                    continue
                if len(self.op_outputs(op)) != 1:
                    continue
                ins = [x for _, x in self.op_inputs(op)]
                if any(x in recomputed for x in ins):
                    continue  # keep chains short: recompute from stored values only
                if not view and not all(x in self.saved or not self.fsdfg.arrays[x].transient for x in ins):
                    continue
                self._emit_recompute(op, a)
                recomputed.append(a)
                changed = True
        return recomputed

    def _emit_recompute(self, op, array: str) -> None:
        node = self._last.get(array)
        copy = type(op)(f"{op.label}_recompute", inputs=list(op.in_connectors), outputs=list(op.out_connectors))
        for name in op.schema.attributes:
            setattr(copy, name, getattr(op, name))
        self.bstate.add_node(copy)
        for conn, x in self.op_inputs(op):
            self.forward_value(x)
            self.bstate.add_edge(self.read(x), None, copy, conn, self.bsdfg.make_array_memlet(x))
        conn = self.op_outputs(op)[0][0]
        if self.separate:
            self.bsdfg.arrays[array].transient = True
        if node is None:
            node = self.write(array)
        self.bstate.add_edge(copy, conn, node, None, self.bsdfg.make_array_memlet(array))


class BackwardContext:
    """What a gradient rule sees of one forward node and the backward state it adds to."""

    def __init__(self, bp: _BackwardPass, node, out_grads: Dict[str, Optional[str]], grad_inputs: List[str]):
        self._bp = bp
        #: the forward node
        self.node = node
        self.forward_state: dace.SDFGState = bp.fstate
        self.forward_sdfg: dace.SDFG = bp.fsdfg
        #: the backward SDFG and state the rule adds to
        self.sdfg: dace.SDFG = bp.bsdfg
        self.state: dace.SDFGState = bp.bstate
        self._out_grads = out_grads
        #: input connectors whose gradient the rule must produce
        self.grad_inputs: List[str] = list(grad_inputs)
        #: connector -> array holding its gradient contribution
        self.produced: Dict[str, str] = {}
        self._in = {e.dst_conn: e.data.data for e in bp.fstate.in_edges(node)}
        self._out = {e.src_conn: e.data.data for e in bp.fstate.out_edges(node)}

    # forward node
    def input_array(self, conn: str) -> str:
        return self._in[conn]

    def output_array(self, conn: str) -> str:
        return self._out[conn]

    def has_input(self, conn: str) -> bool:
        return conn in self._in

    def has_output(self, conn: str) -> bool:
        return conn in self._out

    def desc(self, conn: str) -> dt.Data:
        """Descriptor of the forward array at input or output connector ``conn``."""
        name = self._in.get(conn, self._out.get(conn))
        if name is None:
            raise AutodiffError(f"{self.node.describe()} has no connector {conn!r}")
        return self.forward_sdfg.arrays[name]

    def shape(self, conn: str) -> List:
        return list(self.desc(conn).shape)

    def needs_grad(self, conn: str) -> bool:
        return conn in self.grad_inputs

    def constant(self, conn: str) -> Optional[np.ndarray]:
        """The value of input ``conn`` if it is a constant of the model, else None."""
        if conn not in self._in:
            return None
        return getattr(self.forward_sdfg, "_daceml_constants", {}).get(self._in[conn])

    # values and gradients
    def value(self, conn: str) -> str:
        """Array (in the backward SDFG) holding the forward value of input/output ``conn``;
        the forward stores it."""
        name = self._in.get(conn, self._out.get(conn))
        if name is None:
            raise AutodiffError(f"{self.node.describe()} has no connector {conn!r}")
        return self._bp.forward_value(name)

    def output_grad(self, conn: str) -> Optional[str]:
        """Array holding the gradient of output ``conn``, or None if none reaches it (zero)."""
        return self._out_grads.get(conn)

    def output_grad_or_zero(self, conn: str) -> str:
        g = self.output_grad(conn)
        if g is None:
            from daceml.autodiff import kernels
            d = self.desc(conn)
            g = self.temp(d.shape, d.dtype, f"zero_{self._out[conn]}")
            kernels.fill(self._bp, g, 0)
        return g

    def input_grad(self, conn: str) -> str:
        """The array to write the gradient contribution of input ``conn`` into (its shape
        and dtype are the input's). Call once per connector."""
        if conn not in self.grad_inputs:
            raise AutodiffError(f"{self.node.describe()}: the gradient of input {conn!r} is not required")
        if conn in self.produced:
            raise AutodiffError(f"{self.node.describe()}: the gradient of input {conn!r} was produced twice")
        array = self._bp.contribution_array(self._in[conn])
        self.produced[conn] = array
        return array

    def set_input_grad(self, conn: str, array: str) -> None:
        """Declares that ``array`` (already written, of the input's shape) is the gradient
        contribution of input ``conn`` (no copy)."""
        if conn in self.produced:
            raise AutodiffError(f"{self.node.describe()}: the gradient of input {conn!r} was produced twice")
        self.produced[conn] = array

    # building
    def label(self, what: str) -> str:
        self._bp.counter += 1
        return safe_name(f"{self.node.label}_grad_{what}_{self._bp.counter}")

    def temp(self, shape, dtype, base: str = "tmp") -> str:
        """A new transient array of the backward SDFG."""
        return self._bp.add_array(f"{self.node.label}_{base}", shape, dtype)

    def reshaped(self, array: str, shape) -> str:
        """``array`` (contiguous) with another ``shape`` of the same size, as a new array (a
        flat copy: DaCe views do not survive every expansion of the library nodes they feed)."""
        desc = self.sdfg.arrays[array]
        name = self.temp(shape, desc.dtype, f"{array}_reshaped")
        self.copy(array, name)
        return name

    def onnx(self, op: str, inputs: Dict[str, str], outputs: Dict[str, str], **attributes):
        """Adds an ONNX library node (newest opset) reading/writing the given arrays."""
        cls = onnx_nodes.node_class(op)
        node = cls(self.label(op), inputs=list(inputs), outputs=list(outputs), **attributes)
        self.state.add_node(node)
        for conn, array in inputs.items():
            self.state.add_edge(self._bp.read(array), None, node, conn, self.sdfg.make_array_memlet(array))
        for conn, array in outputs.items():
            self.state.add_edge(node, conn, self._bp.write(array), None, self.sdfg.make_array_memlet(array))
        return node

    def kernel(self, what: str, ranges: Dict[str, str], inputs: Dict[str, str], outputs: Dict[str, str], code: str,
               code_global: str = ""):
        """A parallel map over ``ranges`` around a C++ tasklet that gets every array of
        ``inputs``/``outputs`` ({connector: array}) whole, as a pointer."""
        from daceml.autodiff import kernels
        return kernels.array_kernel(self._bp, self.label(what), ranges, inputs, outputs, code, code_global)

    def mapped(self, what: str, ranges: Dict[str, str], inputs: Dict[str, dace.Memlet],
               outputs: Dict[str, dace.Memlet], code: str):
        """A parallel map over ``ranges`` around a C++ tasklet with element memlets."""
        from daceml.autodiff import kernels
        return kernels.element_kernel(self._bp, self.label(what), ranges, inputs, outputs, code)

    def reduce_to(self, src: str, dst: str, scale: Optional[float] = None, as_shape=None) -> None:
        """``dst = scale * src`` summed over the dims along which ``dst`` broadcasts to ``src``
        (``as_shape``: index ``dst`` as this shape of the same size)."""
        from daceml.autodiff import kernels
        kernels.reduce_to(self._bp, src, dst, scale, self.label("reduce"), as_shape)

    def copy(self, src: str, dst: str) -> None:
        """Flat copy (``dst`` may have another shape of the same size; dtypes may differ)."""
        from daceml.autodiff import kernels
        kernels.copy(self._bp, src, dst)

    def fill(self, dst: str, value: float = 0) -> None:
        from daceml.autodiff import kernels
        kernels.fill(self._bp, dst, value)
