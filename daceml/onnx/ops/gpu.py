"""CUDA implementations (name ``"cuda"``) of the heavy ops: device code for GPU programs.

Ops: MatMul Gemm, Conv ConvTranspose, MaxPool AveragePool LpPool, GlobalAveragePool
GlobalMaxPool, BatchNormalization (inference), LayerNormalization, Softmax LogSoftmax,
ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare
ReduceLogSum ReduceLogSumExp, LSTM.

The CPU implementations of these ops are host code (GCC vector extensions, helper
namespaces in the CPU file, OpenMP); :func:`daceml.targets.cuda.to_gpu` picks these
instead wherever they apply. Each is a nested SDFG with one map around a C++ tasklet that
gets whole arrays as pointers; DaCe's GPU transformation turns the map into a kernel.
The code is plain C++ (loops, ``std::`` math that CUDA provides on the device, no
``std::numeric_limits``), so the same expansion also compiles and runs on the CPU, which
is how its index arithmetic is tested on machines without a GPU.

Two shapes of kernel:

- **one thread per output element**: a one-dimensional map over the flat output index
  (consecutive threads write consecutive elements), the reduction loop inside: MatMul,
  Gemm (the k loop), Conv and ConvTranspose (channels of the group x kernel taps, bounds
  checked), windowed pools, BatchNormalization;
- **one warp per row**: a map over (row, lane) with 32 lanes and blocks of 32 x 8
  threads, so the 32 lanes of a row are one warp; each lane strides over the row and the
  partial results are combined with ``__shfl_xor_sync``: Softmax / LogSoftmax (max,
  exp-sum, write: three passes over the row), LayerNormalization (mean, variance of the
  deviations, write), the global pools and the Reduce ops (any constant set of axes).
  On the CPU (no ``__CUDA_ARCH__``) lane 0 does the whole row.

LSTM is one thread block: threads own hidden units, the states live in shared memory, one
barrier per time step (up to :data:`LSTM_MAX_STATE` state elements).

Element types: float32 and float64 (float16 is refused; the Reduce ops also take int32 and
int64 where the result needs no floating point). Ops not listed here either compile for
CUDA with their ``pure`` implementation (elementwise ops, Reshape, Transpose, Concat,
Split, Slice, Gather, Expand, Where, Cast, Clip: plain loops, whose helper functions
:func:`daceml.targets.cuda.to_gpu` makes device functions) or are not supported on the GPU
yet (GRU, RNN, attention, Einsum, MatMulInteger: host-only C++, refused by ``to_gpu``).
"""
import math
from typing import Dict, List, Optional, Sequence

import dace

from daceml.onnx.ops.common import cpp, is_one, nested_sdfg, normalize_axis, pointer_connectors
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation

#: lanes of a warp, rows of a block in the warp-per-row kernels
LANES = 32
ROWS_PER_BLOCK = 8

_FLOATS = (dace.float32, dace.float64)
_INTS = (dace.int32, dace.int64)

#: device helpers (global code of the kernels' file, once): warp reductions and DACEML_LANES
GPU_HELPERS = r"""
#ifndef DACEML_GPU_HELPERS
#define DACEML_GPU_HELPERS
#include <cmath>
#if defined(__CUDACC__)
#define DACEML_HDI __host__ __device__ __forceinline__
#else
#define DACEML_HDI inline
#endif
#if defined(__CUDA_ARCH__)
#define DACEML_LANES 32
#define DACEML_SHFL(v, o) __shfl_xor_sync(0xffffffffu, (v), (o))
#else
#define DACEML_LANES 1
#endif
/* Combine the partial results of the 32 lanes of a warp (identity on the host). */
template <typename T> DACEML_HDI T daceml_warp_sum(T v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v += DACEML_SHFL(v, o);
#endif
    return v;
}
template <typename T> DACEML_HDI T daceml_warp_prod(T v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v *= DACEML_SHFL(v, o);
#endif
    return v;
}
/* max / min that propagate NaN */
template <typename T> DACEML_HDI T daceml_nanmax(T a, T b) { return (b > a || b != b) ? b : a; }
template <typename T> DACEML_HDI T daceml_nanmin(T a, T b) { return (b < a || b != b) ? b : a; }
template <typename T> DACEML_HDI T daceml_warp_max(T v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v = daceml_nanmax(v, (T)DACEML_SHFL(v, o));
#endif
    return v;
}
template <typename T> DACEML_HDI T daceml_warp_min(T v) {
#if defined(__CUDA_ARCH__)
    for (int o = 16; o > 0; o >>= 1) v = daceml_nanmin(v, (T)DACEML_SHFL(v, o));
#endif
    return v;
}
#endif  // DACEML_GPU_HELPERS
"""


_Reject = Rejected


def _add_helpers(nsdfg: dace.SDFG) -> None:
    """:data:`GPU_HELPERS` in the global code of both the CUDA file and the CPU file."""
    for location in ("cuda", "frame"):
        existing = nsdfg.global_code.get(location)
        if existing is None or "DACEML_GPU_HELPERS" not in existing.as_string:
            nsdfg.append_global_code(GPU_HELPERS, location)


def _dtype_check(node, state, sdfg, conns: Sequence[str], allowed=_FLOATS) -> None:
    for c in conns:
        dtype = node.in_desc(state, sdfg, c).dtype
        if dtype not in allowed:
            raise _Reject(f"input {c!r} has element type {dtype.to_string()}; the cuda implementation supports "
                          f"{', '.join(t.to_string() for t in allowed)}")


def _prod(sizes: Sequence):
    total = 1
    for s in sizes:
        total = total * s
    return total


def _same(a, b) -> bool:
    """Whether two sizes (ints or symbolic expressions) are certainly equal."""
    try:
        return bool(dace.symbolic.simplify(a - b) == 0)
    except TypeError:
        return a == b


def _unravel(index: str, shape: Sequence, names: Sequence[str], tmp: str = "__rem") -> List[str]:
    """C++ lines declaring ``names`` (one per dim) as the row-major coordinates of ``index``."""
    lines = [f"int64_t {tmp} = {index};"]
    for d in reversed(range(len(shape))):
        if d == 0:
            lines.append(f"const int64_t {names[d]} = {tmp};")
        else:
            lines.append(f"const int64_t {names[d]} = {tmp} % {cpp(shape[d])}; {tmp} /= {cpp(shape[d])};")
    return lines


def _kernel(nstate: dace.SDFGState, name: str, ranges: Dict[str, str], descs, inputs: Dict[str, str],
            outputs: Dict[str, str], code: str, block: Optional[List[int]] = None):
    """A map over ``ranges`` around a C++ tasklet that gets every array (``{connector: array}``)
    as a pointer to its first element. ``block``: the GPU block size of the map."""
    ins = {c: dace.Memlet.from_array(a, descs[a]) for c, a in inputs.items()}
    outs = {c: dace.Memlet.from_array(a, descs[a]) for c, a in outputs.items()}
    tasklet, entry, _ = nstate.add_mapped_tasklet(name, ranges, inputs=ins, code=code, outputs=outs,
                                                  language=dace.Language.CPP, external_edges=True)
    for c, a in inputs.items():
        tasklet.in_connectors[c] = dace.pointer(descs[a].dtype)
    for c, a in outputs.items():
        tasklet.out_connectors[c] = dace.pointer(descs[a].dtype)
    if block is not None:
        entry.map.gpu_block_size = list(block)
    return tasklet


def _flat_kernel(nstate, name: str, total, descs, inputs, outputs, code: str) -> None:
    """One thread per element: a one-dimensional map ``__t`` over ``0:total``."""
    _kernel(nstate, name, {"__t": f"0:{cpp(total)}"}, descs, inputs, outputs, code)


def _row_kernel(nsdfg, nstate, name: str, rows, descs, inputs, outputs, code: str) -> None:
    """One warp per row: a map over (``__row``, ``__lane``); ``code`` sees ``__lane`` and
    ``DACEML_LANES`` (32 on the device, 1 on the host, where lanes other than 0 do nothing)."""
    _add_helpers(nsdfg)
    body = f"if (__lane < DACEML_LANES) {{\n{code}\n}}"
    _kernel(nstate, name, {"__row": f"0:{cpp(rows)}", "__lane": f"0:{LANES}"}, descs, inputs, outputs, body,
            block=[LANES, ROWS_PER_BLOCK, 1])


def _lane_loop(n: str, var: str = "__j") -> str:
    return f"for (int64_t {var} = __lane; {var} < {n}; {var} += DACEML_LANES)"


def _expansion_sdfg(node, state, sdfg):
    pointer_connectors(node, state, sdfg)
    return nested_sdfg(node, state, sdfg, suffix="cuda")


def _lit(value: float, T: str) -> str:
    return f"({T})({float(value)!r})"


_CudaBase = CheckedImplementation  # why_not from a check raising _Reject; expansions use checked()


# --- MatMul, Gemm ----------------------------------------------------------------------------------

def _product_code(descs, a: str, b: str, y: str, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
                  c: Optional[str] = None) -> str:
    """Tasklet body computing output element ``__t`` of ``y = alpha * op(a) @ op(b) + beta * c``
    (numpy matmul semantics: 1-D operands, broadcast batch dims)."""
    da, db, dy = descs[a], descs[b], descs[y]
    a_shape, b_shape = list(da.shape), list(db.shape)
    a_vec, b_vec = len(a_shape) == 1, len(b_shape) == 1
    T = dy.dtype.ctype
    if a_vec:
        M, K, sam, sak = 1, a_shape[0], 0, 1
    else:
        rows, cols = a_shape[-2], a_shape[-1]
        st = da.strides
        M, K = (cols, rows) if trans_a else (rows, cols)
        sam, sak = (st[-1], st[-2]) if trans_a else (st[-2], st[-1])
    if b_vec:
        N, sbk, sbn = 1, db.strides[0], 0
    else:
        rows, cols = b_shape[-2], b_shape[-1]
        st = db.strides
        N = rows if trans_b else cols
        sbk, sbn = (st[-1], st[-2]) if trans_b else (st[-2], st[-1])
    a_batch = [] if a_vec else a_shape[:-2]
    b_batch = [] if b_vec else b_shape[:-2]
    rank = max(len(a_batch), len(b_batch))
    a_batch = [1] * (rank - len(a_batch)) + a_batch
    b_batch = [1] * (rank - len(b_batch)) + b_batch
    a_bst = [0] * (rank - (len(a_shape) - 2)) + list(da.strides[:-2]) if not a_vec else [0] * rank
    b_bst = [0] * (rank - (len(b_shape) - 2)) + list(db.strides[:-2]) if not b_vec else [0] * rank
    out_batch = [bb if is_one(ab) else ab for ab, bb in zip(a_batch, b_batch)]
    lines = ["int64_t __r = __t;",
             f"const int64_t __j = __r % {cpp(N)}; __r /= {cpp(N)};",
             f"const int64_t __i = __r % {cpp(M)}; __r /= {cpp(M)};",
             "int64_t __oa = 0, __ob = 0;"]
    for d in reversed(range(rank)):
        lines.append(f"{{ const int64_t __x = __r % {cpp(out_batch[d])}; __r /= {cpp(out_batch[d])};")
        if not is_one(a_batch[d]):
            lines.append(f"  __oa += __x * {cpp(a_bst[d])};")
        if not is_one(b_batch[d]):
            lines.append(f"  __ob += __x * {cpp(b_bst[d])};")
        lines.append("}")
    lines += [f"const {T}* __pa = __A + __oa + __i * {cpp(sam)};",
              f"const {T}* __pb = __B + __ob + __j * {cpp(sbn)};",
              f"{T} __acc = 0;",
              f"for (int64_t __p = 0; __p < {cpp(K)}; ++__p) __acc += __pa[__p * {cpp(sak)}] * __pb[__p * {cpp(sbk)}];"]
    result = "__acc" if float(alpha) == 1.0 else f"{_lit(alpha, T)} * __acc"
    if c is not None and float(beta) != 0.0:
        dc = descs[c]
        c_shape = list(dc.shape)
        c_m = c_shape[-2] if len(c_shape) >= 2 else 1
        c_n = c_shape[-1] if len(c_shape) >= 1 else 1
        scm = "0" if is_one(c_m) else cpp(dc.strides[-2])
        scn = "0" if is_one(c_n) else cpp(dc.strides[-1])
        cval = f"__C[__i * {scm} + __j * {scn}]"
        result += f" + {cval}" if float(beta) == 1.0 else f" + {_lit(beta, T)} * {cval}"
    lines.append(f"__Y[__t] = {result};")
    return "\n".join(lines)


def _inner_reason(k_a, k_b, a, b) -> Optional[str]:
    try:
        if int(k_a) != int(k_b):
            return f"the inner dims do not match (A is {tuple(a)}, B is {tuple(b)})"
    except TypeError:
        pass
    return None


@op_implementation("MatMul", name="cuda")
class CudaMatMul(_CudaBase):
    """MatMul (numpy semantics): one thread per output element with the k loop inside."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype_check(node, state, sdfg, ["A", "B"])
        a = node.in_desc(state, sdfg, "A").shape
        b = node.in_desc(state, sdfg, "B").shape
        reason = _inner_reason(a[-1], b[0] if len(b) == 1 else b[-2], a, b)
        if reason:
            raise _Reject(reason)

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        code = _product_code(descs, "A", "B", "Y")
        _flat_kernel(nstate, f"{node.label}_matmul", descs["Y"].total_size, descs, {"__A": "A", "__B": "B"},
                     {"__Y": "Y"}, code)
        return nsdfg


@op_implementation("Gemm", name="cuda")
class CudaGemm(_CudaBase):
    """Gemm (``alpha * op(A) @ op(B) + beta * C``, C broadcast): one thread per output element."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype_check(node, state, sdfg, [c for c in ("A", "B", "C") if c in node.in_connectors])
        a = node.in_desc(state, sdfg, "A").shape
        b = node.in_desc(state, sdfg, "B").shape
        if len(a) != 2 or len(b) != 2:
            raise _Reject(f"A and B must be matrices, got shapes {tuple(a)}, {tuple(b)}")
        reason = _inner_reason(a[0] if node.transA else a[1], b[1] if node.transB else b[0], a, b)
        if reason:
            raise _Reject(reason)
        if "C" in node.in_connectors and len(node.in_desc(state, sdfg, "C").shape) > 2:
            raise _Reject("C must have rank <= 2")

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        has_c = "C" in node.in_connectors
        code = _product_code(descs, "A", "B", "Y", trans_a=bool(node.transA), trans_b=bool(node.transB),
                             alpha=1.0 if node.alpha is None else node.alpha,
                             beta=(1.0 if node.beta is None else node.beta) if has_c else 0.0,
                             c="C" if has_c else None)
        inputs = {"__A": "A", "__B": "B"}
        if has_c:
            inputs["__C"] = "C"
        _flat_kernel(nstate, f"{node.label}_gemm", descs["Y"].total_size, descs, inputs, {"__Y": "Y"}, code)
        return nsdfg


# --- Conv, ConvTranspose ---------------------------------------------------------------------------

def _geometry(impl, node, state, sdfg):
    """The pure implementation's checked geometry (conv_pool's checks), as _Reject."""
    from daceml.onnx.ops import conv_pool
    try:
        return impl.check(node, state, sdfg)
    except conv_pool._Reject as ex:
        raise _Reject(str(ex)) from None


def _out_coords(y_shape, k: int) -> List[str]:
    """C++ unravelling flat ``__t`` over Y (N, C, O1..Ok) into ``__n, __m, __o0..``."""
    return _unravel("__t", y_shape, ["__n", "__m"] + [f"__o{j}" for j in range(k)])


@op_implementation("Conv", name="cuda")
class CudaConv(_CudaBase):
    """Conv (groups, depthwise, strides, dilations, pads, auto_pad; 1-D to 3-D): one thread per
    output element, looping over the channels of its group and the kernel taps (bounds checked)."""

    @classmethod
    def check(cls, node, state, sdfg):
        from daceml.onnx.ops.conv_pool import PureConv
        _dtype_check(node, state, sdfg, node.input_connectors())
        return _geometry(PureConv, node, state, sdfg)

    @classmethod
    def expansion(cls, node, state, sdfg):
        win, c, m, group = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        T = x.dtype.ctype
        k = win.k
        cg, mg = c // group, m // group
        plane = math.prod(win.ins)
        ksize = math.prod(win.kernel)
        ist = [math.prod(win.ins[j + 1:]) for j in range(k)]
        kst = [math.prod(win.kernel[j + 1:]) for j in range(k)]
        lines = _out_coords(y.shape, k)
        init = "__Bias[__m]" if "B" in node.in_connectors else "0"
        lines += [f"{T} __acc = {init};",
                  f"const {T}* __xg = __X + (__n * {c} + (__m / {mg}) * {cg}) * {plane};",
                  f"const {T}* __wm = __W + __m * {cg * ksize};",
                  f"for (int64_t __c = 0; __c < {cg}; ++__c) {{"]
        for j in range(k):
            s, d, p = win.strides[j], win.dilations[j], win.pads_begin[j]
            lines += [f"for (int64_t __q{j} = 0; __q{j} < {win.kernel[j]}; ++__q{j}) {{",
                      f"const int64_t __i{j} = __o{j} * {s} - {p} + __q{j} * {d};",
                      f"if (__i{j} < 0 || __i{j} >= {win.ins[j]}) continue;"]
        xi = " + ".join(f"__i{j} * {ist[j]}" for j in range(k))
        wi = " + ".join(f"__q{j} * {kst[j]}" for j in range(k))
        lines.append(f"__acc += __xg[__c * {plane} + {xi}] * __wm[__c * {ksize} + {wi}];")
        lines += ["}"] * (k + 1)
        lines.append("__Y[__t] = __acc;")
        inputs = {"__X": "X", "__W": "W"}
        if "B" in node.in_connectors:
            inputs["__Bias"] = "B"
        _flat_kernel(nstate, f"{node.label}_conv", y.total_size, descs, inputs, {"__Y": "Y"}, "\n".join(lines))
        return nsdfg


@op_implementation("ConvTranspose", name="cuda")
class CudaConvTranspose(_CudaBase):
    """ConvTranspose: one thread per output element, gathering the input positions that scatter
    into it (no atomics)."""

    @classmethod
    def check(cls, node, state, sdfg):
        from daceml.onnx.ops.conv_pool import PureConvTranspose
        _dtype_check(node, state, sdfg, node.input_connectors())
        return _geometry(PureConvTranspose, node, state, sdfg)

    @classmethod
    def expansion(cls, node, state, sdfg):
        win, c, m, group = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        T = x.dtype.ctype
        k = win.k
        cg, mg = c // group, m // group
        plane = math.prod(win.ins)
        ksize = math.prod(win.kernel)
        ist = [math.prod(win.ins[j + 1:]) for j in range(k)]
        kst = [math.prod(win.kernel[j + 1:]) for j in range(k)]
        lines = _out_coords(y.shape, k)
        init = "__Bias[__m]" if "B" in node.in_connectors else "0"
        lines += [f"{T} __acc = {init};",
                  f"const int64_t __g = __m / {mg}, __mm = __m % {mg};",
                  f"for (int64_t __c = __g * {cg}; __c < (__g + 1) * {cg}; ++__c) {{",
                  f"const {T}* __xc = __X + (__n * {c} + __c) * {plane};",
                  f"const {T}* __wc = __W + (__c * {mg} + __mm) * {ksize};"]
        for j in range(k):
            s, d, p = win.strides[j], win.dilations[j], win.pads_begin[j]
            lines += [f"for (int64_t __q{j} = 0; __q{j} < {win.kernel[j]}; ++__q{j}) {{",
                      f"const int64_t __s{j} = __o{j} + {p} - __q{j} * {d};",
                      f"if (__s{j} < 0 || __s{j} % {s} != 0 || __s{j} / {s} >= {win.ins[j]}) continue;"]
        xi = " + ".join(f"(__s{j} / {win.strides[j]}) * {ist[j]}" for j in range(k))
        wi = " + ".join(f"__q{j} * {kst[j]}" for j in range(k))
        lines.append(f"__acc += __xc[{xi}] * __wc[{wi}];")
        lines += ["}"] * (k + 1)
        lines.append("__Y[__t] = __acc;")
        inputs = {"__X": "X", "__W": "W"}
        if "B" in node.in_connectors:
            inputs["__Bias"] = "B"
        _flat_kernel(nstate, f"{node.label}_convtranspose", y.total_size, descs, inputs, {"__Y": "Y"},
                     "\n".join(lines))
        return nsdfg


# --- pools -----------------------------------------------------------------------------------------

class _WindowPool(_CudaBase):
    kind = "max"

    @classmethod
    def check(cls, node, state, sdfg):
        from daceml.onnx.ops import conv_pool
        _dtype_check(node, state, sdfg, ["X"])
        impl = {"max": conv_pool.PureMaxPool, "avg": conv_pool.PureAveragePool, "lp": conv_pool.PureLpPool}
        return _geometry(impl[cls.kind], node, state, sdfg)

    @classmethod
    def expansion(cls, node, state, sdfg):
        win = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x, y = descs["X"], descs["Y"]
        T = x.dtype.ctype
        k = win.k
        plane = math.prod(win.ins)
        ist = [math.prod(win.ins[j + 1:]) for j in range(k)]
        lines = _out_coords(y.shape, k)
        lines.append(f"const {T}* __xp = __X + (__n * {cpp(x.shape[1])} + __m) * {plane};")
        outputs = {"__Y": "Y"}
        indices = cls.kind == "max" and "Indices" in node.out_connectors
        lines.append(f"{T} __acc = {'-INFINITY' if cls.kind == 'max' else '0'};")
        if indices:
            outputs["__I"] = "Indices"
            lines.append("int64_t __arg = -1;")
        for j in range(k):
            lines += [f"for (int64_t __q{j} = 0; __q{j} < {win.kernel[j]}; ++__q{j}) {{",
                      f"const int64_t __i{j} = __o{j} * {win.strides[j]} - {win.pads_begin[j]} "
                      f"+ __q{j} * {win.dilations[j]};"]
        inside = " && ".join(f"__i{j} >= 0 && __i{j} < {win.ins[j]}" for j in range(k))
        pos = " + ".join(f"__i{j} * {ist[j]}" for j in range(k))
        if indices:
            if int(node.storage_order or 0) == 0:
                flat = pos
            else:
                flat = " + ".join(f"__i{j} * {math.prod(win.ins[:j])}" for j in range(k))
            lines.append(f"if ({inside}) {{ const {T} __v = __xp[{pos}]; "
                         f"if (__arg < 0 || __v > __acc) {{ __acc = __v; __arg = {flat}; }} }}")
        elif cls.kind == "max":
            lines.append(f"if ({inside}) {{ const {T} __v = __xp[{pos}]; if (__v > __acc) __acc = __v; }}")
        elif cls.kind == "avg":
            lines.append(f"if ({inside}) __acc += __xp[{pos}];")
        else:
            p = 2 if node.p is None else int(node.p)
            step = {1: "std::abs(__v)", 2: "__v * __v"}.get(p, f"std::pow(std::abs(__v), ({T}){p})")
            lines.append(f"if ({inside}) {{ const {T} __v = __xp[{pos}]; __acc += {step}; }}")
        lines += ["}"] * k
        if cls.kind == "max":
            lines.append("__Y[__t] = __acc;")
            if indices:
                lines.append(f"__I[__t] = __arg < 0 ? -1 : (__n * {cpp(x.shape[1])} + __m) * {plane} + __arg;")
        elif cls.kind == "avg":
            # the divisor: taps inside the image (or the padded image), a product over the dims
            include_pad = bool(node.count_include_pad or 0)
            lines.append("int64_t __cnt = 1;")
            for j in range(k):
                lo = -win.pads_begin[j] if include_pad else 0
                hi = win.ins[j] + win.pads_end[j] if include_pad else win.ins[j]
                lines += [f"{{ int64_t __c = 0; for (int64_t __q = 0; __q < {win.kernel[j]}; ++__q) {{",
                          f"const int64_t __i = __o{j} * {win.strides[j]} - {win.pads_begin[j]} "
                          f"+ __q * {win.dilations[j]}; if (__i >= {lo} && __i < {hi}) ++__c; }}",
                          "__cnt *= __c; }"]
            lines.append(f"__Y[__t] = __acc / ({T})__cnt;")
        else:
            p = 2 if node.p is None else int(node.p)
            lines.append("__Y[__t] = " + {1: "__acc;", 2: "std::sqrt(__acc);"}.get(
                p, f"std::pow(__acc, ({T})1 / {p});"))
        _flat_kernel(nstate, f"{node.label}_{cls.kind}pool", y.total_size, descs, {"__X": "X"}, outputs,
                     "\n".join(lines))
        return nsdfg


@op_implementation("MaxPool", name="cuda")
class CudaMaxPool(_WindowPool):
    """MaxPool (ceil_mode, dilations, pads, auto_pad, Indices): one thread per output element."""
    kind = "max"


@op_implementation("AveragePool", name="cuda")
class CudaAveragePool(_WindowPool):
    """AveragePool (count_include_pad, ceil_mode, dilations, pads): one thread per output element."""
    kind = "avg"


@op_implementation("LpPool", name="cuda")
class CudaLpPool(_WindowPool):
    """LpPool: one thread per output element."""
    kind = "lp"


class _GlobalPool(_CudaBase):
    kind = "avg"

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype_check(node, state, sdfg, ["X"])
        if len(node.in_desc(state, sdfg, "X").shape) < 2:
            raise _Reject("input has rank < 2; expected (N, C, D1, ..., Dk)")

    @classmethod
    def expansion(cls, node, state, sdfg):
        cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x = descs["X"]
        T = x.dtype.ctype
        n = cpp(_prod(x.shape[2:]))
        if cls.kind == "avg":
            code = [f"{T} __acc = 0;", f"{_lane_loop(n)} __acc += __x[__j];", "__acc = daceml_warp_sum(__acc);",
                    f"if (__lane == 0) __Y[__row] = __acc / ({T})({n});"]
        else:
            code = [f"{T} __acc = -INFINITY;", f"{_lane_loop(n)} __acc = daceml_nanmax(__acc, __x[__j]);",
                    "__acc = daceml_warp_max(__acc);", "if (__lane == 0) __Y[__row] = __acc;"]
        code.insert(0, f"const {T}* __x = __X + __row * {n};")
        _row_kernel(nsdfg, nstate, f"{node.label}_global{cls.kind}pool", _prod(x.shape[:2]), descs, {"__X": "X"},
                    {"__Y": "Y"}, "\n".join(code))
        return nsdfg


@op_implementation("GlobalAveragePool", name="cuda")
class CudaGlobalAveragePool(_GlobalPool):
    """GlobalAveragePool: one warp per (batch, channel) image."""
    kind = "avg"


@op_implementation("GlobalMaxPool", name="cuda")
class CudaGlobalMaxPool(_GlobalPool):
    """GlobalMaxPool: one warp per (batch, channel) image (NaN propagates)."""
    kind = "max"


# --- normalization ---------------------------------------------------------------------------------

@op_implementation("BatchNormalization", name="cuda")
class CudaBatchNormalization(_CudaBase):
    """BatchNormalization in inference mode: one thread per element."""

    @classmethod
    def check(cls, node, state, sdfg):
        from daceml.onnx.ops.normalization import PureBatchNormalization
        _dtype_check(node, state, sdfg, node.input_connectors())
        reason = PureBatchNormalization.why_not(node, state, sdfg)
        if reason:
            raise _Reject(reason)
        return node.input_connectors()

    @classmethod
    def expansion(cls, node, state, sdfg):
        conns = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x = descs[conns[0]]
        T = x.dtype.ctype
        plane = cpp(_prod(x.shape[2:]))
        eps = _lit(node.epsilon if node.epsilon is not None else 1e-5, T)
        code = (f"const int64_t __c = (__t / {plane}) % {cpp(x.shape[1])};\n"
                f"const {T} __a = __s[__c] / std::sqrt(__v[__c] + {eps});\n"
                f"__y[__t] = (__x[__t] - __mu[__c]) * __a + __b[__c];")
        inputs = dict(zip(("__x", "__s", "__b", "__mu", "__v"), conns))
        _flat_kernel(nstate, f"{node.label}_batchnorm", x.total_size, descs, inputs,
                     {"__y": node.output_connectors()[0]}, code)
        return nsdfg


def _param_index(shape: Sequence, row: Sequence, what: str) -> str:
    """Index of a LayerNormalization Scale/B of ``shape`` (broadcast to ``row``) at flat ``__j``."""
    dims = list(shape)
    while dims and is_one(dims[0]):
        dims.pop(0)
    if not dims:
        return "0"
    tail = list(row)[len(row) - len(dims):] if len(dims) <= len(row) else None
    if tail is None or any(not (is_one(a - b) or a == b) and str(a) != str(b) for a, b in zip(dims, tail)):
        raise _Reject(f"{what} has shape {tuple(shape)}, which is not the trailing shape of the normalized "
                      f"dims {tuple(row)}")
    size = _prod(dims)
    return "__j" if len(dims) == len(row) else f"__j % {cpp(size)}"


@op_implementation("LayerNormalization", name="cuda")
class CudaLayerNormalization(_CudaBase):
    """LayerNormalization: one warp per row; mean, variance of the deviations, normalize
    (optional Mean and InvStdDev outputs)."""

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype_check(node, state, sdfg, node.input_connectors())
        shape = list(node.in_desc(state, sdfg, "X").shape)
        axis = normalize_axis(node, int(node.axis if node.axis is not None else -1), len(shape))
        row = shape[axis:]
        for c in ("Scale", "B"):
            if c in node.in_connectors:
                _param_index(node.in_desc(state, sdfg, c).shape, row, c)
        return axis

    @classmethod
    def expansion(cls, node, state, sdfg):
        axis = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        x = descs["X"]
        T = x.dtype.ctype
        shape = list(x.shape)
        row = shape[axis:]
        n = cpp(_prod(row))
        eps = _lit(node.epsilon if node.epsilon is not None else 1e-5, T)
        inputs = {"__X": "X", "__S": "Scale"}
        value = f"(__x[__j] - __mean) * __inv * __S[{_param_index(descs['Scale'].shape, row, 'Scale')}]"
        if "B" in node.in_connectors:
            inputs["__B"] = "B"
            value += f" + __B[{_param_index(descs['B'].shape, row, 'B')}]"
        code = [f"const {T}* __x = __X + __row * {n};",
                f"{T}* __y = __Y + __row * {n};",
                f"{T} __mean = 0;", f"{_lane_loop(n)} __mean += __x[__j];",
                f"__mean = daceml_warp_sum(__mean) / ({T})({n});",
                f"{T} __var = 0;", f"{_lane_loop(n)} {{ const {T} __d = __x[__j] - __mean; __var += __d * __d; }}",
                f"__var = daceml_warp_sum(__var) / ({T})({n});",
                f"const {T} __inv = ({T})1 / std::sqrt(__var + {eps});",
                f"{_lane_loop(n)} __y[__j] = {value};"]
        outputs = {"__Y": "Y"}
        for conn, var in (("Mean", "__mean"), ("InvStdDev", "__inv")):
            if conn in node.out_connectors:
                outputs[f"__{conn}"] = conn
                code.append(f"if (__lane == 0) __{conn}[__row] = {var};")
        _row_kernel(nsdfg, nstate, f"{node.label}_layernorm", _prod(shape[:axis]), descs, inputs, outputs,
                    "\n".join(code))
        return nsdfg


class _SoftmaxBase(_CudaBase):
    kind = "softmax"

    @classmethod
    def check(cls, node, state, sdfg):
        _dtype_check(node, state, sdfg, ["input"])
        shape = list(node.in_desc(state, sdfg, "input").shape)
        rank = len(shape)
        axis = node.axis if node.axis is not None else (1 if node.schema.since_version < 13 else -1)
        axis = normalize_axis(node, int(axis), rank)
        if node.schema.since_version < 13:  # coerced to 2-D at axis
            return _prod(shape[:axis]), _prod(shape[axis:]), 1
        return _prod(shape[:axis]) * _prod(shape[axis + 1:]), shape[axis], _prod(shape[axis + 1:])

    @classmethod
    def expansion(cls, node, state, sdfg):
        rows, n, inner = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        T = descs["input"].dtype.ctype
        n = cpp(n)
        if is_one(inner):
            code = [f"const int64_t __base = __row * {n};"]
            at = "[__base + __j]"
        else:
            inner = cpp(inner)
            code = [f"const int64_t __base = (__row / {inner}) * {n} * {inner} + __row % {inner};"]
            at = f"[__base + __j * {inner}]"
        code += [f"{T} __m = -INFINITY;", f"{_lane_loop(n)} __m = daceml_nanmax(__m, __x{at});",
                 "__m = daceml_warp_max(__m);",
                 f"{T} __s = 0;", f"{_lane_loop(n)} __s += std::exp(__x{at} - __m);",
                 "__s = daceml_warp_sum(__s);"]
        if cls.kind == "softmax":
            code += [f"const {T} __q = ({T})1 / __s;", f"{_lane_loop(n)} __y{at} = std::exp(__x{at} - __m) * __q;"]
        else:
            code += [f"const {T} __l = __m + std::log(__s);", f"{_lane_loop(n)} __y{at} = __x{at} - __l;"]
        _row_kernel(nsdfg, nstate, f"{node.label}_{cls.kind}", rows, descs, {"__x": "input"}, {"__y": "output"},
                    "\n".join(code))
        return nsdfg


@op_implementation("Softmax", name="cuda")
class CudaSoftmax(_SoftmaxBase):
    """Softmax: one warp per row (max, exp-sum, scale); any axis (strided rows)."""
    kind = "softmax"


@op_implementation("LogSoftmax", name="cuda")
class CudaLogSoftmax(_SoftmaxBase):
    """LogSoftmax: one warp per row; ``x - max - log(sum(exp(x - max)))``."""
    kind = "logsoftmax"


# --- reductions ------------------------------------------------------------------------------------

#: op -> (init, per-element step of ``acc`` with ``v``, warp combine, result of ``acc`` and ``n``,
#:        needs a floating-point result)
_REDUCE = {
    "ReduceSum": ("0", "acc += v;", "sum", "acc", False),
    "ReduceMean": ("0", "acc += v;", "sum", "acc / (ACC)n", True),
    "ReduceProd": ("1", "acc *= v;", "prod", "acc", False),
    "ReduceMax": ("LOWEST", "acc = daceml_nanmax(acc, v);", "max", "acc", False),
    "ReduceMin": ("HIGHEST", "acc = daceml_nanmin(acc, v);", "min", "acc", False),
    "ReduceL1": ("0", "acc += v < 0 ? -v : v;", "sum", "acc", False),
    "ReduceL2": ("0", "acc += v * v;", "sum", "std::sqrt(acc)", True),
    "ReduceSumSquare": ("0", "acc += v * v;", "sum", "acc", False),
    "ReduceLogSum": ("0", "acc += v;", "sum", "std::log(acc)", True),
    "ReduceLogSumExp": ("0", "acc += std::exp(v - m);", "sum", "std::isinf(m) ? m : m + std::log(acc)", True),
}

_LIMITS = {
    "float": ("-INFINITY", "INFINITY"), "double": ("-INFINITY", "INFINITY"),
    "int": ("INT32_MIN", "INT32_MAX"), "long long": ("INT64_MIN", "INT64_MAX"),
    "int64_t": ("INT64_MIN", "INT64_MAX"), "int32_t": ("INT32_MIN", "INT32_MAX"),
}


def _reduce_axes(node, state, sdfg) -> List[int]:
    from daceml.onnx.ops import reduction
    rank = len(node.in_desc(state, sdfg, "data").shape)
    try:
        axes = reduction._reduced_axes(node, state, sdfg, rank, node.out_desc(state, sdfg, "reduced").shape)
    except ValueError as ex:
        raise _Reject(str(ex)) from None
    if axes is None:
        raise _Reject("the axes are known only at run time (an axes input that is not a constant)")
    return axes


class _CudaReduce(_CudaBase):
    """ReduceX over constant axes: one warp per output element."""

    @classmethod
    def check(cls, node, state, sdfg):
        floats_only = _REDUCE[node.schema.name][4]
        _dtype_check(node, state, sdfg, ["data"], _FLOATS if floats_only else _FLOATS + _INTS)
        if node.in_desc(state, sdfg, "data").dtype != node.out_desc(state, sdfg, "reduced").dtype:
            raise _Reject("the output type differs from the input type")
        return _reduce_axes(node, state, sdfg)

    @classmethod
    def expansion(cls, node, state, sdfg):
        axes = cls.checked(node, state, sdfg)
        init, step, combine, result, _ = _REDUCE[node.schema.name]
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        din, dout = descs["data"], descs["reduced"]
        T = din.dtype.ctype
        shape = list(din.shape)
        rank = len(shape)
        kept = [a for a in range(rank) if a not in axes]
        red = list(axes)
        acc_t = T if din.dtype in _FLOATS or combine in ("max", "min") else "int64_t"
        n = cpp(_prod([shape[a] for a in red]))
        contiguous = red == list(range(rank - len(red), rank)) and \
            all(_same(din.strides[d], _prod(shape[d + 1:])) for d in range(rank))
        if contiguous:
            code = [f"const int64_t __base = __row * {n};"]
            decode = "const int64_t __off = __base + __j;"
        else:
            code = _unravel("__row", [shape[a] for a in kept], [f"__k{a}" for a in kept]) if kept else []
            base = " + ".join(f"__k{a} * {cpp(din.strides[a])}" for a in kept) or "0"
            code.append(f"const int64_t __base = {base};")
            names = [f"__r{a}" for a in red]
            offset = " + ".join(f"{nm} * {cpp(din.strides[a])}" for nm, a in zip(names, red)) or "0"
            decode = " ".join(_unravel("__j", [shape[a] for a in red], names, tmp="__jr")) + \
                f" const int64_t __off = __base + {offset};"
        lo, hi = _LIMITS.get(acc_t, ("-INFINITY", "INFINITY"))

        def fill(text: str) -> str:
            return text.replace("ACC", acc_t).replace("LOWEST", lo).replace("HIGHEST", hi)

        def loop(body: str) -> str:
            return f"{_lane_loop('n')} {{ {decode} const {T} v = __x[__off]; {body} }}"

        code.append(f"const int64_t n = {n};")
        if node.schema.name == "ReduceLogSumExp":
            code += [f"{T} m = -INFINITY;", loop("m = daceml_nanmax(m, v);"), "m = daceml_warp_max(m);"]
        code += [f"{acc_t} acc = {fill(init)};", loop(fill(step)), f"acc = daceml_warp_{combine}(acc);"]
        if node.schema.name == "ReduceMean":
            code.append(f"if (__lane == 0) __y[__row] = n > 0 ? ({T})(acc / ({acc_t})n) : ({T})NAN;")
        else:
            code.append(f"if (__lane == 0) __y[__row] = ({T})({fill(result)});")
        _row_kernel(nsdfg, nstate, f"{node.label}_{node.schema.name}", dout.total_size, descs, {"__x": "data"},
                    {"__y": "reduced"}, "\n".join(code))
        return nsdfg


for _op in _REDUCE:
    op_implementation(_op, "cuda")(type(f"Cuda{_op}", (_CudaReduce, ), {
        "__doc__": f"{_op} over constant axes: one warp per output element, lanes striding over the reduced "
                   "elements, combined with warp shuffles.",
        "__module__": __name__,
    }))


# --- LSTM ------------------------------------------------------------------------------------------

#: hidden-state elements (directions x batch x hidden) the one-block LSTM kernel keeps in shared memory
LSTM_MAX_STATE = 4096
_LSTM_ACTIVATIONS = {
    "sigmoid": "(({T})1 / (({T})1 + std::exp(-({x}))))",
    "tanh": "std::tanh({x})",
    "relu": "(({x}) > 0 ? ({x}) : ({T})0)",
}


def _at(desc, index: Sequence[str]) -> str:
    parts = [f"({i}) * {cpp(s)}" for i, s in zip(index, desc.strides) if str(i) != "0"]
    return " + ".join(parts) or "0"


@op_implementation("LSTM", name="cuda")
class CudaLSTM(_CudaBase):
    """LSTM (directions, layout, B, sequence_lens, initial_h/c, P, clip, input_forget; activations
    Sigmoid, Tanh, Relu) as one thread block: each thread owns hidden units (direction, batch,
    unit), the hidden and cell states live in shared memory, one barrier per time step."""

    @classmethod
    def check(cls, node, state, sdfg):
        from daceml.onnx.ops import recurrent
        try:
            layer = recurrent._check(node, state, sdfg)
        except recurrent._Reject as ex:
            raise _Reject(str(ex)) from None
        acts = layer.activations
        for per_dir in acts:
            for func, _, _ in per_dir:
                if func not in _LSTM_ACTIVATIONS:
                    raise _Reject(f"activation {func!r} is not supported (Sigmoid, Tanh, Relu are)")
        if any([f for f, _, _ in a] != [f for f, _, _ in acts[0]] for a in acts):
            raise _Reject("the directions use different activations")
        x = node.in_desc(state, sdfg, "X").shape
        r = node.in_desc(state, sdfg, "R").shape
        try:
            items = len(layer.directions) * int(x[1 - layer.layout]) * int(r[2])
        except TypeError:
            raise _Reject("the batch size and hidden size must be static") from None
        if items > LSTM_MAX_STATE:
            raise _Reject(f"the state has {items} elements (directions x batch x hidden); the one-block kernel "
                          f"keeps at most {LSTM_MAX_STATE}")
        return layer, items

    @classmethod
    def expansion(cls, node, state, sdfg):
        layer, items = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = _expansion_sdfg(node, state, sdfg)
        ins, outs = layer.inputs, layer.outputs
        dx = descs[ins["X"]]
        T = dx.dtype.ctype
        lay = layer.layout
        S, NB, I = (dx.shape[0], dx.shape[1], dx.shape[2]) if lay == 0 else (dx.shape[1], dx.shape[0], dx.shape[2])
        H = descs[ins["R"]].shape[2]
        nt = min(1024, -(-items // 32) * 32)
        f, g, h = (_LSTM_ACTIVATIONS[a] for a, _, _ in layer.activations[0])

        def act(template: str, x: str) -> str:
            return template.format(T=T, x=x)

        def clip(x: str) -> str:
            if layer.clip is None:
                return x
            c = _lit(layer.clip, T)
            return f"(({x}) < -{c} ? -{c} : (({x}) > {c} ? {c} : ({x})))"

        def state_at(role: str, d: str, b: str, j: str) -> str:
            desc = descs[ins[role]] if role in ins else descs[outs[role]]
            idx = [d, b, j] if lay == 0 else [b, d, j]
            return _at(desc, idx)

        if layer.directions == ["reverse"]:
            rev = "true"
        elif len(layer.directions) == 2:
            rev = "__d == 1"
        else:
            rev = "false"
        dw, dr = descs[ins["W"]], descs[ins["R"]]
        xi = (lambda tt: _at(dx, [tt, "__b", "__i"])) if lay == 0 else (lambda tt: _at(dx, ["__b", tt, "__i"]))
        lines = ["#if defined(__CUDA_ARCH__)",
                 f"const int64_t __nt = {nt};",
                 f"__shared__ {T} __hs[{2 * items}];",
                 f"__shared__ {T} __cs[{items}];",
                 "#else",
                 "const int64_t __nt = 1;",
                 f"{T} __hs[{2 * items}];",
                 f"{T} __cs[{items}];",
                 "if (__tid == 0)",
                 "#endif",
                 "{",
                 f"for (int64_t __it = __tid; __it < {items}; __it += __nt) {{",
                 f"const int64_t __d = __it / ({cpp(NB)} * {cpp(H)}), __b = (__it / {cpp(H)}) % {cpp(NB)}, "
                 f"__j = __it % {cpp(H)};",
                 "__hs[__it] = " + (f"__initial_h[{state_at('initial_h', '__d', '__b', '__j')}];"
                                    if "initial_h" in ins else "0;"),
                 "__cs[__it] = " + (f"__initial_c[{state_at('initial_c', '__d', '__b', '__j')}];"
                                    if "initial_c" in ins else "0;"),
                 "(void)__d; (void)__b; (void)__j;",
                 "}",
                 "#if defined(__CUDA_ARCH__)", "__syncthreads();", "#endif",
                 f"for (int64_t __t = 0; __t < {cpp(S)}; ++__t) {{",
                 f"const {T}* __hp = __hs + (__t & 1) * {items};",
                 f"{T}* __hn = __hs + (1 - (__t & 1)) * {items};",
                 f"for (int64_t __it = __tid; __it < {items}; __it += __nt) {{",
                 f"const int64_t __d = __it / ({cpp(NB)} * {cpp(H)}), __b = (__it / {cpp(H)}) % {cpp(NB)}, "
                 f"__j = __it % {cpp(H)};",
                 "const int64_t __len = " + ("(int64_t)__sequence_lens[__b];" if "sequence_lens" in ins
                                             else f"{cpp(S)};")]
        y_at = None
        if "Y" in outs:
            dy = descs[outs["Y"]]
            y_at = (lambda tt: _at(dy, [tt, "__d", "__b", "__j"])) if lay == 0 else \
                (lambda tt: _at(dy, ["__b", tt, "__d", "__j"]))
        lines.append("if (__t >= __len) {")
        lines.append("__hn[__it] = __hp[__it];")
        if y_at:
            lines.append(f"__Y[{y_at('__t')}] = 0;")
        lines += ["continue;", "}",
                  f"const bool __rev = {rev};",
                  "const int64_t __tt = __rev ? __len - 1 - __t : __t;",
                  f"{T} __a[4];",
                  "for (int __q = 0; __q < 4; ++__q) {",
                  f"const int64_t __row = __q * {cpp(H)} + __j;",
                  f"{T} __s = 0;"]
        if "B" in ins:
            db = descs[ins["B"]]
            lines.append(f"__s = __B[{_at(db, ['__d', '__row'])}] + __B[{_at(db, ['__d', f'4 * {cpp(H)} + __row'])}];")
        lines += [f"for (int64_t __i = 0; __i < {cpp(I)}; ++__i) "
                  f"__s += __X[{xi('__tt')}] * __W[{_at(dw, ['__d', '__row', '__i'])}];",
                  f"const {T}* __hrow = __hp + (__d * {cpp(NB)} + __b) * {cpp(H)};",
                  f"for (int64_t __k = 0; __k < {cpp(H)}; ++__k) "
                  f"__s += __hrow[__k] * __R[{_at(dr, ['__d', '__row', '__k'])}];",
                  "__a[__q] = __s;",
                  "}",
                  f"const {T} __cp = __cs[__it];"]
        peep = {k: "" for k in ("i", "o", "f")}
        if "P" in ins:
            dp = descs[ins["P"]]
            for n, k in enumerate(("i", "o", "f")):
                peep[k] = f" + __P[{_at(dp, ['__d', f'{n} * {cpp(H)} + __j'])}] * "
        ig = act(f, clip("__a[0]" + (peep["i"] + "__cp" if peep["i"] else "")))
        lines.append(f"const {T} __ig = {ig};")
        if layer.input_forget:
            lines.append(f"const {T} __fg = ({T})1 - __ig;")
        else:
            lines.append(f"const {T} __fg = {act(f, clip('__a[2]' + (peep['f'] + '__cp' if peep['f'] else '')))};")
        lines += [f"const {T} __cg = {act(g, clip('__a[3]'))};",
                  f"const {T} __c = __fg * __cp + __ig * __cg;",
                  f"const {T} __og = {act(f, clip('__a[1]' + (peep['o'] + '__c' if peep['o'] else '')))};",
                  f"const {T} __h = __og * {act(h, '__c')};",
                  "__cs[__it] = __c;",
                  "__hn[__it] = __h;"]
        if y_at:
            lines.append(f"__Y[{y_at('__tt')}] = __h;")
        lines += ["}", "#if defined(__CUDA_ARCH__)", "__syncthreads();", "#endif", "}"]
        final = []
        if "Y_h" in outs:
            final.append(f"__Y_h[{state_at('Y_h', '__d', '__b', '__j')}] = __hs[({cpp(S)} & 1) * {items} + __it];")
        if "Y_c" in outs:
            final.append(f"__Y_c[{state_at('Y_c', '__d', '__b', '__j')}] = __cs[__it];")
        if final:
            lines += [f"for (int64_t __it = __tid; __it < {items}; __it += __nt) {{",
                      f"const int64_t __d = __it / ({cpp(NB)} * {cpp(H)}), __b = (__it / {cpp(H)}) % {cpp(NB)}, "
                      f"__j = __it % {cpp(H)};"] + final + ["}"]
        lines.append("}")
        _kernel(nstate, f"{node.label}_lstm", {"__tid": f"0:{nt}"}, descs,
                {f"__{role}": conn for role, conn in ins.items()},
                {f"__{role}": conn for role, conn in outs.items()}, "\n".join(lines), block=[nt, 1, 1])
        return nsdfg
