"""Reductions: ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceSumSquare, ArgMax ArgMin, CumSum.

Each is one map over the output (parallel over the kept elements) around a C++ tasklet
that loops over the reduced elements of its slice of the input.

- ``axes`` is an attribute in old opsets and a constant input in new ones (ReduceSum
  from opset 13, the others from 18); an input that is not a constant of the model is
  refused (``why_not``). No axes: all axes, or none with ``noop_with_empty_axes``, in
  which case each output element "reduces" one input element (ReduceSumSquare squares
  it, ReduceLogSum takes its log, ...), as in the ONNX reference.
- Floating-point sums accumulate in double, integer sums in 64 bits; Max and Min keep
  the element type and propagate NaN; ReduceLogSumExp subtracts the maximum before
  exponentiating. An empty reduction gives the identity of the operation (0 for sums,
  1 for products, the lowest value (-inf) for Max, -inf for LogSum and LogSumExp, NaN
  for the Mean of floats).
- ArgMax / ArgMin: ``axis``, ``keepdims``, ``select_last_index``; the first (last)
  extreme element wins, a NaN counts as the extreme (as numpy's argmax does).
- CumSum: ``axis`` a constant input; ``exclusive``, ``reverse``; it accumulates in the
  element type (float16: in float), as onnxruntime does.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import dace

from daceml.onnx.dtypes import is_float
from daceml.onnx.ops.common import add_cpp_map, constant_input, cpp, nested_sdfg, use_half_helpers
from daceml.onnx.ops.registry import Implementation, op_implementation

_UNSIGNED = (dace.uint8, dace.uint16, dace.uint32, dace.uint64, dace.bool_)


# --- shared pieces ------------------------------------------------------------------------------

def _read(dtype: dace.typeclass, expr: str) -> str:
    """C++ reading an element (float16 widened to float)."""
    return f"daceml_h2f({expr})" if dtype == dace.float16 else expr


def _write(dtype: dace.typeclass, expr: str) -> str:
    """C++ converting a value to the element type ``dtype`` for a store."""
    if dtype == dace.float16:
        return f"daceml_f2h((float)({expr}))"
    return f"({dtype.ctype})({expr})"


def _compute_type(dtype: dace.typeclass) -> str:
    """The C++ type an element is worked on in: the element type, float for float16."""
    return "float" if dtype == dace.float16 else dtype.ctype


def _loops(counters: Sequence[str], sizes: Sequence, body: str, reverse: bool = False) -> str:
    """Nested C++ for loops over ``sizes`` around ``body``."""
    code = body
    for counter, size in reversed(list(zip(counters, sizes))):
        if reverse:
            head = f"for (int64_t {counter} = {cpp(size)} - 1; {counter} >= 0; --{counter})"
        else:
            head = f"for (int64_t {counter} = 0; {counter} < {cpp(size)}; ++{counter})"
        code = f"{head} {{\n{code}\n}}"
    return code


def _offset(counters: Sequence[str], strides: Sequence) -> str:
    return " + ".join(f"{c} * {cpp(s)}" for c, s in zip(counters, strides)) or "0"


def _axes_reason(node, state, sdfg) -> Optional[str]:
    """Why the node's axes cannot be read (None if they can)."""
    if "axes" in node.in_connectors and constant_input(node, state, sdfg, "axes") is None:
        return (f"its 'axes' input is not a constant of the model (an initializer or Constant node); "
                f"daceml needs the reduced axes when it compiles {node.describe()}")
    return None


def _reduced_axes(node, state, sdfg, rank: int) -> List[int]:
    """The sorted axes ``node`` reduces ([] means none: noop_with_empty_axes)."""
    if "axes" in node.in_connectors:
        axes = [int(a) for a in np.asarray(constant_input(node, state, sdfg, "axes")).reshape(-1)]
    else:
        axes = list(getattr(node, "axes", None) or [])
    if not axes:
        return [] if getattr(node, "noop_with_empty_axes", 0) else list(range(rank))
    for a in axes:
        if not -rank <= a < rank:
            raise ValueError(f"{node.describe()}: axis {a} is out of range for an input of rank {rank}")
    return sorted({a % rank for a in axes})


def _slice_map(in_shape: Sequence, axes: List[int], keepdims: bool) -> Tuple[Dict[str, str], str, str]:
    """The map over the kept elements: (ranges, input subset (reduced axes whole), output index).
    A rank-0 tensor (stored as shape (1,)) reduces like a tensor of shape (1,): the same result."""
    kept = [a for a in range(len(in_shape)) if a not in axes]
    ranges = {f"__i{a}": f"0:{cpp(in_shape[a])}" for a in kept} or {"__i0": "0:1"}
    subset = ", ".join(f"__i{a}" if a in kept else f"0:{cpp(in_shape[a])}" for a in range(len(in_shape))) or "0"
    if keepdims:
        out_index = [f"__i{a}" if a in kept else "0" for a in range(len(in_shape))]
    else:
        out_index = [f"__i{a}" for a in kept]
    return ranges, subset, ", ".join(out_index) or "0"


# --- ReduceX --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Reduce:
    """A reduction in C++: ``acc`` starts at ``init`` and takes each element ``v``
    with ``step``; ``result`` (of ``acc`` and the count ``n``) is the output."""
    init: str
    step: str
    result: str = "acc"
    #: the accumulator keeps the element type (Max, Min) rather than widening
    keeps_type: bool = False
    #: the result is computed in floating point also for integer inputs
    float_result: bool = False


_NAN_MAX = "if (v > acc || v != v) acc = v;"
_NAN_MIN = "if (v < acc || v != v) acc = v;"

REDUCTIONS = {
    "ReduceSum": _Reduce("0", "acc += v;"),
    # the mean of nothing: NaN for floats, 0 for integers (no division by zero)
    "ReduceMean": _Reduce("0", "acc += v;", "n > 0 ? acc / (ACC)n : std::numeric_limits<ACC>::quiet_NaN()"),
    "ReduceProd": _Reduce("1", "acc *= v;"),
    "ReduceMax": _Reduce("LOWEST", _NAN_MAX, keeps_type=True),
    "ReduceMin": _Reduce("HIGHEST", _NAN_MIN, keeps_type=True),
    "ReduceL1": _Reduce("0", "acc += v < 0 ? -v : v;"),
    "ReduceL2": _Reduce("0", "acc += (ACC)v * (ACC)v;", "std::sqrt((double)acc)", float_result=True),
    "ReduceSumSquare": _Reduce("0", "acc += (ACC)v * (ACC)v;"),
    "ReduceLogSum": _Reduce("0", "acc += v;", "std::log((double)acc)", float_result=True),
    # one pass for the maximum m, a second for the sum of exp(v - m)
    "ReduceLogSumExp": _Reduce("0", "acc += std::exp((double)v - (double)m);",
                               "std::isinf((double)m) ? (double)m : (double)m + std::log((double)acc)",
                               float_result=True),
}


def _accumulator(spec: _Reduce, dtype: dace.typeclass) -> str:
    if spec.keeps_type:
        return _compute_type(dtype)
    if is_float(dtype) or spec.float_result:
        return "double"
    return "uint64_t" if dtype in _UNSIGNED else "int64_t"


def _limit(dtype: dace.typeclass, lowest: bool) -> str:
    t = _compute_type(dtype)
    if is_float(dtype):
        return f"{'-' if lowest else ''}std::numeric_limits<{t}>::infinity()"
    return f"std::numeric_limits<{t}>::{'lowest' if lowest else 'max'}()"


def _output(out_dtype: dace.typeclass) -> str:
    """The C++ lvalue a tasklet stores its result in: a float16 output is written through a
    pointer (DaCe's CPU half has no default constructor for a by-value connector)."""
    return "__out[0]" if out_dtype == dace.float16 else "__out"


def _finish(nsdfg: dace.SDFG, tasklet, in_dtype: dace.typeclass, out_dtype: dace.typeclass) -> None:
    """Pointer connectors for the input slice (and a float16 output), helpers for float16."""
    tasklet.in_connectors["__in"] = dace.pointer(in_dtype)
    if out_dtype == dace.float16:
        tasklet.out_connectors["__out"] = dace.pointer(out_dtype)
    if dace.float16 in (in_dtype, out_dtype):
        use_half_helpers(nsdfg)


def _keepdims(node) -> bool:
    return bool(node.keepdims if node.keepdims is not None else 1)


def _expand_reduce(node, state, sdfg) -> dace.SDFG:
    spec = REDUCTIONS[node.schema.name]
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    in_desc, out_desc = descs["data"], descs["reduced"]
    axes = _reduced_axes(node, state, sdfg, len(in_desc.shape))
    ranges, subset, out_index = _slice_map(in_desc.shape, axes, _keepdims(node))
    dtype = in_desc.dtype
    acc_type = _accumulator(spec, dtype)
    sizes = [in_desc.shape[a] for a in axes]
    counters = [f"__r{k}" for k in range(len(axes))]
    element = _read(dtype, f"__in[{_offset(counters, [in_desc.strides[a] for a in axes])}]")
    read = f"const {_compute_type(dtype)} v = {element};"

    def fill(text: str) -> str:
        return (text.replace("ACC", acc_type).replace("LOWEST", _limit(dtype, True))
                .replace("HIGHEST", _limit(dtype, False)))

    code = ["const int64_t n = " + (" * ".join(f"(int64_t){cpp(s)}" for s in sizes) or "1") + ";"]
    if node.schema.name == "ReduceLogSumExp":
        code += [f"{_compute_type(dtype)} m = {_limit(dtype, True)};",
                 _loops(counters, sizes, f"{read}\n{_NAN_MAX.replace('acc', 'm')}")]
    code += [f"{acc_type} acc = {fill(spec.init)};", _loops(counters, sizes, f"{read}\n{fill(spec.step)}"),
             f"{_output(out_desc.dtype)} = {_write(out_desc.dtype, fill(spec.result))};"]
    tasklet, _, _ = add_cpp_map(nstate, f"{node.label}_{node.schema.name}", ranges,
                                {"__in": dace.Memlet(f"data[{subset}]")},
                                {"__out": dace.Memlet(f"reduced[{out_index}]")}, "\n".join(code))
    _finish(nsdfg, tasklet, dtype, out_desc.dtype)
    return nsdfg


for _op in REDUCTIONS:
    op_implementation(_op, "pure")(type(f"Pure{_op}", (Implementation, ), {
        "__doc__": f"{_op}: a map over the output, a C++ loop over the reduced elements.",
        "__module__": __name__,
        "why_not": staticmethod(_axes_reason),
        "expansion": staticmethod(_expand_reduce),
    }))


# --- ArgMax, ArgMin -----------------------------------------------------------------------------

def _expand_arg(node, state, sdfg, greater: str) -> dace.SDFG:
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    in_desc = descs["data"]
    rank = len(in_desc.shape)
    axis = node.axis or 0
    if not -rank <= axis < rank:
        raise ValueError(f"{node.describe()}: axis {axis} is out of range for an input of rank {rank}")
    axis %= rank
    ranges, subset, out_index = _slice_map(in_desc.shape, [axis], _keepdims(node))
    dtype = in_desc.dtype
    t = _compute_type(dtype)
    size, stride = in_desc.shape[axis], in_desc.strides[axis]
    last = "true" if node.select_last_index else "false"
    code = f"""
int64_t index = 0;
if ({cpp(size)} > 0) {{
    {t} best = {_read(dtype, '__in[0]')};
    for (int64_t k = 1; k < {cpp(size)}; ++k) {{
        const {t} v = {_read(dtype, f'__in[k * {cpp(stride)}]')};
        const bool better = (v {greater} best) || (v != v && best == best);
        const bool same = (v == best) || (v != v && best != best);
        if (better || ({last} && same)) {{
            best = v;
            index = k;
        }}
    }}
}}
{_output(descs["reduced"].dtype)} = index;
"""
    tasklet, _, _ = add_cpp_map(nstate, f"{node.label}_{node.schema.name}", ranges,
                                {"__in": dace.Memlet(f"data[{subset}]")},
                                {"__out": dace.Memlet(f"reduced[{out_index}]")}, code.strip())
    _finish(nsdfg, tasklet, dtype, descs["reduced"].dtype)
    return nsdfg


@op_implementation("ArgMax", name="pure")
class PureArgMax(Implementation):
    """ArgMax: a map over the output, a C++ loop along the axis."""

    @staticmethod
    def expansion(node, state, sdfg):
        return _expand_arg(node, state, sdfg, ">")


@op_implementation("ArgMin", name="pure")
class PureArgMin(Implementation):
    """ArgMin: a map over the output, a C++ loop along the axis."""

    @staticmethod
    def expansion(node, state, sdfg):
        return _expand_arg(node, state, sdfg, "<")


# --- CumSum ---------------------------------------------------------------------------------------

@op_implementation("CumSum", name="pure")
class PureCumSum(Implementation):
    """CumSum: a map over the elements off the axis, a C++ running sum along it."""

    @staticmethod
    def why_not(node, state, sdfg):
        if constant_input(node, state, sdfg, "axis") is None:
            return (f"its 'axis' input is not a constant of the model (an initializer or Constant node); "
                    f"daceml needs the axis when it compiles {node.describe()}")
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x, y = descs["x"], descs["y"]
        rank = len(x.shape)
        axis = int(np.asarray(constant_input(node, state, sdfg, "axis")).reshape(-1)[0])
        if not -rank <= axis < rank:
            raise ValueError(f"{node.describe()}: axis {axis} is out of range for an input of rank {rank}")
        axis %= rank
        dims = [a for a in range(rank) if a != axis]
        ranges = {f"__i{a}": f"0:{cpp(x.shape[a])}" for a in dims} or {"__i0": "0:1"}

        def subset(desc):
            return ", ".join(f"__i{a}" if a != axis else f"0:{cpp(desc.shape[a])}" for a in range(rank))

        t = _compute_type(x.dtype)
        value = _read(x.dtype, f"__in[k * {cpp(x.strides[axis])}]")
        store = f"__out[k * {cpp(y.strides[axis])}] = {_write(y.dtype, 'acc')};"
        body = (f"{store}\nacc += {value};" if node.exclusive else f"acc += {value};\n{store}")
        code = f"{t} acc = 0;\n" + _loops(["k"], [x.shape[axis]], body, reverse=bool(node.reverse))
        tasklet, _, _ = add_cpp_map(nstate, f"{node.label}_CumSum", ranges, {"__in": dace.Memlet(f"x[{subset(x)}]")},
                                    {"__out": dace.Memlet(f"y[{subset(y)}]")}, code)
        tasklet.in_connectors["__in"] = dace.pointer(x.dtype)
        tasklet.out_connectors["__out"] = dace.pointer(y.dtype)
        if x.dtype == dace.float16:
            use_half_helpers(nsdfg)
        return nsdfg
