"""Recurrent layers.

Ops: LSTM GRU RNN (every opset version; float32 and float64).

The whole spec is covered: directions forward / reverse / bidirectional, the
optional inputs B, sequence_lens, initial_h, initial_c and P (LSTM peepholes),
the optional outputs Y, Y_h and Y_c, ``layout`` 0 (time major) and 1 (batch
major), ``clip``, ``input_forget`` (LSTM), ``linear_before_reset`` (GRU) and
every activation function the spec lists (Relu, Tanh, Sigmoid, Affine,
LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)
with ``activation_alpha`` / ``activation_beta`` consumed in order by the
functions that take them. Values not given default to those of the ONNX
operator of the same name, as the spec says (LeakyRelu 0.01, HardSigmoid 0.2 /
0.5, Elu 1, ThresholdedRelu 1, Affine 1 / 0; ScaledTanh has none in ONNX: 1 /
1). onnxruntime agrees except for ThresholdedRelu, Affine and ScaledTanh, which
it defaults to 0. One list of activations for a bidirectional layer serves
both directions. Sequences shorter than the tensor (``sequence_lens``) give
zeros in Y past their end and their last valid state in Y_h / Y_c; a sequence
of length 0 gives zeros (as onnxruntime). Sizes may be symbolic.

Each node expands to one C++ tasklet (no map, so that its own OpenMP region is
the outermost one) that

1. packs W, R and the biases per block of L hidden units (L = one vector register:
   16 floats or 8 doubles with AVX-512, half that with AVX2), k-major, all gates of a unit block side by side;
2. projects the whole input at once, in the gates' GEMM form ``X W^T`` for
   every time step and direction (parallel over unit blocks and groups of rows);
3. runs the time loop sequentially. A step adds ``H_{t-1} R^T`` for a group of
   up to 4 batch rows (2 with AVX2) and one unit block (a register-blocked micro-kernel:
   rows x G gate vectors of accumulators) and applies the gate equations on
   vectors of L units (Sigmoid and Tanh in float with a vectorized exp; other
   activations lane by lane). If there are at least as many (direction, row
   group) pairs as threads, each thread runs its own rows through all steps
   without synchronization (rows are independent); otherwise the unit blocks of
   each step are shared out, with a barrier per step (two for GRU with
   ``linear_before_reset = 0``, whose candidate gate needs ``r * H_{t-1}`` of
   all units). Hidden states are double-buffered; both directions of a
   bidirectional layer advance in the same step.

Small layers run on one thread (a parallel region costs more than a step).
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx.ops.common import add_helper_code, nested_sdfg, pointer_connectors
from daceml.onnx.ops.common import cpp as cexpr
from daceml.onnx.ops.registry import Implementation, op_implementation

_FLOATS = (dace.float32, dace.float64)

#: op -> (gates, default activations per direction)
_OPS = {
    "LSTM": (4, ("Sigmoid", "Tanh", "Tanh")),
    "GRU": (3, ("Sigmoid", "Tanh")),
    "RNN": (1, ("Tanh", )),
}

#: activation (lower case) -> (C++ function daceml_rnn::<name>_v, default alpha or None, default beta or None)
_ACTIVATIONS = {
    "relu": ("relu", None, None),
    "tanh": ("tanh", None, None),
    "sigmoid": ("sigmoid", None, None),
    "affine": ("affine", 1.0, 0.0),
    "leakyrelu": ("leaky_relu", 0.01, None),
    "thresholdedrelu": ("thresholded_relu", 1.0, None),
    "scaledtanh": ("scaled_tanh", 1.0, 1.0),
    "hardsigmoid": ("hard_sigmoid", 0.2, 0.5),
    "elu": ("elu", 1.0, None),
    "softsign": ("softsign", None, None),
    "softplus": ("softplus", None, None),
}

#: activation functions and the recurrent micro-kernel (C++ global code, once per program)
RNN_HELPERS = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
namespace daceml_rnn {
/* L lanes of T in one vector as wide as the target's registers (GCC vector extensions), and the
   batch rows a work item of a step computes: 4 rows x 4 gates of accumulators fit AVX-512's 32
   registers, 2 x 4 AVX2's 16 (64-byte vectors and 4 rows on AVX2 spilled: LSTM 12x slower than
   eager) */
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64, kRows = 4;
#else
constexpr int kVectorBytes = 32, kRows = 2;
#endif
template <typename T> struct Vec {
    typedef T type __attribute__((vector_size(kVectorBytes)));
    static constexpr int L = kVectorBytes / sizeof(T);
};

/* an uninitialized buffer of n T, 64-byte aligned */
template <typename T> struct Buffer {
    T* p;
    explicit Buffer(size_t n) : p(static_cast<T*>(::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64 + 64))) {}
    ~Buffer() { std::free(p); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    T* data() { return p; }
};

/* scalar activations: f(x, alpha, beta) */
template <typename T> static inline T relu(T x, T, T) { return x > T(0) ? x : T(0); }
template <typename T> static inline T tanh_(T x, T, T) { return std::tanh(x); }
template <typename T> static inline T sigmoid(T x, T, T) { return T(1) / (T(1) + std::exp(-x)); }
template <typename T> static inline T affine(T x, T a, T b) { return a * x + b; }
template <typename T> static inline T leaky_relu(T x, T a, T) { return x >= T(0) ? x : a * x; }
template <typename T> static inline T thresholded_relu(T x, T a, T) { return x > a ? x : T(0); }
template <typename T> static inline T scaled_tanh(T x, T a, T b) { return a * std::tanh(b * x); }
template <typename T> static inline T hard_sigmoid(T x, T a, T b) {
    return std::min(std::max(a * x + b, T(0)), T(1));
}
template <typename T> static inline T elu(T x, T a, T) { return x >= T(0) ? x : a * (std::exp(x) - T(1)); }
template <typename T> static inline T softsign(T x, T, T) { return x / (T(1) + std::abs(x)); }
template <typename T> static inline T softplus(T x, T, T) {
    return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

/* vector activations f_v(x, alpha, beta) over the L lanes: lane by lane, except the defaults
   Sigmoid and Tanh in float, which use a vector exp (Cephes polynomial, about 1 ulp; libm's
   expf does not vectorize without -ffast-math) */
#define DACEML_RNN_LANEWISE(f, fv)                                                              \
    template <typename T>                                                                       \
    static inline typename Vec<T>::type fv(typename Vec<T>::type x, T a, T b) {                 \
        for (int l = 0; l < Vec<T>::L; ++l) x[l] = f<T>(x[l], a, b);                            \
        return x;                                                                               \
    }
DACEML_RNN_LANEWISE(relu, relu_v)
DACEML_RNN_LANEWISE(tanh_, tanh_v)
DACEML_RNN_LANEWISE(sigmoid, sigmoid_v)
DACEML_RNN_LANEWISE(affine, affine_v)
DACEML_RNN_LANEWISE(leaky_relu, leaky_relu_v)
DACEML_RNN_LANEWISE(thresholded_relu, thresholded_relu_v)
DACEML_RNN_LANEWISE(scaled_tanh, scaled_tanh_v)
DACEML_RNN_LANEWISE(hard_sigmoid, hard_sigmoid_v)
DACEML_RNN_LANEWISE(elu, elu_v)
DACEML_RNN_LANEWISE(softsign, softsign_v)
DACEML_RNN_LANEWISE(softplus, softplus_v)
#undef DACEML_RNN_LANEWISE

typedef Vec<float>::type VF;
typedef int32_t VI __attribute__((vector_size(kVectorBytes)));
static inline VF exp_v(VF x) {  /* x clamped to float's range */
    const VF lo = VF{} - 87.33654f, hi = VF{} + 88.37626f;
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    const VI ti = __builtin_convertvector(x * 1.44269504088896341f + 128.0f, VI);  /* > 0: floor */
    const VF n = __builtin_convertvector(ti - 128, VF);
    const VF r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    VF p = VF{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (VF)((ti - 1) << 23);
}
template <> inline VF sigmoid_v<float>(VF x, float, float) { return 1.0f / (1.0f + exp_v(-x)); }
template <> inline VF tanh_v<float>(VF x, float, float) {  /* Cephes tanhf */
    const VF zero = VF{};
    const VF a = x < zero ? -x : x;
    const VF s = x * x;
    const VF small = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                       + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
    const VF big = 1.0f - 2.0f / (exp_v(2.0f * a) + 1.0f);
    return a < zero + 0.625f ? small : (x < zero ? -big : big);
}
template <typename T> static inline typename Vec<T>::type clip_v(typename Vec<T>::type x, T c) {
    const typename Vec<T>::type lo = typename Vec<T>::type{} - c, hi = typename Vec<T>::type{} + c;
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}
/* n <= L elements, s apart (the rest 0) */
template <typename T> static inline typename Vec<T>::type ld(const T* p, int64_t n, int64_t s) {
    typename Vec<T>::type v = {};
    if (s == 1 && n == Vec<T>::L) {
        std::memcpy(&v, p, sizeof v);
    } else if (s == 1) {
        std::memcpy(&v, p, n * sizeof(T));
    } else {
        for (int64_t l = 0; l < n; ++l) v[l] = p[l * s];
    }
    return v;
}
template <typename T> static inline void st(T* p, typename Vec<T>::type v, int64_t n, int64_t s) {
    if (s == 1 && n == Vec<T>::L) {
        std::memcpy(p, &v, sizeof v);
    } else if (s == 1) {
        std::memcpy(p, &v, n * sizeof(T));
    } else {
        for (int64_t l = 0; l < n; ++l) p[l * s] = v[l];
    }
}

/* out[r*ldo + g*L + l] = sum_k h[r][k*hs] * rp[k*ld + g*L + l] for RB rows and NG vectors of L
   units: the rows of W or R packed k-major, RB x NG vector accumulators */
template <typename T, int NG, int RB>
__attribute__((optimize("fp-contract=fast")))
static inline void rec_block(const T* const* h, int64_t hs, const T* __restrict__ rp, int64_t ld, int64_t K,
                             T* __restrict__ out, int64_t ldo) {
    typedef typename Vec<T>::type V;
    constexpr int L = Vec<T>::L;
    typedef T U __attribute__((vector_size(kVectorBytes), aligned(alignof(T)), may_alias));
    V acc[RB][NG];
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
        for (int g = 0; g < NG; ++g) acc[r][g] = V{};
    for (int64_t k = 0; k < K; ++k) {
        /* the loads unrolled and typed: a loop of memcpy calls became one memcpy of all NG vectors
           (loop distribution), which put w and the accumulators on the stack */
        V w[NG];
#pragma GCC unroll 16
        for (int g = 0; g < NG; ++g) {
            w[g] = *reinterpret_cast<const U*>(rp + k * ld + g * L);
            __asm__("" : "+v"(w[g]));  /* keep w in a register: GCC would reload it for every row */
        }
#pragma GCC unroll 16
        for (int r = 0; r < RB; ++r) {
            const T hk = h[r][k * hs];
#pragma GCC unroll 16
            for (int g = 0; g < NG; ++g) acc[r][g] += hk * w[g];
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 16
        for (int g = 0; g < NG; ++g) *reinterpret_cast<U*>(out + r * ldo + g * L) = acc[r][g];
}
template <typename T, int NG>
static inline void rec_rows(int64_t rows, const T* const* h, int64_t hs, const T* rp, int64_t ld, int64_t K,
                            T* out, int64_t ldo) {
    switch (rows) {
        case 1: rec_block<T, NG, 1>(h, hs, rp, ld, K, out, ldo); break;
        case 2: rec_block<T, NG, 2>(h, hs, rp, ld, K, out, ldo); break;
        case 3: rec_block<T, NG, 3>(h, hs, rp, ld, K, out, ldo); break;
        default: rec_block<T, NG, 4>(h, hs, rp, ld, K, out, ldo);
    }
}
}  // namespace daceml_rnn
"""

#: multiply-adds per step below which a layer runs on one thread
_PARALLEL_WORK = 1 << 15


class _Reject(Exception):
    """Raised by the checks; why_not turns it into its reason."""


@dataclasses.dataclass
class _Layer:
    """What the expansion needs to know about a node, checked."""
    op: str
    gates: int
    directions: List[str]  # per direction index: "forward" or "reverse"
    layout: int
    #: per direction: one (C++ function, alpha, beta) per activation of the op
    activations: List[List[Tuple[str, float, float]]]
    clip: Optional[float]
    input_forget: bool
    linear_before_reset: bool
    inputs: Dict[str, str]  # role -> connector (X W R B sequence_lens initial_h initial_c P)
    outputs: Dict[str, str]  # role -> connector (Y Y_h Y_c)


def _roles(conns: Sequence[str], names: Sequence[str]) -> Dict[str, str]:
    return {n: n for n in names if n in conns}


def _activations(node, op: str, nd: int) -> List[List[Tuple[str, float, float]]]:
    per_dir = len(_OPS[op][1])
    names = list(node.activations) if node.activations else list(_OPS[op][1]) * nd
    if len(names) == per_dir and nd == 2:
        names = names * 2
    elif len(names) == 2 * per_dir and nd == 1:  # RNN's schema default is ["Tanh", "Tanh"]
        names = names[:per_dir]
    if len(names) != per_dir * nd:
        raise _Reject(f"activations={names} has {len(names)} entries; {op} with {nd} direction(s) needs "
                      f"{per_dir * nd} ({per_dir} per direction)")
    alphas = list(node.activation_alpha or [])
    betas = list(node.activation_beta or [])
    result = []
    for name in names:
        entry = _ACTIVATIONS.get(str(name).lower())
        if entry is None:
            raise _Reject(f"unknown activation function {name!r}; the spec's are "
                          f"Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, "
                          f"Softsign, Softplus")
        func, alpha, beta = entry
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        result.append((func, float(alpha or 0.0), float(beta or 0.0)))
    return [result[d * per_dir:(d + 1) * per_dir] for d in range(nd)]


def _static(value) -> Optional[int]:
    try:
        return int(value)
    except TypeError:
        return None


def _check(node, state, sdfg) -> _Layer:
    op = node.schema.name
    gates = _OPS[op][0]
    ins = node.input_connectors()
    outs = node.output_connectors()
    inputs = _roles(ins, ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"))
    outputs = _roles(outs, ("Y", "Y_h", "Y_c"))
    x = node.in_desc(state, sdfg, "X")
    if x.dtype not in _FLOATS:
        raise _Reject(f"input 'X' has element type {x.dtype.to_string()}; the pure implementation supports "
                      f"float32 and float64")
    for role, conn in inputs.items():
        desc = node.in_desc(state, sdfg, conn)
        if role == "sequence_lens":
            if desc.dtype not in (dace.int32, dace.int64):
                raise _Reject(f"input 'sequence_lens' has element type {desc.dtype.to_string()}; expected int32")
        elif desc.dtype != x.dtype:
            raise _Reject(f"input {conn!r} is {desc.dtype.to_string()} but X is {x.dtype.to_string()}")
    for conn in outputs.values():
        dtype = node.out_desc(state, sdfg, conn).dtype
        if dtype != x.dtype:
            raise _Reject(f"output {conn!r} is {dtype.to_string()} but X is {x.dtype.to_string()}")
    direction = node.direction or "forward"
    if direction not in ("forward", "reverse", "bidirectional"):
        raise _Reject(f"direction={direction!r}; expected forward, reverse or bidirectional")
    directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    nd = len(directions)
    layout = int(getattr(node, "layout", 0) or 0)
    if layout not in (0, 1):
        raise _Reject(f"layout={layout}; expected 0 or 1")
    if len(x.shape) != 3:
        raise _Reject(f"input X has shape {tuple(x.shape)}; expected rank 3")
    w = node.in_desc(state, sdfg, "W").shape
    r = node.in_desc(state, sdfg, "R").shape
    if len(w) != 3 or len(r) != 3:
        raise _Reject(f"W and R must have rank 3, got shapes {tuple(w)} and {tuple(r)}")
    hidden = r[2]
    if node.hidden_size is not None and _static(hidden) is not None and int(node.hidden_size) != int(hidden):
        raise _Reject(f"hidden_size={node.hidden_size} but R has shape {tuple(r)}")
    expected = {
        "W": (nd, gates * hidden, x.shape[2]), "R": (nd, gates * hidden, hidden),
        "B": (nd, 2 * gates * hidden), "P": (nd, 3 * hidden),
    }
    for role, shape in expected.items():
        if role not in inputs:
            continue
        got = tuple(node.in_desc(state, sdfg, inputs[role]).shape)
        if len(got) != len(shape) or any(_static(g) is not None and _static(e) is not None and int(g) != int(e)
                                         for g, e in zip(got, shape)):
            raise _Reject(f"input {role!r} has shape {got}; expected {tuple(shape)} for direction={direction!r}, "
                          f"{gates} gate(s) and hidden size {hidden}")
    clip = getattr(node, "clip", None)
    if clip is not None and not float(clip) > 0:
        raise _Reject(f"clip={clip} must be positive")
    return _Layer(op=op, gates=gates, directions=directions, layout=layout,
                  activations=_activations(node, op, nd), clip=None if clip is None else float(clip),
                  input_forget=bool(getattr(node, "input_forget", 0) or 0),
                  linear_before_reset=bool(getattr(node, "linear_before_reset", 0) or 0),
                  inputs=inputs, outputs=outputs)


def _at(desc, index: Sequence[str]) -> str:
    """C++ offset of element ``index`` (C++ expressions) of ``desc``."""
    parts = [f"({i}) * {cexpr(s)}" for i, s in zip(index, desc.strides) if str(i) != "0"]
    return " + ".join(parts) or "0"


def _lit(value: float, T: str) -> str:
    return f"{T}({float(value)!r})"


def _kernel_code(layer: _Layer, descs, T: str) -> str:
    """The C++ body of the tasklet (connectors ``__<role>``)."""
    dx = descs[layer.inputs["X"]]
    x_shape = list(dx.shape)
    S, NB = (x_shape[0], x_shape[1]) if layer.layout == 0 else (x_shape[1], x_shape[0])
    dr = descs[layer.inputs["R"]]
    dw = descs[layer.inputs["W"]]
    nd = len(layer.directions)
    inp, out = layer.inputs, layer.outputs
    lbr = layer.op == "GRU" and layer.linear_before_reset
    two_phase = layer.op == "GRU" and not lbr

    def state_at(desc, d, b, j):  # initial_h, initial_c, Y_h, Y_c
        return _at(desc, [d, b, j] if layer.layout == 0 else [b, d, j])

    def pack(dst: str, src: str, desc, k: str) -> List[str]:
        """W or R of direction d, rows of units [j0, j0 + L) of each gate, k-major (0 past H)."""
        return [
            f"{T}* __dst = {dst}.data() + __p * {k} * __G * __L;",
            "for (int64_t __g = 0; __g < __G; ++__g)",
            "  for (int64_t __jj = 0; __jj < __L; ++__jj)",
            f"    for (int64_t __k = 0; __k < {k}; ++__k)",
            f"      __dst[(__k * __G + __g) * __L + __jj] = __j0 + __jj < __H ? "
            f"{src}[{_at(desc, ['__d', '__g * __H + __j0 + __jj', '__k'])}] : {T}(0);",
        ]

    code = [
        f"const int64_t __S = {cexpr(S)}, __NB = {cexpr(NB)}, __I = {cexpr(x_shape[2])}, __H = {cexpr(dr.shape[2])};",
        f"const int64_t __G = {layer.gates}, __GH = __G * __H, __ND = {nd}, __L = daceml_rnn::Vec<{T}>::L, __RB = daceml_rnn::kRows;",
        "const int64_t __NJB = (__H + __L - 1) / __L, __NBG = (__NB + __RB - 1) / __RB, __GL = __G * __L;",
        "// W, R and the biases packed per block of L units; the projection X W^T of every step",
        f"daceml_rnn::Buffer<{T}> __wp((size_t)(__ND * __NJB * __I * __GL)), __rp((size_t)(__ND * __NJB * __H * __GL));",
        f"daceml_rnn::Buffer<{T}> __xw((size_t)(__ND * __S * __NB * __NJB * __GL));",
        f"std::vector<{T}> __bp((size_t)(__ND * __NJB * __GL), {T}(0));",
    ]
    if lbr:
        code.append(f"std::vector<{T}> __rbh((size_t)(__ND * __NJB * __L), {T}(0));")
    code += ["std::vector<int64_t> __len(__NB);", "for (int64_t __b = 0; __b < __NB; ++__b) {"]
    if "sequence_lens" in inp:
        code.append(f"  const int64_t __l = (int64_t)__sequence_lens[{_at(descs[inp['sequence_lens']], ['__b'])}];")
        code.append("  __len[__b] = __l < 0 ? 0 : (__l > __S ? __S : __l);")
    else:
        code.append("  __len[__b] = __S;")
    code.append("}")
    # the states: h double-buffered; GRU without linear_before_reset keeps z and r * h of a step
    code.append(f"std::vector<{T}> __hbuf((size_t)(2 * __ND * __NB * __H), {T}(0));")
    if layer.op == "LSTM":
        code.append(f"std::vector<{T}> __cbuf((size_t)(__ND * __NB * __H), {T}(0));")
    if two_phase:
        code.append(f"std::vector<{T}> __zbuf((size_t)(__ND * __NB * __H)), __rh((size_t)(__ND * __NB * __H));")
    init = []
    if "initial_h" in inp:
        init.append(f"__hbuf[(__d * __NB + __b) * __H + __j] = "
                    f"__initial_h[{state_at(descs[inp['initial_h']], '__d', '__b', '__j')}];")
    if "initial_c" in inp:
        init.append(f"__cbuf[(__d * __NB + __b) * __H + __j] = "
                    f"__initial_c[{state_at(descs[inp['initial_c']], '__d', '__b', '__j')}];")
    if init:
        code += ["for (int64_t __d = 0; __d < __ND; ++__d)", "  for (int64_t __b = 0; __b < __NB; ++__b)",
                 "    for (int64_t __j = 0; __j < __H; ++__j) {"] + ["      " + s for s in init] + ["    }"]
    code += [
        f"const bool __par = __ND * __NB * __GH * (__H + __I) >= {_PARALLEL_WORK};",
        "#pragma omp parallel if (__par)",
        "{",
        "int __tid = 0, __nth = 1;",
        "#ifdef _OPENMP",
        "__tid = omp_get_thread_num(); __nth = omp_get_num_threads();",
        "#endif",
        "#pragma omp for schedule(static)",
        "for (int64_t __p = 0; __p < __ND * __NJB; ++__p) {",
        "  const int64_t __d = __p / __NJB, __j0 = (__p % __NJB) * __L;",
        "  {",
    ] + ["    " + s for s in pack("__wp", "__W", dw, "__I")] + ["  }", "  {"] + \
        ["    " + s for s in pack("__rp", "__R", dr, "__H")] + ["  }"]
    if "B" in inp:
        db = descs[inp["B"]]
        # Wb + Rb, except GRU's Rbh with linear_before_reset (kept apart: r * (H Rh^T + Rbh))
        fold = "true" if not lbr else "__g < 2"
        code += [
            "  for (int64_t __g = 0; __g < __G; ++__g)",
            "    for (int64_t __jj = 0; __jj < __L && __j0 + __jj < __H; ++__jj) {",
            "      const int64_t __n = __g * __H + __j0 + __jj;",
            f"      const {T} __wb = __B[{_at(db, ['__d', '__n'])}], __rb = __B[{_at(db, ['__d', '__GH + __n'])}];",
            f"      __bp[__p * __GL + __g * __L + __jj] = __wb + ({fold} ? __rb : {T}(0));",
        ]
        if lbr:
            code.append("      if (__g == 2) __rbh[__p * __L + __jj] = __rb;")
        code.append("    }")
    code.append("}")
    # 1. the input projection of all steps, rows of X (groups of RB) times packed W per unit block,
    # into xw, whose rows follow X: [d][t][b] (layout 0) or [d][b][t] (layout 1).
    # 2. the time loop.
    # 3. the final states (zeros for sequences of length 0).
    # With a (direction, group of RB batch rows) per thread or more, each thread does all three for
    # its own groups, without synchronization (rows are independent); otherwise each is shared out,
    # the unit blocks of every step with a barrier per step.
    d0, d1 = ("__S", "__NB") if layer.layout == 0 else ("__NB", "__S")
    sx = [cexpr(s) for s in dx.strides]
    x_at = (lambda t, b: f"{t} * {sx[0]} + {b} * {sx[1]}") if layer.layout == 0 else \
        (lambda t, b: f"{b} * {sx[0]} + {t} * {sx[1]}")
    xw_rows = "1" if layer.layout == 0 else "__S"  # xw rows between batch rows b and b + 1
    phases = _phases(layer, descs, T)
    final = []
    if "Y_h" in out:
        final.append(f"__Y_h[{state_at(descs[out['Y_h']], '__d', '__b', '__j')}] = "
                     f"__len[__b] == 0 ? {T}(0) : __hbuf[(__S & 1) * __ND * __NB * __H + (__d * __NB + __b) * __H + __j];")
    if "Y_c" in out:
        final.append(f"__Y_c[{state_at(descs[out['Y_c']], '__d', '__b', '__j')}] = "
                     f"__len[__b] == 0 ? {T}(0) : __cbuf[(__d * __NB + __b) * __H + __j];")

    def steps(indent: str, item_loop: List[str], shared: bool) -> List[str]:
        lines = ["for (int64_t __s = 0; __s < __S; ++__s) {",
                 f"  const {T}* __hp = __hbuf.data() + (__s & 1) * __ND * __NB * __H;",
                 f"  {T}* __hn = __hbuf.data() + ((__s + 1) & 1) * __ND * __NB * __H;"]
        for phase in phases:
            lines += (["  #pragma omp for schedule(static)"] if shared else []) + ["  " + s for s in item_loop]
            lines += ["    " + s for s in phase] + ["  }"]
        return [indent + s for s in lines + ["}"]]

    own = [  # groups [__lo, __hi) of this thread
        "for (int64_t __jb = 0; __jb < __NJB; ++__jb)",
        "  for (int64_t __grp = __lo; __grp < __hi; ++__grp) {",
        "    const int64_t __d = __grp / __NBG, __b0 = (__grp % __NBG) * __RB;",
        "    const int64_t __nb = std::min<int64_t>(__RB, __NB - __b0);",
    ]
    code += [
        "if (__ND * __NBG >= __nth) {",
        "  const int64_t __lo = __ND * __NBG * __tid / __nth, __hi = __ND * __NBG * (__tid + 1) / __nth;",
    ] + ["  " + s for s in own] + [
        "      for (int64_t __t = 0; __t < __S; ++__t) {",
        f"        const {T}* __rows[__RB];",
        "        for (int64_t __r = 0; __r < __RB; ++__r)",
        f"          __rows[__r] = __X + {x_at('__t', '(__b0 + std::min<int64_t>(__r, __nb - 1))')};",
        f"        daceml_rnn::rec_rows<{T}, __G>(__nb, __rows, {sx[2]}, __wp.data() + (__d * __NJB + __jb) * __I * __GL, "
        f"__GL, __I, __xw.data() + ({_xw_row(layer, '__d', '__t', '__b0')} * __NJB + __jb) * __GL, "
        f"{xw_rows} * __NJB * __GL);",
        "      }",
        "    }",
    ] + steps("  ", own, False)
    if final:
        code += ["  for (int64_t __grp = __lo; __grp < __hi; ++__grp)",
                 "    for (int64_t __b = (__grp % __NBG) * __RB; __b < std::min<int64_t>((__grp % __NBG + 1) * __RB, __NB); ++__b)",
                 "      for (int64_t __j = 0; __j < __H; ++__j) {",
                 "        const int64_t __d = __grp / __NBG;"] + ["        " + s for s in final] + ["      }"]
    code += [
        "} else {",
        f"  const int64_t __xr = {d0} * {d1}, __xg = (__xr + __RB - 1) / __RB;",
        "  #pragma omp for schedule(static)",
        "  for (int64_t __it = 0; __it < __ND * __NJB * __xg; ++__it) {",
        "    const int64_t __p = __it / __xg, __d = __p / __NJB, __jb = __p % __NJB;",
        "    const int64_t __m0 = (__it % __xg) * __RB, __mn = std::min<int64_t>(__RB, __xr - __m0);",
        f"    const {T}* __rows[__RB];",
        "    for (int64_t __r = 0; __r < __RB; ++__r) {",
        "      const int64_t __m = __m0 + std::min<int64_t>(__r, __mn - 1);",
        f"      __rows[__r] = __X + (__m / {d1}) * {sx[0]} + (__m % {d1}) * {sx[1]};",
        "    }",
        f"    daceml_rnn::rec_rows<{T}, __G>(__mn, __rows, {sx[2]}, __wp.data() + __p * __I * __GL, __GL, __I, "
        "__xw.data() + ((__d * __xr + __m0) * __NJB + __jb) * __GL, __NJB * __GL);",
        "  }",
    ] + steps("  ", [
        "for (int64_t __it = 0; __it < __ND * __NJB * __NBG; ++__it) {",
        "  const int64_t __d = __it / (__NJB * __NBG), __jb = (__it / __NBG) % __NJB;",
        "  const int64_t __b0 = (__it % __NBG) * __RB, __nb = std::min<int64_t>(__RB, __NB - __b0);",
    ], True)
    if final:
        code += ["  #pragma omp for schedule(static)", "  for (int64_t __db = 0; __db < __ND * __NB; ++__db) {",
                 "    const int64_t __d = __db / __NB, __b = __db % __NB;",
                 "    for (int64_t __j = 0; __j < __H; ++__j) {"] + ["      " + s for s in final] + ["    }", "  }"]
    code += ["}", "}"]  # parallel region
    return "\n".join(code)


def _xw_row(layer: _Layer, d: str, t: str, b: str) -> str:
    """Row of the projection buffer of (direction, step, batch row)."""
    if layer.layout == 0:
        return f"(({d} * __S + {t}) * __NB + {b})"
    return f"(({d} * __NB + {b}) * __S + {t})"


def _y_at(layer: _Layer, descs, t: str, d: str, b: str, j: str, prefix: str = "") -> str:
    return prefix + _at(descs[layer.outputs["Y"]], [t, d, b, j] if layer.layout == 0 else [b, t, d, j])


def _phases(layer: _Layer, descs, T: str) -> List[List[str]]:
    """The C++ of each phase of a step, for the units ``[__j0, __j0 + __jn)`` (block ``__jb``)
    of the batch rows ``[__b0, __b0 + __nb)`` of direction ``__d`` at step ``__s`` (previous
    states ``__hp``, new ``__hn``), on vectors of L units. All but GRU with
    ``linear_before_reset = 0`` have one phase."""
    inp = layer.inputs
    lbr = layer.op == "GRU" and layer.linear_before_reset
    rev = {("forward", ): None, ("reverse", ): "true"}.get(tuple(layer.directions), "__d == 1")
    xw_row = _xw_row(layer, "__d", "__t", "__b")
    V = "__V"

    def ld(ptr: str, n: str = "__jn", stride: str = "1") -> str:
        return f"daceml_rnn::ld<{T}>({ptr}, {n}, {stride})"

    def st(ptr: str, value: str, stride: str = "1") -> str:
        return f"daceml_rnn::st<{T}>({ptr}, {value}, __jn, {stride});"

    def act(d: int, k: int, arg: str) -> str:
        func, alpha, beta = layer.activations[d][k]
        return f"daceml_rnn::{func}_v<{T}>({arg}, {_lit(alpha, T)}, {_lit(beta, T)})"

    def clip(arg: str) -> str:
        return arg if layer.clip is None else f"daceml_rnn::clip_v<{T}>({arg}, {_lit(layer.clip, T)})"

    def per_direction(make) -> List[str]:
        """``make(d)`` for each direction; one copy if the directions' activations agree."""
        if len(layer.directions) == 1 or layer.activations[0] == layer.activations[1]:
            return make(0)
        return ["if (__d == 0) {"] + ["  " + s for s in make(0)] + ["} else {"] + \
            ["  " + s for s in make(1)] + ["}"]

    def finish(value: str) -> List[str]:
        lines = [f"const {V} __hv = {value};", st("__hn + __off", "__hv")]
        if "Y" in layer.outputs:
            dy = descs[layer.outputs["Y"]]
            lines.append(st(f"__Y + {_y_at(layer, descs, '__t', '__d', '__b', '__j0')}", "__hv", cexpr(dy.strides[-1])))
        return lines

    def gate(k: int) -> str:
        """projection, biases and recurrent term of gate k"""
        return f"{ld(f'__x + {k} * __L', '__L')} + {ld(f'__bias + {k} * __L', '__L')} + {ld(f'__a + {k} * __L', '__L')}"

    def phase(g0: int, ng: int, src: str, body: List[str], last: bool) -> List[str]:
        """``__a + g * L``: the recurrent terms of gate g (from the rows of ``src``, computed for
        gates g0 .. g0 + ng - 1); ``__x + g * L``: the projection of gate g."""
        skip = ""
        if last:  # the state stays; Y is 0 past the end of the sequence
            skip = f"{st('__hn + __off', ld('__hp + __off'))} "
            if "Y" in layer.outputs:
                dy = descs[layer.outputs["Y"]]
                skip += f"{st(_y_at(layer, descs, '__s', '__d', '__b', '__j0', '__Y + '), f'{V}{{}}', cexpr(dy.strides[-1]))} "
        t = "__s" if rev is None else f"({rev}) ? __l - 1 - __s : __s"
        return [
            f"typedef daceml_rnn::Vec<{T}>::type {V};",
            "const int64_t __j0 = __jb * __L, __jn = std::min<int64_t>(__L, __H - __j0);",
            f"alignas(64) {T} __acc[__RB * __GL];",
            f"const {T}* __rows[__RB];",
            "for (int64_t __r = 0; __r < __RB; ++__r)",
            f"  __rows[__r] = {src} + (__d * __NB + __b0 + std::min<int64_t>(__r, __nb - 1)) * __H;",
            f"daceml_rnn::rec_rows<{T}, {ng}>(__nb, __rows, 1, __rp.data() + (__d * __NJB + __jb) * __H * __GL + {g0} * __L, "
            f"__GL, __H, __acc + {g0} * __L, __GL);",
            f"const {T}* __bias = __bp.data() + (__d * __NJB + __jb) * __GL;",
            "for (int64_t __r = 0; __r < __nb; ++__r) {",
            "  const int64_t __b = __b0 + __r, __off = (__d * __NB + __b) * __H + __j0, __l = __len[__b];",
            f"  if (__s >= __l) {{ {skip}continue; }}",
            f"  const int64_t __t = {t};",
            f"  const {T}* __x = __xw.data() + ({xw_row} * __NJB + __jb) * __GL;",
            f"  const {T}* __a = __acc + __r * __GL;",
        ] + ["  " + s for s in body] + ["}"]

    hprev = f"const {V} __h = {ld('__hp + __off')};"
    if layer.op == "LSTM":
        pi = po = pf = ""
        if "P" in inp:
            dp = descs[inp["P"]]
            ps = cexpr(dp.strides[1])

            def peep(k):
                return ld(f"__P + {_at(dp, ['__d', f'{k} * __H + __j0'])}", stride=ps)

            pi, po, pf = f" + {peep(0)} * __cp", f" + {peep(1)} * __cn", f" + {peep(2)} * __cp"
        pre = [f"const {V} __cp = {ld('__cbuf.data() + __off')};"] + \
            [f"const {V} __a{g} = {gate(k)};" for k, g in enumerate("iofc")]

        def lstm(d):
            lines = [f"const {V} __i = {act(d, 0, clip('__ai' + pi))};"]
            if layer.input_forget:
                lines.append(f"const {V} __f = {T}(1) - __i;")
            else:
                lines.append(f"const {V} __f = {act(d, 0, clip('__af' + pf))};")
            lines += [
                f"const {V} __cn = __f * __cp + __i * {act(d, 1, clip('__ac'))};",
                f"const {V} __o = {act(d, 0, clip('__ao' + po))};",
                st("__cbuf.data() + __off", "__cn"),
            ]
            return lines + finish(f"__o * {act(d, 2, '__cn')}")

        return [phase(0, 4, "__hp", pre + per_direction(lstm), True)]
    if layer.op == "RNN":
        pre = [f"const {V} __pre = {gate(0)};"]
        return [phase(0, 1, "__hp", pre + per_direction(lambda d: finish(act(d, 0, clip("__pre")))), True)]
    if lbr:
        pre = [hprev, f"const {V} __az = {gate(0)}, __ar = {gate(1)};",
               f"const {V} __ah = {ld('__a + 2 * __L', '__L')} + {ld('__rbh.data() + (__d * __NJB + __jb) * __L', '__L')};",
               f"const {V} __xh = {ld('__x + 2 * __L', '__L')} + {ld('__bias + 2 * __L', '__L')};"]

        def gru(d):
            return [
                f"const {V} __z = {act(d, 0, clip('__az'))};",
                f"const {V} __rg = {act(d, 0, clip('__ar'))};",
                f"const {V} __hh = {act(d, 1, clip('__xh + __rg * __ah'))};",
            ] + finish(f"({T}(1) - __z) * __hh + __z * __h")

        return [phase(0, 3, "__hp", pre + per_direction(gru), True)]
    # GRU, linear_before_reset = 0: z and r * h first, then the candidate from r * h
    pre = [hprev, f"const {V} __az = {gate(0)}, __ar = {gate(1)};"]
    first = pre + per_direction(lambda d: [
        st("__zbuf.data() + __off", act(d, 0, clip("__az"))),
        st("__rh.data() + __off", f"{act(d, 0, clip('__ar'))} * __h"),
    ])
    pre = [hprev, f"const {V} __ah = {gate(2)};", f"const {V} __z = {ld('__zbuf.data() + __off')};"]
    second = pre + per_direction(lambda d: [f"const {V} __hh = {act(d, 1, clip('__ah'))};"]
                                 + finish(f"({T}(1) - __z) * __hh + __z * __h"))
    return [phase(0, 2, "__hp", first, False), phase(2, 1, "__rh.data()", second, True)]


class _RecurrentBase(Implementation):
    """Shared by LSTM, GRU and RNN: checks, then one C++ tasklet (see the module docstring)."""

    @staticmethod
    def why_not(node, state, sdfg):
        try:
            _check(node, state, sdfg)
        except _Reject as ex:
            return str(ex)
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        try:
            layer = _check(node, state, sdfg)
        except _Reject as ex:
            raise InvalidNodeError(f"{node.describe()}: {ex}") from None
        pointer_connectors(node, state, sdfg)  # one-element arrays (batch 1) stay arrays
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
        T = descs[layer.inputs["X"]].dtype.ctype
        add_helper_code(nsdfg, "rnn", RNN_HELPERS)
        code = _kernel_code(layer, descs, T)
        ins = {f"__{role}": conn for role, conn in layer.inputs.items()}
        outs = {f"__{role}": conn for role, conn in layer.outputs.items()}
        tasklet = nstate.add_tasklet(f"{node.label}_{layer.op.lower()}", set(ins), set(outs), code,
                                     language=dace.Language.CPP)
        for c, a in ins.items():
            tasklet.in_connectors[c] = dace.pointer(descs[a].dtype)
            nstate.add_edge(nstate.add_read(a), None, tasklet, c, dace.Memlet.from_array(a, descs[a]))
        for c, a in outs.items():
            tasklet.out_connectors[c] = dace.pointer(descs[a].dtype)
            nstate.add_edge(tasklet, c, nstate.add_write(a), None, dace.Memlet.from_array(a, descs[a]))
        return nsdfg


@op_implementation("LSTM", name="pure")
class PureLSTM(_RecurrentBase):
    """LSTM: the input projection of all steps at once, then a sequential time loop, parallel
    over (direction, batch rows) or within each step over hidden units; peepholes, clip,
    input_forget, any activations."""


@op_implementation("GRU", name="pure")
class PureGRU(_RecurrentBase):
    """GRU: as LSTM; ``linear_before_reset`` 0 (two phases per step) or 1 (one)."""


@op_implementation("RNN", name="pure")
class PureRNN(_RecurrentBase):
    """Simple RNN: as LSTM, one gate."""
