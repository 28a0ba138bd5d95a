"""Miscellaneous ops: bitwise logic, selection, sequences, image, linear algebra and
quantization ops that fit no other family.

Ops:
- elementwise: BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Shrink
- selection: TopK (``k`` from the output shape, so a run-time K works where the model
  declares the output), Compress, NonZero, Unique (all three only where the output
  shapes are known when the model is imported, e.g. declared graph outputs), and
  NonMaxSuppression (likewise: the number of selected boxes must be known)
- LpNormalization (a zero norm gives zeros, as in onnxruntime), Det (LU with partial
  pivoting, in double), EyeLike, ReverseSequence, Scatter (the pre-opset-11 name of
  ScatterElements)
- image: Upsample (nearest, linear; scales from the attribute or read at run time),
  MaxUnpool, RoiAlign (avg, max; the ONNX reference's sampling), MaxRoiPool
- quantization: QuantizeLinear DequantizeLinear (8- and 16-bit integers, int32 for
  DequantizeLinear; per tensor, per axis, blocked), DynamicQuantizeLinear, ConvInteger,
  QLinearConv, QLinearMatMul. Quantization to and from float8, float4, int4 and int2 is
  :mod:`daceml.onnx.ops.cast`'s, which wraps the implementations here.

Every implementation is a nested SDFG with maps (or one sequential kernel where the
work is inherently sequential: Compress, NonZero, Unique, NonMaxSuppression,
MaxUnpool, DynamicQuantizeLinear's range) around C++ tasklets that get the whole
arrays as pointers and index them with the arrays' strides; the sequential kernels
assume contiguous arrays, as the importer creates them.
"""
import functools
import operator
from typing import Dict, List, Optional, Sequence

import dace
import onnx

from daceml.errors import InvalidNodeError
from daceml.onnx.dtypes import is_float
from daceml.onnx.ops.common import add_cpp_array_kernel, add_helper_code, cpp
from daceml.onnx.ops.conv_pool import _PureBase, _Reject, window
from daceml.onnx.ops.elementwise import elementwise
from daceml.onnx.ops.reduction import unknown_output_sizes
from daceml.onnx.ops.registry import Implementation, op_implementation
from daceml.onnx.ops.shape import PureScatterElements, expansion_sdfg, offset

_STD = "#include <vector>\n#include <algorithm>\n#include <cmath>\n#include <cstdint>\n#include <cstring>\n#include <limits>"

#: ``daceml_round_half(float) -> float``: the float16 value nearest to a float (ties to even),
#: as numpy's float16 arithmetic rounds each result
_ROUND_HALF = "static inline float daceml_round_half(float f) { return daceml_h2f(daceml_f2h(f)); }"


# --- helpers -------------------------------------------------------------------------------------

def _attr(node, name: str, default=None):
    """Attribute ``name`` of the node; the ONNX default (else ``default``) where it is absent
    or where the node's opset version does not have it."""
    attr = node.schema.attributes.get(name)
    if attr is None:
        return default
    value = getattr(node, name)
    if value is None:
        value = attr.default if attr.default is not None else default
    return value.decode() if isinstance(value, bytes) else value


def _sdfg(node, state, sdfg):
    """The expansion's nested SDFG with std headers and ``daceml_convert``."""
    nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
    add_helper_code(nsdfg, "misc_std", _STD)
    add_helper_code(nsdfg, "misc_round_half", _ROUND_HALF)
    return nsdfg, nstate, descs


def _kernel(nstate, descs, name: str, ranges: Dict[str, str], inputs: Dict[str, str], outputs: Dict[str, str],
            code: str) -> None:
    add_cpp_array_kernel(nstate, name, ranges, descs, inputs, outputs, code)


def _once(nstate, descs, name: str, inputs: Dict[str, str], outputs: Dict[str, str], code: str) -> None:
    """One sequential C++ tasklet."""
    add_cpp_array_kernel(nstate, name, {"__once": "0:1"}, descs, inputs, outputs, code)


def _to(dtype: dace.typeclass, expr: str) -> str:
    """C++ converting ``expr`` to element type ``dtype`` (float16 rounded correctly)."""
    return f"daceml_convert<{dtype.ctype}>({expr})"


def _f64(expr: str) -> str:
    return f"daceml_convert<double>({expr})"


def _f32(expr: str) -> str:
    return f"daceml_convert<float>({expr})"


def _axis(node, axis, rank: int, what: str = "axis") -> int:
    rank1 = max(rank, 1)
    if not -rank1 <= int(axis) < rank1:
        raise InvalidNodeError(f"{node.describe()}: {what} {axis} is out of range for a tensor of rank {rank}")
    return int(axis) % rank1


def _ranges(shape: Sequence, skip: Sequence[int] = ()) -> Dict[str, str]:
    """Map ranges ``__i<d>`` over the dims of ``shape`` except ``skip`` (one iteration if none)."""
    ranges = {f"__i{d}": f"0:{cpp(s)}" for d, s in enumerate(shape) if d not in skip}
    return ranges or {"__i0": "0:1"}


def _idx(rank: int, replace: Optional[Dict[int, str]] = None) -> List[str]:
    """Index expressions ``__i<d>``, some replaced."""
    replace = replace or {}
    return [replace.get(d, f"__i{d}") for d in range(rank)]


def _array(name: str, values: Sequence) -> str:
    """A C++ array of int64 sizes (ints or symbolic expressions)."""
    return f"const int64_t {name}[] = {{{', '.join(cpp(v) for v in values) or '0'}}};"


def _prod(sizes: Sequence):
    return functools.reduce(operator.mul, list(sizes), 1)


def _has(node, conn: str) -> bool:
    return conn in node.in_connectors


def _static_int(value) -> Optional[int]:
    try:
        return int(value)
    except TypeError:
        return None


# --- elementwise ---------------------------------------------------------------------------------

@elementwise("BitwiseAnd")
def bitwise_and(A, B):
    return A & B


@elementwise("BitwiseOr")
def bitwise_or(A, B):
    return A | B


@elementwise("BitwiseXor")
def bitwise_xor(A, B):
    return A ^ B


@elementwise("BitwiseNot")
def bitwise_not(X):
    return ~X


@elementwise("Shrink")
def shrink(input, bias=0.0, lambd=0.5):
    return input + bias if input < -lambd else (input - bias if input > lambd else 0)


# --- LpNormalization -----------------------------------------------------------------------------

@op_implementation("LpNormalization", name="pure")
class PureLpNormalization(Implementation):
    """LpNormalization: a map over the lines along the axis; the norm in double, then the line divided by it."""

    @staticmethod
    def why_not(node, state, sdfg):
        p = _attr(node, "p", 2)
        if p not in (1, 2):
            return f"p={p}; ONNX allows 1 and 2"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["input"], descs["output"]
        rank = len(x.shape)
        axis = _axis(node, _attr(node, "axis", -1), rank)
        p = _attr(node, "p", 2)
        ib = offset(x, _idx(rank, {axis: "0"}))
        ob = offset(y, _idx(rank, {axis: "0"}))
        xs, ys, n = cpp(x.strides[axis]), cpp(y.strides[axis]), cpp(x.shape[axis])
        term = "std::fabs(__v)" if p == 1 else "__v * __v"
        code = f"""
double __norm = 0;
for (int64_t __k = 0; __k < {n}; ++__k) {{
    const double __v = {_f64(f"__x[{ib} + __k * {xs}]")};
    __norm += {term};
}}
{"__norm = std::sqrt(__norm);" if p == 2 else ""}
for (int64_t __k = 0; __k < {n}; ++__k) {{
    const double __v = {_f64(f"__x[{ib} + __k * {xs}]")};
    __y[{ob} + __k * {ys}] = {_to(y.dtype, "__norm != 0 ? __v / __norm : 0.0")};
}}"""
        _kernel(nstate, descs, f"{node.label}_lpnorm", _ranges(x.shape, [axis]), {"__x": "input"}, {"__y": "output"},
                code)
        return nsdfg


# --- TopK ---------------------------------------------------------------------------------------

@op_implementation("TopK", name="pure")
class PureTopK(Implementation):
    """TopK: a map over the lines along the axis; each sorts its indices partially (ties: the
    lower index first; NaN counts as the largest value). ``k`` is the output's size along the
    axis, so K may be a run-time input where the model's output shape is known."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x = descs["X"]
        outs = [c for c in ("Values", "Indices") if c in descs]
        rank = len(x.shape)
        axis = _axis(node, _attr(node, "axis", -1), rank)
        k = descs[outs[0]].shape[axis]
        largest = bool(_attr(node, "largest", 1))
        t = "double" if is_float(x.dtype) else x.dtype.ctype
        ib = offset(x, _idx(rank, {axis: "0"}))
        if largest:
            before = "(__va != __va && __vb == __vb) || __va > __vb"
        else:
            before = "(__vb != __vb && __va == __va) || __va < __vb"
        same = "(__va == __vb || (__va != __va && __vb != __vb))"
        store = []
        if "Values" in descs:
            v = descs["Values"]
            store.append(f"__vals[{offset(v, _idx(rank, {axis: '__j'}))}] = "
                         f"{_to(v.dtype, f'__x[{ib} + __ix[__j] * {cpp(x.strides[axis])}]')};")
        if "Indices" in descs:
            store.append(f"__inds[{offset(descs['Indices'], _idx(rank, {axis: '__j'}))}] = __ix[__j];")
        code = f"""
const int64_t __n = {cpp(x.shape[axis])};
const int64_t __k = std::min<int64_t>({cpp(k)}, __n);
std::vector<{t}> __v(__n);
std::vector<int64_t> __ix(__n);
for (int64_t __m = 0; __m < __n; ++__m) {{
    __v[__m] = daceml_convert<{t}>(__x[{ib} + __m * {cpp(x.strides[axis])}]);
    __ix[__m] = __m;
}}
std::partial_sort(__ix.begin(), __ix.begin() + __k, __ix.end(), [&](int64_t __a, int64_t __b) {{
    const {t} __va = __v[__a], __vb = __v[__b];
    if ({before}) return true;
    return {same} && __a < __b;
}});
for (int64_t __j = 0; __j < __k; ++__j) {{
    {" ".join(store)}
}}"""
        outputs = {"__vals": "Values"} if "Values" in descs else {}
        if "Indices" in descs:
            outputs["__inds"] = "Indices"
        _kernel(nstate, descs, f"{node.label}_topk", _ranges(x.shape, [axis]), {"__x": "X"}, outputs, code)
        return nsdfg


# --- Compress, NonZero ---------------------------------------------------------------------------

@op_implementation("Compress", name="pure")
class PureCompress(Implementation):
    """Compress: one sequential kernel copying the selected slices (the condition is read at
    run time; the output shape, known from the model, bounds the copy)."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y, cond = descs["input"], descs["output"], descs["condition"]
        axis = _attr(node, "axis", None)
        if axis is None:
            code = f"""
int64_t __j = 0;
for (int64_t __i = 0; __i < {cpp(x.total_size)} && __i < {cpp(cond.total_size)} && __j < {cpp(y.total_size)}; ++__i)
    if (__c[__i]) __y[__j++] = __x[__i];"""
        else:
            rank = len(x.shape)
            axis = _axis(node, axis, rank)
            outer, inner = cpp(_prod(x.shape[:axis])), cpp(_prod(x.shape[axis + 1:]))
            dim, odim = cpp(x.shape[axis]), cpp(y.shape[axis])
            code = f"""
int64_t __j = 0;
for (int64_t __a = 0; __a < {dim} && __a < {cpp(cond.total_size)} && __j < {odim}; ++__a) {{
    if (!__c[__a]) continue;
    for (int64_t __o = 0; __o < {outer}; ++__o)
        for (int64_t __i = 0; __i < {inner}; ++__i)
            __y[(__o * {odim} + __j) * {inner} + __i] = __x[(__o * {dim} + __a) * {inner} + __i];
    ++__j;
}}"""
        _once(nstate, descs, f"{node.label}_compress", {"__x": "input", "__c": "condition"}, {"__y": "output"}, code)
        return nsdfg


@op_implementation("NonZero", name="pure")
class PureNonZero(Implementation):
    """NonZero: one sequential kernel; the number of non-zeros must be known from the model
    (a declared output shape), since DaCe arrays have sizes fixed before the call."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        rows = y.shape[0]
        shape = list(x.shape)
        code = f"""
{_array("__shp", shape)}
const int64_t __rank = {len(shape)}, __rows = {cpp(rows)}, __nnz = {cpp(y.shape[1])};
int64_t __j = 0;
for (int64_t __i = 0; __i < {cpp(x.total_size)} && __j < __nnz; ++__i) {{
    if (!(__x[__i] != 0)) continue;
    int64_t __rem = __i;
    for (int64_t __d = __rank - 1; __d >= 0; --__d) {{
        if (__d < __rows) __y[__d * __nnz + __j] = __rem % __shp[__d];
        __rem /= __shp[__d];
    }}
    ++__j;
}}"""
        if x.dtype == dace.float16:
            code = code.replace("__x[__i] != 0", "daceml_h2f(__x[__i]) != 0")
        _once(nstate, descs, f"{node.label}_nonzero", {"__x": "X"}, {"__y": "Y"}, code)
        return nsdfg


# --- Unique -------------------------------------------------------------------------------------

@op_implementation("Unique", name="pure")
class PureUnique(Implementation):
    """Unique: one sequential kernel (sort of the slices, then a scan). The number of unique
    values must be known from the model (declared output shapes)."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = unknown_output_sizes(node, state, sdfg)
        if reason:
            return reason
        x = node.in_desc(state, sdfg, "X")
        if x.dtype == dace.float16:
            return "float16 inputs are not supported"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x = descs["X"]
        axis = _attr(node, "axis", None)
        if axis is None:
            n, inner, outer = x.total_size, 1, 1
        else:
            rank = len(x.shape)
            axis = _axis(node, axis, rank)
            n = x.shape[axis]
            inner, outer = _prod(x.shape[axis + 1:]), _prod(x.shape[:axis])
        sorted_ = bool(_attr(node, "sorted", 1))
        # slice a: elements (o, a, i) -> x[(o * n + a) * inner + i]
        code = f"""
const int64_t __n = {cpp(n)}, __inner = {cpp(inner)}, __outer = {cpp(outer)};
auto __at = [&](int64_t __a, int64_t __e) {{ return __x[((__e / __inner) * __n + __a) * __inner + __e % __inner]; }};
const int64_t __len = __inner * __outer;
auto __less = [&](int64_t __a, int64_t __b) {{
    for (int64_t __e = 0; __e < __len; ++__e) {{
        const auto __va = __at(__a, __e), __vb = __at(__b, __e);
        if (__va < __vb) return true;
        if (__vb < __va) return false;
    }}
    return false;
}};
auto __eq = [&](int64_t __a, int64_t __b) {{ return !__less(__a, __b) && !__less(__b, __a); }};
std::vector<int64_t> __order(__n);
for (int64_t __a = 0; __a < __n; ++__a) __order[__a] = __a;
std::stable_sort(__order.begin(), __order.end(), __less);
// groups of equal slices in sorted order; the first occurrence of each
std::vector<int64_t> __first, __count, __group(__n);
for (int64_t __r = 0; __r < __n; ++__r) {{
    if (__r == 0 || !__eq(__order[__r - 1], __order[__r])) {{
        __first.push_back(__order[__r]);
        __count.push_back(0);
    }}
    __count.back() += 1;
    __group[__order[__r]] = (int64_t)__first.size() - 1;
}}
const int64_t __u = (int64_t)__first.size();
std::vector<int64_t> __rank(__u);  // output position of each group
{{
    std::vector<int64_t> __pos(__u);
    for (int64_t __g = 0; __g < __u; ++__g) __pos[__g] = __g;
    if (!{'true' if sorted_ else 'false'})
        std::sort(__pos.begin(), __pos.end(), [&](int64_t __a, int64_t __b) {{ return __first[__a] < __first[__b]; }});
    for (int64_t __p = 0; __p < __u; ++__p) __rank[__pos[__p]] = __p;
}}
"""
        outputs = {}
        if "Y" in descs:
            y = descs["Y"]
            ydim = cpp(y.total_size) if axis is None else cpp(y.shape[axis])
            code += f"""
for (int64_t __g = 0; __g < __u && __rank[__g] < {ydim}; ++__g)
    for (int64_t __e = 0; __e < __len; ++__e)
        __y[((__e / __inner) * {ydim} + __rank[__g]) * __inner + __e % __inner] = __at(__first[__g], __e);
"""
            outputs["__y"] = "Y"
        if "indices" in descs:
            code += f"for (int64_t __g = 0; __g < __u; ++__g) if (__rank[__g] < {cpp(descs['indices'].total_size)}) " \
                    "__ind[__rank[__g]] = __first[__g];\n"
            outputs["__ind"] = "indices"
        if "inverse_indices" in descs:
            code += f"for (int64_t __a = 0; __a < __n && __a < {cpp(descs['inverse_indices'].total_size)}; ++__a) " \
                    "__inv[__a] = __rank[__group[__a]];\n"
            outputs["__inv"] = "inverse_indices"
        if "counts" in descs:
            code += f"for (int64_t __g = 0; __g < __u; ++__g) if (__rank[__g] < {cpp(descs['counts'].total_size)}) " \
                    "__cnt[__rank[__g]] = __count[__g];\n"
            outputs["__cnt"] = "counts"
        _once(nstate, descs, f"{node.label}_unique", {"__x": "X"}, outputs, code)
        return nsdfg


# --- NonMaxSuppression ----------------------------------------------------------------------------

@op_implementation("NonMaxSuppression", name="pure")
class PureNonMaxSuppression(Implementation):
    """NonMaxSuppression: one sequential kernel, the ONNX reference's greedy selection per batch
    and class. The number of selected boxes must be known from the model (a declared output)."""
    why_not = staticmethod(unknown_output_sizes)

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        boxes, scores, out = descs["boxes"], descs["scores"], descs["selected_indices"]
        inputs = {"__boxes": "boxes", "__scores": "scores"}

        def optional(conn, name, default, kind):
            if _has(node, conn):
                inputs[name] = conn
                return f"({cpp(descs[conn].total_size)} > 0 ? {kind}({name}[0]) : {default})"
            return default

        max_out = optional("max_output_boxes_per_class", "__maxo", "0", "(int64_t)")
        iou = optional("iou_threshold", "__iou", "0.0", "(double)")
        has_score = _has(node, "score_threshold")
        score = optional("score_threshold", "__sth", "0.0", "(double)")
        center = int(_attr(node, "center_point_box", 0))
        nb, nboxes, ncls = cpp(boxes.shape[0]), cpp(boxes.shape[1]), cpp(scores.shape[1])
        fbox = f"{_f64('__boxes[(__b * __nbox + __i) * 4 + __c]')}"
        code = f"""
const int64_t __nb = {nb}, __nbox = {nboxes}, __ncls = {ncls}, __rows = {cpp(out.shape[0])};
int64_t __maxout = {max_out};
if (__maxout < 0) __maxout = 0;
const double __iou_th = {iou};
const bool __use_score = {cpp(descs['score_threshold'].total_size) if has_score else 0} > 0;
const double __score_th = {score};
auto __coord = [&](int64_t __b, int64_t __i, int64_t __c) {{ return {fbox}; }};
// the box as (xmin, xmax, ymin, ymax)
auto __bounds = [&](int64_t __b, int64_t __i, double* __r) {{
    const double __c0 = __coord(__b, __i, 0), __c1 = __coord(__b, __i, 1);
    const double __c2 = __coord(__b, __i, 2), __c3 = __coord(__b, __i, 3);
    if ({center} == 0) {{
        __r[0] = std::min(__c1, __c3); __r[1] = std::max(__c1, __c3);
        __r[2] = std::min(__c0, __c2); __r[3] = std::max(__c0, __c2);
    }} else {{
        __r[0] = __c0 - __c2 / 2; __r[1] = __c0 + __c2 / 2;
        __r[2] = __c1 - __c3 / 2; __r[3] = __c1 + __c3 / 2;
    }}
}};
auto __suppress = [&](int64_t __b, int64_t __i, int64_t __j) {{
    double __p[4], __q[4];
    __bounds(__b, __i, __p);
    __bounds(__b, __j, __q);
    const double x1min = __p[0], x1max = __p[1], y1min = __p[2], y1max = __p[3];
    const double x2min = __q[0], x2max = __q[1], y2min = __q[2], y2max = __q[3];
    const double ixmin = std::max(x1min, x2min), ixmax = std::min(x1max, x2max);
    if (ixmax <= ixmin) return false;
    const double iymin = std::max(y1min, y2min), iymax = std::min(y1max, y2max);
    if (iymax <= iymin) return false;
    const double inter = (ixmax - ixmin) * (iymax - iymin);
    if (inter <= 0) return false;
    const double a1 = (x1max - x1min) * (y1max - y1min), a2 = (x2max - x2min) * (y2max - y2min);
    const double uni = a1 + a2 - inter;
    if (a1 <= 0 || a2 <= 0 || uni <= 0) return false;
    return inter / uni > __iou_th;
}};
int64_t __row = 0;
std::vector<int64_t> __cand, __sel;
std::vector<double> __sc(__nbox);
for (int64_t __b = 0; __b < __nb; ++__b) {{
    for (int64_t __c = 0; __c < __ncls; ++__c) {{
        __cand.clear();
        __sel.clear();
        for (int64_t __i = 0; __i < __nbox; ++__i) {{
            __sc[__i] = {_f64('__scores[(__b * __ncls + __c) * __nbox + __i]')};
            if (!__use_score || __sc[__i] > __score_th) __cand.push_back(__i);
        }}
        std::stable_sort(__cand.begin(), __cand.end(),
                         [&](int64_t __p, int64_t __q) {{ return __sc[__p] > __sc[__q]; }});
        for (size_t __r = 0; __r < __cand.size() && (int64_t)__sel.size() < __maxout; ++__r) {{
            bool __keep = true;
            for (int64_t __s : __sel) if (__suppress(__b, __cand[__r], __s)) {{ __keep = false; break; }}
            if (!__keep) continue;
            __sel.push_back(__cand[__r]);
            if (__row < __rows) {{
                __out[__row * 3] = __b; __out[__row * 3 + 1] = __c; __out[__row * 3 + 2] = __cand[__r];
            }}
            ++__row;
        }}
    }}
}}
for (; __row < __rows; ++__row) __out[__row * 3] = __out[__row * 3 + 1] = __out[__row * 3 + 2] = -1;"""
        _once(nstate, descs, f"{node.label}_nms", inputs, {"__out": "selected_indices"}, code)
        return nsdfg


# --- Det, EyeLike, ReverseSequence, Scatter ------------------------------------------------------

@op_implementation("Det", name="pure")
class PureDet(Implementation):
    """Det: a map over the matrices; LU decomposition with partial pivoting in double."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        rank = len(x.shape)
        batch = rank - 2
        n = cpp(x.shape[-1])
        xb = offset(x, _idx(rank, {rank - 2: "0", rank - 1: "0"}))
        yb = offset(y, _idx(batch)) if batch > 0 else "0"
        code = f"""
const int64_t __n = {n};
std::vector<double> __a(__n * __n);
for (int64_t __r = 0; __r < __n; ++__r)
    for (int64_t __c = 0; __c < __n; ++__c)
        __a[__r * __n + __c] = {_f64(f"__x[{xb} + __r * {cpp(x.strides[-2])} + __c * {cpp(x.strides[-1])}]")};
double __det = 1;
for (int64_t __k = 0; __k < __n && __det != 0; ++__k) {{
    int64_t __p = __k;
    for (int64_t __r = __k + 1; __r < __n; ++__r)
        if (std::fabs(__a[__r * __n + __k]) > std::fabs(__a[__p * __n + __k])) __p = __r;
    if (__a[__p * __n + __k] == 0) {{ __det = 0; break; }}
    if (__p != __k) {{
        for (int64_t __c = 0; __c < __n; ++__c) std::swap(__a[__k * __n + __c], __a[__p * __n + __c]);
        __det = -__det;
    }}
    const double __piv = __a[__k * __n + __k];
    __det *= __piv;
    for (int64_t __r = __k + 1; __r < __n; ++__r) {{
        const double __f = __a[__r * __n + __k] / __piv;
        for (int64_t __c = __k + 1; __c < __n; ++__c) __a[__r * __n + __c] -= __f * __a[__k * __n + __c];
    }}
}}
__y[{yb}] = {_to(y.dtype, "__det")};"""
        ranges = _ranges(x.shape[:batch]) if batch else {"__once": "0:1"}
        _kernel(nstate, descs, f"{node.label}_det", ranges, {"__x": "X"}, {"__y": "Y"}, code)
        return nsdfg


@op_implementation("EyeLike", name="pure")
class PureEyeLike(Implementation):
    """EyeLike: a map over the output writing 1 on diagonal ``k`` and 0 elsewhere."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        y = descs["output"]
        k = int(_attr(node, "k", 0))
        code = f"__y[{offset(y, _idx(2))}] = {_to(y.dtype, f'(__i1 - __i0 == {k}) ? 1 : 0')};"
        _kernel(nstate, descs, f"{node.label}_eyelike", _ranges(y.shape), {}, {"__y": "output"}, code)
        return nsdfg


@op_implementation("ReverseSequence", name="pure")
class PureReverseSequence(Implementation):
    """ReverseSequence: a map over the output reading the input at the reversed time index."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["input"], descs["Y"]
        rank = len(x.shape)
        b = _axis(node, _attr(node, "batch_axis", 1), rank, "batch_axis")
        t = _axis(node, _attr(node, "time_axis", 0), rank, "time_axis")
        code = f"""
const int64_t __len = (int64_t)__lens[__i{b}];
const int64_t __src = __i{t} < __len ? __len - 1 - __i{t} : __i{t};
__y[{offset(y, _idx(rank))}] = __x[{offset(x, _idx(rank, {t: "__src"}))}];"""
        _kernel(nstate, descs, f"{node.label}_revseq", _ranges(y.shape), {"__x": "input", "__lens": "sequence_lens"},
                {"__y": "Y"}, code)
        return nsdfg


@op_implementation("Scatter", name="pure")
class PureScatter(PureScatterElements):
    """Scatter (opsets 9-10, renamed ScatterElements in 11): ScatterElements' implementation."""


# --- Upsample, MaxUnpool, RoiAlign ----------------------------------------------------------------

@op_implementation("Upsample", name="pure")
class PureUpsample(Implementation):
    """Upsample: a map over the output; nearest (``floor(out / scale)``) or n-linear
    (asymmetric coordinates) sampling, the scales from the attribute (opset 7) or read at
    run time (opset 9)."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = unknown_output_sizes(node, state, sdfg)
        if reason:
            return reason
        mode = _attr(node, "mode", "nearest")
        if mode not in ("nearest", "linear", "bilinear"):
            return f"mode {mode!r} is not supported (nearest, linear)"
        if not _has(node, "scales") and not _attr(node, "scales", None):
            return "no scales given"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        rank = len(x.shape)
        mode = _attr(node, "mode", "nearest")
        inputs = {"__x": "X"}
        if _has(node, "scales"):
            inputs["__scales"] = "scales"
            scale = "(float)__scales[__d]"
            code = ""
        else:
            code = "const float __sattr[] = {" + ", ".join(f"{float(s)!r}f" for s in _attr(node, "scales")) + "};\n"
            scale = "__sattr[__d]"
        code += f"""
{_array("__ishp", x.shape)}
{_array("__ist", x.strides)}
const int64_t __oi[] = {{{", ".join(_idx(rank))}}};
"""
        if mode == "nearest":
            code += f"""
int64_t __off = 0;
for (int64_t __d = 0; __d < {rank}; ++__d) {{
    int64_t __s = (int64_t)std::floor((float)__oi[__d] / {scale});
    if (__s > __ishp[__d] - 1) __s = __ishp[__d] - 1;
    __off += __s * __ist[__d];
}}
__y[{offset(y, _idx(rank))}] = __x[__off];"""
        else:
            code += f"""
int64_t __lo[{rank}], __hi[{rank}];
double __w[{rank}];
for (int64_t __d = 0; __d < {rank}; ++__d) {{
    double __p = (double)((float)__oi[__d] / {scale});
    if (__p > (double)(__ishp[__d] - 1)) __p = (double)(__ishp[__d] - 1);
    __lo[__d] = (int64_t)__p;
    __hi[__d] = std::min<int64_t>(__lo[__d] + 1, __ishp[__d] - 1);
    __w[__d] = __p - (double)__lo[__d];
}}
double __acc = 0;
for (int64_t __c = 0; __c < (1 << {rank}); ++__c) {{
    double __wt = 1;
    int64_t __off = 0;
    for (int64_t __d = 0; __d < {rank}; ++__d) {{
        const bool __up = (__c >> __d) & 1;
        __wt *= __up ? __w[__d] : 1.0 - __w[__d];
        __off += (__up ? __hi[__d] : __lo[__d]) * __ist[__d];
    }}
    if (__wt != 0) __acc += __wt * {_f64("__x[__off]")};
}}
__y[{offset(y, _idx(rank))}] = {_to(y.dtype, "__acc")};"""
        _kernel(nstate, descs, f"{node.label}_upsample", _ranges(y.shape), inputs, {"__y": "Y"}, code)
        return nsdfg


@op_implementation("MaxUnpool", name="pure")
class PureMaxUnpool(Implementation):
    """MaxUnpool: zeros, then each value written at its index (flat over the shape that
    kernel, strides and pads give; placed in the corner of a larger ``output_shape``)."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = unknown_output_sizes(node, state, sdfg)
        if reason:
            return reason
        if not _attr(node, "kernel_shape", None):
            return "attribute kernel_shape is missing"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y = descs["X"], descs["output"]
        kernel = [int(v) for v in _attr(node, "kernel_shape")]
        k = len(kernel)
        strides = [int(v) for v in (_attr(node, "strides", None) or [1] * k)]
        pads = [int(v) for v in (_attr(node, "pads", None) or [0] * 2 * k)]
        inferred = list(x.shape[:2]) + [(x.shape[2 + d] - 1) * strides[d] - (pads[d] + pads[k + d]) + kernel[d]
                                        for d in range(k)]
        rank = len(y.shape)
        code = f"""
{_array("__inf", inferred)}
{_array("__oshp", y.shape)}
{_array("__ost", y.strides)}
for (int64_t __e = 0; __e < {cpp(y.total_size)}; ++__e) __y[__e] = {_to(y.dtype, "0")};
int64_t __total = 1;
for (int64_t __d = 0; __d < {rank}; ++__d) __total *= __inf[__d];
for (int64_t __e = 0; __e < {cpp(x.total_size)}; ++__e) {{
    int64_t __f = (int64_t)__ind[__e];
    if (__f < 0 || __f >= __total) continue;
    int64_t __off = 0;
    bool __inside = true;
    for (int64_t __d = {rank} - 1; __d >= 0; --__d) {{
        const int64_t __i = __f % __inf[__d];
        __f /= __inf[__d];
        if (__i >= __oshp[__d]) __inside = false;
        __off += __i * __ost[__d];
    }}
    if (__inside) __y[__off] = __x[__e];
}}"""
        _once(nstate, descs, f"{node.label}_maxunpool", {"__x": "X", "__ind": "I"}, {"__y": "output"}, code)
        return nsdfg


@op_implementation("RoiAlign", name="pure")
class PureRoiAlign(Implementation):
    """RoiAlign: a map over (roi, channel, y, x) of the output; bilinear samples on a grid in
    each bin, averaged (avg) or the largest weighted corner (max), as the ONNX reference does."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, rois, y = descs["X"], descs["rois"], descs["Y"]
        mode = _attr(node, "mode", "avg")
        half_pixel = _attr(node, "coordinate_transformation_mode", "half_pixel") == "half_pixel"
        sampling = int(_attr(node, "sampling_ratio", 0))
        scale = float(_attr(node, "spatial_scale", 1.0))
        ph_n, pw_n = cpp(y.shape[2]), cpp(y.shape[3])
        H, W = cpp(x.shape[2]), cpp(x.shape[3])
        roi = f"__rois[__i0 * {cpp(rois.strides[0])} + {{}} * {cpp(rois.strides[1])}]"
        xb = f"__bi * {cpp(x.strides[0])} + __i1 * {cpp(x.strides[1])}"
        px = f"__x[{xb} + ({{}}) * {cpp(x.strides[2])} + ({{}}) * {cpp(x.strides[3])}]"
        code = f"""
const int64_t __bi = (int64_t)__batch[__i0];
const double __offset = {0.5 if half_pixel else 0.0};
const double __sw = {_f64(roi.format(0))} * {scale!r} - __offset;
const double __sh = {_f64(roi.format(1))} * {scale!r} - __offset;
const double __ew = {_f64(roi.format(2))} * {scale!r} - __offset;
const double __eh = {_f64(roi.format(3))} * {scale!r} - __offset;
double __rw = __ew - __sw, __rh = __eh - __sh;
if (!{'true' if half_pixel else 'false'}) {{ __rw = std::max(__rw, 1.0); __rh = std::max(__rh, 1.0); }}
const double __bh = __rh / {ph_n}, __bw = __rw / {pw_n};
const int64_t __gh = {sampling} > 0 ? {sampling} : (int64_t)std::ceil(__rh / {ph_n});
const int64_t __gw = {sampling} > 0 ? {sampling} : (int64_t)std::ceil(__rw / {pw_n});
const double __count = (double)std::max<int64_t>(__gh * __gw, 1);
const int64_t __H = {H}, __W = {W};
double __out = 0;
bool __first = true;
for (int64_t __iy = 0; __iy < __gh; ++__iy) {{
    for (int64_t __ix = 0; __ix < __gw; ++__ix) {{
        double __yy = __sh + __i2 * __bh + (__iy + 0.5) * __bh / __gh;
        double __xx = __sw + __i3 * __bw + (__ix + 0.5) * __bw / __gw;
        double __w1 = 0, __w2 = 0, __w3 = 0, __w4 = 0;
        int64_t __ylo = 0, __yhi = 0, __xlo = 0, __xhi = 0;
        if (!(__yy < -1.0 || __yy > __H || __xx < -1.0 || __xx > __W)) {{
            __yy = std::max(__yy, 0.0);
            __xx = std::max(__xx, 0.0);
            __ylo = (int64_t)__yy;
            __xlo = (int64_t)__xx;
            if (__ylo >= __H - 1) {{ __yhi = __ylo = __H - 1; __yy = (double)__ylo; }} else __yhi = __ylo + 1;
            if (__xlo >= __W - 1) {{ __xhi = __xlo = __W - 1; __xx = (double)__xlo; }} else __xhi = __xlo + 1;
            const double __ly = __yy - __ylo, __lx = __xx - __xlo, __hy = 1.0 - __ly, __hx = 1.0 - __lx;
            __w1 = __hy * __hx; __w2 = __hy * __lx; __w3 = __ly * __hx; __w4 = __ly * __lx;
        }}
        const double __v1 = __w1 * {_f64(px.format("__ylo", "__xlo"))};
        const double __v2 = __w2 * {_f64(px.format("__ylo", "__xhi"))};
        const double __v3 = __w3 * {_f64(px.format("__yhi", "__xlo"))};
        const double __v4 = __w4 * {_f64(px.format("__yhi", "__xhi"))};
"""
        if mode == "avg":
            code += "        __out += __v1 + __v2 + __v3 + __v4;\n    }\n}\n__out /= __count;\n"
        else:
            code += """        const double __v = std::max(std::max(__v1, __v2), std::max(__v3, __v4));
        __out = __first ? __v : std::max(__out, __v);
        __first = false;
    }
}
"""
        code += f"__y[{offset(y, _idx(4))}] = {_to(y.dtype, '__out')};"
        _kernel(nstate, descs, f"{node.label}_roialign", _ranges(y.shape),
                {"__x": "X", "__rois": "rois", "__batch": "batch_indices"}, {"__y": "Y"}, code)
        return nsdfg


@op_implementation("MaxRoiPool", name="pure")
class PureMaxRoiPool(Implementation):
    """MaxRoiPool: a map over (roi, channel, y, x) of the output; the largest value in the
    bin (rounded roi corners, floor/ceil bin edges, 0 for an empty bin), as onnxruntime does."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, y, rois = descs["X"], descs["Y"], descs["rois"]
        scale = float(_attr(node, "spatial_scale", 1.0))
        roi = f"{{}}(__rois[__i0 * {cpp(rois.strides[0])} + {{}} * {cpp(rois.strides[1])}])"
        corner = [f"(int64_t)std::round({roi.format('daceml_convert<float>', k)} * {scale!r}f)" for k in range(1, 5)]
        px = f"__x[__b * {cpp(x.strides[0])} + __i1 * {cpp(x.strides[1])} + __h * {cpp(x.strides[2])} + " \
             f"__w * {cpp(x.strides[3])}]"
        code = f"""
const int64_t __b = (int64_t){roi.format("daceml_convert<float>", 0)};
const int64_t __sw = {corner[0]}, __sh = {corner[1]}, __ew = {corner[2]}, __eh = {corner[3]};
const int64_t __H = {cpp(x.shape[2])}, __W = {cpp(x.shape[3])};
const float __bh = (float)std::max<int64_t>(__eh - __sh + 1, 1) / (float){cpp(y.shape[2])};
const float __bw = (float)std::max<int64_t>(__ew - __sw + 1, 1) / (float){cpp(y.shape[3])};
int64_t __hs = (int64_t)std::floor(__i2 * __bh), __he = (int64_t)std::ceil((__i2 + 1) * __bh);
int64_t __ws = (int64_t)std::floor(__i3 * __bw), __we = (int64_t)std::ceil((__i3 + 1) * __bw);
__hs = std::min(std::max<int64_t>(__hs + __sh, 0), __H); __he = std::min(std::max<int64_t>(__he + __sh, 0), __H);
__ws = std::min(std::max<int64_t>(__ws + __sw, 0), __W); __we = std::min(std::max<int64_t>(__we + __sw, 0), __W);
double __m = (__he <= __hs || __we <= __ws) ? 0.0 : -std::numeric_limits<double>::max();
for (int64_t __h = __hs; __h < __he; ++__h)
    for (int64_t __w = __ws; __w < __we; ++__w)
        __m = std::max(__m, {_f64(px)});
__y[{offset(y, _idx(4))}] = {_to(y.dtype, "__m")};"""
        _kernel(nstate, descs, f"{node.label}_maxroipool", _ranges(y.shape), {"__x": "X", "__rois": "rois"},
                {"__y": "Y"}, code)
        return nsdfg


# --- quantization ---------------------------------------------------------------------------------

_QUANT_RANGES = {dace.uint8: (0, 255), dace.int8: (-128, 127), dace.uint16: (0, 65535), dace.int16: (-32768, 32767),
                 dace.int32: (-2**31, 2**31 - 1)}


def _param_index(node, x, param, axis: int, block: int) -> str:
    """Offset into a scale / zero-point ``param`` for the element ``__i0, __i1, ...`` of ``x``:
    per tensor (one element), per axis (1-D) or blocked (the rank of ``x``)."""
    rank = len(x.shape)
    if block and len(param.shape) == rank and rank > 0:
        return offset(param, _idx(rank, {axis: f"__i{axis} / {block}"}))
    if _static_int(param.total_size) == 1:
        return "0"
    return f"__i{axis} * {cpp(param.strides[0])}"


def _quant_layout(node, x, scale):
    """(axis, block size) of a (de)quantization; the axis matters only per axis or blocked."""
    rank = len(x.shape)
    axis = int(_attr(node, "axis", 1))
    if -rank <= axis < rank:
        axis %= rank
    elif _static_int(scale.total_size) == 1:
        axis = 0
    else:
        raise InvalidNodeError(f"{node.describe()}: axis {axis} is out of range for an input of rank {rank}")
    return axis, int(_attr(node, "block_size", 0) or 0)


@op_implementation("DequantizeLinear", name="pure")
class PureDequantizeLinear(Implementation):
    """DequantizeLinear: a map over the elements; ``(x - zero_point) * scale`` (the difference
    exact, the product in double, then rounded to the output type)."""

    @staticmethod
    def why_not(node, state, sdfg):
        dtype = node.in_desc(state, sdfg, "x").dtype
        if dtype not in _QUANT_RANGES:
            return f"input type {dtype.to_string()} is not supported (int8, uint8, int16, uint16, int32)"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, s, y = descs["x"], descs["x_scale"], descs["y"]
        axis, block = _quant_layout(node, x, s)
        inputs = {"__x": "x", "__s": "x_scale"}
        zp = "0"
        if _has(node, "x_zero_point"):
            inputs["__zp"] = "x_zero_point"
            zp = f"(int64_t)__zp[{_param_index(node, x, descs['x_zero_point'], axis, block)}]"
        rank = len(x.shape)
        scale = _f64(f"__s[{_param_index(node, x, s, axis, block)}]")
        value = f"(double)((int64_t)__x[{offset(x, _idx(rank))}] - {zp}) * {scale}"
        if y.dtype in (dace.float32, dace.float16):
            value = f"(float)({value})"
        code = f"__y[{offset(y, _idx(rank))}] = {_to(y.dtype, value)};"
        _kernel(nstate, descs, f"{node.label}_dequantize", _ranges(x.shape), inputs, {"__y": "y"}, code)
        return nsdfg


#: QuantizeLinear's ``precision`` (an ONNX element type) -> the division's arithmetic
_PRECISIONS = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float", onnx.TensorProto.DOUBLE: "double"}


def _saturate(dtype: dace.typeclass, expr: str) -> str:
    lo, hi = _QUANT_RANGES[dtype]
    return f"({dtype.ctype})std::min<double>(std::max<double>({expr}, {lo}.0), {hi}.0)"


@op_implementation("QuantizeLinear", name="pure")
class PureQuantizeLinear(Implementation):
    """QuantizeLinear: a map over the elements; ``x / scale`` in the inputs' promoted type (float16:
    in float, rounded to float16) or the ``precision`` given, rounded half to even, plus the zero
    point, saturated."""

    @staticmethod
    def why_not(node, state, sdfg):
        dtype = node.out_desc(state, sdfg, "y").dtype
        if dtype not in _QUANT_RANGES or dtype == dace.int32:
            return f"output type {dtype.to_string()} is not supported (int8, uint8, int16, uint16)"
        precision = int(_attr(node, "precision", 0) or 0)
        if precision and precision not in _PRECISIONS:
            return f"precision {precision} is not supported (float16, float, double)"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x, s, y = descs["x"], descs["y_scale"], descs["y"]
        axis, block = _quant_layout(node, x, s)
        rank = len(x.shape)
        inputs = {"__x": "x", "__s": "y_scale"}
        zp = "0"
        if _has(node, "y_zero_point"):
            inputs["__zp"] = "y_zero_point"
            zp = f"(double)__zp[{_param_index(node, x, descs['y_zero_point'], axis, block)}]"
        xv = f"__x[{offset(x, _idx(rank))}]"
        sv = f"__s[{_param_index(node, x, s, axis, block)}]"
        precision = _PRECISIONS.get(int(_attr(node, "precision", 0) or 0))
        if precision == "float16":
            q = f"daceml_round_half({_f32(xv)} / {_f32(sv)})"  # the inputs as float16 are exact in float
        elif precision == "float":
            q = f"{_f32(xv)} / {_f32(sv)}"
        elif precision == "double":
            q = f"{_f64(xv)} / {_f64(sv)}"
        elif x.dtype == dace.float16 and s.dtype == dace.float16:
            q = f"daceml_round_half({_f32(xv)} / {_f32(sv)})"
        elif x.dtype == dace.float64 or s.dtype == dace.float64 or not is_float(x.dtype):
            q = f"{_f64(xv)} / {_f64(sv)}"
        else:
            q = f"{_f32(xv)} / {_f32(sv)}"
        code = f"""
const double __q = std::nearbyint((double)({q})) + {zp};
__y[{offset(y, _idx(rank))}] = __q != __q ? ({y.dtype.ctype})0 : {_saturate(y.dtype, "__q")};"""
        _kernel(nstate, descs, f"{node.label}_quantize", _ranges(x.shape), inputs, {"__y": "y"}, code)
        return nsdfg


@op_implementation("DynamicQuantizeLinear", name="pure")
class PureDynamicQuantizeLinear(Implementation):
    """DynamicQuantizeLinear: one sequential kernel: the range of x, scale and zero point in
    float (as the ONNX reference computes them), then the quantized values."""

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        x = descs["x"]
        n = cpp(x.total_size)
        code = f"""
float __mx = 0.0f, __mn = 0.0f;
for (int64_t __i = 0; __i < {n}; ++__i) {{
    const float __v = {_f32("__x[__i]")};
    if (__v > __mx) __mx = __v;
    if (__v < __mn) __mn = __v;
}}
const float __scale = (__mx == __mn ? 1.0f : (__mx - __mn)) / 255.0f;
float __zp = 0.0f - __mn / __scale;
__zp = std::nearbyint(std::max(0.0f, std::min(255.0f, __zp)));
"""
        outputs = {}
        for conn, value in (("y_scale", "__scale"), ("y_zero_point", "__zp")):
            if conn in descs:
                outputs[f"__o_{conn}"] = conn
                code += f"__o_{conn}[0] = {_to(descs[conn].dtype, value)};\n"
        if "y" in descs:
            outputs["__y"] = "y"
            code += f"""for (int64_t __i = 0; __i < {n}; ++__i) {{
    const float __q = std::nearbyint({_f32("__x[__i]")} / __scale) + __zp;
    __y[__i] = (uint8_t)std::min(255.0f, std::max(0.0f, __q));
}}"""
        _once(nstate, descs, f"{node.label}_dynquant", {"__x": "x"}, outputs, code)
        return nsdfg


def _qparam(conn_ptr: str, desc, index: str) -> str:
    """Element of a per-tensor (one element) or 1-D per-channel parameter."""
    if _static_int(desc.total_size) == 1:
        return f"{conn_ptr}[0]"
    return f"({cpp(desc.total_size)} == 1 ? {conn_ptr}[0] : {conn_ptr}[{index}])"


def _requantize(out_dtype: dace.typeclass, acc: str, x_scale: str, w_scale: str, y_scale: str, zp: str,
                half_scales: bool) -> str:
    """C++ for ``saturate(rint(acc * (x_scale * w_scale / y_scale)) + zp)``, the multiplier
    computed in the scales' type (float16 rounding after each operation) as numpy does."""
    if half_scales:
        mul = f"daceml_round_half(daceml_round_half({x_scale} * {w_scale}) / {y_scale})"
    else:
        mul = f"({x_scale} * {w_scale} / {y_scale})"
    return _saturate(out_dtype, f"std::nearbyint((double)({acc}) * (double){mul} + (double)({zp}))")


@op_implementation("QLinearMatMul", name="pure")
class PureQLinearMatMul(Implementation):
    """QLinearMatMul: a map over the output; an exact integer dot product, requantized (the
    ONNX reference's arithmetic). Batch dims broadcast; scales per tensor, per row of a or per
    column of b."""

    @staticmethod
    def why_not(node, state, sdfg):
        for c in ("a", "b"):
            if len(node.in_desc(state, sdfg, c).shape) < 2:
                return f"input {c!r} has rank < 2 (1-D operands are not supported)"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        a, b, y = descs["a"], descs["b"], descs["y"]
        rank = len(y.shape)
        m, n = f"__i{rank - 2}", f"__i{rank - 1}"

        def batch_index(desc, last2):
            r = len(desc.shape)
            idx = []
            for d in range(r - 2):
                od = rank - r + d
                idx.append("0" if _static_int(desc.shape[d]) == 1 else f"__i{od}")
            return idx + last2

        ao = offset(a, batch_index(a, [m, "__k"]))
        bo = offset(b, batch_index(b, ["__k", n]))
        names = {c: f"__{c}" for c in ("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
                                       "y_zero_point") if c in descs}
        azp = _qparam("__a_zero_point", descs["a_zero_point"], m) if "a_zero_point" in descs else "0"
        bzp = _qparam("__b_zero_point", descs["b_zero_point"], n) if "b_zero_point" in descs else "0"
        yzp = _qparam("__y_zero_point", descs["y_zero_point"], "0") if "y_zero_point" in descs else "0"
        half = descs["a_scale"].dtype == dace.float16
        scales = [_f32(_qparam(f"__{c}", descs[c], i)) for c, i in (("a_scale", m), ("b_scale", n), ("y_scale", "0"))]
        code = f"""
int64_t __acc = 0;
const int64_t __azp = (int64_t){azp}, __bzp = (int64_t){bzp};
for (int64_t __k = 0; __k < {cpp(a.shape[-1])}; ++__k)
    __acc += ((int64_t)__a[{ao}] - __azp) * ((int64_t)__b[{bo}] - __bzp);
__y[{offset(y, _idx(rank))}] = {_requantize(y.dtype, "__acc", *scales, f"(int64_t){yzp}", half)};"""
        _kernel(nstate, descs, f"{node.label}_qlinearmatmul", _ranges(y.shape),
                {v: k for k, v in names.items() if k != "y"}, {"__y": "y"}, code)
        return nsdfg


class _QuantConv(_PureBase):
    """ConvInteger and QLinearConv: a map over (batch, output channel, output position); an
    exact integer sum over the group's input channels and the kernel taps inside the image."""
    x_zp = "x_zero_point"
    w_zp = "w_zero_point"

    @classmethod
    def check(cls, node, state, sdfg):
        x, w, y = (node.in_desc(state, sdfg, "x"), node.in_desc(state, sdfg, "w"),
                   node.out_desc(state, sdfg, "y"))
        kernel = [int(s) for s in w.shape[2:]]
        win = window(node, x.shape, y.shape, kernel)
        group = int(_attr(node, "group", 1))
        if _static_int(x.shape[1]) != _static_int(w.shape[1]) * group:
            raise _Reject(f"input channels {x.shape[1]} != weight channels {w.shape[1]} x group {group}")
        return win

    @classmethod
    def accumulate(cls, node, descs, win) -> str:
        x, w = descs["x"], descs["w"]
        k = win.k
        group = int(_attr(node, "group", 1))
        cg = cpp(w.shape[1])
        mg = f"({cpp(w.shape[0])} / {group})"
        xzp = _qparam("__xzp", descs[cls.x_zp], "0") if cls.x_zp in descs else "0"
        wzp = _qparam("__wzp", descs[cls.w_zp], "__i1") if cls.w_zp in descs else "0"
        loops, conds, xi = [], [], ["__i0", "__ci"]
        for j in range(k):
            loops.append(f"for (int64_t __t{j} = 0; __t{j} < {win.kernel[j]}; ++__t{j})")
            pos = f"(__i{2 + j} * {win.strides[j]} - {win.pads_begin[j]} + __t{j} * {win.dilations[j]})"
            conds.append(f"{pos} < 0 || {pos} >= {win.ins[j]}")
            xi.append(pos)
        wi = ["__i1", "__c"] + [f"__t{j}" for j in range(k)]
        return f"""
int64_t __acc = 0;
const int64_t __xz = (int64_t){xzp}, __wz = (int64_t){wzp};
const int64_t __g = __i1 / {mg};
for (int64_t __c = 0; __c < {cg}; ++__c) {{
    const int64_t __ci = __g * {cg} + __c;
    {" ".join(loops)} {{
        if ({" || ".join(conds)}) continue;
        __acc += ((int64_t)__x[{offset(x, xi)}] - __xz) * ((int64_t)__w[{offset(w, wi)}] - __wz);
    }}
}}"""

    @classmethod
    def inputs(cls, node, descs) -> Dict[str, str]:
        ins = {"__x": "x", "__w": "w"}
        if cls.x_zp in descs:
            ins["__xzp"] = cls.x_zp
        if cls.w_zp in descs:
            ins["__wzp"] = cls.w_zp
        return ins


@op_implementation("ConvInteger", name="pure")
class PureConvInteger(_QuantConv):
    __doc__ = _QuantConv.__doc__

    @classmethod
    def expansion(cls, node, state, sdfg):
        win = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        y = descs["y"]
        code = cls.accumulate(node, descs, win) + f"\n__y[{offset(y, _idx(len(y.shape)))}] = (int32_t)__acc;"
        _kernel(nstate, descs, f"{node.label}_convinteger", _ranges(y.shape), cls.inputs(node, descs), {"__y": "y"},
                code)
        return nsdfg


@op_implementation("QLinearConv", name="pure")
class PureQLinearConv(_QuantConv):
    """QLinearConv: ConvInteger's integer sum plus the bias, requantized as in the ONNX reference."""

    @classmethod
    def expansion(cls, node, state, sdfg):
        win = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _sdfg(node, state, sdfg)
        y = descs["y"]
        ins = cls.inputs(node, descs)
        ins.update({"__xs": "x_scale", "__ws": "w_scale", "__ys": "y_scale"})
        code = cls.accumulate(node, descs, win)
        if "B" in descs:
            ins["__bias"] = "B"
            code += f"\n__acc += (int64_t)__bias[__i1 * {cpp(descs['B'].strides[0])}];"
        yzp = "0"
        if "y_zero_point" in descs:
            ins["__yzp"] = "y_zero_point"
            yzp = "(int64_t)__yzp[0]"
        half = descs["x_scale"].dtype == dace.float16
        scales = [_f32("__xs[0]"), _f32(_qparam("__ws", descs["w_scale"], "__i1")), _f32("__ys[0]")]
        code += f"\n__y[{offset(y, _idx(len(y.shape)))}] = {_requantize(y.dtype, '__acc', *scales, yzp, half)};"
        _kernel(nstate, descs, f"{node.label}_qlinearconv", _ranges(y.shape), ins, {"__y": "y"}, code)
        return nsdfg
