"""Conversions for the element types numpy lacks ("exotic" types).

Ops: Cast CastLike, where the input or the output is bfloat16, a float8 format
(e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4e2m1, int4, uint4, int2 or uint2;
QuantizeLinear to and DequantizeLinear from float8, float4e2m1, int4/uint4 and
int2/uint2 (per tensor, per axis, blocked; arithmetic as onnx's reference evaluator:
``x / scale`` in the promoted type of the two, float8 ignores the zero point, float4
adds it before rounding; DequantizeLinear multiplies in float32, or double for a double
scale). The 8- and 16-bit integer cases are daceml.onnx.ops.misc's.

Such arrays are stored as unsigned integers of the same bits (see
:mod:`daceml.onnx.dtypes`); the conversions are C++ helpers in :data:`EXOTIC_HELPERS`:

- floating formats: one generic encoder from ``double`` (float64 inputs are rounded to
  float32 first, as ml_dtypes and onnx's reference do) with round-to-nearest-even, subnormals,
  and the ONNX ``saturate`` semantics of the float8 formats: with ``saturate`` values
  beyond the largest finite value (and infinities) become +-max; without it they become
  infinity (e5m2) or NaN (e4m3fn: S.1111.111, the fnuz formats: 0x80). bfloat16 rounds to
  infinity (``saturate`` applies to float8 only); float4e2m1 always saturates; the fnuz
  formats have no negative zero. Decoding is exact (every value fits a float).
- float8e8m0 (a power of two, 0xff is NaN): from float32 by ``round_mode`` up, down or
  nearest and ``saturate``, as onnx.numpy_helper.to_float8e8m0.
- int4/uint4/int2/uint2: integers wrap to the low bits; floating values are truncated
  toward zero first (NaN, infinities and values beyond int32 give 0), as ml_dtypes.

Conversions between two exotic types go through float (exact for every exotic source).
The ordinary types are cast by ``daceml_convert`` (:mod:`daceml.onnx.ops.shape`).

Registration: ``exotic`` (refuses ordinary types) and ``pure``, which replaces the
``pure`` implementation registered before (shape.py's Cast/CastLike, misc.py's
QuantizeLinear/DequantizeLinear) with a dispatcher that hands exotic nodes to
``exotic`` and all others to the replaced implementation unchanged, so the default
choice is right without a fallback warning.
"""
import importlib
from typing import Optional, Tuple

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx import dtypes as odt
from daceml.onnx.ops import registry
from daceml.onnx.ops import shape as shape_ops
from daceml.onnx.ops.common import add_cpp_array_kernel, add_helper_code, map_params, map_ranges
from daceml.onnx.ops.registry import Implementation, op_implementation

#: C++ conversion helpers for the exotic types (see the module docstring)
EXOTIC_HELPERS = r"""
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cmath>
// Floating formats with EB exponent bits, MB mantissa bits and exponent bias BIAS, stored in
// the low 1 + EB + MB bits. KIND 0: IEEE-like, with infinities and NaNs (bfloat16, e5m2);
// 1: no infinities, NaN = S.1..1.1..1 (e4m3fn); 2: no infinities, no -0, NaN = 0x80 (fnuz);
// 3: no infinities, no NaN, always saturating (e2m1).
template <int EB, int MB, int BIAS, int KIND>
static inline uint32_t daceml_fp_encode(double x, bool saturate) {
    const uint32_t SIGN = 1u << (EB + MB);
    const uint32_t EXP_ONES = ((1u << EB) - 1u) << MB;
    const uint32_t MMASK = (1u << MB) - 1u;
    const uint32_t MAXC = KIND == 0 ? EXP_ONES - 1u : (KIND == 1 ? (EXP_ONES | (MMASK - 1u)) : (EXP_ONES | MMASK));
    uint64_t b;
    std::memcpy(&b, &x, sizeof b);
    const uint32_t sign = (b >> 63) ? SIGN : 0u;
    const uint64_t a = b & 0x7fffffffffffffffull;
    if (a > 0x7ff0000000000000ull) {  // NaN
        if (KIND == 0) return sign | EXP_ONES | (1u << (MB - 1));
        if (KIND == 1) return sign | EXP_ONES | MMASK;
        if (KIND == 2) return SIGN;
        return sign ? 0u : SIGN;  // e2m1 has no NaN: as ml_dtypes
    }
    const uint32_t overflow = (saturate || KIND == 3) ? (sign | MAXC)
                            : (KIND == 0 ? (sign | EXP_ONES) : (KIND == 1 ? (sign | EXP_ONES | MMASK) : SIGN));
    if (a == 0x7ff0000000000000ull) return overflow;  // infinity
    int e = (int)(a >> 52);
    uint64_t sig = a & 0xfffffffffffffull;
    if (e == 0) e = 1; else sig |= 1ull << 52;
    e -= 1023;
    const int EMIN = 1 - BIAS;
    const int te = e < EMIN ? EMIN : e;           // exponent of the result's quantum
    const int shift = 52 - MB + (te - e);          // >= 52 - MB > 0
    uint64_t r = 0;
    if (shift < 64) {
        r = sig >> shift;
        const uint64_t rem = sig & ((1ull << shift) - 1ull), half = 1ull << (shift - 1);
        if (rem > half || (rem == half && (r & 1ull))) ++r;  // round to nearest even
    }
    // subnormal (te == EMIN, r < 2^MB) and normal results, a mantissa carry included
    const int64_t code = ((int64_t)(te + BIAS) << MB) + (int64_t)r - (1ll << MB);
    if (code > (int64_t)MAXC) return overflow;
    if (code == 0 && KIND == 2) return 0u;        // fnuz: no negative zero
    return sign | (uint32_t)code;
}
template <int EB, int MB, int BIAS, int KIND>
static inline float daceml_fp_decode(uint32_t c) {
    const uint32_t SIGN = 1u << (EB + MB);
    const uint32_t EXP_ONES = ((1u << EB) - 1u) << MB;
    const uint32_t MMASK = (1u << MB) - 1u;
    const bool neg = (c & SIGN) != 0;
    const uint32_t m = c & (SIGN - 1u);
    if (KIND == 2 && c == SIGN) return NAN;
    if (KIND == 0 && (m & EXP_ONES) == EXP_ONES) return (m & MMASK) ? (neg ? -NAN : NAN) : (neg ? -INFINITY : INFINITY);
    if (KIND == 1 && m == (EXP_ONES | MMASK)) return neg ? -NAN : NAN;
    const uint32_t ex = m >> MB, mant = m & MMASK;
    float v;
    if (ex == 0) {
        v = std::ldexp((float)mant, 1 - BIAS - MB);
    } else {
        const uint32_t bits = ((ex + 127u - (uint32_t)BIAS) << 23) | (mant << (23 - MB));
        std::memcpy(&v, &bits, sizeof v);
    }
    return neg ? -v : v;
}
// float8e8m0: 2^(c - 127), 0xff is NaN. round: 0 up, 1 down, 2 nearest (onnx.numpy_helper.to_float8e8m0).
static inline uint32_t daceml_e8m0_encode(float x, bool saturate, int round) {
    uint32_t b;
    std::memcpy(&b, &x, sizeof b);
    const uint32_t e = (b >> 23) & 0xffu;
    if (e == 0xffu) return 0xffu;
    uint32_t inc = 0;
    if (round == 0) {
        inc = (b & 0x7fffffu) != 0;
    } else if (round == 2) {
        const bool g = (b >> 22) & 1u, r = (b >> 21) & 1u, s = (b & 0x1fffffu) != 0, lsb = e > 0;
        inc = g && (r || s || lsb);
    }
    if (saturate && e == 0xfeu) inc = 0;
    return (e + inc) & 0xffu;
}
static inline float daceml_e8m0_decode(uint32_t c) {
    if (c == 0xffu) return NAN;
    const uint32_t bits = c == 0 ? 0x00400000u : (c << 23);
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}
// 4- and 2-bit integers: the low BITS bits of the value.
template <int BITS, bool SIGNED>
static inline int32_t daceml_intn_decode(uint32_t c) {
    return SIGNED ? ((int32_t)(c << (32 - BITS)) >> (32 - BITS)) : (int32_t)(c & ((1u << BITS) - 1u));
}
template <int BITS>
static inline uint32_t daceml_intn_from_int(int64_t v) { return (uint32_t)v & ((1u << BITS) - 1u); }
template <int BITS>
static inline uint32_t daceml_intn_from_float(double x) {
    if (!(std::fabs(x) < 2147483648.0)) return 0u;  // NaN, infinities, beyond int32 (as ml_dtypes on x86)
    return (uint32_t)(int32_t)x & ((1u << BITS) - 1u);
}
"""

#: ONNX type name -> (decoder, encoder template arguments) of the floating formats
_FP_PARAMS = {
    "bfloat16": "8, 7, 127, 0",
    "float8e4m3fn": "4, 3, 7, 1",
    "float8e4m3fnuz": "4, 3, 8, 2",
    "float8e5m2": "5, 2, 15, 0",
    "float8e5m2fnuz": "5, 2, 16, 2",
    "float4e2m1": "2, 1, 1, 3",
}
#: formats the ``saturate`` attribute applies to
_SATURATING = {"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0"}
_ROUND_MODES = {"up": 0, "down": 1, "nearest": 2}


def _decode(t: Optional[odt.ExoticType], dtype: dace.typeclass, value: str) -> Tuple[str, str]:
    """(C++ expression, class) of an input element ``value``: class "float" (a float
    expression), "double" or "int" (an integer expression)."""
    if t is None:
        if dtype == dace.float16:  # decoded here: daceml_h2f halves subnormal float16 values
            return f"daceml_fp_decode<5, 10, 15, 0>(({value}).h)", "float"
        if dtype == dace.float32:
            return value, "float"
        if dtype == dace.float64:
            return value, "double"
        if dtype == dace.bool_:
            return f"(int32_t)({value} ? 1 : 0)", "int"
        return f"(int64_t)({value})", "int"
    if t.name in _FP_PARAMS:
        return f"daceml_fp_decode<{_FP_PARAMS[t.name]}>({value})", "float"
    if t.name == "float8e8m0":
        return f"daceml_e8m0_decode({value})", "float"
    return f"daceml_intn_decode<{t.bits}, {'true' if t.kind == 'int' else 'false'}>({value})", "int"


def _encode(t: Optional[odt.ExoticType], dtype: dace.typeclass, expr: str, cls: str, saturate: bool,
            round_mode: int) -> str:
    """C++ expression of the output element (of storage ``dtype``) for the decoded ``expr``."""
    if t is None:
        return f"daceml_convert<{dtype.ctype}>({expr})"
    sat = "true" if saturate and t.name in _SATURATING else "false"
    if cls == "double" and t.kind == "float":  # through float32, as ml_dtypes and onnx's reference
        expr, cls = f"(float)({expr})", "float"
    if t.name in _FP_PARAMS:
        return f"({dtype.ctype})daceml_fp_encode<{_FP_PARAMS[t.name]}>((double)({expr}), {sat})"
    if t.name == "float8e8m0":
        return f"({dtype.ctype})daceml_e8m0_encode((float)({expr}), {sat}, {round_mode})"
    if cls == "int":
        return f"({dtype.ctype})daceml_intn_from_int<{t.bits}>({expr})"
    return f"({dtype.ctype})daceml_intn_from_float<{t.bits}>((double)({expr}))"


def _attr(node, name: str, default):
    if name not in node.schema.attributes:
        return default
    value = getattr(node, name)
    return default if value is None else value


def _types(node, state, sdfg):
    """(input exotic type, input desc, output exotic type, output desc) of a Cast/CastLike node."""
    din, dout = node.in_desc(state, sdfg, "input"), node.out_desc(state, sdfg, "output")
    tin = odt.exotic_of(din)
    if node.schema.name == "Cast":
        tout = odt.exotic(int(node.to))  # the attribute is authoritative
    else:
        tout = odt.exotic_of(node.in_desc(state, sdfg, "target_type")) or odt.exotic_of(dout)
    return tin, din, tout, dout


def _why_not(node, state, sdfg) -> Optional[str]:
    tin, din, tout, dout = _types(node, state, sdfg)
    if tin is None and tout is None:
        return (f"input and output are ordinary types ({din.dtype} -> {dout.dtype}); 'exotic' handles "
                "bfloat16, float8, float4, int4/uint4 and int2/uint2 only")
    for t, d in ((tin, din), (tout, dout)):
        if t is not None and d.dtype != t.storage:
            return f"an array of {t.name} is stored as {d.dtype}, expected {t.storage}"
    if tin is None and odt.DACE_TO_ONNX.get(din.dtype) is None:
        return f"input element type {din.dtype} is not supported"
    return None


def _expansion(node, state, sdfg):
    tin, din, tout, dout = _types(node, state, sdfg)
    saturate = bool(int(_attr(node, "saturate", 1)))
    mode = _attr(node, "round_mode", "up")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in _ROUND_MODES:
        raise InvalidNodeError(f"{node.describe()}: round_mode {mode!r} is not one of {sorted(_ROUND_MODES)}")
    nsdfg, nstate, descs = shape_ops.expansion_sdfg(node, state, sdfg)
    add_helper_code(nsdfg, "exotic_types", EXOTIC_HELPERS)
    if tin is not None and tout is not None and tin.name == tout.name:
        code = "__out[__k] = __in[__k];"
    else:
        expr, cls = _decode(tin, din.dtype, "__in[__k]")
        code = f"__out[__k] = {_encode(tout, dout.dtype, expr, cls, saturate, _ROUND_MODES[mode])};"
    add_cpp_array_kernel(nstate, f"{node.label}_cast", {"__k": f"0:{descs['output'].total_size}"}, descs,
                         {"__in": "input"}, {"__out": "output"}, code)
    return nsdfg


@op_implementation("Cast", name="exotic")
class ExoticCast(Implementation):
    """Cast from or to bfloat16, float8, float4, int4/uint4, int2/uint2 (C++ bit conversions,
    ``saturate`` and ``round_mode`` as in the ONNX specification)."""
    why_not = staticmethod(_why_not)
    expansion = staticmethod(_expansion)


@op_implementation("CastLike", name="exotic")
class ExoticCastLike(Implementation):
    """CastLike from or to bfloat16, float8, float4, int4/uint4, int2/uint2."""
    why_not = staticmethod(_why_not)
    expansion = staticmethod(_expansion)


# --- QuantizeLinear / DequantizeLinear ------------------------------------------------------------

_QUANT_RANGES = {"int4": (-8, 7), "uint4": (0, 15), "int2": (-2, 1), "uint2": (0, 3)}
_FLOAT8 = {"float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz"}


def _quant_why_not(node, state, sdfg, quantized: str) -> Optional[str]:
    desc = node.in_desc(state, sdfg, quantized) if quantized in node.in_connectors else \
        node.out_desc(state, sdfg, quantized)
    t = odt.exotic_of(desc)
    if t is None:
        return f"{quantized!r} is of type {desc.dtype}; 'exotic' handles float8, float4, int4/uint4, int2/uint2 only"
    if t.name not in _QUANT_RANGES and t.name not in _FLOAT8 and t.name != "float4e2m1":
        return f"{t.name} is not a quantized type of {node.schema.name}"
    return None


def _round_to(onnx_type: int, expr: str) -> str:
    """``expr`` (a float) rounded to float16 / bfloat16 (onnx_type), as a float; else itself."""
    params = {odt.onnx.TensorProto.FLOAT16: "5, 10, 15, 0", odt.onnx.TensorProto.BFLOAT16: "8, 7, 127, 0"}
    if onnx_type in params:
        return f"daceml_fp_decode<{params[onnx_type]}>(daceml_fp_encode<{params[onnx_type]}>((double)({expr}), false))"
    return expr


def _param_offset(x, p, axis: int, block: int) -> str:
    """Offset into a scale / zero point ``p`` for the element ``__i0, __i1, ...`` of ``x``:
    per tensor (one element), per axis (1-D) or blocked (the rank of ``x``)."""
    rank = len(x.shape)
    try:
        if int(p.total_size) == 1:
            return "0"
    except TypeError:
        pass
    if block and len(p.shape) == rank:
        return shape_ops.offset(p, [f"__i{d} / {block}" if d == axis else f"__i{d}" for d in range(rank)])
    return shape_ops.offset(p, [f"__i{axis}"])


def _layout(node, x) -> Tuple[int, int]:
    rank = len(x.shape)
    axis = int(_attr(node, "axis", 1))
    if not -rank <= axis < rank:
        axis = 0  # only a per-tensor scale can have an out-of-range axis (checked by onnx)
    return axis % rank, int(_attr(node, "block_size", 0) or 0)


def _quant_sdfg(node, state, sdfg):
    nsdfg, nstate, descs = shape_ops.expansion_sdfg(node, state, sdfg)
    add_helper_code(nsdfg, "exotic_types", EXOTIC_HELPERS)
    return nsdfg, nstate, descs


def _promoted(*types) -> int:
    """numpy's result type of a division / product of two float types (as ONNX types)."""
    tp = odt.onnx.TensorProto
    if tp.DOUBLE in types:
        return tp.DOUBLE
    if len(set(types)) == 1:
        return types[0]
    return tp.FLOAT


def _quantize_expansion(node, state, sdfg):
    nsdfg, nstate, descs = _quant_sdfg(node, state, sdfg)
    x, s, y = descs["x"], descs["y_scale"], descs["y"]
    ty = odt.exotic_of(y)
    axis, block = _layout(node, x)
    idx = map_params(len(x.shape))
    xv, _ = _decode(odt.exotic_of(x), x.dtype, f"__x[{shape_ops.offset(x, idx)}]")
    sv, _ = _decode(odt.exotic_of(s), s.dtype, f"__s[{_param_offset(x, s, axis, block)}]")
    inputs = {"__x": "x", "__s": "y_scale"}
    precision = int(_attr(node, "precision", 0) or 0)
    tx, ts = odt.logical_type(x), odt.logical_type(s)
    p = precision or _promoted(tx, ts)
    ctype = "double" if p == odt.onnx.TensorProto.DOUBLE else "float"
    q = _round_to(p, f"({ctype})({_round_to(p, xv)}) / ({ctype})({_round_to(p, sv)})")
    zp = None
    if "y_zero_point" in node.in_connectors:
        inputs["__zp"] = "y_zero_point"
        zp, _ = _decode(odt.exotic_of(descs["y_zero_point"]), descs["y_zero_point"].dtype,
                        f"__zp[{_param_offset(x, descs['y_zero_point'], axis, block)}]")
    code = f"const {ctype} __q = {q};\n"
    out = f"__y[{shape_ops.offset(y, idx)}]"
    if ty.name in _QUANT_RANGES:
        lo, hi = _QUANT_RANGES[ty.name]
        code += (f"const double __r = std::nearbyint((double)__q) + (double)({zp or 0});\n"
                 f"{out} = (uint8_t)daceml_intn_from_int<{ty.bits}>(__q != __q ? 0 : "
                 f"(int64_t)std::min<double>(std::max<double>(__r, {lo}.0), {hi}.0));")
    elif ty.name in _FLOAT8:  # the zero point is ignored (it must be 0), as in onnx's reference
        code += f"{out} = {_encode(ty, y.dtype, '__q', 'float', bool(int(_attr(node, 'saturate', 1))), 0)};"
    else:  # float4e2m1: the zero point is added before rounding
        code += f"{out} = {_encode(ty, y.dtype, f'(__q + ({zp or 0}))', 'float', True, 0)};"
    add_cpp_array_kernel(nstate, f"{node.label}_quantize", map_ranges(x.shape), descs, inputs, {"__y": "y"},
                         code)
    return nsdfg


def _dequantize_expansion(node, state, sdfg):
    nsdfg, nstate, descs = _quant_sdfg(node, state, sdfg)
    x, s, y = descs["x"], descs["x_scale"], descs["y"]
    tx = odt.exotic_of(x)
    axis, block = _layout(node, x)
    idx = map_params(len(x.shape))
    inputs = {"__x": "x", "__s": "x_scale"}
    xv, _ = _decode(tx, x.dtype, f"__x[{shape_ops.offset(x, idx)}]")
    sv, _ = _decode(odt.exotic_of(s), s.dtype, f"__s[{_param_offset(x, s, axis, block)}]")
    ctype = "double" if s.dtype == dace.float64 else "float"
    dx = f"({ctype})({xv})"
    if "x_zero_point" in node.in_connectors and tx.name in _QUANT_RANGES:  # float8/float4: ignored
        inputs["__zp"] = "x_zero_point"
        zp, _ = _decode(odt.exotic_of(descs["x_zero_point"]), descs["x_zero_point"].dtype,
                        f"__zp[{_param_offset(x, descs['x_zero_point'], axis, block)}]")
        dx = f"(({ctype})({xv}) - ({ctype})({zp}))"
    value = f"({dx} * ({ctype})({sv}))"
    code = f"__y[{shape_ops.offset(y, idx)}] = {_encode(odt.exotic_of(y), y.dtype, value, 'float', False, 0)};"
    add_cpp_array_kernel(nstate, f"{node.label}_dequantize", map_ranges(x.shape), descs, inputs, {"__y": "y"},
                         code)
    return nsdfg


@op_implementation("QuantizeLinear", name="exotic")
class ExoticQuantizeLinear(Implementation):
    """QuantizeLinear to float8, float4e2m1, int4/uint4, int2/uint2."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _quant_why_not(node, state, sdfg, "y")

    expansion = staticmethod(_quantize_expansion)


@op_implementation("DequantizeLinear", name="exotic")
class ExoticDequantizeLinear(Implementation):
    """DequantizeLinear from float8, float4e2m1, int4/uint4, int2/uint2."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _quant_why_not(node, state, sdfg, "x")

    expansion = staticmethod(_dequantize_expansion)


# --- "pure": dispatch between the ordinary and the exotic implementation -------------------------

def _node_is_exotic(node, state, sdfg) -> bool:
    for conns, getter in ((node.in_connectors, node.in_desc), (node.out_connectors, node.out_desc)):
        for conn in conns:
            if odt.exotic_of(getter(state, sdfg, conn)) is not None:
                return True
    return False


def _pure(op: str, ordinary: Optional[type], exotic_impl: type) -> type:
    """Registers (replaces) ``pure`` of ``op``: exotic nodes go to ``exotic_impl``, all
    others to ``ordinary`` (the ``pure`` implementation registered before, if any)."""
    base = ordinary or Implementation

    @op_implementation(op, name="pure")
    class PureAllTypes(base):
        __doc__ = (f"{op}: the types numpy lacks (bfloat16, float8, ...) through {exotic_impl.__qualname__}; "
                   f"the others through {ordinary.__qualname__ if ordinary else 'nothing'}.\n\n"
                   f"{(ordinary.__doc__ or '') if ordinary else ''}")

        @staticmethod
        def why_not(node, state, sdfg):
            if _node_is_exotic(node, state, sdfg):
                return exotic_impl.why_not(node, state, sdfg)
            if ordinary is None:
                return f"no implementation of {op} for ordinary types is registered"
            return ordinary.why_not(node, state, sdfg)

        @staticmethod
        def expansion(node, state, sdfg):
            if _node_is_exotic(node, state, sdfg):
                return exotic_impl.expansion(node, state, sdfg)
            return ordinary.expansion(node, state, sdfg)

    PureAllTypes.__name__ = PureAllTypes.__qualname__ = f"Pure{op}AllTypes"
    return PureAllTypes


PureCastAllTypes = _pure("Cast", shape_ops.PureCast, ExoticCast)
PureCastLikeAllTypes = _pure("CastLike", shape_ops.PureCastLike, ExoticCastLike)
# misc.py registers the ordinary QuantizeLinear/DequantizeLinear; load it first so that they are wrapped
importlib.import_module("daceml.onnx.ops.misc")
PureQuantizeLinearAllTypes = _pure("QuantizeLinear", registry.implementations("QuantizeLinear").get("pure"),
                                   ExoticQuantizeLinear)
PureDequantizeLinearAllTypes = _pure("DequantizeLinear", registry.implementations("DequantizeLinear").get("pure"),
                                     ExoticDequantizeLinear)
