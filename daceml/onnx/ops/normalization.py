"""Normalization and the softmax family.

Ops: BatchNormalization (inference), LayerNormalization (with the optional Mean and
InvStdDev outputs), InstanceNormalization, GroupNormalization, LRN, Softmax,
LogSoftmax, Hardmax.

Every implementation here is ``pure``: one DaCe map over the independent rows
(parallel over all of its dims) around one C++ tasklet that loops over the row:
max, then exp-sum, then normalize for softmax (numerically stable); mean, then
variance of the deviations, then normalize for the norms (two passes, no
catastrophic cancellation). Rows are contiguous, or for Softmax at opset >= 13
along an inner axis, strided. Sizes may be symbolic (batch, sequence length);
channel counts of GroupNormalization must be static.

Softmax, LogSoftmax and Hardmax follow their opset: before 13 the input is
coerced to 2-D at ``axis`` (default 1) and each row of that matrix is
normalized; from 13 on, the op works along the single ``axis`` (default -1).
"""
import math
from typing import Dict, Sequence

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx.ops.common import add_cpp_map, add_helper_code, cpp, is_one, nested_sdfg, normalize_axis
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation

_FLOATS = (dace.float32, dace.float64)


_Reject = Rejected  # raised by the checks; why_not turns it into its reason


def _floats(node, state, sdfg, conns: Sequence[str]) -> None:
    for c in conns:
        dtype = node.in_desc(state, sdfg, c).dtype
        if dtype not in _FLOATS:
            raise _Reject(f"input {c!r} has element type {dtype.to_string()}; the pure implementation supports "
                          f"float32 and float64")


class _PureBase(CheckedImplementation):
    """why_not from a ``check`` that raises _Reject; expansion re-raises it naming the node."""

    @classmethod
    def check(cls, node, state, sdfg):
        _floats(node, state, sdfg, node.input_connectors())


def _ranges(shape: Sequence, dims: Sequence[int]) -> Dict[str, str]:
    """Map ranges over ``dims`` of ``shape`` (params ``__i<dim>``); one iteration if none."""
    if not dims:
        return {"__r": "0:1"}
    return {f"__i{d}": f"0:{cpp(shape[d])}" for d in dims}


def _row_subset(name: str, shape: Sequence, map_dims: Sequence[int], unit_dims: Sequence[int] = (),
                block: int = 1) -> str:
    """``name[...]``: map params in ``map_dims``, 0 in ``unit_dims``, the full range elsewhere;
    with ``block`` > 1 the last of ``map_dims`` takes ``block`` indices per map param."""
    idx = []
    for d, s in enumerate(shape):
        if block > 1 and d == map_dims[-1]:
            idx.append(f"{block}*__i{d}:{block}*__i{d}+{block}")
        elif d in map_dims:
            idx.append(f"__i{d}")
        elif d in unit_dims:
            idx.append("0")
        else:
            idx.append(f"0:{cpp(s)}")
    return f"{name}[{','.join(idx)}]"


def _bcast_flat(param_shape: Sequence, target_shape: Sequence, var: str) -> str:
    """C++ index into a row-major array of ``param_shape`` broadcast (right-aligned) to
    ``target_shape``, given the flat row-major index ``var`` into the target."""
    if all(is_one(s) for s in param_shape):
        return "0"
    offset = len(target_shape) - len(param_shape)
    if offset < 0:
        raise _Reject(f"shape {tuple(param_shape)} does not broadcast to {tuple(target_shape)}")
    padded = [1] * offset + list(param_shape)
    if all(is_one(p) or p == t for p, t in zip(padded, target_shape)) and \
            [p for p in padded] == list(target_shape):
        return var
    terms = []
    for d, (p, t) in enumerate(zip(padded, target_shape)):
        if is_one(p):
            continue
        if p != t:
            raise _Reject(f"shape {tuple(param_shape)} does not broadcast to {tuple(target_shape)}")
        inner = math.prod(target_shape[d + 1:])
        pstride = math.prod(padded[d + 1:])
        terms.append(f"(({var} / {cpp(inner)}) % {cpp(t)}) * {cpp(pstride)}")
    return " + ".join(terms) or "0"


#: SIMD vectors for the float row loops, as wide as the target's (GCC/Clang vector
#: extensions: 16 floats with AVX-512, else 8), and their horizontal sum and max by halving
#: shuffles (a scalar loop over the lanes is a chain of 16 dependent adds).
_ROW_SIMD = r"""
#if defined(__AVX512F__)
typedef float daceml_vf __attribute__((vector_size(64)));
typedef int daceml_vi __attribute__((vector_size(64)));
#else
typedef float daceml_vf __attribute__((vector_size(32)));
typedef int daceml_vi __attribute__((vector_size(32)));
#endif
#define DACEML_VL ((long long)(sizeof(daceml_vf) / sizeof(float)))
typedef float daceml_vf8 __attribute__((vector_size(32)));
typedef float daceml_vf4 __attribute__((vector_size(16)));
static inline float daceml_hsum(daceml_vf8 v) {
    const daceml_vf4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
    return (a[0] + a[2]) + (a[1] + a[3]);
}
static inline float daceml_hmax(daceml_vf8 v) {
    const daceml_vf4 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3), hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
    const daceml_vf4 a = lo > hi ? lo : hi;
    const float p = a[0] > a[2] ? a[0] : a[2], q = a[1] > a[3] ? a[1] : a[3];
    return p > q ? p : q;
}
#if defined(__AVX512F__)
static inline daceml_vf8 daceml_halves_sum(daceml_vf v) {
    return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}
static inline float daceml_hsum(daceml_vf v) { return daceml_hsum(daceml_halves_sum(v)); }
static inline float daceml_hmax(daceml_vf v) {
    const daceml_vf8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    const daceml_vf8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    return daceml_hmax(lo > hi ? lo : hi);
}
#endif
"""


def _add_row_simd(sdfg: dace.SDFG) -> None:
    add_helper_code(sdfg, "row_simd", _ROW_SIMD)


def _simd_or(vector: str, plain: str) -> str:
    """``vector`` code where the file has the ``_ROW_SIMD`` helpers (CPU code), else ``plain``
    (the tasklet in a CUDA kernel, whose file has only the device-safe helpers)."""
    return f"#ifdef DACEML_HELPER_ROW_SIMD\n{vector}#else\n{plain}#endif\n"


def _vector_row_sum(x: str, n: str, out: str, deviation_of: str = "") -> str:
    """Statements setting float ``out`` to the sum of the ``n`` contiguous floats at ``x``, or
    with ``deviation_of`` to the sum of their squared deviations from it: four vector
    accumulators (independent add chains), then a shuffle reduction, then the tail."""
    def acc(i: int, at: str) -> str:
        load = f"daceml_vf __t{i}; __builtin_memcpy(&__t{i}, {x} + {at}, sizeof(daceml_vf));"
        if deviation_of:
            return f"{load} __t{i} -= {deviation_of}; __a{i} += __t{i} * __t{i};"
        return f"{load} __a{i} += __t{i};"
    tail = f"const float __d = {x}[__j] - {deviation_of}; __r += __d * __d;" if deviation_of else f"__r += {x}[__j];"
    body = "\n  ".join(acc(i, f"__j + {i} * DACEML_VL") for i in range(4))
    return f"""float {out};
{{
daceml_vf __a0{{}}, __a1{{}}, __a2{{}}, __a3{{}};
long long __j = 0;
for (; __j + 4 * DACEML_VL <= {n}; __j += 4 * DACEML_VL) {{
  {body}
}}
for (; __j + DACEML_VL <= {n}; __j += DACEML_VL) {{ {acc(0, "__j")} }}
float __r = daceml_hsum((__a0 + __a1) + (__a2 + __a3));
for (; __j < {n}; ++__j) {{ {tail} }}
{out} = __r;
}}
"""


def _row_pointer(expr) -> str:
    """The array name if C++ ``expr`` is ``name[__j]`` (a Scale or B running along the row),
    else "" (also for None)."""
    return expr[:-5] if expr and expr.endswith("[__j]") and expr[:-5].isidentifier() else ""


def _vector_affine(x: str, y: str, n: str, scale: str = "", bias: str = "", sum_of: str = "", into: str = "") -> str:
    """Statements storing ``y = (x - __mean) * __inv * scale + bias`` over ``n`` contiguous
    floats with the vectors of ``_ROW_SIMD``; ``scale``/``bias``: pointers to ``n`` contiguous
    floats, or "" for none. The same operations in the same order as the scalar loop: 1.25x
    faster rows than the ``omp simd`` loop (1024 rows of 768, 1 and 2 threads, a C probe on
    an AVX2 EPYC). With ``sum_of`` (a pointer to ``n`` more floats) the same loop also sums
    those into float ``into``, with the accumulators and order of :func:`_vector_row_sum` (so
    the sum is the same to the bit): the next row's loads from memory overlap this row's
    stores (see :class:`PureLayerNormalization`)."""
    def one(i: int, at: str) -> str:
        code = f"daceml_vf __t{i}; __builtin_memcpy(&__t{i}, {x} + {at}, sizeof(daceml_vf)); __t{i} = (__t{i} - __mv) * __iv;"
        for ptr, op in ((scale, "*="), (bias, "+=")):
            if ptr:
                code += f" {{ daceml_vf __p; __builtin_memcpy(&__p, {ptr} + {at}, sizeof(daceml_vf)); __t{i} {op} __p; }}"
        code += f" __builtin_memcpy({y} + {at}, &__t{i}, sizeof(daceml_vf));"
        if sum_of:
            code += f" {{ daceml_vf __u; __builtin_memcpy(&__u, {sum_of} + {at}, sizeof(daceml_vf)); __a{i} += __u; }}"
        return code
    s = f" * {scale}[__j]" if scale else ""
    b = f" + {bias}[__j]" if bias else ""
    unroll = 4 if sum_of else 2
    body = "\n  ".join(one(i, f"__j + {i} * DACEML_VL" if i else "__j") for i in range(unroll))
    code = """{
const daceml_vf __mv = daceml_vf{} + __mean, __iv = daceml_vf{} + __inv;
long long __j = 0;
"""
    if sum_of:
        code += "daceml_vf __a0{}, __a1{}, __a2{}, __a3{};\n"
    code += f"""for (; __j + {unroll} * DACEML_VL <= {n}; __j += {unroll} * DACEML_VL) {{
  {body}
}}
"""
    if sum_of:
        code += f"""for (; __j + DACEML_VL <= {n}; __j += DACEML_VL) {{ {one(0, "__j")} }}
{into} = daceml_hsum((__a0 + __a1) + (__a2 + __a3));
for (long long __k = __j; __k < {n}; ++__k) {into} += ({sum_of})[__k];
"""
    return code + f"""for (; __j < {n}; ++__j) {y}[__j] = ({x}[__j] - __mean) * __inv{s}{b};
}}
"""


def _normalize_code(T: str, n: str, x: str = "__x", y: str = "__y", eps: str = "1e-5",
                    scale=None, bias=None) -> str:
    """Mean, then variance of the deviations, then ``y = (x - mean) * inv * scale + bias`` over
    ``n`` contiguous elements; leaves ``__mean`` and ``__inv`` defined. ``scale``/``bias``:
    C++ expressions of ``__j`` (the flat index) or None. For float the two reductions use
    the vectors of ``_ROW_SIMD`` (the SDFG needs :func:`_add_row_simd`): 1.6x faster rows
    than ``omp simd`` reductions, whose one accumulator is a chain of dependent adds
    (1024 rows of 768, 2 threads, a C probe); so does the last loop where ``scale`` and
    ``bias`` are contiguous along the row (``name[__j]``, see :func:`_vector_affine`)."""
    s = f" * {scale}" if scale else ""
    b = f" + {bias}" if bias else ""
    moments = f"""{T} __mean = 0;
{_SIMD} reduction(+:__mean)
for (long long __j = 0; __j < {n}; ++__j) __mean += {x}[__j];
__mean /= ({T})({n});
{T} __var = 0;
{_SIMD} reduction(+:__var)
for (long long __j = 0; __j < {n}; ++__j) {{ const {T} __d = {x}[__j] - __mean; __var += __d * __d; }}
__var /= ({T})({n});
"""
    if T == "float":
        moments = _simd_or(_vector_row_sum(x, n, "__mean") + f"__mean /= (float)({n});\n"
                           + _vector_row_sum(x, n, "__var", deviation_of="__mean") + f"__var /= (float)({n});\n",
                           moments)
    last = f"""{_SIMD}
for (long long __j = 0; __j < {n}; ++__j) {y}[__j] = ({x}[__j] - __mean) * __inv{s}{b};
"""
    if T == "float" and all(_row_pointer(e) for e in (scale, bias) if e):
        last = _simd_or(_vector_affine(x, y, n, _row_pointer(scale), _row_pointer(bias)), last)
    return moments + f"const {T} __inv = ({T})1 / std::sqrt(__var + ({T})({eps}));\n" + last


#: loops marked for vectorization (reductions reassociated); needs -fopenmp, which DaCe passes
_SIMD = "#pragma omp simd"


def _exp_code(T: str, arg: str, out: str) -> str:
    """Statements computing ``const T out = exp(arg)`` for ``arg <= 0`` (softmax's shifted
    logits). For float a Cephes-style polynomial (about 1 ulp) that compilers vectorize
    without -ffast-math, unlike libm's expf; 0 below float's range; NaN stays NaN."""
    if T != "float":
        return f"const {T} {out} = std::exp({arg});\n"
    return f"""const float {out}_a = {arg};
const float {out}_v = {out}_a < -87.33654f ? -87.33654f : {out}_a;
const float {out}_t = {out}_v * 1.44269504088896341f;
const int {out}_i = (int){out}_t;
const float {out}_n = (float){out}_i > {out}_t ? (float)({out}_i - 1) : (float){out}_i;
const float {out}_r = ({out}_v - {out}_n * 0.693359375f) + {out}_n * 2.12194440e-4f;
float {out}_p = 1.9875691500e-4f;
{out}_p = {out}_p * {out}_r + 1.3981999507e-3f;
{out}_p = {out}_p * {out}_r + 8.3334519073e-3f;
{out}_p = {out}_p * {out}_r + 4.1665795894e-2f;
{out}_p = {out}_p * {out}_r + 1.6666665459e-1f;
{out}_p = {out}_p * {out}_r + 5.0000001201e-1f;
{out}_p = {out}_p * {out}_r * {out}_r + {out}_r + 1.0f;
union {{ int i; float f; }} {out}_u; {out}_u.i = ((int){out}_n + 127) << 23;
const float {out} = {out}_a < -87.33654f ? 0.0f : {out}_p * {out}_u.f;
"""


def _vector_softmax_code(kind: str, n: str) -> str:
    """Softmax / LogSoftmax of a contiguous float row of ``n`` elements with the explicit SIMD
    vectors of ``_ROW_SIMD`` (the SDFG needs :func:`_add_row_simd`), so it vectorizes at any
    optimization level; the row's max and sum reduce by shuffles (19% faster rows of 128
    than a loop over the lanes). With AVX-512 the exponential's floor and its
    2^n scaling are one instruction each (vrndscaleps, vscalefps): 16% faster rows than the
    integer conversions and exponent bits the AVX2 path had (8x12x128 rows of 128, 2 threads, a
    C probe). The AVX2 path rounds to nearest with a shifter constant and takes 2^n's exponent
    bits from the same sum: 14% faster rows than the conversions, 1 thread, on an AVX2 EPYC.
    The exp loop is bound by the latency of its dependency chain (the FP scheduler holds a few
    iterations only), so the polynomial goes by Estrin's scheme, and on AVX2 the clamp is one
    maxps and the reduction one FMA with float's ln 2: 1.18x faster softmax of 8x12x128 rows of
    128 (2 threads, a C probe of the generated code on the AVX2 EPYC; relative error against
    float64 7.3e-7 before and 7.5e-7 after)."""
    lanes = "__L"  # 16 lanes with AVX-512, else 8
    load = "__builtin_memcpy(&__a, __x + __j, sizeof(__vt));"
    code = f"""typedef daceml_vf __vt;
typedef daceml_vi __vi;
const int __L = (int)DACEML_VL;
const long long __nv = {n} / {lanes} * {lanes};
const float __inf = std::numeric_limits<float>::infinity();
__vt __mv = __vt{{}} - __inf;
for (long long __j = 0; __j < __nv; __j += {lanes}) {{ __vt __a; {load} __mv = __a > __mv ? __a : __mv; }}
float __m = daceml_hmax(__mv);
for (long long __j = __nv; __j < {n}; ++__j) __m = __x[__j] > __m ? __x[__j] : __m;
#if defined(__AVX512F__)
const __vt __lo = __vt{{}} - 104.0f;  // exp(-104) rounds to 0: p * 2^n underflows exactly there
#else
const __vt __lo = __vt{{}} - 87.33654f;
#endif
__vt __sv = {{}};
for (long long __j = 0; __j < __nv; __j += {lanes}) {{
  __vt __a; {load} __a -= __m;
#if defined(__AVX512F__)
  const __vt __v = __a < __lo ? __lo : __a;
  const __vt __t = __v * 1.44269504088896341f;
  const __vt __n = __builtin_ia32_rndscaleps_mask(__t, 0x09, __t, (short)-1, 4);  // floor
  const __vt __r = (__v - __n * 0.693359375f) + __n * 2.12194440e-4f;
#else
#if defined(__AVX__)
  const __vt __v = __builtin_ia32_maxps256(__lo, __a);  // a where a is NaN (maxps's second operand)
#else
  const __vt __v = __a < __lo ? __lo : __a;
#endif
  // n = t rounded to nearest by the 1.5 * 2^23 shifter (no -ffast-math, so the compiler keeps
  // (t + c) - c), and n's integer in the low bits of the sum, for 2^n below
  const __vt __sh = __v * 1.44269504088896341f + 12582912.0f;
  const __vt __n = __sh - 12582912.0f;
  // one FMA with float's ln 2: its error (2e-9) times |n| <= 126 stays under 2 ulp of the result
  const __vt __r = __v - __n * 0.693147180559945309f;
#endif
  // the polynomial by Estrin's scheme (three levels of FMAs, not Horner's chain of six): the
  // loop is bound by this chain's latency, not by the FMA units
  const __vt __r2 = __r * __r;
  const __vt __pa = __r * 1.9875691500e-4f + 1.3981999507e-3f;
  const __vt __pb = __r * 8.3334519073e-3f + 4.1665795894e-2f;
  const __vt __pc = __r * 1.6666665459e-1f + 5.0000001201e-1f;
  const __vt __p = (__pa * (__r2 * __r2) + (__pb * __r2 + __pc)) * __r2 + (__r + 1.0f);
#if defined(__AVX512F__)
  const __vt __e = __builtin_ia32_scalefps512_mask(__p, __n, __p, (short)-1, 4);  // p * 2^n
#else
  const __vi __bits = ((__vi)__sh - (__vi)(__vt{{}} + 12582912.0f) + 127) << 23;
  const __vt __e = __a < __lo ? __vt{{}} : __p * (__vt)__bits;
#endif
"""
    if kind == "softmax":
        code += "  __builtin_memcpy(__y + __j, &__e, sizeof(__vt));\n"
    code += f"""  __sv += __e;
}}
float __s = daceml_hsum(__sv);
for (long long __j = __nv; __j < {n}; ++__j) {{
{_exp_code("float", "__x[__j] - __m", "__e")}"""
    if kind == "softmax":
        code += f"""  __y[__j] = __e;
  __s += __e;
}}
const float __q = 1.0f / __s;
for (long long __j = 0; __j < __nv; __j += {lanes}) {{
  __vt __a; __builtin_memcpy(&__a, __y + __j, sizeof(__vt));
  __a *= __q; __builtin_memcpy(__y + __j, &__a, sizeof(__vt));
}}
for (long long __j = __nv; __j < {n}; ++__j) __y[__j] *= __q;
"""
    else:
        code += f"""  __s += __e;
}}
const float __q = __m + std::log(__s);
for (long long __j = 0; __j < __nv; __j += {lanes}) {{
  __vt __a; {load} __a -= __q; __builtin_memcpy(__y + __j, &__a, sizeof(__vt));
}}
for (long long __j = __nv; __j < {n}; ++__j) __y[__j] = __x[__j] - __q;
"""
    return code


# --- softmax family --------------------------------------------------------------------------------

class _SoftmaxBase(_PureBase):
    kind = "softmax"

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        shape = node.in_desc(state, sdfg, "input").shape
        rank = len(shape)
        axis = node.axis if node.axis is not None else (1 if node.schema.since_version < 13 else -1)
        try:
            axis = normalize_axis(node, int(axis), rank)
        except InvalidNodeError as ex:
            raise _Reject(str(ex)) from None
        if node.schema.since_version < 13:
            reduce_dims = list(range(axis, rank))
            stride = "1"
        else:
            reduce_dims = [axis]
            stride = cpp(math.prod(shape[axis + 1:])) if axis + 1 < rank else "1"
        return reduce_dims, stride

    @classmethod
    def expansion(cls, node, state, sdfg):
        reduce_dims, stride = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["input"]
        T = x.dtype.ctype
        shape = list(x.shape)
        map_dims = [d for d in range(len(shape)) if d not in reduce_dims]
        n = cpp(math.prod([shape[d] for d in reduce_dims]))
        at = "[__j]" if stride == "1" else f"[__j * {stride}]"
        loop = f"for (long long __j = 0; __j < {n}; ++__j)"
        code = f"{T} __m = -std::numeric_limits<{T}>::infinity();\n"
        if cls.kind == "hardmax":
            code += f"long long __a = 0;\n{loop} if (__x{at} > __m) {{ __m = __x{at}; __a = __j; }}\n"
            code += f"{_SIMD}\n{loop} __y{at} = 0;\n"
            code += "__y[__a * " + stride + "] = 1;\n"
        else:
            code += f"{_SIMD} reduction(max:__m)\n{loop} __m = __x{at} > __m ? __x{at} : __m;\n{T} __s = 0;\n"
            exp = _exp_code(T, f"__x{at} - __m", "__e")
            if cls.kind == "softmax":
                code += (f"{_SIMD} reduction(+:__s)\n{loop} {{\n{exp}__y{at} = __e; __s += __e;\n}}\n"
                         f"const {T} __r = ({T})1 / __s;\n{_SIMD}\n{loop} __y{at} *= __r;\n")
            else:
                code += (f"{_SIMD} reduction(+:__s)\n{loop} {{\n{exp}__s += __e;\n}}\n"
                         f"const {T} __l = __m + std::log(__s);\n{_SIMD}\n{loop} __y{at} = __x{at} - __l;\n")
            if T == "float" and stride == "1":
                code = _simd_or(_vector_softmax_code(cls.kind, n), code)
                _add_row_simd(nsdfg)
        inputs = {"__x": dace.Memlet(_row_subset("input", shape, map_dims))}
        outputs = {"__y": dace.Memlet(_row_subset("output", shape, map_dims))}
        add_cpp_map(nstate, f"{node.label}_{cls.kind}", _ranges(shape, map_dims), inputs, outputs, code)
        return nsdfg


@op_implementation("Softmax", name="pure")
class PureSoftmax(_SoftmaxBase):
    """Softmax: a map over rows; max, exp-sum and scale in three loops over the row."""
    kind = "softmax"


@op_implementation("LogSoftmax", name="pure")
class PureLogSoftmax(_SoftmaxBase):
    """LogSoftmax: a map over rows; ``x - max - log(sum(exp(x - max)))``."""
    kind = "logsoftmax"


@op_implementation("Hardmax", name="pure")
class PureHardmax(_SoftmaxBase):
    """Hardmax: a map over rows; 1 at the first maximum, 0 elsewhere."""
    kind = "hardmax"


# --- batch / instance / group / layer norm --------------------------------------------------------

@op_implementation("BatchNormalization", name="pure")
class PureBatchNormalization(_PureBase):
    """BatchNormalization in inference mode (running mean and variance): a map over
    (batch, channel), the per-channel affine transform applied along the image."""

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        if getattr(node, "training_mode", 0):
            raise _Reject("training_mode=1 is not supported (inference only: running mean and variance)")
        if getattr(node, "spatial", 1) == 0:
            raise _Reject("spatial=0 (per-activation statistics) is not supported")
        extra = node.output_connectors()[1:]
        if extra:
            raise _Reject(f"outputs {extra} exist only in training mode, which is not supported")
        conns = node.input_connectors()
        if len(conns) != 5:
            raise _Reject(f"expected 5 inputs (X, scale, B, mean, var), got {conns}")
        x = node.in_desc(state, sdfg, conns[0])
        if len(x.shape) < 2:
            raise _Reject(f"input X has rank {len(x.shape)}; expected (N, C, ...)")
        for c in conns[1:]:
            shape = node.in_desc(state, sdfg, c).shape
            if len(shape) != 1 or shape[0] != x.shape[1]:
                raise _Reject(f"input {c!r} has shape {tuple(shape)}, expected ({x.shape[1]},)")
        return conns

    @classmethod
    def expansion(cls, node, state, sdfg):
        conns = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        xname, yname = conns[0], node.output_connectors()[0]
        x = descs[xname]
        T = x.dtype.ctype
        shape = list(x.shape)
        eps = repr(float(node.epsilon if node.epsilon is not None else 1e-5))
        n = cpp(math.prod(shape[2:])) if len(shape) > 2 else "1"
        inputs = {"__x": dace.Memlet(_row_subset(xname, shape, [0, 1]))}
        for k, c in zip(("__s", "__b", "__mu", "__v"), conns[1:]):
            inputs[k] = dace.Memlet(f"{c}[__i1]")
        outputs = {"__y": dace.Memlet(_row_subset(yname, shape, [0, 1]))}
        code = f"""const {T} __a = __s / std::sqrt(__v + ({T})({eps}));
const {T} __c = __b - __mu * __a;
for (long long __j = 0; __j < {n}; ++__j) __y[__j] = __x[__j] * __a + __c;
"""
        add_cpp_map(nstate, f"{node.label}_batchnorm", _ranges(shape, [0, 1]), inputs, outputs, code)
        return nsdfg


@op_implementation("InstanceNormalization", name="pure")
class PureInstanceNormalization(_PureBase):
    """InstanceNormalization: a map over (batch, channel), normalizing each image plane."""

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        x = node.in_desc(state, sdfg, "input")
        if len(x.shape) < 3:
            raise _Reject(f"input has rank {len(x.shape)}; expected (N, C, D1, ...)")
        for c in ("scale", "B"):
            shape = node.in_desc(state, sdfg, c).shape
            if len(shape) != 1 or shape[0] != x.shape[1]:
                raise _Reject(f"input {c!r} has shape {tuple(shape)}, expected ({x.shape[1]},)")

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["input"]
        shape = list(x.shape)
        eps = repr(float(node.epsilon if node.epsilon is not None else 1e-5))
        inputs = {"__x": dace.Memlet(_row_subset("input", shape, [0, 1])),
                  "__s": dace.Memlet("scale[__i1]"), "__b": dace.Memlet("B[__i1]")}
        outputs = {"__y": dace.Memlet(_row_subset("output", shape, [0, 1]))}
        code = _normalize_code(x.dtype.ctype, cpp(math.prod(shape[2:])), eps=eps, scale="__s", bias="__b")
        _add_row_simd(nsdfg)
        add_cpp_map(nstate, f"{node.label}_instancenorm", _ranges(shape, [0, 1]), inputs, outputs, code)
        return nsdfg


@op_implementation("GroupNormalization", name="pure")
class PureGroupNormalization(_PureBase):
    """GroupNormalization: a map over (batch, group), normalizing the group's channels
    together; scale and bias per group (opset 18) or per channel (opset 21)."""

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        x = node.in_desc(state, sdfg, "X")
        if len(x.shape) < 2:
            raise _Reject(f"input X has rank {len(x.shape)}; expected (N, C, ...)")
        try:
            c = int(x.shape[1])
        except TypeError:
            raise _Reject(f"the channel count {x.shape[1]} must be static") from None
        g = int(node.num_groups)
        if g < 1 or c % g:
            raise _Reject(f"num_groups={g} does not divide the {c} channels")
        per = g if node.schema.since_version < 21 else c
        for name in ("scale", "bias"):
            shape = node.in_desc(state, sdfg, name).shape
            if len(shape) != 1 or shape[0] != per:
                raise _Reject(f"input {name!r} has shape {tuple(shape)}, expected ({per},)")
        return c, g, per == c

    @classmethod
    def expansion(cls, node, state, sdfg):
        c, g, per_channel = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["X"]
        shape = list(x.shape)
        cg = c // g
        plane = math.prod(shape[2:]) if len(shape) > 2 else 1
        eps = repr(float(node.epsilon if node.epsilon is not None else 1e-5))
        rest = "".join(f",0:{cpp(s)}" for s in shape[2:])
        sub = f"__g*{cg}:__g*{cg}+{cg}{rest}"
        ranges = {"__i0": f"0:{cpp(shape[0])}", "__g": f"0:{g}"}
        if per_channel:
            inputs = {"__s": dace.Memlet(f"scale[__g*{cg}:__g*{cg}+{cg}]"),
                      "__b": dace.Memlet(f"bias[__g*{cg}:__g*{cg}+{cg}]")}
            ch = f"(__j / {cpp(plane)})"
            scale, bias = f"__s[{ch}]", f"__b[{ch}]"
        else:
            inputs = {"__s": dace.Memlet("scale[__g]"), "__b": dace.Memlet("bias[__g]")}
            scale, bias = "__s", "__b"
        inputs["__x"] = dace.Memlet(f"X[__i0,{sub}]")
        outputs = {"__y": dace.Memlet(f"Y[__i0,{sub}]")}
        code = _normalize_code(x.dtype.ctype, cpp(cg * plane), eps=eps, scale=scale, bias=bias)
        _add_row_simd(nsdfg)
        add_cpp_map(nstate, f"{node.label}_groupnorm", ranges, inputs, outputs, code)
        return nsdfg


def _row_block(shape: Sequence, axis: int, most: int = 16, least_items: int = 64) -> int:
    """Rows per work item of LayerNormalization: the largest power of two up to ``most`` that
    divides the last leading dim and leaves at least ``least_items`` work items; 1 where
    those dims are symbolic or too few."""
    if axis < 1:
        return 1
    try:
        last, rows = int(shape[axis - 1]), int(math.prod(shape[:axis]))
    except TypeError:
        return 1
    block = most
    while block > 1 and (last % block or rows // block < least_items):
        block //= 2
    return block


@op_implementation("LayerNormalization", name="pure")
class PureLayerNormalization(_PureBase):
    """LayerNormalization over the dims from ``axis`` on: a map over the leading dims,
    mean / variance / normalize in three loops over each row; optional Mean and
    InvStdDev outputs.

    For float rows whose Scale and B run along the row (the usual case), each work item is
    a block of consecutive rows (:func:`_row_block`, up to 16), and the normalize loop of a
    row also sums the next row: the next row's loads overlap this row's stores instead of
    following them. 1.15x faster than one row per work item, 1.45x with the vector
    normalize loop, over the ``omp simd`` loops (1024 rows of 768, 2 threads, a C probe on
    an AVX2 EPYC); the arithmetic per row is the same."""

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        shape = list(node.in_desc(state, sdfg, "X").shape)
        try:
            axis = normalize_axis(node, int(node.axis if node.axis is not None else -1), len(shape))
        except InvalidNodeError as ex:
            raise _Reject(str(ex)) from None
        row = shape[axis:]
        for c in ("Scale", "B"):
            if c in node.in_connectors:
                _bcast_flat(node.in_desc(state, sdfg, c).shape, row, "__j")
        return axis

    @classmethod
    def expansion(cls, node, state, sdfg):
        axis = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        T = x.dtype.ctype
        shape = list(x.shape)
        row = shape[axis:]
        n = cpp(math.prod(row))
        map_dims = list(range(axis))
        eps = repr(float(node.epsilon if node.epsilon is not None else 1e-5))
        inputs = {"__s": dace.Memlet.from_array("Scale", descs["Scale"])}
        scale = f"__s[{_bcast_flat(descs['Scale'].shape, row, '__j')}]"
        bias = None
        if "B" in node.in_connectors:
            inputs["__b"] = dace.Memlet.from_array("B", descs["B"])
            bias = f"__b[{_bcast_flat(descs['B'].shape, row, '__j')}]"
        along_row = _row_pointer(scale) and (bias is None or _row_pointer(bias))
        block = _row_block(shape, axis) if T == "float" and along_row else 1
        inputs["__x"] = dace.Memlet(_row_subset("X", shape, map_dims, block=block))
        outputs = {"__y": dace.Memlet(_row_subset("Y", shape, map_dims, block=block))}
        stats = []  # (connector, variable, element stride between rows)
        unit = list(range(axis, len(shape)))
        for conn, var in (("Mean", "__mean"), ("InvStdDev", "__inv")):
            if conn in node.out_connectors:
                out_shape = descs[conn].shape
                if len(out_shape) == len(shape):
                    subset = _row_subset(conn, out_shape, map_dims, unit, block=block)
                else:  # rank-0 stored as (1,)
                    subset = f"{conn}[0]"
                outputs[f"__out_{conn}"] = dace.Memlet(subset)
                stats.append((f"__out_{conn}", var, cpp(descs[conn].strides[axis - 1]) if block > 1 else ""))
        if block > 1:
            code = cls._blocked_code(n, block, cpp(x.strides[axis - 1]), cpp(y.strides[axis - 1]), eps,
                                     bias is not None, stats)
        else:
            code = _normalize_code(T, n, eps=eps, scale=scale, bias=bias)
            code += "".join(f"{conn} = {var};\n" for conn, var, _ in stats)
        _add_row_simd(nsdfg)
        ranges = _ranges(shape, map_dims)
        if block > 1:
            ranges[f"__i{axis - 1}"] = f"0:{cpp(shape[axis - 1] // block)}"
        add_cpp_map(nstate, f"{node.label}_layernorm", ranges, inputs, outputs, code)
        return nsdfg

    @staticmethod
    def _blocked_code(n: str, block: int, x_stride: str, y_stride: str, eps: str, has_bias: bool,
                      stats) -> str:
        """The tasklet of a block of ``block`` float rows (see the class docstring): the first
        row's sum, then per row the mean, the variance of the deviations, and the normalize
        loop that also sums the next row. Without the row SIMD helpers (a CUDA file), each
        row as in :func:`_normalize_code`."""
        bias = "__b" if has_bias else ""
        head = f"""for (long long __row = 0; __row < {block}; ++__row) {{
const float* __xr = __x + __row * {x_stride};
float* __yr = __y + __row * {y_stride};
"""
        tail = "".join(f"{conn}[__row * {stride}] = {var};\n" for conn, var, stride in stats) + "}\n"
        vector = (_vector_row_sum("__x", n, "__sum") + head + f"const float __mean = __sum / (float)({n});\n"
                  + _vector_row_sum("__xr", n, "__var", deviation_of="__mean") + f"__var /= (float)({n});\n"
                  + f"const float __inv = (float)1 / std::sqrt(__var + (float)({eps}));\n"
                  + f"if (__row + 1 < {block}) {{\n"
                  + _vector_affine("__xr", "__yr", n, "__s", bias, sum_of=f"__xr + {x_stride}", into="__sum")
                  + "} else {\n" + _vector_affine("__xr", "__yr", n, "__s", bias) + "}\n" + tail)
        plain = head + _normalize_code("float", n, "__xr", "__yr", eps, "__s[__j]", "__b[__j]" if has_bias else None) + tail
        return _simd_or(vector, plain)


# --- LRN -------------------------------------------------------------------------------------------

@op_implementation("LRN", name="pure")
class PureLRN(_PureBase):
    """LRN across channels: a map over (batch, channel), the window of neighbouring
    channels summed for each pixel."""

    @classmethod
    def check(cls, node, state, sdfg):
        super().check(node, state, sdfg)
        x = node.in_desc(state, sdfg, "X")
        if len(x.shape) < 2:
            raise _Reject(f"input X has rank {len(x.shape)}; expected (N, C, ...)")
        if node.size is None or int(node.size) < 1:
            raise _Reject(f"size={node.size} must be a positive integer")

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        x = descs["X"]
        T = x.dtype.ctype
        shape = list(x.shape)
        size = int(node.size)
        alpha = float(node.alpha if node.alpha is not None else 1e-4)
        beta = float(node.beta if node.beta is not None else 0.75)
        bias = float(node.bias if node.bias is not None else 1.0)
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        plane = cpp(math.prod(shape[2:])) if len(shape) > 2 else "1"
        channels = cpp(shape[1])
        inputs = {"__x": dace.Memlet(_row_subset("X", shape, [0]))}
        outputs = {"__y": dace.Memlet(_row_subset("Y", shape, [0, 1]))}
        code = f"""const long long __c0 = __i1 - {lo} < 0 ? 0 : __i1 - {lo};
const long long __c1 = __i1 + {hi} >= {channels} ? {channels} - 1 : __i1 + {hi};
for (long long __j = 0; __j < {plane}; ++__j) {{
  {T} __sq = 0;
  for (long long __c = __c0; __c <= __c1; ++__c) {{ const {T} __v = __x[__c * {plane} + __j]; __sq += __v * __v; }}
  __y[__j] = __x[__i1 * {plane} + __j] / std::pow(({T}){bias!r} + ({T}){alpha / size!r} * __sq, ({T}){beta!r});
}}
"""
        add_cpp_map(nstate, f"{node.label}_lrn", _ranges(shape, [0, 1]), inputs, outputs, code)
        return nsdfg
