"""cuBLAS implementations (name ``"cublas"``) of MatMul and Gemm for GPU programs.

:func:`daceml.targets.cuda.to_gpu` prefers them to the plain ``cuda`` kernels wherever they
apply and cuBLAS is found (:mod:`daceml.targets.cublas`). Each expands into one host tasklet
that queues the product on the node's CUDA stream with device pointers
(``daceml::cublas::gemm`` in cuda_support/daceml_cublas.h, one ``cublas<t>gemm`` or
``cublas<t>gemmStridedBatched`` call). ``to_gpu`` expands these nodes after DaCe's GPU
transformation, which would otherwise wrap a free tasklet into a one-thread kernel.

What applies (else the ``cuda`` kernel computes the node):

- float32 or float64, operands and output contiguous row-major arrays of more than one element;
- MatMul: numpy semantics with 1-D operands; an N-D x 2-D product (B without batch dims, or
  all of them 1) is one GEMM over all rows of A; batched products one strided batched call,
  where A and B have the same batch dims or one of them has none (its stride is then 0);
- Gemm: transA/transB, alpha, beta; C absent, a row ``(N)`` / ``(1, N)``, a column ``(M, 1)``
  or a full ``(M, N)`` matrix: Y is first filled with C (a copy, or a K=1 product of C with
  a vector of ones), then ``Y = alpha op(A) op(B) + beta Y``.

The products are row-major: :func:`matmul_plan` / :func:`gemm_plan` give the sizes, leading
dimensions and batch strides of ``C_b = alpha op(A_b) op(B_b) + beta C_b`` for b < batch,
which the header passes to column-major cuBLAS transposed. The plans are checked against
numpy on machines without a GPU (tests/targets/test_cublas.py).
"""
import dataclasses
from typing import Sequence

import dace

from daceml.onnx.ops.common import cpp, is_one, pointer_connectors, row_major
from daceml.onnx.ops.gpu import _prod, _same
from daceml.onnx.ops.registry import CheckedImplementation, Rejected, op_implementation
from daceml.targets.cublas import CuBLAS
from daceml.targets.cuda import CUBLAS_IMPLEMENTATION

_TYPES = {dace.float32: "float", dace.float64: "double"}


@dataclasses.dataclass
class GemmPlan:
    """Row-major batched product ``C_b (m x n, row stride ldc) = alpha op(A_b) op(B_b) + beta C_b``
    with ``A_b = A + b * stride_a`` (0: the same matrix for every b), likewise B and C; sizes
    are ints or DaCe symbolic expressions."""
    trans_a: bool
    trans_b: bool
    m: object
    n: object
    k: object
    lda: object
    ldb: object
    ldc: object
    stride_a: object = 0
    stride_b: object = 0
    stride_c: object = 0
    batch: object = 1


def _contiguous(name: str, desc) -> None:
    strides = list(desc.strides)
    if not all(_same(s, r) for s, r in zip(strides, row_major(desc.shape))):
        raise Rejected(f"{name} is not a contiguous row-major array (strides {strides})")


def matmul_plan(a_shape: Sequence, b_shape: Sequence) -> GemmPlan:
    """The product of contiguous arrays of shapes ``a_shape`` x ``b_shape`` (numpy matmul) as one
    (batched) row-major GEMM into a contiguous output; raises :class:`Rejected` if it is not one."""
    a2 = list(a_shape) if len(a_shape) >= 2 else [1] + list(a_shape)
    b2 = list(b_shape) if len(b_shape) >= 2 else list(b_shape) + [1]
    m, k, n = a2[-2], a2[-1], b2[-1]
    if not _same(k, b2[-2]):
        raise Rejected(f"the inner dims do not match (A is {tuple(a_shape)}, B is {tuple(b_shape)})")
    ba, bb = a2[:-2], b2[:-2]
    if all(is_one(x) for x in bb):  # every row of A times the one B
        return GemmPlan(False, False, _prod(ba) * m, n, k, k, n, n)
    rank = max(len(ba), len(bb))
    ba = [1] * (rank - len(ba)) + ba
    bb = [1] * (rank - len(bb)) + bb
    if all(is_one(x) for x in ba):
        return GemmPlan(False, False, m, n, k, k, n, n, 0, k * n, m * n, _prod(bb))
    if all(_same(x, y) for x, y in zip(ba, bb)):
        return GemmPlan(False, False, m, n, k, k, n, n, m * k, k * n, m * n, _prod(ba))
    raise Rejected(f"the batch dims broadcast against each other (A is {tuple(a_shape)}, B is {tuple(b_shape)}); "
                   "cuBLAS takes one batch stride per operand")


def gemm_plan(a_shape: Sequence, b_shape: Sequence, trans_a: bool, trans_b: bool) -> GemmPlan:
    """ONNX Gemm's product ``op(A) op(B)`` of contiguous matrices as a row-major GEMM."""
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise Rejected(f"A and B must be matrices, got shapes {tuple(a_shape)}, {tuple(b_shape)}")
    m, k = (a_shape[1], a_shape[0]) if trans_a else (a_shape[0], a_shape[1])
    kb, n = (b_shape[1], b_shape[0]) if trans_b else (b_shape[0], b_shape[1])
    if not _same(k, kb):
        raise Rejected(f"the inner dims do not match (A is {tuple(a_shape)}, B is {tuple(b_shape)})")
    return GemmPlan(trans_a, trans_b, m, n, k, a_shape[1], b_shape[1], n)


def bias_kind(c_shape: Sequence, m, n) -> str:
    """How Gemm's C fills Y (m x n): "full", "row" or "column"; raises :class:`Rejected` otherwise."""
    c = list(c_shape)
    if len(c) == 2 and _same(c[0], m) and _same(c[1], n):
        return "full"
    if (len(c) == 1 and _same(c[0], n)) or (len(c) == 2 and is_one(c[0]) and _same(c[1], n)):
        return "row"
    if len(c) == 2 and _same(c[0], m) and is_one(c[1]):
        return "column"
    raise Rejected(f"C of shape {tuple(c)} is neither (M, N) = ({m}, {n}), a row (N) or (1, N) nor a column (M, 1)")


def _literal(value: float, ctype: str) -> str:
    return f"({ctype})({float(value)!r})"


def gemm_call(plan: GemmPlan, ctype: str, label: str, a: str, b: str, c: str, alpha: float, beta: float) -> str:
    """The C++ call of ``plan`` on the tasklet's stream (``__dace_current_stream``)."""
    p = plan
    return (f'daceml::cublas::gemm<{ctype}>(__dace_current_stream, "{label}", {str(p.trans_a).lower()}, '
            f'{str(p.trans_b).lower()}, {cpp(p.m)}, {cpp(p.n)}, {cpp(p.k)}, {_literal(alpha, ctype)}, {a}, {cpp(p.lda)}, '
            f'{cpp(p.stride_a)}, {b}, {cpp(p.ldb)}, {cpp(p.stride_b)}, {_literal(beta, ctype)}, {c}, {cpp(p.ldc)}, '
            f'{cpp(p.stride_c)}, {cpp(p.batch)});')


class _CublasBase(CheckedImplementation):
    environments = [CuBLAS]

    @classmethod
    def _common_checks(cls, node, state, sdfg, inputs):
        if not CuBLAS.is_installed():
            raise Rejected("cuBLAS was not found (set DACEML_CUBLAS_ROOT, or install the CUDA toolkit's cuBLAS "
                           "or the nvidia-cublas wheel)")
        dtypes = set()
        for conn in inputs + [node.output_connectors()[0]]:
            desc = node.in_desc(state, sdfg, conn) if conn in inputs else node.out_desc(state, sdfg, conn)
            if desc.dtype not in _TYPES:
                raise Rejected(f"{conn!r} has element type {desc.dtype.to_string()}; cuBLAS GEMMs here take float32 "
                               "or float64")
            if not isinstance(desc, dace.data.Array) or (not dace.symbolic.issymbolic(desc.total_size)
                                                         and int(desc.total_size) <= 1):
                raise Rejected(f"{conn!r} has one element (DaCe hands it to a tasklet by value)")
            _contiguous(conn, desc)
            dtypes.add(desc.dtype)
        if len(dtypes) != 1:
            raise Rejected(f"the operands have different element types {sorted(t.to_string() for t in dtypes)}")

    @staticmethod
    def _tasklet(node, state, sdfg, code: str):
        pointer_connectors(node, state, sdfg)
        return dace.sdfg.nodes.Tasklet(f"{node.label}_cublas", dict(node.in_connectors), dict(node.out_connectors),
                                       code, language=dace.Language.CPP)

    @staticmethod
    def _label(node) -> str:
        return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in node.label)


@op_implementation("MatMul", name=CUBLAS_IMPLEMENTATION)
class CublasMatMul(_CublasBase):
    """MatMul through one cuBLAS (strided batched) GEMM: see the module docstring."""

    @classmethod
    def check(cls, node, state, sdfg):
        cls._common_checks(node, state, sdfg, ["A", "B"])
        return matmul_plan(node.in_desc(state, sdfg, "A").shape, node.in_desc(state, sdfg, "B").shape)

    @classmethod
    def expansion(cls, node, state, sdfg):
        plan = cls.checked(node, state, sdfg)
        ctype = _TYPES[node.in_desc(state, sdfg, "A").dtype]
        return cls._tasklet(node, state, sdfg, gemm_call(plan, ctype, cls._label(node), "A", "B", "Y", 1.0, 0.0))


@op_implementation("Gemm", name=CUBLAS_IMPLEMENTATION)
class CublasGemm(_CublasBase):
    """Gemm through cuBLAS: C copied or broadcast into Y, then one GEMM: see the module docstring."""

    @classmethod
    def check(cls, node, state, sdfg):
        has_c = "C" in node.in_connectors
        cls._common_checks(node, state, sdfg, ["A", "B"] + (["C"] if has_c else []))
        plan = gemm_plan(node.in_desc(state, sdfg, "A").shape, node.in_desc(state, sdfg, "B").shape,
                         bool(node.transA), bool(node.transB))
        kind = bias_kind(node.in_desc(state, sdfg, "C").shape, plan.m, plan.n) if has_c else None
        return plan, kind

    @classmethod
    def expansion(cls, node, state, sdfg):
        plan, kind = cls.checked(node, state, sdfg)
        ctype = _TYPES[node.in_desc(state, sdfg, "A").dtype]
        label = cls._label(node)
        alpha = 1.0 if node.alpha is None else float(node.alpha)
        beta = (1.0 if node.beta is None else float(node.beta)) if kind else 0.0
        m, n = cpp(plan.m), cpp(plan.n)
        lines = []
        if kind == "full":
            lines.append(f'daceml::cublas::copy<{ctype}>(__dace_current_stream, "{label}", {m} * {n}, C, Y);')
        elif kind == "row":
            lines.append(f'daceml::cublas::broadcast_rows<{ctype}>(__dace_current_stream, "{label}", {m}, {n}, C, Y);')
        elif kind == "column":
            lines.append(f'daceml::cublas::broadcast_cols<{ctype}>(__dace_current_stream, "{label}", {m}, {n}, C, Y);')
        lines.append(gemm_call(plan, ctype, label, "A", "B", "Y", alpha, beta))
        return cls._tasklet(node, state, sdfg, "\n".join(lines))
