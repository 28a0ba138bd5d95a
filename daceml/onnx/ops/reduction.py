"""Reductions: ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceSumSquare, ArgMax ArgMin, CumSum CumProd.

Each is one map over the output (parallel over the kept elements) around a C++ tasklet
that loops over the reduced elements of its slice of the input.

- ``axes`` is an attribute in old opsets and an input in new ones (ReduceSum from
  opset 13, the others from 18). No axes: all axes, or none with
  ``noop_with_empty_axes``, in which case each output element "reduces" one input
  element (ReduceSumSquare squares it, ReduceLogSum takes its log, ...), as in the
  ONNX reference.
- An ``axes`` input that is not a constant of the model: an empty one (shape (0,)) is
  known when the node is expanded; otherwise the axes follow from the input and output
  shapes where only one set of reduced axes fits them (always with ``keepdims=1``;
  axes of size 1 may be reduced or not, with the same result), and else the kernel
  reads the axes at run time: one map over the output elements, each decoding its
  kept indices and walking the reduced ones (the output shape, known from the model,
  must be the one the run-time axes give).
- Floating-point sums accumulate in double, integer sums in 64 bits; Max and Min keep
  the element type and propagate NaN; ReduceLogSumExp subtracts the maximum before
  exponentiating. An empty reduction gives the identity of the operation (0 for sums,
  1 for products, the lowest value (-inf) for Max, -inf for LogSum and LogSumExp, NaN
  for the Mean of floats).
- ArgMax / ArgMin: ``axis``, ``keepdims``, ``select_last_index``; the first (last)
  extreme element wins, a NaN counts as the extreme (as numpy's argmax does).
- CumSum, CumProd: ``exclusive``, ``reverse``; they accumulate in the element type
  (float16: in float), as onnxruntime does. The ``axis`` input is folded in where it
  is a constant of the model, else read at run time (a map over all elements, the
  first of each line along the axis scanning it).
"""
import dataclasses
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import dace
from dace import symbolic

from daceml.onnx.dtypes import is_float
from daceml.onnx.ops.common import (add_cpp_array_kernel, add_cpp_map, constant_input, cpp, nested_sdfg,
                                    pointer_connectors, use_half_helpers)
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


def _loops(counters: Sequence[str], sizes: Sequence, body: str, reverse: bool = False, simd_sum: str = "") -> str:
    """Nested C++ for loops over ``sizes`` around ``body``. ``simd_sum`` names a variable the body
    only adds to: the innermost loop is then an OpenMP SIMD reduction over it (vectorized; the
    additions are reordered, as in every vectorized or parallel sum)."""
    code = body
    for i, (counter, size) in enumerate(reversed(list(zip(counters, sizes)))):
        if reverse:
            head = f"for (int64_t {counter} = {cpp(size)} - 1; {counter} >= 0; --{counter})"
        else:
            head = f"for (int64_t {counter} = 0; {counter} < {cpp(size)}; ++{counter})"
        if i == 0 and simd_sum:
            head = f"#pragma omp simd reduction(+:{simd_sum})\n{head}"
        code = f"{head} {{\n{code}\n}}"
    return code


def _offset(counters: Sequence[str], strides: Sequence) -> str:
    return " + ".join(f"{c} * {cpp(s)}" for c, s in zip(counters, strides)) or "0"


def _same(a, b) -> bool:
    """Whether two sizes (ints or symbolic expressions) are certainly equal."""
    try:
        return bool(symbolic.simplify(a - b) == 0)
    except TypeError:
        return a == b


def _axes_from_shapes(in_shape: Sequence, out_shape: Sequence, keepdims: bool) -> Optional[List[int]]:
    """The reduced axes that turn ``in_shape`` into ``out_shape``, if the shapes leave one
    choice (up to axes of size 1, which give the same result reduced or not); else None."""
    rank = len(in_shape)
    if keepdims:
        if len(out_shape) != rank:
            return None
        axes = []
        for a, (i, o) in enumerate(zip(in_shape, out_shape)):
            if _same(i, o):
                continue
            if not _same(o, 1):
                return None
            axes.append(a)
        return axes
    ranks = {len(out_shape)}
    if len(out_shape) == 1 and _same(out_shape[0], 1):
        ranks.add(0)  # a rank-0 output is stored as shape (1,)
    fits = {}
    for r in ranks:
        if r > rank:
            continue
        for kept in itertools.combinations(range(rank), r):
            if r == 0 or all(_same(in_shape[k], o) for k, o in zip(kept, out_shape)):
                removed = [a for a in range(rank) if a not in kept]
                key = frozenset(a for a in removed if not _same(in_shape[a], 1))
                fits.setdefault(key, removed)
    return next(iter(fits.values())) if len(fits) == 1 else None


def _reduced_axes(node, state, sdfg, rank: int, out_shape: Optional[Sequence] = None) -> Optional[List[int]]:
    """The sorted axes ``node`` reduces ([] means none: noop_with_empty_axes), or None if
    they are known only at run time (a non-constant ``axes`` input the shapes do not settle)."""
    if "axes" in node.in_connectors:
        value = constant_input(node, state, sdfg, "axes")
        if value is None:
            if _same(node.in_desc(state, sdfg, "axes").total_size, 0):
                value = []
            elif out_shape is None:
                return None
            else:
                in_shape = node.in_desc(state, sdfg, "data").shape
                return _axes_from_shapes(in_shape, out_shape, _keepdims(node))
        axes = [int(a) for a in np.asarray(value).reshape(-1)]
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


def unknown_output_sizes(node, state, sdfg) -> Optional[str]:
    """Why the node's output sizes are unknown (None if they are known): an output dim that is
    a symbol no graph input or weight defines (onnx's ``unk__<k>`` for a data-dependent size),
    which the caller could not allocate. Checked in the model's own SDFG only."""
    if getattr(sdfg, "parent", None) is not None:
        return None
    symbols = {conn: {str(sym) for sym in node.out_desc(state, sdfg, conn).free_symbols}
               for conn in node.out_connectors}
    if not any(symbols.values()):
        return None
    written = {n.data for st in sdfg.states() for n in st.data_nodes() if st.in_degree(n) > 0}
    bound = set()
    for name, desc in sdfg.arrays.items():
        if not desc.transient and name not in written:
            bound |= {str(sym) for sym in desc.free_symbols}
    for conn in sorted(symbols):
        unknown = sorted(symbols[conn] - bound)
        if unknown:
            return (f"the size of output {conn!r} ({', '.join(unknown)}) depends on the input values; daceml "
                    f"allocates outputs before the call, so it needs the output shape in the model (e.g. a "
                    f"declared graph output) or constant inputs that settle it")
    return None


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
    axes = _reduced_axes(node, state, sdfg, len(node.in_desc(state, sdfg, "data").shape),
                         node.out_desc(state, sdfg, "reduced").shape)
    if axes is None:
        pointer_connectors(node, state, sdfg)  # the axes array may have one element
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        _runtime_reduce(node, nsdfg, nstate, descs, spec)
        return nsdfg
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    in_desc, out_desc = descs["data"], descs["reduced"]
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
    simd = "acc" if spec.step.startswith("acc += ") else ""
    code += [f"{acc_type} acc = {fill(spec.init)};", _loops(counters, sizes, f"{read}\n{fill(spec.step)}", simd_sum=simd),
             f"{_output(out_desc.dtype)} = {_write(out_desc.dtype, fill(spec.result))};"]
    tasklet, _, _ = add_cpp_map(nstate, f"{node.label}_{node.schema.name}", ranges,
                                {"__in": dace.Memlet(f"data[{subset}]")},
                                {"__out": dace.Memlet(f"reduced[{out_index}]")}, "\n".join(code))
    _finish(nsdfg, tasklet, dtype, out_desc.dtype)
    return nsdfg


def _int_array(name: str, values: Sequence) -> str:
    return f"const int64_t {name}[] = {{{', '.join(cpp(v) for v in values)}}};"


def _decompose(index: str, shape: Sequence, strides: Sequence, target: str) -> str:
    """C++ adding to ``target`` the offset (by ``strides``) of flat row-major ``index`` over ``shape``."""
    lines = [f"int64_t {target} = 0;", "{", f"int64_t __rem = {index};"]
    for size, stride in reversed(list(zip(shape, strides))):
        lines.append(f"{target} += (__rem % {cpp(size)}) * {cpp(stride)}; __rem /= {cpp(size)};")
    return "\n".join(lines + ["}"])


def _runtime_reduce(node, nsdfg: dace.SDFG, nstate: dace.SDFGState, descs, spec: _Reduce) -> None:
    """The reduction with axes read at run time: a map over the output elements; each marks
    the reduced axes, finds its slice of the input from its kept indices (in order) and
    walks the reduced elements with an odometer."""
    in_desc, out_desc = descs["data"], descs["reduced"]
    dtype = in_desc.dtype
    rank = len(in_desc.shape)
    acc_type = _accumulator(spec, dtype)
    t = _compute_type(dtype)

    def fill(text: str) -> str:
        return (text.replace("ACC", acc_type).replace("LOWEST", _limit(dtype, True))
                .replace("HIGHEST", _limit(dtype, False)))

    def walk(body: str) -> str:
        return f"""{{
int64_t __cnt[{rank}] = {{0}};
int64_t __off = __base;
for (int64_t __j = 0; __j < n; ++__j) {{
    const {t} v = {_read(dtype, "__in[__off]")};
    {body}
    for (int64_t __d = {rank} - 1; __d >= 0; --__d) {{
        if (!__red[__d]) continue;
        __off += __st[__d];
        if (++__cnt[__d] < __shp[__d]) break;
        __off -= __cnt[__d] * __st[__d];
        __cnt[__d] = 0;
    }}
}}
}}"""

    noop = "true" if getattr(node, "noop_with_empty_axes", 0) else "false"
    code = [_int_array("__shp", in_desc.shape), _int_array("__st", in_desc.strides),
            f"bool __red[{rank}];",
            f"const int64_t __nax = {cpp(descs['axes'].total_size)};",
            f"for (int64_t __d = 0; __d < {rank}; ++__d) __red[__d] = __nax == 0 && !{noop};",
            "for (int64_t __k = 0; __k < __nax; ++__k) {",
            "    int64_t __a = (int64_t)__axes[__k];",
            f"    if (__a < 0) __a += {rank};",
            f"    if (__a >= 0 && __a < {rank}) __red[__a] = true;",
            "}",
            "int64_t __base = 0, n = 1;",
            "{",
            "int64_t __rem = __o;",
            f"for (int64_t __d = {rank} - 1; __d >= 0; --__d) {{",
            "    if (__red[__d]) { n *= __shp[__d]; continue; }",
            "    __base += (__rem % __shp[__d]) * __st[__d];",
            "    __rem /= __shp[__d];",
            "}",
            "}",
            _decompose("__o", out_desc.shape, out_desc.strides, "__oofs")]
    if node.schema.name == "ReduceLogSumExp":
        code += [f"{t} m = {_limit(dtype, True)};", walk(_NAN_MAX.replace("acc", "m"))]
    code += [f"{acc_type} acc = {fill(spec.init)};", walk(fill(spec.step)),
             f"__out[__oofs] = {_write(out_desc.dtype, fill(spec.result))};"]
    add_cpp_array_kernel(nstate, f"{node.label}_{node.schema.name}", {"__o": f"0:{cpp(out_desc.total_size)}"},
                         descs, {"__in": "data", "__axes": "axes"}, {"__out": "reduced"}, "\n".join(code))
    if dace.float16 in (dtype, out_desc.dtype):
        use_half_helpers(nsdfg)


for _op in REDUCTIONS:
    op_implementation(_op, "pure")(type(f"Pure{_op}", (Implementation, ), {
        "__doc__": f"{_op}: a map over the output, a C++ loop over the reduced elements.",
        "__module__": __name__,
        "why_not": staticmethod(unknown_output_sizes),
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


# --- CumSum, CumProd -------------------------------------------------------------------------------

def _expand_cumulative(node, state, sdfg, init: str, step: str) -> dace.SDFG:
    """A running ``acc`` (from ``init``, taking each element ``v`` with ``step``) along the axis."""
    axis_value = constant_input(node, state, sdfg, "axis")
    if axis_value is None:
        pointer_connectors(node, state, sdfg)  # the axis is an array of one element
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    x, y = descs["x"], descs["y"]
    rank = len(x.shape)
    t = _compute_type(x.dtype)
    value = f"const {t} v = {_read(x.dtype, '__in[k * ISTRIDE]')};"
    store = f"__out[k * OSTRIDE] = {_write(y.dtype, 'acc')};"
    body = (f"{store}\n{value}\n{step}" if node.exclusive else f"{value}\n{step}\n{store}")
    if axis_value is not None:
        axis = int(np.asarray(axis_value).reshape(-1)[0])
        if not -rank <= axis < rank:
            raise ValueError(f"{node.describe()}: axis {axis} is out of range for an input of rank {rank}")
        axis %= rank
        dims = [a for a in range(rank) if a != axis]
        ranges = {f"__i{a}": f"0:{cpp(x.shape[a])}" for a in dims} or {"__i0": "0:1"}

        def subset(desc):
            return ", ".join(f"__i{a}" if a != axis else f"0:{cpp(desc.shape[a])}" for a in range(rank))

        loop_body = body.replace("ISTRIDE", cpp(x.strides[axis])).replace("OSTRIDE", cpp(y.strides[axis]))
        code = f"{t} acc = {init};\n" + _loops(["k"], [x.shape[axis]], loop_body, reverse=bool(node.reverse))
        tasklet, _, _ = add_cpp_map(nstate, f"{node.label}_{node.schema.name}", ranges,
                                    {"__in": dace.Memlet(f"x[{subset(x)}]")},
                                    {"__out": dace.Memlet(f"y[{subset(y)}]")}, code)
        tasklet.in_connectors["__in"] = dace.pointer(x.dtype)
        tasklet.out_connectors["__out"] = dace.pointer(y.dtype)
    else:
        # the axis at run time: every element finds its place; the first of each line scans it
        loop_body = body.replace("ISTRIDE", "__ist[__a]").replace("OSTRIDE", "__ost[__a]")
        if node.reverse:
            loop = f"for (int64_t k = __shp[__a] - 1; k >= 0; --k) {{\n{loop_body}\n}}"
        else:
            loop = f"for (int64_t k = 0; k < __shp[__a]; ++k) {{\n{loop_body}\n}}"
        code = "\n".join([
            _int_array("__shp", x.shape), _int_array("__ist", x.strides), _int_array("__ost", y.strides),
            "int64_t __a = (int64_t)__axis[0];",
            f"if (__a < 0) __a += {rank};",
            "int64_t __rem = __o, __pos = 0, __ib = 0, __ob = 0;",
            f"for (int64_t __d = {rank} - 1; __d >= 0; --__d) {{",
            "    const int64_t __i = __rem % __shp[__d];",
            "    __rem /= __shp[__d];",
            "    if (__d == __a) __pos = __i; else { __ib += __i * __ist[__d]; __ob += __i * __ost[__d]; }",
            "}",
            f"if (__pos == 0 && __a >= 0 && __a < {rank}) {{",
            "    const auto* __in = __x + __ib;",
            "    auto* __out = __y + __ob;",
            f"    {t} acc = {init};",
            loop,
            "}"])
        add_cpp_array_kernel(nstate, f"{node.label}_{node.schema.name}", {"__o": f"0:{cpp(x.total_size)}"},
                             descs, {"__x": "x", "__axis": "axis"}, {"__y": "y"}, code)
    if x.dtype == dace.float16:
        use_half_helpers(nsdfg)
    return nsdfg


@op_implementation("CumSum", name="pure")
class PureCumSum(Implementation):
    """CumSum: a map over the elements off the axis, a C++ running sum along it."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        return _expand_cumulative(node, state, sdfg, "0", "acc += v;")


@op_implementation("CumProd", name="pure")
class PureCumProd(Implementation):
    """CumProd: a map over the elements off the axis, a C++ running product along it."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        return _expand_cumulative(node, state, sdfg, "1", "acc *= v;")
