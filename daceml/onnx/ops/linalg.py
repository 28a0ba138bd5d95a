"""Linear algebra: matrix products and tensor contractions.

Ops: MatMul Gemm MatMulInteger Einsum.

MatMul, Gemm and MatMulInteger share one blocked C++ kernel
(``daceml_linalg::gemm_tile``, C++ global code emitted once per program). The
expansion is a one-dimensional parallel map over work items — (flat batch index,
block of 64 rows, block of 256 columns) of the output — whose C++ tasklet reads
the whole input arrays through pointers and computes its output tile with the
k-loop inside: B is packed per 256-deep block of k into a 32-column panel and an
8 x 32 block of the output is accumulated in vector registers (GCC vector
extensions). One row times a row-major B (GEMV) reads B in place, and a few rows
times a transposed B (``nn.Linear`` exported as Gemm with ``transB``, batch 1)
are dot products along k. Every MatMul case is handled the numpy way: 1-D x 1-D,
1-D x N-D, N-D x 1-D and batched products whose batch dims broadcast.
Transposes (Gemm's ``transA``/``transB``) and broadcasts (size-1 batch dims,
Gemm's ``C``) are strides of the kernel, so no operand is copied. float16 is
accumulated in float.

Einsum is a map over the output elements with the summed indices as C++ loops
inside (explicit or implicit output, ellipsis, repeated indices / diagonals).
"""
import string
from typing import Dict, List, Optional, Sequence, Tuple

import dace

from daceml.onnx.ops.common import add_cpp_array_kernel, add_helper_code, is_one
from daceml.onnx.ops.common import cpp as cexpr
from daceml.onnx.ops.registry import Implementation, op_implementation
from daceml.onnx.ops.shape import expansion_sdfg

#: the blocked GEMM kernel (C++ global code, once per program; needs :data:`shape.CONVERT_HELPERS`)
GEMM_KERNEL = r"""
#include <algorithm>
#include <cstdint>
#include <cstring>
namespace daceml_linalg {
/* Y[m0:m1, n0:n1] = alpha * (A - azp)[m0:m1, :] @ (B - bzp)[:, n0:n1] + beta * C[m0:m1, n0:n1].
   Every operand is strided (a stride of 0 broadcasts); C, azp and bzp may be null.
   B is packed per block of KB rows into a panel of NB columns; an MR x NB block of the
   output is accumulated in vector registers (GCC vector extensions as wide as the target's
   registers: 8 x 2 vectors of 64 bytes in AVX-512's 32 registers, 6 x 2 of 32 bytes in AVX2's
   16; 64-byte vectors on AVX2 left 16 accumulators and their operands in 16 registers, and the
   kernel ran at 3-4 GFLOP/s instead of 90-140). */
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64, kTileRows = 8;
#else
constexpr int kVectorBytes = 32, kTileRows = 6;
#endif
template <typename Acc>
struct Vec {
    typedef Acc type __attribute__((vector_size(kVectorBytes)));
    typedef Acc unaligned __attribute__((vector_size(kVectorBytes), aligned(alignof(Acc)), may_alias));
    static constexpr int L = kVectorBytes / sizeof(Acc);
};
template <typename Acc> static inline typename Vec<Acc>::type loadu(const Acc* p) {
    return *reinterpret_cast<const typename Vec<Acc>::unaligned*>(p);
}

template <typename T, typename U> struct Same { static const U* cast(const T*) { return nullptr; } };
template <typename T> struct Same<T, T> { static const T* cast(const T* p) { return p; } };

/* c[0:R] += (A[0:R, 0:kn] - z) @ panel[0:kn] (rows of the panel ps elements apart) */
template <int R, int NV, bool Packed, typename V, typename TA, typename Acc>
__attribute__((optimize("fp-contract=fast"), always_inline))
static inline void micro(V (&c)[8][NV], const TA* __restrict__ arow, int64_t sam, int64_t sak,
                         const Acc* __restrict__ panel, int64_t ps, int kn, const Acc* z) {
    V acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = c[r][v];
    for (int kk = 0; kk < kn; ++kk) {
        V b[NV];
        if (Packed) {  // aligned panel of NV vectors per row
            const V* bp = reinterpret_cast<const V*>(panel) + kk * NV;
            for (int v = 0; v < NV; ++v) b[v] = bp[v];
        } else {
            for (int v = 0; v < NV; ++v) b[v] = loadu(panel + kk * ps + v * (int)(sizeof(V) / sizeof(Acc)));
        }
        for (int r = 0; r < R; ++r) {
            const Acc a = daceml_convert<Acc>(arow[r * sam + kk * sak]) - z[r];
            for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) c[r][v] = acc[r][v];
}

template <typename TA, typename TB, typename TY, typename Acc, typename TC>
__attribute__((optimize("fp-contract=fast")))
static void gemm_tile(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K,
                      const TA* __restrict__ A, int64_t sam, int64_t sak,
                      const TB* __restrict__ B, int64_t sbk, int64_t sbn,
                      TY* __restrict__ Y, int64_t sym, int64_t syn,
                      Acc alpha, const TC* __restrict__ C, int64_t scm, int64_t scn, Acc beta,
                      const TA* __restrict__ azp, int64_t sazm, const TB* __restrict__ bzp, int64_t sbzn) {
    typedef typename Vec<Acc>::type V;
    constexpr int L = Vec<Acc>::L, NV = 2, NB = NV * L, MR = kTileRows, KB = 256;
    if (m1 - m0 <= 4 && sak == 1 && sbk == 1 && azp == nullptr && bzp == nullptr) {
        const Acc* a0 = Same<TA, Acc>::cast(A);
        const Acc* b0 = Same<TB, Acc>::cast(B);
        if (a0 != nullptr && b0 != nullptr) {  // few rows times a transposed B: dot products along k
            for (int64_t j = n0; j < n1; ++j)
                for (int64_t i = m0; i < m1; ++i) {
                    const Acc* x = a0 + i * sam;
                    const Acc* y = b0 + j * sbn;
                    V s[4] = {};
                    int64_t k = 0;
                    for (; k + 4 * L <= K; k += 4 * L)
                        for (int u = 0; u < 4; ++u) s[u] += loadu(x + k + u * L) * loadu(y + k + u * L);
                    for (; k + L <= K; k += L) s[0] += loadu(x + k) * loadu(y + k);
                    alignas(64) Acc t[L];
                    const V st = (s[0] + s[1]) + (s[2] + s[3]);
                    std::memcpy(t, &st, sizeof(V));
                    for (int w = L / 2; w > 0; w /= 2)
                        for (int l = 0; l < w; ++l) t[l] += t[l + w];
                    Acc sum = t[0];
                    for (; k < K; ++k) sum += x[k] * y[k];
                    Acc out = alpha * sum;
                    if (C != nullptr) out += beta * daceml_convert<Acc>(C[i * scm + j * scn]);
                    Y[i * sym + j * syn] = daceml_convert<TY>(out);
                }
            return;
        }
    }
    if (m1 - m0 == 1 && sbn == 1 && azp == nullptr && bzp == nullptr && Same<TB, Acc>::cast(B) != nullptr) {
        // one row times a row-major B: 8 independent vector accumulators along the row
        const Acc* b0 = Same<TB, Acc>::cast(B);
        const TA* arow = A + m0 * sam;
        alignas(64) Acc t[8 * L];
        int64_t j0 = n0;
        while (j0 < n1) {
            const int nv = n1 - j0 >= 8 * L ? 8 : 1;
            int width = nv * L;
            if (n1 - j0 < L) {  // scalar tail
                width = (int)(n1 - j0);
                for (int jj = 0; jj < width; ++jj) t[jj] = Acc(0);
                for (int64_t k = 0; k < K; ++k) {
                    const Acc a = daceml_convert<Acc>(arow[k * sak]);
                    for (int jj = 0; jj < width; ++jj) t[jj] += a * b0[k * sbk + j0 + jj];
                }
            } else if (nv == 8) {
                V s[8] = {};
                for (int64_t k = 0; k < K; ++k) {
                    const Acc a = daceml_convert<Acc>(arow[k * sak]);
                    const Acc* brow = b0 + k * sbk + j0;
                    for (int u = 0; u < 8; ++u) s[u] += a * loadu(brow + u * L);
                }
                std::memcpy(t, s, sizeof(s));
            } else {
                V s[4] = {};
                int64_t k = 0;
                for (; k + 4 <= K; k += 4)
                    for (int u = 0; u < 4; ++u)
                        s[u] += daceml_convert<Acc>(arow[(k + u) * sak]) * loadu(b0 + (k + u) * sbk + j0);
                for (; k < K; ++k) s[0] += daceml_convert<Acc>(arow[k * sak]) * loadu(b0 + k * sbk + j0);
                const V st = (s[0] + s[1]) + (s[2] + s[3]);
                std::memcpy(t, &st, sizeof(V));
            }
            for (int jj = 0; jj < width; ++jj) {
                Acc out = alpha * t[jj];
                if (C != nullptr) out += beta * daceml_convert<Acc>(C[m0 * scm + (j0 + jj) * scn]);
                Y[m0 * sym + (j0 + jj) * syn] = daceml_convert<TY>(out);
            }
            j0 += width;
        }
        return;
    }
    alignas(64) Acc bpack[KB * NB];
    alignas(64) Acc tile[MR][NB];
    for (int64_t j0 = n0; j0 < n1; j0 += NB) {
        const int jn = (int)std::min<int64_t>(NB, n1 - j0);
        for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += KB) {
            const int kn = (int)std::max<int64_t>(0, std::min<int64_t>(KB, K - k0));
            const bool first = k0 == 0, last = k0 + KB >= K;
            // one row: read B in place (no packing) where it is contiguous and of type Acc
            const Acc* panel = (m1 - m0 == 1 && jn == NB && sbn == 1 && bzp == nullptr)
                ? Same<TB, Acc>::cast(B + k0 * sbk + j0) : nullptr;
            const int64_t ps = panel != nullptr ? sbk : NB;
            if (panel == nullptr) {
                panel = bpack;
                if (sbk == 1 && sbn != 1 && bzp == nullptr) {  // B transposed: read along k
                    for (int jj = 0; jj < jn; ++jj) {
                        const TB* bcol = B + k0 + (j0 + jj) * sbn;
                        for (int kk = 0; kk < kn; ++kk) bpack[kk * NB + jj] = daceml_convert<Acc>(bcol[kk]);
                    }
                    for (int kk = 0; kk < kn; ++kk)
                        for (int jj = jn; jj < NB; ++jj) bpack[kk * NB + jj] = Acc(0);
                } else
                for (int kk = 0; kk < kn; ++kk) {
                    const TB* brow = B + (k0 + kk) * sbk + j0 * sbn;
                    Acc* bp = bpack + kk * NB;
                    if (bzp == nullptr) {
                        if (sbn == 1) { for (int jj = 0; jj < jn; ++jj) bp[jj] = daceml_convert<Acc>(brow[jj]); }
                        else { for (int jj = 0; jj < jn; ++jj) bp[jj] = daceml_convert<Acc>(brow[jj * sbn]); }
                    } else {
                        for (int jj = 0; jj < jn; ++jj)
                            bp[jj] = daceml_convert<Acc>(brow[jj * sbn]) - daceml_convert<Acc>(bzp[(j0 + jj) * sbzn]);
                    }
                    for (int jj = jn; jj < NB; ++jj) bp[jj] = Acc(0);
                }
            }
            for (int64_t i0 = m0; i0 < m1; i0 += MR) {
                const int ir = (int)std::min<int64_t>(MR, m1 - i0);
                const TA* arow = A + i0 * sam + k0 * sak;
                V c[8][NV];
                for (int r = 0; r < MR; ++r) {
                    for (int jj = 0; jj < NB; ++jj)
                        tile[r][jj] = (first || r >= ir || jj >= jn)
                            ? Acc(0) : daceml_convert<Acc>(Y[(i0 + r) * sym + (j0 + jj) * syn]);
                    for (int v = 0; v < NV; ++v) std::memcpy(&c[r][v], &tile[r][v * L], sizeof(V));
                }
                Acc z[MR];
                for (int r = 0; r < MR; ++r)
                    z[r] = (azp == nullptr || r >= ir) ? Acc(0) : daceml_convert<Acc>(azp[(i0 + r) * sazm]);
                switch (ir) {
                    case 8: micro<8, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 7: micro<7, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 6: micro<6, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 5: micro<5, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 4: micro<4, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 3: micro<3, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    case 2: micro<2, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z); break;
                    default: if (panel == bpack) micro<1, NV, true, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z);
                             else micro<1, NV, false, V, TA, Acc>(c, arow, sam, sak, panel, ps, kn, z);
                }
                for (int r = 0; r < ir; ++r) {
                    for (int v = 0; v < NV; ++v) std::memcpy(&tile[r][v * L], &c[r][v], sizeof(V));
                    TY* yrow = Y + (i0 + r) * sym + j0 * syn;
                    if (!last) {
                        for (int jj = 0; jj < jn; ++jj) yrow[jj * syn] = daceml_convert<TY>(tile[r][jj]);
                    } else if (C == nullptr) {
                        for (int jj = 0; jj < jn; ++jj) yrow[jj * syn] = daceml_convert<TY>(alpha * tile[r][jj]);
                    } else {
                        const TC* crow = C + (i0 + r) * scm + j0 * scn;
                        for (int jj = 0; jj < jn; ++jj)
                            yrow[jj * syn] = daceml_convert<TY>(alpha * tile[r][jj]
                                                                + beta * daceml_convert<Acc>(crow[jj * scn]));
                    }
                }
            }
        }
    }
}
}  // namespace daceml_linalg
"""

#: rows and columns of the output tile one map iteration computes
ROW_BLOCK = 64
COL_BLOCK = 256

_MATMUL_TYPES = {dace.float16, dace.float32, dace.float64, dace.int32, dace.int64, dace.uint32, dace.uint64}


def ctype(dtype: dace.typeclass) -> str:
    return dtype.ctype


def _acc_type(dtype: dace.typeclass) -> str:
    return "float" if dtype == dace.float16 else ctype(dtype)


def _literal(value: float, acc: str) -> str:
    if acc in ("float", "double"):
        v = repr(float(value))
        return f"{acc}({v})"
    if float(value) != int(value):
        raise ValueError(f"a non-integer scale {value} for an integer product")
    return f"{acc}({int(value)})"


def _matmul_shapes(a_shape: Sequence, b_shape: Sequence) -> Tuple[list, list, list, bool, bool]:
    """(batch shape of A, batch shape of B, output batch shape, A is a vector, B is a vector)."""
    a_vec, b_vec = len(a_shape) == 1, len(b_shape) == 1
    a_batch = list(a_shape[:-2]) if not a_vec else []
    b_batch = list(b_shape[:-2]) if not b_vec else []
    rank = max(len(a_batch), len(b_batch))
    a_batch = [1] * (rank - len(a_batch)) + a_batch
    b_batch = [1] * (rank - len(b_batch)) + b_batch
    out_batch = [b if is_one(a) else a for a, b in zip(a_batch, b_batch)]
    return a_batch, b_batch, out_batch, a_vec, b_vec


def _batch_offsets(out_batch: Sequence, strides: Dict[str, Sequence], index: str) -> List[str]:
    """C++ statements: unravel flat batch ``index`` over ``out_batch`` (last dim fastest) and
    add each operand's strides (0 where it broadcasts) to ``__off_<name>``."""
    lines = [f"int64_t __off_{n} = 0;" for n in strides]
    if out_batch:
        lines.append(f"int64_t __r = {index};")
    for d in reversed(range(len(out_batch))):
        lines.append(f"{{ const int64_t __ix = __r % ({cexpr(out_batch[d])}); __r /= ({cexpr(out_batch[d])});")
        for n, st in strides.items():
            if st[d] != 0:
                lines.append(f"  __off_{n} += __ix * ({cexpr(st[d])});")
        lines.append("}")
    return lines


def _gemm_call(tmpl: str, operands: Dict[str, str]) -> str:
    o = operands
    return (f"daceml_linalg::gemm_tile<{tmpl}>(__m0, __m1, __n0, __n1, {o['K']}, "
            f"{o['A']}, {o['sam']}, {o['sak']}, {o['B']}, {o['sbk']}, {o['sbn']}, "
            f"{o['Y']}, {o['sym']}, {o['syn']}, {o['alpha']}, {o['C']}, {o['scm']}, {o['scn']}, {o['beta']}, "
            f"{o['azp']}, {o['sazm']}, {o['bzp']}, {o['sbzn']});")


def _tiled_product(node, state, sdfg, a: str, b: str, y: str, *, trans_a=False, trans_b=False,
                   alpha=1.0, beta=0.0, c: Optional[str] = None, azp: Optional[str] = None,
                   bzp: Optional[str] = None) -> dace.SDFG:
    """A nested SDFG computing ``y = alpha * op(a) @ op(b) + beta * c`` (numpy matmul semantics
    for the batch dims) with the tiled kernel."""
    nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
    da, db, dy = descs[a], descs[b], descs[y]
    a_shape, b_shape = list(da.shape), list(db.shape)
    a_batch, b_batch, out_batch, a_vec, b_vec = _matmul_shapes(a_shape, b_shape)
    # logical (M, K) of A and (K, N) of B with element strides
    if a_vec:
        M, K = 1, a_shape[0]
        sam, sak = 0, 1
    else:
        rows, cols = a_shape[-2], a_shape[-1]
        st = da.strides
        M, K = (cols, rows) if trans_a else (rows, cols)
        sam, sak = (st[-1], st[-2]) if trans_a else (st[-2], st[-1])
    if b_vec:
        N = 1
        sbk, sbn = 1, 0
    else:
        rows, cols = b_shape[-2], b_shape[-1]
        st = db.strides
        N = rows if trans_b else cols
        sbk, sbn = (st[-1], st[-2]) if trans_b else (st[-2], st[-1])

    def batch_strides(shape, batch, desc, vec):
        if vec:
            return [0] * len(out_batch)
        nb = len(shape) - 2
        pad = len(out_batch) - nb
        return [0] * pad + [0 if is_one(shape[i]) else desc.strides[i] for i in range(nb)]

    strides = {"A": batch_strides(a_shape, a_batch, da, a_vec), "B": batch_strides(b_shape, b_batch, db, b_vec)}
    mn = M * N  # the output is contiguous: batch b starts at b * M * N
    sym, syn = N, 1

    nbatch = 1
    for d in out_batch:
        nbatch = nbatch * d
    rb = _ceil_div(M, ROW_BLOCK)
    cb = _ceil_div(N, COL_BLOCK)
    items = nbatch * rb * cb

    acc = _acc_type(dy.dtype)
    ops = {
        "K": cexpr(K), "sam": cexpr(sam), "sak": cexpr(sak), "sbk": cexpr(sbk), "sbn": cexpr(sbn),
        "sym": cexpr(sym), "syn": cexpr(syn), "alpha": _literal(alpha, acc), "beta": _literal(beta, acc),
        "A": "__A + __off_A", "B": "__B + __off_B", "Y": f"__Y + __b * ({cexpr(mn)})",
        "C": "(const float*)nullptr", "scm": "0", "scn": "0",
        "azp": f"(const {ctype(da.dtype)}*)nullptr", "sazm": "0",
        "bzp": f"(const {ctype(db.dtype)}*)nullptr", "sbzn": "0",
    }
    inputs = {"__A": a, "__B": b}
    tc = "float"
    if c is not None:
        dc = descs[c]
        c_shape = list(dc.shape)
        # unidirectional broadcast of C to (M, N)
        c_m = c_shape[-2] if len(c_shape) >= 2 else 1
        c_n = c_shape[-1] if len(c_shape) >= 1 else 1
        ops["scm"] = "0" if is_one(c_m) else cexpr(dc.strides[-2])
        ops["scn"] = "0" if is_one(c_n) else cexpr(dc.strides[-1])
        ops["C"] = "__C"
        tc = ctype(dc.dtype)
        inputs["__C"] = c
    if azp is not None:
        dz = descs[azp]
        ops["azp"] = "__azp"
        ops["sazm"] = "0" if is_one(dz.total_size) else cexpr(dz.strides[-1])
        inputs["__azp"] = azp
    if bzp is not None:
        dz = descs[bzp]
        ops["bzp"] = "__bzp"
        ops["sbzn"] = "0" if is_one(dz.total_size) else cexpr(dz.strides[-1])
        inputs["__bzp"] = bzp
    tmpl = f"{ctype(da.dtype)}, {ctype(db.dtype)}, {ctype(dy.dtype)}, {acc}, {tc}"
    code = [
        "int64_t __t = __item;",
        f"const int64_t __ncb = {cexpr(cb)}, __nrb = {cexpr(rb)};",
        "const int64_t __cb = __t % __ncb; __t /= __ncb;",
        "const int64_t __rb = __t % __nrb; __t /= __nrb;",
        "const int64_t __b = __t;",
    ]
    code += _batch_offsets(out_batch, strides, "__b")
    code += [
        f"const int64_t __m0 = __rb * {ROW_BLOCK}, __m1 = std::min<int64_t>(__m0 + {ROW_BLOCK}, {cexpr(M)});",
        f"const int64_t __n0 = __cb * {COL_BLOCK}, __n1 = std::min<int64_t>(__n0 + {COL_BLOCK}, {cexpr(N)});",
        _gemm_call(tmpl, ops),
    ]
    add_helper_code(nsdfg, "gemm_tile", GEMM_KERNEL)
    add_cpp_array_kernel(nstate, f"{node.label}_gemm", {"__item": f"0:{items}"}, descs, inputs, {"__Y": y},
                         "\n".join(code))
    return nsdfg


def _ceil_div(value, block: int):
    try:
        return (int(value) + block - 1) // block
    except TypeError:
        return dace.symbolic.int_ceil(value, block)


def _check_inner(node, k_a, k_b) -> Optional[str]:
    try:
        if int(k_a) != int(k_b):
            return f"the inner dims do not match: A has {k_a} columns, B has {k_b} rows"
    except TypeError:
        pass
    return None


def _dtype_reason(node, state, sdfg, conns, allowed) -> Optional[str]:
    for c in conns:
        dt = node.in_desc(state, sdfg, c).dtype
        if dt not in allowed:
            return f"input {c!r} is {dt}; this implementation handles {sorted(str(t) for t in allowed)}"
    return None


@op_implementation("MatMul", name="pure")
class TiledMatMul(Implementation):
    """MatMul with numpy semantics as a parallel map over output tiles (blocked C++ kernel)."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = _dtype_reason(node, state, sdfg, ["A", "B"], _MATMUL_TYPES)
        if reason:
            return reason
        a = node.in_desc(state, sdfg, "A").shape
        b = node.in_desc(state, sdfg, "B").shape
        k_b = b[0] if len(b) == 1 else b[-2]
        reason = _check_inner(node, a[-1], k_b)
        return f"{reason} (A is {tuple(a)}, B is {tuple(b)})" if reason else None

    @staticmethod
    def expansion(node, state, sdfg):
        return _tiled_product(node, state, sdfg, "A", "B", "Y")


@op_implementation("Gemm", name="pure")
class TiledGemm(Implementation):
    """Gemm (``alpha * op(A) @ op(B) + beta * C``) with the tiled kernel; C broadcasts."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = _dtype_reason(node, state, sdfg, ["A", "B"], _MATMUL_TYPES)
        if reason:
            return reason
        a = node.in_desc(state, sdfg, "A").shape
        b = node.in_desc(state, sdfg, "B").shape
        if len(a) != 2 or len(b) != 2:
            return f"A and B must be matrices, got shapes {tuple(a)}, {tuple(b)}"
        dtype = node.out_desc(state, sdfg, "Y").dtype
        for name in ("alpha", "beta"):
            value = getattr(node, name)
            if value is not None and dtype not in (dace.float16, dace.float32, dace.float64) \
                    and float(value) != int(value):
                return f"{name} = {value} is not an integer, the product is {dtype}"
        k_a = a[0] if node.transA else a[1]
        k_b = b[1] if node.transB else b[0]
        reason = _check_inner(node, k_a, k_b)
        return f"{reason} (op(A) and op(B) of {tuple(a)}, {tuple(b)})" if reason else None

    @staticmethod
    def expansion(node, state, sdfg):
        alpha = 1.0 if node.alpha is None else node.alpha
        beta = 1.0 if node.beta is None else node.beta
        has_c = "C" in node.in_connectors
        return _tiled_product(node, state, sdfg, "A", "B", "Y", trans_a=bool(node.transA), trans_b=bool(node.transB),
                              alpha=alpha, beta=beta if has_c else 0.0, c="C" if has_c else None)


@op_implementation("MatMulInteger", name="pure")
class TiledMatMulInteger(Implementation):
    """MatMulInteger: (A - a_zero_point) @ (B - b_zero_point) in int32 with the tiled kernel.
    Zero points are scalars, or per row of A / per column of B."""

    @staticmethod
    def why_not(node, state, sdfg):
        for c in ("a_zero_point", "b_zero_point"):
            if c in node.in_connectors:
                shape = node.in_desc(state, sdfg, c).shape
                if len(shape) > 1:
                    return f"{c} of shape {tuple(shape)}: only scalar and 1-D zero points are supported"
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        return _tiled_product(node, state, sdfg, "A", "B", "Y",
                              azp="a_zero_point" if "a_zero_point" in node.in_connectors else None,
                              bzp="b_zero_point" if "b_zero_point" in node.in_connectors else None)


# --- Einsum --------------------------------------------------------------------------------------

def parse_einsum(equation: str, ranks: Sequence[int]) -> Tuple[List[str], str]:
    """Input terms and the output term of an einsum ``equation`` with ``...`` replaced by
    fresh upper-case letters (one per broadcast dim); the output of an implicit equation
    is the ellipsis dims followed by the letters that occur once, in alphabetical order."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation {equation!r} has {len(terms)} operand(s), the node has {len(ranks)} input(s)")
    used = set(eq)
    fresh = [ch for ch in string.ascii_uppercase + string.ascii_lowercase if ch not in used]
    ell_rank = 0
    for term, rank in zip(terms, ranks):
        if "..." in term:
            ell_rank = max(ell_rank, rank - (len(term) - 3))
    ell = "".join(fresh[:ell_rank])
    out_terms = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            n = rank - (len(term) - 3)
            term = term.replace("...", ell[ell_rank - n:] if n else "")
        if len(term) != rank:
            raise ValueError(f"term {term!r} of {equation!r} does not match an input of rank {rank}")
        out_terms.append(term)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        counts = {}
        for t in out_terms:
            for ch in t:
                counts[ch] = counts.get(ch, 0) + 1
        out = ell + "".join(sorted(ch for ch, n in counts.items() if n == 1 and ch not in ell))
    return out_terms, out


@op_implementation("Einsum", name="pure")
class LoopEinsum(Implementation):
    """Einsum as a map over the output with the summed indices as loops inside."""

    @staticmethod
    def why_not(node, state, sdfg):
        ranks = [len(node.in_desc(state, sdfg, c).shape) for c in node.input_connectors()]
        try:
            parse_einsum(node.equation, ranks)
        except ValueError as ex:
            return str(ex)
        return None

    @staticmethod
    def expansion(node, state, sdfg):
        nsdfg, nstate, descs = expansion_sdfg(node, state, sdfg)
        conns = node.input_connectors()
        shapes = [list(node.in_desc(state, sdfg, c).shape) for c in conns]
        terms, out = parse_einsum(node.equation, [len(s) for s in shapes])
        dy = descs["Output"]
        # extent of each letter: the first non-1 size seen
        extent: Dict[str, object] = {}
        for term, shape in zip(terms, shapes):
            for ch, size in zip(term, shape):
                if ch not in extent or (is_one(extent[ch]) and not is_one(size)):
                    extent[ch] = size
        params = {ch: f"__e_{ch}" for ch in extent}
        summed = [ch for ch in extent if ch not in out]
        acc = _acc_type(dy.dtype)
        offsets = []
        for k, (term, c) in enumerate(zip(terms, conns)):
            parts = []
            for ch, size, stride in zip(term, shapes[k], descs[c].strides):
                if is_one(size):
                    continue
                parts.append(f"{params[ch]} * ({cexpr(stride)})")
            offsets.append(" + ".join(parts) or "0")
        product = " * ".join(f"daceml_convert<{acc}>(__in{k}[{off}])" for k, off in enumerate(offsets))
        lines = [f"{acc} __acc = {acc}(0);"]
        for ch in summed:
            lines.append(f"for (int64_t {params[ch]} = 0; {params[ch]} < {cexpr(extent[ch])}; ++{params[ch]})")
        lines.append(f"    __acc += {product};")
        out_params = [params[ch] for ch in out]
        if out:
            ranges = {params[ch]: f"0:{extent[ch]}" for ch in out}
            out_off = " + ".join(f"{p} * ({cexpr(s)})" for p, s in zip(out_params, dy.strides))
        else:
            ranges = {"__e_scalar": "0:1"}
            out_off = "0"
        lines.append(f"__out[{out_off}] = daceml_convert<{ctype(dy.dtype)}>(__acc);")
        add_cpp_array_kernel(nstate, f"{node.label}_einsum", ranges, descs,
                       {f"__in{k}": c for k, c in enumerate(conns)}, {"__out": "Output"}, "\n".join(lines))
        return nsdfg
