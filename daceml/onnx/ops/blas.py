"""Implementations that call BLAS on the CPU (OpenBLAS or oneMKL), selected like cuBLAS on the GPU.

Ops: MatMul (every batch/broadcast/1-D case; an N-D x 2-D product is one GEMM
over all rows), Gemm (transA/transB/alpha/beta, C broadcast), Conv (2-D, not depthwise:
im2col + GEMM, a 1x1 conv straight as a GEMM).

Each expands into one C++ tasklet over whole arrays. Two libraries, two names: ``blas``
(OpenBLAS from the scipy-openblas32 wheel, the level-2 default on the CPU: each product split
between the program's OpenMP threads by daceml::openblas::gemm, batched products one
single-threaded call per batch index in parallel) and ``mkl`` (oneMKL: cblas_?gemm, batched
products one cblas_?gemm_batch_strided call). They are chosen by level 2 of the pipeline
(ChooseImplementations) or per node (``node.implementation = "mkl"``); the pure
implementations stay the default of an unoptimized import.
"""
import math
from typing import List, Sequence

import dace

from daceml.onnx.ops import epilogue
from daceml.onnx.ops.common import is_one, nested_sdfg, row_major
from daceml.onnx.ops.epilogue import INPUT_SCALE, RESIDUAL
from daceml.onnx.ops.registry import CheckedImplementation, Implementation, Rejected, op_implementation
from daceml.targets.cpu import MKL, OpenBLAS

_GEMM = {dace.float32: ("cblas_sgemm", "float"), dace.float64: ("cblas_dgemm", "double")}
_MISSING = {OpenBLAS: "OpenBLAS is not installed (pip wheel scipy-openblas32)",
            MKL: "oneMKL is not installed (pip wheels mkl and mkl-include)"}


def _why_not_dtype(node, state, sdfg, conns: Sequence[str], library=OpenBLAS):
    if not library.is_installed():
        return _MISSING[library]
    for c in conns:
        dtype = node.in_desc(state, sdfg, c).dtype
        if dtype not in _GEMM:
            return f"input {c!r} is {dtype}; BLAS GEMM takes float32 or float64"
    return None


def gemm_call(library, ctype: str, ta: bool, tb: bool, m, n, k, alpha, a: str, lda, b: str, ldb, beta, c: str,
              ldc) -> str:
    """One row-major C++ GEMM call through ``library``: C = alpha op(A) op(B) + beta C, op(X) = X^T
    where ``ta`` / ``tb``; sizes, scalars and pointers are C++ expressions. oneMKL: cblas_?gemm
    (threaded by its GNU OpenMP layer); OpenBLAS: daceml::openblas::gemm, which splits the product
    between the program's OpenMP threads (one single-threaded call inside a parallel loop)."""
    if library is OpenBLAS:
        return (f"daceml::openblas::gemm<{ctype}>({str(ta).lower()}, {str(tb).lower()}, {m}, {n}, {k}, "
                f"({ctype})({alpha}), {a}, {lda}, {b}, {ldb}, ({ctype})({beta}), {c}, {ldc});")
    name = "cblas_sgemm" if ctype == "float" else "cblas_dgemm"
    op = {False: "CblasNoTrans", True: "CblasTrans"}
    return (f"{name}(CblasRowMajor, {op[ta]}, {op[tb]}, {m}, {n}, {k}, ({ctype})({alpha}), {a}, {lda}, {b}, {ldb}, "
            f"({ctype})({beta}), {c}, {ldc});")


def _c(expr) -> str:
    """A C++ expression for a (possibly symbolic) size."""
    return f"(long long)({dace.symbolic.symstr(expr)})" if dace.symbolic.issymbolic(expr) else str(int(expr))


def _prod(sizes: Sequence) -> str:
    return " * ".join(_c(s) for s in sizes) if sizes else "1"


def _tasklet(node, state, sdfg, inputs: List[str], code: str) -> dace.SDFG:
    """A nested SDFG with one C++ tasklet running ``code``, which reads inputs through
    ``const T* _<name>`` and writes through ``T* _out``."""
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg, suffix="blas")
    out = node.output_connectors()[0]
    # DaCe hands arrays of one element to tasklets by value: take their address then.
    prologue = []
    in_types = {}
    for c in inputs:
        ctype = descs[c].dtype.ctype
        if descs[c].total_size == 1:
            in_types[f"_in_{c}"] = descs[c].dtype
            prologue.append(f"const {ctype}* _{c} = &_in_{c};")
        else:
            in_types[f"_in_{c}"] = dace.pointer(descs[c].dtype)
            prologue.append(f"const {ctype}* _{c} = _in_{c};")
    tasklet = nstate.add_tasklet(f"{node.label}_blas", in_types, {"_out": dace.pointer(descs[out].dtype)},
                                 "\n".join(prologue + [code]), language=dace.Language.CPP)
    for c in inputs:
        nstate.add_edge(nstate.add_read(c), None, tasklet, f"_in_{c}", dace.Memlet.from_array(c, descs[c]))
    nstate.add_edge(tasklet, "_out", nstate.add_write(out), None, dace.Memlet.from_array(out, descs[out]))
    return nsdfg


class _BlasMatMul(Implementation):
    """MatMul through a BLAS GEMM: one call for N-D x 2-D; batched products one strided batch
    call (MKL) or one call per batch index (OpenBLAS, the batch in parallel). Operands read or
    written through fused transposes (``operand_perms``, FoldTransposesIntoMatMul) are passed
    with their strides: leading dimensions, transpose flags and batch strides."""
    environments = [OpenBLAS]
    #: a constant scale of the product (a fused Mul/Div by a scalar) is the BLAS call's alpha
    epilogues = ("operand_perms", "output_scale")

    @classmethod
    def why_not(cls, node, state, sdfg):
        reason = _why_not_dtype(node, state, sdfg, ["A", "B"], cls.environments[0])
        if reason:
            return reason
        a, b = node.in_desc(state, sdfg, "A"), node.in_desc(state, sdfg, "B")
        if a.dtype != b.dtype:
            return f"A is {a.dtype} and B is {b.dtype}"
        if node.operand_perms:
            return cls.operand_strides_reason(_matmul_descs(node, state, sdfg), node.operand_perms)
        return None

    @staticmethod
    def operand_strides_reason(descs, perms):
        """None if operands ``descs`` ({A, B, Y: array}) read/written through ``perms`` can be
        passed to one GEMM call per batch index, else why not."""
        try:
            strided_operands(descs, perms)
        except Rejected as ex:
            return str(ex)
        return None

    @classmethod
    def expansion(cls, node, state, sdfg):
        if node.operand_perms:
            return _strided_matmul(node, state, sdfg, cls.environments[0])
        a = list(node.in_desc(state, sdfg, "A").shape)
        b = list(node.in_desc(state, sdfg, "B").shape)
        dtype = node.in_desc(state, sdfg, "A").dtype
        gemm, ctype = _GEMM[dtype]
        library = cls.environments[0]
        a2 = a if len(a) >= 2 else [1] + a
        b2 = b if len(b) >= 2 else b + [1]
        m, k, n = a2[-2], a2[-1], b2[-1]
        ba, bb = a2[:-2], b2[:-2]
        alpha = epilogue.alpha(node, ctype)

        def call(m, n, k, oa, ob, oy):
            return gemm_call(library, ctype, False, False, m, n, k, alpha, f"_A + {oa}", k, f"_B + {ob}", n, 0,
                             f"_out + {oy}", n)

        if not bb:
            rows = _prod(ba + [m])
            code = call(rows, _c(n), _c(k), "0", "0", "0")
            return _tasklet(node, state, sdfg, ["A", "B"], code)
        rank = max(len(ba), len(bb))
        ba = [1] * (rank - len(ba)) + ba
        bb = [1] * (rank - len(bb)) + bb
        out_batch = [x if not is_one(x) else y for x, y in zip(ba, bb)]
        if library is MKL and (ba == bb or all(is_one(x) for x in ba) or all(is_one(x) for x in bb)):
            # one strided batch call: A or B shared by every batch index has stride 0
            sa = "0" if all(is_one(x) for x in ba) else f"{_c(m)} * {_c(k)}"
            sb = "0" if all(is_one(x) for x in bb) else f"{_c(k)} * {_c(n)}"
            code = (f"{gemm}_batch_strided(CblasRowMajor, CblasNoTrans, CblasNoTrans, {_c(m)}, {_c(n)}, {_c(k)}, "
                    f"{alpha}, _A, {_c(k)}, {sa}, _B, {_c(n)}, {sb}, ({ctype})0, _out, {_c(n)}, "
                    f"{_c(m)} * {_c(n)}, {_prod(out_batch)});")
            return _tasklet(node, state, sdfg, ["A", "B"], code)
        # one call per batch index: with OpenBLAS the batch in parallel where it has enough
        # products for the threads (each call then single-threaded), else each call split
        lines = [f"const long long __nb = {_prod(out_batch)};",
                 "#pragma omp parallel for if(__nb >= omp_get_max_threads())" if library is OpenBLAS else "",
                 "for (long long __b = 0; __b < __nb; ++__b) {",
                 "  long long __r = __b, __oa = 0, __ob = 0, __sa = 1, __sb = 1;"]
        for d in reversed(range(rank)):
            lines.append(f"  {{ const long long __i = __r % {_c(out_batch[d])}; __r /= {_c(out_batch[d])};")
            if not is_one(ba[d]):
                lines.append("    __oa += __i * __sa;")
            if not is_one(bb[d]):
                lines.append("    __ob += __i * __sb;")
            lines.append(f"    __sa *= {_c(ba[d])}; __sb *= {_c(bb[d])}; }}")
        lines.append("  " + call(_c(m), _c(n), _c(k), f"__oa * {_c(m)} * {_c(k)}", f"__ob * {_c(k)} * {_c(n)}",
                                 f"__b * {_c(m)} * {_c(n)}"))
        lines.append("}")
        return _tasklet(node, state, sdfg, ["A", "B"], "\n".join(lines))


class _BlasGemm(Implementation):
    """Gemm through one cblas_?gemm call; C (broadcast) is copied into Y first and scaled by beta.
    A fused residual (of Y's size) is added in that copy, a fused activation applied in one pass
    after the call."""
    environments = [OpenBLAS]
    epilogues = tuple(epilogue.ACTIVATIONS) + ("residual", )

    @classmethod
    def why_not(cls, node, state, sdfg):
        conns = node.input_connectors()
        reason = _why_not_dtype(node, state, sdfg, conns, cls.environments[0])
        if reason:
            return reason
        dtypes = {node.in_desc(state, sdfg, c).dtype for c in conns}
        if len(dtypes) != 1:
            return f"inputs have different dtypes {sorted(map(str, dtypes))}"
        if RESIDUAL in node.in_connectors:  # read flat: any contiguous array of Y's size
            r, y = node.in_desc(state, sdfg, RESIDUAL), node.out_desc(state, sdfg, "Y")
            if r.total_size != y.total_size or r.dtype != y.dtype or not _contiguous(r):
                return f"the fused residual is {r.dtype}{list(r.shape)}; it must be a contiguous {y.dtype} array " \
                       f"of {y.total_size} elements"
        return None

    @classmethod
    def expansion(cls, node, state, sdfg):
        a = list(node.in_desc(state, sdfg, "A").shape)
        b = list(node.in_desc(state, sdfg, "B").shape)
        dtype = node.in_desc(state, sdfg, "A").dtype
        _, ctype = _GEMM[dtype]
        library = cls.environments[0]
        ta, tb = bool(node.transA or 0), bool(node.transB or 0)
        alpha = 1.0 if node.alpha is None else float(node.alpha)
        beta = 1.0 if node.beta is None else float(node.beta)
        m, k = (a[1], a[0]) if ta else (a[0], a[1])
        n = b[0] if tb else b[1]
        M, N, K = _c(m), _c(n), _c(k)
        lines = []
        has_c = "C" in node.in_connectors
        if epilogue.has_epilogue(node):
            return _BlasGemm._with_epilogue(node, state, sdfg, library, ctype, ta, tb, alpha, beta, M, N, K)
        if has_c:
            ci = _BlasGemm._c_index(node, state, sdfg, N)
            lines += ["#pragma omp parallel for",
                      f"for (long long __i = 0; __i < {M}; ++__i)",
                      f"  for (long long __j = 0; __j < {N}; ++__j) _out[__i * {N} + __j] = _C[{ci}];"]
        lines.append(gemm_call(library, ctype, ta, tb, M, N, K, repr(alpha), "_A", M if ta else K, "_B",
                               K if tb else N, repr(beta if has_c else 0.0), "_out", N))
        return _tasklet(node, state, sdfg, node.input_connectors(), "\n".join(lines))


    @staticmethod
    def _c_index(node, state, sdfg, N: str) -> str:
        """C++ index into C (broadcast to M x N) of element (__i, __j)."""
        c = list(node.in_desc(state, sdfg, "C").shape)
        c = [1] * (2 - len(c)) + c if len(c) < 2 else c
        rows_one, cols_one = is_one(c[0]), is_one(c[1])
        return f"{'0' if rows_one else '__i'} * {'1' if cols_one else N} + {'0' if cols_one else '__j'}"

    @staticmethod
    def _with_epilogue(node, state, sdfg, library, ctype, ta, tb, alpha, beta, M, N, K):
        """Y = beta C + residual first (one pass), the product accumulated onto it (beta = 1),
        then the activation in one pass. (Product first with beta = 0 and one pass for all of
        it measured 2% slower on the MLP and BERT benchmarks: MKL's beta = 1 path over a warm Y.)"""
        bias = None
        if "C" in node.in_connectors:
            bias = f"({ctype}){beta!r} * _C[{_BlasGemm._c_index(node, state, sdfg, N)}]"
        residual = RESIDUAL in node.in_connectors
        lines = []
        if bias or residual:
            terms = [t for t in (bias, f"_{RESIDUAL}[__i * {N} + __j]" if residual else None) if t]
            lines += ["#pragma omp parallel for", f"for (long long __i = 0; __i < {M}; ++__i)",
                      f"  for (long long __j = 0; __j < {N}; ++__j) _out[__i * {N} + __j] = {' + '.join(terms)};"]
        lines.append(gemm_call(library, ctype, ta, tb, M, N, K, repr(alpha), "_A", M if ta else K, "_B",
                               K if tb else N, repr(1.0 if bias or residual else 0.0), "_out", N))
        if node.epilogue:
            lines += ["#pragma omp parallel for", f"for (long long __i = 0; __i < {M}; ++__i) {{",
                      f"  {ctype}* __y = _out + __i * {N};",
                      "  " + epilogue.cpp_apply(node, ctype, "__y", N, index="__j"), "}"]
        inputs = node.input_connectors() + ([RESIDUAL] if residual else [])
        return _tasklet(node, state, sdfg, inputs, "\n".join(lines))


def _contiguous(desc) -> bool:
    """Row-major strides without gaps."""
    return all(dace.symbolic.simplify(a - b) == 0 for a, b in zip(desc.strides, row_major(desc.shape)))


@op_implementation("MatMul", name="blas")
class BlasMatMul(_BlasMatMul):
    """MatMul through OpenBLAS."""
    environments = [OpenBLAS]


@op_implementation("MatMul", name="mkl")
class MklMatMul(_BlasMatMul):
    """MatMul through oneMKL (batched products: one cblas_?gemm_batch_strided call)."""
    environments = [MKL]


def _matmul_descs(node, state, sdfg):
    return {"A": node.in_desc(state, sdfg, "A"), "B": node.in_desc(state, sdfg, "B"), "Y": node.out_desc(state, sdfg, "Y")}


def strided_operands(descs, perms):
    """Shape and element strides of A, B and the product as MKL sees them, for a batched MatMul
    over the arrays ``descs`` ({A, B, Y: data descriptor}) read/written through ``perms``
    ({connector: permutation}); raises Rejected where one call per batch cannot take them."""
    seen = {}
    for conn, desc in descs.items():
        if any(dace.symbolic.issymbolic(d) for d in desc.shape):
            raise Rejected(f"{conn} has a symbolic shape; fused transposes need static shapes")
        shape = [int(d) for d in desc.shape]
        strides = row_major(shape)
        if [int(x) for x in desc.strides] != strides:
            raise Rejected(f"{conn} is not a contiguous row-major array")
        perm = [int(p) for p in perms.get(conn, [])] or list(range(len(shape)))
        if sorted(perm) != list(range(len(shape))):
            raise Rejected(f"the permutation {perm} of {conn} does not match its rank {len(shape)}")
        if conn == "Y":  # the array written is transpose(product, perm): product axis perm[k] is its axis k
            pshape, pstrides = [0] * len(shape), [0] * len(shape)
            for k, j in enumerate(perm):
                pshape[j], pstrides[j] = shape[k], strides[k]
            seen[conn] = (pshape, pstrides)
        else:
            seen[conn] = ([shape[p] for p in perm], [strides[p] for p in perm])
    ranks = {len(v[0]) for v in seen.values()}
    if len(ranks) != 1 or ranks.pop() < 3:
        raise Rejected("fused transposes are supported for batched products of equal ranks (>= 3)")
    (sa, _), (sb, _), (sy, _) = seen["A"], seen["B"], seen["Y"]
    for i, (x, y, z) in enumerate(zip(sa[:-2], sb[:-2], sy[:-2])):
        if z != max(x, y) or x not in (1, z) or y not in (1, z):
            raise Rejected(f"batch dimension {i}: A {x}, B {y}, product {z} do not broadcast")
    if sa[-1] != sb[-2] or sy[-2:] != [sa[-2], sb[-1]]:
        raise Rejected(f"shapes {sa} x {sb} -> {sy} do not multiply")
    if seen["Y"][1][-1] != 1 or (sy[-2] > 1 and seen["Y"][1][-2] < sy[-1]):
        raise Rejected("the product must be written with unit stride along its rows")
    for conn in ("A", "B"):
        (rows, cols), (sr, sc) = seen[conn][0][-2:], seen[conn][1][-2:]
        if not (sc == 1 and (rows == 1 or sr >= cols)) and not (sr == 1 and (cols == 1 or sc >= rows)):
            raise Rejected(f"{conn} has strides {sr}, {sc} on its matrix dims: neither is unit")
    return seen


def _strided_matmul(node, state, sdfg, library):
    seen = strided_operands(_matmul_descs(node, state, sdfg), node.operand_perms)
    gemm, T = _GEMM[node.in_desc(state, sdfg, "A").dtype]
    sa, sb, (sy, ty) = seen["A"][0], seen["B"][0], seen["Y"]
    m, k, n = sa[-2], sa[-1], sb[-1]

    def matrix(conn):  # (transposed, leading dimension)
        (rows, cols), (sr, sc) = seen[conn][0][-2:], seen[conn][1][-2:]
        if sc == 1 and (rows == 1 or sr >= cols):
            return False, max(sr, cols)
        return True, max(sc, rows)

    (ta, lda), (tb, ldb) = matrix("A"), matrix("B")
    opa, opb = ("CblasTrans" if ta else "CblasNoTrans"), ("CblasTrans" if tb else "CblasNoTrans")
    alpha = epilogue.alpha(node, T)
    ldc = max(ty[-2], n)
    batch = sy[:-2]

    def stride(conn, d):
        shape, strides = seen[conn]
        return 0 if shape[d] == 1 else strides[d]

    last = len(batch) - 1
    footprint = {"A": lda * (k if ta else m), "B": ldb * (n if tb else k), "Y": ldc * m}
    if library is MKL and all(stride(c, last) == 0 or stride(c, last) >= footprint[c] for c in footprint):
        # the matrices of the last batch dim do not overlap: one strided batch call per outer index
        lines = [f"for (long long __i{d} = 0; __i{d} < {batch[d]}; ++__i{d})" for d in range(last)]
        off = {c: " + ".join([f"__i{d} * {stride(c, d)}" for d in range(last)] or ["0"]) for c in footprint}
        lines.append(f"  {gemm}_batch_strided(CblasRowMajor, {opa}, {opb}, {m}, {n}, {k}, {alpha}, _A + {off['A']}, "
                     f"{lda}, {stride('A', last)}, _B + {off['B']}, {ldb}, {stride('B', last)}, ({T})0, "
                     f"_out + {off['Y']}, {ldc}, {stride('Y', last)}, {batch[last]});")
    else:
        # OpenBLAS, or interleaved matrices (heads of one row side by side), which MKL's strided
        # batch call refuses for the product: the batch in parallel, one sequential GEMM per index
        # (OpenBLAS: a batch smaller than the thread count in sequence, each product split)
        parallel = "#pragma omp parallel for"
        if library is OpenBLAS:
            parallel += f" if({math.prod(batch)} >= omp_get_max_threads())"
        lines = [parallel, f"for (long long __b = 0; __b < {math.prod(batch)}; ++__b) {{",
                 "  long long __r = __b;"]
        for d in reversed(range(len(batch))):
            lines.append(f"  const long long __i{d} = __r % {batch[d]}; __r /= {batch[d]};")
        off = {c: " + ".join(f"__i{d} * {stride(c, d)}" for d in range(len(batch))) for c in footprint}
        lines += ["  " + gemm_call(library, T, ta, tb, m, n, k, alpha, f"_A + {off['A']}", lda, f"_B + {off['B']}", ldb,
                                   0, f"_out + {off['Y']}", ldc), "}"]
    return _tasklet(node, state, sdfg, ["A", "B"], "\n".join(lines))


@op_implementation("Gemm", name="blas")
class BlasGemm(_BlasGemm):
    """Gemm through OpenBLAS."""
    environments = [OpenBLAS]


@op_implementation("Gemm", name="mkl")
class MklGemm(_BlasGemm):
    """Gemm through oneMKL."""
    environments = [MKL]


# --- Conv as GEMM ----------------------------------------------------------------------------------

def conv_as_gemms(node, state, sdfg, what: str):
    """(X's descriptor, window, C, M, group) of a 2-D Conv whose inputs are all float32 or all
    float64 (what GEMMs take), with static kernel sizes; else raises Rejected naming ``what``."""
    from daceml.onnx.ops.conv_pool import _conv_channels, _static, window
    conns = [c for c in node.input_connectors() if c in node.in_connectors]
    dtypes = {node.in_desc(state, sdfg, c).dtype for c in conns}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _GEMM:
        raise Rejected(f"inputs are {sorted(map(str, dtypes))}; {what} takes float32 or float64 (all alike)")
    x, w, y = node.in_desc(state, sdfg, "X"), node.in_desc(state, sdfg, "W"), node.out_desc(state, sdfg, "Y")
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise Rejected(f"input X has rank {len(x.shape)}; {what} takes 2-D images (N, C, H, W)")
    c, m, group = _conv_channels(node, state, sdfg, x.shape, w.shape, transposed=False)
    win = window(node, x.shape, y.shape, _static(w.shape[2:], "kernel shape"))
    return x, win, c, m, group


class _BlasConv(CheckedImplementation):
    """2-D Conv as BLAS GEMMs, per image and group: Y[M, OH*OW] = W[M, C*KH*KW] @ col,
    where col is the image itself for a 1x1 conv with stride 1 and no padding, else its im2col
    (built in a workspace by a parallel loop).
    Depthwise convs (one input channel per group) are left to the pure direct kernel.
    Epilogues (bias, residual, activation) run in one pass over each image's output; a 1x1
    conv's input scaled per image and channel (squeeze-excitation) scales the weights instead."""
    environments = [OpenBLAS]
    epilogues = tuple(epilogue.ACTIVATIONS) + ("residual", "input_scale")

    @classmethod
    def check(cls, node, state, sdfg):
        library = cls.environments[0]
        if not library.is_installed():
            raise Rejected(_MISSING[library])
        x, win, c, m, group = conv_as_gemms(node, state, sdfg, "the BLAS conv")
        if group > 1 and c // group == 1:
            raise Rejected("depthwise conv (one input channel per group): the pure direct kernel is faster")
        epilogue.check_residual(node, state, sdfg, "Y")
        if INPUT_SCALE in node.in_connectors:
            pointwise = win.kernel == [1, 1] and win.strides == [1, 1] and not any(win.pads_begin + win.pads_end)
            scale = node.in_desc(state, sdfg, INPUT_SCALE)
            if not pointwise or group != 1:
                raise Rejected("an input scale is fused only into 1x1 convs (stride 1, no padding, one group)")
            shape = list(scale.shape)
            if len(shape) < 2 or shape[0] not in (x.shape[0], 1) or shape[1] != c or \
                    any(d != 1 for d in shape[2:]) or scale.dtype != x.dtype:
                raise Rejected(f"the fused input scale is {scale.dtype}{shape}; it must be "
                               f"{x.dtype}[{x.shape[0]} or 1, {c}, 1, ...]")
        return win, c, m, group

    @classmethod
    def profitable(cls, node, state, sdfg) -> bool:
        """Where the GEMM beats the pure direct kernel (`python examples/conv_kernels.py`, 1 thread):
        1x1 convs with at least 64 input channels per group, and other convs with a long reduction
        (>= 256) over a small output plane (<= 1024 positions; im2col of large planes costs more
        than it saves)."""
        win, c, m, group = cls.checked(node, state, sdfg)
        k = (c // group) * math.prod(win.kernel)
        pointwise = win.kernel == [1, 1] and win.strides == [1, 1] and not any(win.pads_begin + win.pads_end)
        if pointwise:
            return c // group >= 64
        return k >= 256 and math.prod(win.outs) <= 1024

    @classmethod
    def expansion(cls, node, state, sdfg):
        from daceml.onnx.ops.common import nested_sdfg
        win, c, m, group = cls.checked(node, state, sdfg)
        nsdfg, nstate, descs = nested_sdfg(node, state, sdfg, suffix="mkl")
        x = descs["X"]
        _, T = _GEMM[x.dtype]
        (h, wd), (oh, ow), (kh, kw) = win.ins, win.outs, win.kernel
        (sh, sw), (dh, dw), (ph, pw) = win.strides, win.dilations, win.pads_begin
        hw, k = oh * ow, (c // group) * kh * kw
        cg, mg = c // group, m // group
        pointwise = (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and not any(win.pads_end)
        has_bias = "B" in node.in_connectors
        batch = _c(x.shape[0])
        code = [f"for (long long __n = 0; __n < {batch}; ++__n) {{",
                f"  const {T}* __xn = _X + __n * {c * h * wd};",
                f"  {T}* __yn = _out + __n * {m * hw};"]
        if pointwise:
            code.append(f"  const {T}* __col = __xn;")
        else:
            code += [
                "  #pragma omp parallel for",
                f"  for (int __r = 0; __r < {c * kh * kw}; ++__r) {{",
                f"    const int __c = __r / {kh * kw}, __kh = (__r / {kw}) % {kh}, __kw = __r % {kw};",
                f"    {T}* __d = _col + (long long)__r * {hw};",
                f"    for (int __oh = 0; __oh < {oh}; ++__oh, __d += {ow}) {{",
                f"      const int __ih = __oh * {sh} - {ph} + __kh * {dh};",
                f"      if (__ih < 0 || __ih >= {h}) {{ for (int __ow = 0; __ow < {ow}; ++__ow) __d[__ow] = 0; continue; }}",
                f"      const {T}* __s = __xn + ((long long)__c * {h} + __ih) * {wd};",
                f"      for (int __ow = 0; __ow < {ow}; ++__ow) {{",
                f"        const int __iw = __ow * {sw} - {pw} + __kw * {dw};",
                f"        __d[__ow] = (__iw >= 0 && __iw < {wd}) ? __s[__iw] : ({T})0;",
                "      }", "    }", "  }",
                f"  const {T}* __col = _col;"]
        # bias, residual and activation in one pass over each image's output, after its GEMMs
        residual = "__r" if RESIDUAL in node.in_connectors else None
        finish = epilogue.cpp_apply(node, T, "__y", hw, bias="_B[__m]" if has_bias else None, residual=residual)
        scaled = INPUT_SCALE in node.in_connectors
        weights = "_W"
        if scaled:  # W'[m, c] = W[m, c] * S[n, c]: the conv of the scaled input (1x1, one group)
            per_image = "__n * " + str(c) if descs[INPUT_SCALE].shape[0] != 1 else "0"
            code += ["  #pragma omp parallel for",
                     f"  for (int __m = 0; __m < {m}; ++__m)",
                     f"    for (int __c = 0; __c < {c}; ++__c) _ws[__m * {c} + __c] = _W[__m * {c} + __c] * "
                     f"_{INPUT_SCALE}[{per_image} + __c];"]
            weights = "_ws"
        code += [f"  for (int __g = 0; __g < {group}; ++__g)",
                 "    " + gemm_call(cls.environments[0], T, False, False, mg, hw, k, 1, f"{weights} + (long long)__g * {mg * k}",
                                   k, f"__col + (long long)__g * {cg * hw if pointwise else k * hw}", hw, 0,
                                   f"__yn + (long long)__g * {mg * hw}", hw)]
        if finish:
            code += ["  #pragma omp parallel for",
                     f"  for (int __m = 0; __m < {m}; ++__m) {{",
                     f"    {T}* __y = __yn + (long long)__m * {hw};"]
            if residual:
                code.append(f"    const {T}* __r = _{RESIDUAL} + __n * {m * hw} + (long long)__m * {hw};")
            code += ["    " + finish, "  }"]
        code.append("}")
        ins = node.input_connectors() + ([RESIDUAL] if residual else []) + ([INPUT_SCALE] if scaled else [])
        workspaces = {}
        if not pointwise:
            workspaces["col"] = (c * kh * kw, hw)
        if scaled:
            workspaces["ws"] = (m, c)
        workspace_tasklet(nsdfg, nstate, descs, f"{node.label}_conv_gemm", ins, "\n".join(code), workspaces)
        return nsdfg


def workspace_tasklet(nsdfg: dace.SDFG, nstate: dace.SDFGState, descs, label: str, ins: List[str], code: str,
                      workspaces) -> None:
    """One C++ tasklet in ``nstate`` reading every array of ``ins`` through ``const T* _<name>``,
    writing ``Y`` through ``T* _out`` and a scratch array per ``workspaces`` entry ({name: shape},
    X's element type, heap storage) through ``T* _<name>``."""
    dtype = descs["X"].dtype
    in_types = {f"_{c}": dace.pointer(descs[c].dtype) for c in ins}
    out_types = {"_out": dace.pointer(descs["Y"].dtype)}
    for name, shape in workspaces.items():
        nsdfg.add_transient(name, shape, dtype, storage=dace.StorageType.CPU_Heap)
        out_types[f"_{name}"] = dace.pointer(dtype)
    tasklet = nstate.add_tasklet(label, in_types, out_types, code, language=dace.Language.CPP)
    for c in ins:
        nstate.add_edge(nstate.add_read(c), None, tasklet, f"_{c}", dace.Memlet.from_array(c, descs[c]))
    nstate.add_edge(tasklet, "_out", nstate.add_write("Y"), None, dace.Memlet.from_array("Y", descs["Y"]))
    for name in workspaces:
        nstate.add_edge(tasklet, f"_{name}", nstate.add_write(name), None, dace.Memlet.from_array(name, nsdfg.arrays[name]))


@op_implementation("Conv", name="blas")
class BlasConv(_BlasConv):
    """2-D Conv as GEMMs through OpenBLAS."""
    environments = [OpenBLAS]


@op_implementation("Conv", name="mkl")
class MklConv(_BlasConv):
    """2-D Conv as GEMMs through oneMKL."""
    environments = [MKL]
