"""Shape and indexing ops: data movement without arithmetic.

Ops: Reshape Flatten Squeeze Unsqueeze (flat copies: the arrays are contiguous and
the output shape is known from shape inference), Transpose Concat Split Slice
Expand Tile Pad DepthToSpace SpaceToDepth Trilu (maps over the output that read
the input at a computed offset), Gather GatherElements GatherND OneHot (indices
read at run time, negative ones wrap), ScatterElements ScatterND (copy, then a
sequential scatter loop with the ``reduction`` of the node), Shape Size Range
ConstantOfShape, Cast CastLike.

Every implementation is a nested SDFG with maps around C++ tasklets that get the
whole arrays as pointers and index them with the arrays' strides (so sizes may be
symbolic). Index parameters (Slice's starts/axes/steps, Pad's pads, Gather's
indices, ...) are read at run time unless they are constants of the model, which
are folded into the code.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
from onnx import numpy_helper

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx.ops.common import (add_cpp_array_kernel, add_helper_code, constant_input, is_one, map_params,
                                    map_ranges, nested_sdfg, pointer_connectors, use_half_helpers)
from daceml.onnx.ops.common import cpp as cexpr
from daceml.onnx.ops.registry import Implementation, op_implementation


#: ``daceml_convert<To>(x)``: a C++ value conversion that goes through ``daceml_h2f`` /
#: ``daceml_f2h`` for float16 (DaCe's CPU half type converts wrongly) and is
#: ``static_cast`` otherwise (to bool: ``x != 0``).
CONVERT_HELPERS = r"""
template <typename To, typename From> struct DacemlConvert {
    static inline To run(From x) { return static_cast<To>(x); }
};
template <typename From> struct DacemlConvert<dace::float16, From> {
    static inline dace::float16 run(From x) { return daceml_f2h(static_cast<float>(x)); }
};
template <typename To> struct DacemlConvert<To, dace::float16> {
    static inline To run(dace::float16 x) { return static_cast<To>(daceml_h2f(x)); }
};
template <> struct DacemlConvert<dace::float16, dace::float16> {
    static inline dace::float16 run(dace::float16 x) { return x; }
};
template <typename To, typename From> static inline To daceml_convert(From x) {
    return DacemlConvert<To, From>::run(x);
}
"""


def use_convert(nsdfg: dace.SDFG) -> None:
    """Makes ``daceml_convert`` (:data:`CONVERT_HELPERS`) available to the code of ``nsdfg``."""
    use_half_helpers(nsdfg)
    add_helper_code(nsdfg, "convert", CONVERT_HELPERS)


def expansion_sdfg(node, state, sdfg):
    """The expansion's nested SDFG; every connector a pointer (also for one-element arrays);
    ``daceml_convert`` available."""
    pointer_connectors(node, state, sdfg)
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    use_convert(nsdfg)
    return nsdfg, nstate, descs


# --- helpers -------------------------------------------------------------------------------------


def _i64(v: int) -> str:
    v = int(v)
    return "INT64_MIN" if v == -2**63 else f"{v}LL"


def offset(desc, index: Sequence[str]) -> str:
    """C++ offset of element ``index`` (C++ expressions, one per dim) of ``desc``."""
    parts = [f"({i}) * {cexpr(s)}" for i, s in zip(index, desc.strides) if str(i) != "0"]
    return " + ".join(parts) or "0"


def _index_params(shape) -> List[str]:
    """Map parameter names over ``shape`` (one for a rank-0 array stored as (1,))."""
    return map_params(max(1, len(shape)))


def output_kernel(nstate, descs, name: str, out: str, inputs: Dict[str, str], body: str) -> None:
    """A map over the elements of ``out`` around a C++ tasklet: ``body`` sees the map parameters
    ``__i0, __i1, ...``, input pointers (``inputs``: connector -> array) and ``__out``."""
    shape = descs[out].shape
    add_cpp_array_kernel(nstate, name, map_ranges(shape), descs, inputs, {"__out": out}, body)


def single_kernel(nstate, descs, name: str, inputs: Dict[str, str], outputs: Dict[str, str], body: str) -> None:
    """One C++ tasklet (in a one-iteration map) for sequential work."""
    add_cpp_array_kernel(nstate, name, {"__once": "0:1"}, descs, inputs, outputs, body)


def _copy_nested(node, state, sdfg, src: str, dst: str) -> dace.SDFG:
    """Flat element-by-element copy of ``src`` into ``dst`` (same number of elements)."""
    nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
    total = descs[dst].total_size
    add_cpp_array_kernel(nstate, f"{node.label}_copy", {"__k": f"0:{total}"}, descs, {"__in": src}, {"__out": dst},
                         "__out[__k] = __in[__k];")
    return nsdfg


def _axis(node, axis: Optional[int], rank: int, default: int = 0, what: str = "axis") -> int:
    axis = default if axis is None else int(axis)
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise InvalidNodeError(f"{node.describe()}: {what} {axis} is out of range for a tensor of rank {rank}")
    return axis % max(rank, 1)


def _attr(node, name: str, default=None):
    """An attribute of the node if its opset version has it (else ``default``); None -> default."""
    if name not in node.schema.attributes:
        return default
    value = getattr(node, name)
    return default if value is None else value


def _values(node, state, sdfg, conn: str, attr: Optional[str] = None) -> Optional[List[int]]:
    """Integer values from constant input ``conn`` or, in old opsets, attribute ``attr``."""
    if conn in node.in_connectors:
        v = constant_input(node, state, sdfg, conn)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]
    if attr is not None and attr in node.schema.attributes and getattr(node, attr) is not None:
        return [int(x) for x in getattr(node, attr)]
    return None


def _cast_expr(value: str, dtype: dace.typeclass) -> str:
    return f"daceml_convert<{dtype.ctype}>({value})"


# --- flat copies ---------------------------------------------------------------------------------

def _register_copy(op: str, src: str, dst: str, doc: str):

    @op_implementation(op, name="pure")
    class FlatCopy(Implementation):
        __doc__ = doc

        @staticmethod
        def expansion(node, state, sdfg):
            return _copy_nested(node, state, sdfg, src, dst)

    FlatCopy.__name__ = FlatCopy.__qualname__ = f"FlatCopy{op}"
    return FlatCopy


_register_copy("Reshape", "data", "reshaped", "Reshape: flat copy (the output shape comes from shape inference).")
_register_copy("Flatten", "input", "output", "Flatten: flat copy into the 2-D output.")
_register_copy("Squeeze", "data", "squeezed", "Squeeze: flat copy.")
_register_copy("Unsqueeze", "data", "expanded", "Unsqueeze: flat copy.")


# --- permutations and slices ---------------------------------------------------------------------

@op_implementation("Transpose", name="pure")
class PureTranspose(Implementation):
    """Transpose: a map over the output reading the input at the permuted index."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["data"], descs["transposed"]
        rank = len(din.shape)
        perm = list(node.perm) if node.perm else list(reversed(range(rank)))
        if sorted(perm) != list(range(rank)):
            raise InvalidNodeError(f"{node.describe()}: perm {perm} is not a permutation of {rank} axes")
        p = _index_params(dout.shape)
        src = [None] * rank
        for d, axis in enumerate(perm):
            src[axis] = p[d]
        body = f"__out[{offset(dout, p)}] = __in[{offset(din, src)}];"
        output_kernel(nstate, descs, f"{node.label}_transpose", "transposed", {"__in": "data"}, body)
        return nsdfg


@op_implementation("Concat", name="pure")
class PureConcat(Implementation):
    """Concat: one map per input, each writing its slab of the output."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dout = descs["concat_result"]
        rank = len(dout.shape)
        axis = _axis(node, node.axis, rank)
        start = 0
        for k, conn in enumerate(node.input_connectors()):
            din = descs[conn]
            p = _index_params(din.shape)
            dst = list(p)
            if rank:
                dst[axis] = f"{p[axis]} + {cexpr(start)}"
            body = f"__out[{offset(dout, dst)}] = __in[{offset(din, p)}];"
            add_cpp_array_kernel(nstate, f"{node.label}_concat{k}", map_ranges(din.shape), descs, {"__in": conn},
                                 {"__out": "concat_result"}, body)
            start = start + din.shape[axis]
        return nsdfg


@op_implementation("Split", name="pure")
class PureSplit(Implementation):
    """Split: one map per output (the split sizes are the outputs' sizes along the axis)."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din = descs["input"]
        rank = len(din.shape)
        axis = _axis(node, node.axis, rank)
        start = 0
        for conn in node.output_connectors():
            dout = descs[conn]
            p = _index_params(dout.shape)
            src = list(p)
            src[axis] = f"{p[axis]} + {cexpr(start)}"
            body = f"__out[{offset(dout, p)}] = __in[{offset(din, src)}];"
            output_kernel(nstate, descs, f"{node.label}_{conn}", conn, {"__in": "input"}, body)
            start = start + dout.shape[axis]
        return nsdfg


def _slice_params(node, state, sdfg):
    """(starts, axes, steps) lists if they are all known at expansion time, else None."""
    starts = _values(node, state, sdfg, "starts", "starts")
    axes = _values(node, state, sdfg, "axes", "axes")
    steps = _values(node, state, sdfg, "steps") if "steps" in node.in_connectors else None
    if starts is None or (axes is None and "axes" in node.in_connectors) or \
            (steps is None and "steps" in node.in_connectors):
        return None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    return starts, axes, steps


def _runtime_axes(din, rank: int, count: str, axis: str, per_axis: List[str]) -> List[str]:
    """C++ lines: ``int64_t __dims[rank]``, then a loop over ``count`` entries whose axis is
    ``axis`` (an expression of ``__k``, wrapped if negative) running ``per_axis``."""
    dims = ", ".join(cexpr(d) for d in din.shape)
    return [f"const int64_t __dims[{rank}] = {{{dims}}};",
            f"for (int64_t __k = 0; __k < {count}; ++__k) {{",
            f"    int64_t __ax = (int64_t)({axis}); if (__ax < 0) __ax += {rank};",
            "    const int64_t __dim = __dims[__ax];"] + ["    " + line for line in per_axis] + ["}"]


_CLAMP_START = ("if (__s < 0) __s += __dim; "
                "__s = std::max<int64_t>(0, std::min<int64_t>(__s, __step > 0 ? __dim : __dim - 1));")


@op_implementation("Slice", name="pure")
class PureSlice(Implementation):
    """Slice (negative values, clamping, negative steps) as a map over the output reading input
    index ``start + i * step`` per axis. Constant starts/axes/steps are folded into the code;
    others are read at run time (the output shape is known from shape inference)."""

    @staticmethod
    def why_not(node, state, sdfg):
        params = _slice_params(node, state, sdfg)
        if params is not None and any(step == 0 for step in params[2]):
            return "a step of 0 is invalid"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        params = _slice_params(node, state, sdfg)
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["data"], descs["output"]
        rank = len(din.shape)
        p = _index_params(dout.shape)
        inputs = {"__in": "data"}
        lines = []
        if params is not None:
            src = list(p)
            for k, (start, axis, step) in enumerate(zip(*params)):
                axis = _axis(node, axis, rank, what="axis")
                lines.append(f"int64_t __s{k}; {{ const int64_t __dim = {cexpr(din.shape[axis])}, __step = {step}; "
                             f"int64_t __s = {_i64(start)}; {_CLAMP_START} __s{k} = __s; }}")
                src[axis] = f"__s{k} + {p[axis]} * {_i64(step)}"
        else:
            count = cexpr(descs["starts"].total_size)
            for conn in ("starts", "axes", "steps"):
                if conn in node.in_connectors:
                    inputs[f"__{conn}"] = conn
            axis = "__axes[__k]" if "axes" in node.in_connectors else "__k"
            step = "(int64_t)__steps[__k]" if "steps" in node.in_connectors else "1"
            lines.append(f"int64_t __st[{rank}], __sp[{rank}];")
            lines.append(f"for (int __d = 0; __d < {rank}; ++__d) {{ __st[__d] = 0; __sp[__d] = 1; }}")
            lines += _runtime_axes(din, rank, count, axis, [
                f"const int64_t __step = {step}; int64_t __s = (int64_t)__starts[__k]; {_CLAMP_START}",
                "__st[__ax] = __s; __sp[__ax] = __step;"])
            src = [f"__st[{d}] + {p[d]} * __sp[{d}]" for d in range(rank)]
        lines.append(f"__out[{offset(dout, p)}] = __in[{offset(din, src)}];")
        output_kernel(nstate, descs, f"{node.label}_slice", "output", inputs, "\n".join(lines))
        return nsdfg


@op_implementation("Expand", name="pure")
class PureExpand(Implementation):
    """Expand: numpy broadcast of the input to the output shape."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["input"], descs["output"]
        p = _index_params(dout.shape)
        lead = len(dout.shape) - len(din.shape)
        src = ["0" if is_one(s) else p[lead + d] for d, s in enumerate(din.shape)]
        body = f"__out[{offset(dout, p)}] = __in[{offset(din, src)}];"
        output_kernel(nstate, descs, f"{node.label}_expand", "output", {"__in": "input"}, body)
        return nsdfg


@op_implementation("Tile", name="pure")
class PureTile(Implementation):
    """Tile: output index modulo the input size per axis."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["input"], descs["output"]
        p = _index_params(dout.shape)
        src = [f"{p[d]} % {cexpr(s)}" for d, s in enumerate(din.shape)]
        body = f"__out[{offset(dout, p)}] = __in[{offset(din, src)}];"
        output_kernel(nstate, descs, f"{node.label}_tile", "output", {"__in": "input"}, body)
        return nsdfg


@op_implementation("Pad", name="pure")
class PurePad(Implementation):
    """Pad (constant, reflect, edge, wrap modes; negative pads crop). Constant pads and axes are
    folded into the code, others are read at run time, as is the constant value."""

    @staticmethod
    def why_not(node, state, sdfg):
        mode = _attr(node, "mode", "constant")
        if mode not in ("constant", "reflect", "edge", "wrap"):
            return f"mode {mode!r} is not supported"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        mode = _attr(node, "mode", "constant")
        pads = _values(node, state, sdfg, "pads", "pads")
        axes = _values(node, state, sdfg, "axes")
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["data"], descs["output"]
        rank = len(din.shape)
        p = _index_params(dout.shape)
        inputs = {"__in": "data"}
        lines = []
        if pads is not None and (axes is not None or "axes" not in node.in_connectors):
            axes = list(range(rank)) if axes is None else [_axis(node, a, rank) for a in axes]
            begin = {a: _i64(pads[k]) for k, a in enumerate(axes)}
            begin = [begin.get(d, "0") for d in range(rank)]
        else:
            inputs["__pads"] = "pads"
            if "axes" in node.in_connectors:
                inputs["__axes"] = "axes"
                count, axis = cexpr(descs["axes"].total_size), "__axes[__k]"
            else:
                count, axis = str(rank), "__k"
            lines.append(f"int64_t __b[{rank}] = {{0}};")
            lines += _runtime_axes(din, rank, count, axis, ["(void)__dim; __b[__ax] = (int64_t)__pads[__k];"])
            begin = [f"__b[{d}]" for d in range(rank)]
        if "constant_value" in node.in_connectors:
            inputs["__cv"] = "constant_value"
            value = "__cv[0]"
        else:
            value = _cast_expr(repr(float(_attr(node, "value", 0.0))), din.dtype)
        inside, src = [], []
        for d in range(rank):
            dim = cexpr(din.shape[d])
            q = f"__q{d}"
            lines.append(f"int64_t {q} = {p[d]} - {begin[d]};")
            if mode == "constant":
                inside.append(f"{q} >= 0 && {q} < {dim}")
            elif mode == "edge":
                lines.append(f"{q} = std::max<int64_t>(0, std::min<int64_t>({q}, {dim} - 1));")
            elif mode == "reflect":
                lines.append(f"if ({dim} > 1) {{ const int64_t __per = 2 * ({dim} - 1); "
                             f"{q} = (({q} % __per) + __per) % __per; if ({q} >= {dim}) {q} = __per - {q}; }} "
                             f"else {q} = 0;")
            else:  # wrap
                lines.append(f"{q} = (({q} % {dim}) + {dim}) % {dim};")
            src.append(q)
        cond = " && ".join(inside) if inside else "true"
        lines.append(f"__out[{offset(dout, p)}] = ({cond}) ? __in[{offset(din, src)}] : {value};")
        output_kernel(nstate, descs, f"{node.label}_pad", "output", inputs, "\n".join(lines))
        return nsdfg


@op_implementation("DepthToSpace", name="pure")
class PureDepthToSpace(Implementation):
    """DepthToSpace (DCR and CRD modes) as a gather over the output."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["input"], descs["output"]
        b = int(node.blocksize)
        mode = _attr(node, "mode", "DCR")
        n, c, h, w = _index_params(dout.shape)
        cout = cexpr(dout.shape[1])
        lines = [f"const int64_t __bh = {h} % {b}, __bw = {w} % {b};"]
        if mode == "DCR":
            lines.append(f"const int64_t __c = (__bh * {b} + __bw) * {cout} + {c};")
        else:
            lines.append(f"const int64_t __c = {c} * {b * b} + __bh * {b} + __bw;")
        src = offset(din, [n, "__c", f"{h} / {b}", f"{w} / {b}"])
        lines.append(f"__out[{offset(dout, [n, c, h, w])}] = __in[{src}];")
        output_kernel(nstate, descs, f"{node.label}_d2s", "output", {"__in": "input"}, "\n".join(lines))
        return nsdfg


@op_implementation("SpaceToDepth", name="pure")
class PureSpaceToDepth(Implementation):
    """SpaceToDepth as a gather over the output."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["input"], descs["output"]
        b = int(node.blocksize)
        n, c, h, w = _index_params(dout.shape)
        cin = cexpr(din.shape[1])
        lines = [f"const int64_t __blk = {c} / {cin}, __c = {c} % {cin};",
                 f"const int64_t __bh = __blk / {b}, __bw = __blk % {b};"]
        src = offset(din, [n, "__c", f"{h} * {b} + __bh", f"{w} * {b} + __bw"])
        lines.append(f"__out[{offset(dout, [n, c, h, w])}] = __in[{src}];")
        output_kernel(nstate, descs, f"{node.label}_s2d", "output", {"__in": "input"}, "\n".join(lines))
        return nsdfg


@op_implementation("Trilu", name="pure")
class PureTrilu(Implementation):
    """Trilu: keeps the upper (or lower) triangle of the last two dims; ``k`` is read at run time."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        din, dout = descs["input"], descs["output"]
        p = _index_params(dout.shape)
        inputs = {"__in": "input"}
        k = "0"
        if "k" in node.in_connectors:
            inputs["__k"] = "k"
            k = "(int64_t)__k[0]"
        i, j = p[-2], p[-1]
        keep = f"{j} - {i} >= {k}" if _attr(node, "upper", 1) else f"{j} - {i} <= {k}"
        zero = _cast_expr("0", dout.dtype)
        body = f"__out[{offset(dout, p)}] = ({keep}) ? __in[{offset(din, p)}] : {zero};"
        output_kernel(nstate, descs, f"{node.label}_trilu", "output", inputs, body)
        return nsdfg


# --- gathers and scatters ------------------------------------------------------------------------

def _wrap(index: str, dim: str) -> str:
    return f"int64_t __ix = (int64_t)({index}); if (__ix < 0) __ix += {dim};"


@op_implementation("Gather", name="pure")
class PureGather(Implementation):
    """Gather along ``axis`` with indices read at run time (negative indices wrap)."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dd, di, do = descs["data"], descs["indices"], descs["output"]
        r = len(dd.shape)
        axis = _axis(node, node.axis, r)
        # rank of the indices as ONNX sees them (rank-0 indices are stored as shape (1,))
        q = len(do.shape) - (r - 1)
        p = _index_params(do.shape)
        idx_params = p[axis:axis + q]
        idx_off = offset(di, idx_params) if q else "0"
        src = p[:axis] + ["__ix"] + p[axis + q:]
        out_off = offset(do, p)
        body = (_wrap(f"__idx[{idx_off}]", cexpr(dd.shape[axis])) +
                f"\n__out[{out_off}] = __in[{offset(dd, src)}];")
        output_kernel(nstate, descs, f"{node.label}_gather", "output", {"__in": "data", "__idx": "indices"}, body)
        return nsdfg


@op_implementation("GatherElements", name="pure")
class PureGatherElements(Implementation):
    """GatherElements: output[i] = data[i with i[axis] = indices[i]]."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dd, di, do = descs["data"], descs["indices"], descs["output"]
        axis = _axis(node, node.axis, len(dd.shape))
        p = _index_params(do.shape)
        src = list(p)
        src[axis] = "__ix"
        body = (_wrap(f"__idx[{offset(di, p)}]", cexpr(dd.shape[axis])) +
                f"\n__out[{offset(do, p)}] = __in[{offset(dd, src)}];")
        output_kernel(nstate, descs, f"{node.label}_gather_elements", "output",
                      {"__in": "data", "__idx": "indices"}, body)
        return nsdfg


@op_implementation("GatherND", name="pure")
class PureGatherND(Implementation):
    """GatherND with ``batch_dims``: the last dim of the indices addresses the data."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dd, di, do = descs["data"], descs["indices"], descs["output"]
        b = int(_attr(node, "batch_dims", 0))
        q = len(di.shape)
        k = int(di.shape[-1])
        p = _index_params(do.shape)
        lead = p[:q - 1]  # the output's leading dims are the indices' leading dims
        rest = p[q - 1:] if len(do.shape) > q - 1 else []
        lines = []
        src = list(lead[:b])
        for j in range(k):
            idx = offset(di, lead + [str(j)])
            dim = cexpr(dd.shape[b + j])
            lines.append(f"int64_t __x{j} = (int64_t)__idx[{idx}]; if (__x{j} < 0) __x{j} += {dim};")
            src.append(f"__x{j}")
        src += rest[:len(dd.shape) - b - k]
        lines.append(f"__out[{offset(do, p)}] = __in[{offset(dd, src)}];")
        output_kernel(nstate, descs, f"{node.label}_gather_nd", "output", {"__in": "data", "__idx": "indices"},
                      "\n".join(lines))
        return nsdfg


_REDUCE = {
    "none": "{dst} = {src};",
    "add": "{dst} += {src};",
    "mul": "{dst} *= {src};",
    "max": "{dst} = std::max({dst}, {src});",
    "min": "{dst} = std::min({dst}, {src});",
}


def _scatter_reason(node, state, sdfg) -> Optional[str]:
    red = _attr(node, "reduction", "none")
    if red not in _REDUCE:
        return f"reduction {red!r} is not supported"
    if red != "none" and node.in_desc(state, sdfg, "data").dtype == dace.float16:
        return f"reduction {red!r} of float16 values is not supported"
    return None


def _loops(shape, names: Sequence[str]) -> List[str]:
    return [f"for (int64_t {n} = 0; {n} < {cexpr(s)}; ++{n})" for n, s in zip(names, shape)]


@op_implementation("ScatterElements", name="pure")
class PureScatterElements(Implementation):
    """ScatterElements: copy of the data, then a sequential loop over the updates (any reduction)."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _scatter_reason(node, state, sdfg)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dd, di, du, do = descs["data"], descs["indices"], descs["updates"], descs["output"]
        axis = _axis(node, node.axis, len(dd.shape))
        red = _attr(node, "reduction", "none")
        names = [f"__u{d}" for d in range(len(du.shape))]
        dst_idx = list(names)
        dst_idx[axis] = "__ix"
        lines = [f"for (int64_t __k = 0; __k < {cexpr(dd.total_size)}; ++__k) __out[__k] = __in[__k];"]
        lines += _loops(du.shape, names)
        lines.append("{")
        lines.append(_wrap(f"__idx[{offset(di, names)}]", cexpr(dd.shape[axis])))
        lines.append(_REDUCE[red].format(dst=f"__out[{offset(do, dst_idx)}]", src=f"__upd[{offset(du, names)}]"))
        lines.append("}")
        single_kernel(nstate, descs, f"{node.label}_scatter", {"__in": "data", "__idx": "indices", "__upd": "updates"},
                      {"__out": "output"}, "\n".join(lines))
        return nsdfg


@op_implementation("ScatterND", name="pure")
class PureScatterND(Implementation):
    """ScatterND: copy of the data, then a sequential loop writing each update slice."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _scatter_reason(node, state, sdfg)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dd, di, du, do = descs["data"], descs["indices"], descs["updates"], descs["output"]
        red = _attr(node, "reduction", "none")
        q = len(di.shape)
        k = int(di.shape[-1])
        lead = [f"__l{d}" for d in range(q - 1)]
        rest = [f"__r{d}" for d in range(len(dd.shape) - k)]
        lines = [f"for (int64_t __k = 0; __k < {cexpr(dd.total_size)}; ++__k) __out[__k] = __in[__k];"]
        lines += _loops(di.shape[:-1], lead)
        lines.append("{")
        dst = []
        for j in range(k):
            dim = cexpr(dd.shape[j])
            lines.append(f"int64_t __x{j} = (int64_t)__idx[{offset(di, lead + [str(j)])}]; "
                         f"if (__x{j} < 0) __x{j} += {dim};")
            dst.append(f"__x{j}")
        lines += _loops(dd.shape[k:], rest)
        upd = offset(du, lead + rest) if (lead + rest) else "0"
        lines.append(_REDUCE[red].format(dst=f"__out[{offset(do, dst + rest)}]", src=f"__upd[{upd}]"))
        lines.append("}")
        single_kernel(nstate, descs, f"{node.label}_scatter_nd",
                      {"__in": "data", "__idx": "indices", "__upd": "updates"}, {"__out": "output"}, "\n".join(lines))
        return nsdfg


@op_implementation("OneHot", name="pure")
class PureOneHot(Implementation):
    """OneHot: ``values[1]`` where the index along ``axis`` equals the (wrapped) index, else ``values[0]``."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        di, do = descs["indices"], descs["output"]
        rank = len(do.shape)
        axis = _axis(node, _attr(node, "axis", -1), rank)
        p = _index_params(do.shape)
        idx = p[:axis] + p[axis + 1:]
        depth = cexpr(do.shape[axis])
        idx_off = offset(di, idx) if idx else "0"
        body = (f"int64_t __ix = (int64_t)__idx[{idx_off}]; if (__ix < 0) __ix += {depth};\n"
                f"__out[{offset(do, p)}] = (__ix == {p[axis]}) ? __val[1] : __val[0];")
        output_kernel(nstate, descs, f"{node.label}_onehot", "output", {"__idx": "indices", "__val": "values"}, body)
        return nsdfg


# --- shapes, constants, casts --------------------------------------------------------------------

@op_implementation("Shape", name="pure")
class PureShape(Implementation):
    """Shape (with start/end): the dims of the input (symbolic dims read from their symbols)."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dims = list(descs["data"].shape)
        rank = len(dims)
        start = int(_attr(node, "start", 0))
        end = _attr(node, "end", None)
        end = rank if end is None else int(end)
        start = min(max(start + rank if start < 0 else start, 0), rank)
        end = min(max(end + rank if end < 0 else end, 0), rank)
        dims = dims[start:end]
        n = descs["shape"].shape[0]
        if not isinstance(n, int) or n != len(dims):
            raise InvalidNodeError(f"{node.describe()}: output of {n} values for dims {dims}")
        body = "\n".join(f"__out[{k}] = (int64_t)({cexpr(d)});" for k, d in enumerate(dims))
        single_kernel(nstate, descs, f"{node.label}_shape", {}, {"__out": "shape"}, body)
        return nsdfg


@op_implementation("Size", name="pure")
class PureSize(Implementation):
    """Size: the number of elements of the input."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        body = f"__out[0] = (int64_t)({cexpr(descs['data'].total_size)});"
        single_kernel(nstate, descs, f"{node.label}_size", {}, {"__out": "size"}, body)
        return nsdfg


@op_implementation("Range", name="pure")
class PureRange(Implementation):
    """Range: ``start + i * delta`` (inputs read at run time; the length comes from shape inference)."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        dtype = descs["output"].dtype
        body = f"__out[__i0] = ({dtype.ctype})(__start[0] + ({dtype.ctype})__i0 * __delta[0]);"
        output_kernel(nstate, descs, f"{node.label}_range", "output", {"__start": "start", "__delta": "delta"}, body)
        return nsdfg


def _literal(value, dtype: dace.typeclass) -> str:
    if dtype == dace.bool_:
        return "true" if value else "false"
    if dtype in (dace.float32, dace.float64, dace.float16):
        v = float(value)
        if v != v:
            text = "NAN"
        elif v in (float("inf"), float("-inf")):
            text = "INFINITY" if v > 0 else "-INFINITY"
        else:
            text = repr(v)
        return _cast_expr(text, dtype)
    return f"({dtype.ctype})({_i64(int(value))})"


@op_implementation("ConstantOfShape", name="pure")
class PureConstantOfShape(Implementation):
    """ConstantOfShape: fills the output with ``value`` (default float 0)."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        do = descs["output"]
        value = 0
        if node.value is not None:
            value = numpy_helper.to_array(node.value).reshape(-1)[0].item()
        add_cpp_array_kernel(nstate, f"{node.label}_fill", {"__k": f"0:{do.total_size}"}, descs, {},
                             {"__out": "output"}, f"__out[__k] = {_literal(value, do.dtype)};")
        return nsdfg


def _cast_nested(node, state, sdfg, src: str, dst: str) -> dace.SDFG:
    nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
    do = descs[dst]
    value = "__in[__k]"
    add_cpp_array_kernel(nstate, f"{node.label}_cast", {"__k": f"0:{do.total_size}"}, descs, {"__in": src},
                         {"__out": dst}, f"__out[__k] = {_cast_expr(value, do.dtype)};")
    return nsdfg


@op_implementation("Cast", name="pure")
class PureCast(Implementation):
    """Cast between the numeric and bool types (C++ conversions; to bool: ``!= 0``)."""

    @staticmethod
    def expansion(node, state, sdfg):
        return _cast_nested(node, state, sdfg, "input", "output")


@op_implementation("CastLike", name="pure")
class PureCastLike(Implementation):
    """CastLike: Cast to the element type of ``target_type``."""

    @staticmethod
    def expansion(node, state, sdfg):
        return _cast_nested(node, state, sdfg, "input", "output")
