"""Gradient rules of the matrix products.

Ops: Gemm MatMul Einsum.

The backward products are ONNX ``Gemm``/``MatMul``/``Einsum`` nodes themselves, so they
are expanded by the same (tiled) implementations as the forward pass:

- Gemm ``Y = alpha op(A) op(B) + beta C``: dA and dB are one Gemm each (transposes are
  flags), dC is ``beta dY`` summed over C's broadcast dims.
- MatMul (numpy semantics: batched, broadcast batch dims, 1-D operands): a 1-D operand
  is reshaped with a unit dim, so every case is a batched product
  ``dA = dY @ B^T``, ``dB = A^T @ dY`` followed by a sum over the batch dims the operand
  broadcasts along. A matrix operand times a batched one (``x @ W``, the linear layer)
  gets its gradient from one Gemm over the flattened batch (``x^T dY``), without
  materialising the per-batch products.
- Einsum (explicit equations without ellipsis or diagonals): the gradient of an operand
  is the Einsum of the output gradient with the other operands, into the operand's
  subscripts.
"""
import math
from typing import List

from dace import symbolic as dsym

from daceml.autodiff.registry import GradientRule, gradient_rule

_FLOATS = ("float", "double")


def _float_reason(node, state, sdfg, conns) -> str:
    for c in conns:
        if c in node.in_connectors and node.in_desc(state, sdfg, c).dtype.ctype not in _FLOATS:
            return f"input {c!r} is {node.in_desc(state, sdfg, c).dtype.to_string()}; only float32/float64"
    return None


def _same(a, b) -> bool:
    return len(a) == len(b) and all(dsym.simplify(x - y) == 0 for x, y in zip(a, b))


@gradient_rule("Gemm")
class GemmGradient(GradientRule):
    """Gemm: dA, dB one Gemm each; dC = beta dY summed over C's broadcast dims."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _float_reason(node, state, sdfg, ["A", "B", "C"])

    @staticmethod
    def backward(ctx) -> None:
        n = ctx.node
        ta, tb = bool(n.transA), bool(n.transB)
        alpha = 1.0 if n.alpha is None else float(n.alpha)
        beta = 1.0 if n.beta is None else float(n.beta)
        g = ctx.output_grad("Y")
        if ctx.needs_grad("A"):
            b = ctx.value("B")
            if not ta:  # dA = alpha dY op(B)^T
                ctx.onnx("Gemm", {"A": g, "B": b}, {"Y": ctx.input_grad("A")}, alpha=alpha, transB=int(not tb))
            else:  # dA = alpha op(B) dY^T
                ctx.onnx("Gemm", {"A": b, "B": g}, {"Y": ctx.input_grad("A")}, alpha=alpha, transA=int(tb),
                         transB=1)
        if ctx.needs_grad("B"):
            a = ctx.value("A")
            if not tb:  # dB = alpha op(A)^T dY
                ctx.onnx("Gemm", {"A": a, "B": g}, {"Y": ctx.input_grad("B")}, alpha=alpha, transA=int(not ta))
            else:  # dB = alpha dY^T op(A)
                ctx.onnx("Gemm", {"A": g, "B": a}, {"Y": ctx.input_grad("B")}, alpha=alpha, transA=1,
                         transB=int(ta))
        if ctx.needs_grad("C"):
            ctx.reduce_to(g, ctx.input_grad("C"), scale=beta)


def _swap_last(rank: int) -> List[int]:
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return perm


@gradient_rule("MatMul")
class MatMulGradient(GradientRule):
    """MatMul: ``dA = dY @ B^T``, ``dB = A^T @ dY`` (batched), summed over broadcast batch dims."""

    @staticmethod
    def why_not(node, state, sdfg):
        return _float_reason(node, state, sdfg, ["A", "B"])

    @staticmethod
    def backward(ctx) -> None:
        a_shape, b_shape, y_shape = ctx.shape("A"), ctx.shape("B"), ctx.shape("Y")
        dtype = ctx.desc("Y").dtype
        # 1-D operands are promoted to matrices (a unit dim), the output gradient with them
        pa = [1] + a_shape if len(a_shape) == 1 else a_shape
        pb = b_shape + [1] if len(b_shape) == 1 else b_shape
        y_rank = 0 if len(a_shape) == 1 and len(b_shape) == 1 else len(y_shape)
        batch = y_shape[:y_rank - (len(a_shape) > 1) - (len(b_shape) > 1)]
        py = list(batch) + [pa[-2], pb[-1]]
        g0 = ctx.output_grad("Y")
        g = g0 if _same(py, y_shape) else ctx.reshaped(g0, py)
        if ctx.needs_grad("A"):
            b0 = ctx.value("B")
            b = b0 if len(b_shape) > 1 else ctx.reshaped(b0, pb)
            full = list(batch) + [pa[-2], pa[-1]]
            out = _target(ctx, "A", full, dtype)
            if len(py) == 2:
                ctx.onnx("Gemm", {"A": g, "B": b}, {"Y": out}, transB=1)
            else:
                bt = ctx.temp(pb[:-2] + [pb[-1], pb[-2]], dtype, "B_t")
                ctx.onnx("Transpose", {"data": b}, {"transposed": bt}, perm=_swap_last(len(pb)))
                ctx.onnx("MatMul", {"A": g, "B": bt}, {"Y": out})
            _finish(ctx, "A", out, pa)
        if ctx.needs_grad("B"):
            a0 = ctx.value("A")
            a = a0 if len(a_shape) > 1 else ctx.reshaped(a0, pa)
            if len(py) == 2:
                out = _target(ctx, "B", [pb[-2], pb[-1]], dtype)
                ctx.onnx("Gemm", {"A": a, "B": g}, {"Y": out}, transA=1)
            elif len(pb) == 2 and len(pa) == len(py) and _same(pa[:-2], batch):
                # linear layer: one Gemm over the flattened batch, A_flat^T @ dY_flat
                rows = math.prod(py[:-1])
                out = _target(ctx, "B", [pb[-2], pb[-1]], dtype)
                flat_a, flat_g = ctx.reshaped(a0, [rows, pa[-1]]), ctx.reshaped(g0, [rows, py[-1]])
                ctx.onnx("Gemm", {"A": flat_a, "B": flat_g}, {"Y": out}, transA=1)
            else:
                out = _target(ctx, "B", list(batch) + [pb[-2], pb[-1]], dtype)
                at = ctx.temp(pa[:-2] + [pa[-1], pa[-2]], dtype, "A_t")
                ctx.onnx("Transpose", {"data": a}, {"transposed": at}, perm=_swap_last(len(pa)))
                ctx.onnx("MatMul", {"A": at, "B": g}, {"Y": out})
            _finish(ctx, "B", out, pb)


def _target(ctx, which: str, shape, dtype) -> str:
    """Where the product for operand ``which`` is written: its gradient array if the shapes
    agree, else a temporary summed into it by :func:`_finish`."""
    if _same(shape, ctx.shape(which)):
        return ctx.input_grad(which)
    return ctx.temp(shape, dtype, f"d{which}_full")


def _finish(ctx, which: str, out: str, promoted) -> None:
    if ctx.produced.get(which) != out:
        ctx.reduce_to(out, ctx.input_grad(which), as_shape=promoted)


def _einsum_terms(equation: str):
    """(input subscripts, output subscripts) of an explicit equation without ellipsis, else None."""
    eq = equation.replace(" ", "")
    if "->" not in eq or "." in eq:
        return None
    lhs, out = eq.split("->")
    return lhs.split(","), out


@gradient_rule("Einsum")
class EinsumGradient(GradientRule):
    """Einsum: ``d operand_k = einsum(dY, other operands -> subscripts of operand k)``."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = _float_reason(node, state, sdfg, node.input_connectors())
        if reason:
            return reason
        terms = _einsum_terms(node.equation or "")
        if terms is None:
            return "only explicit equations ('...->...') without ellipsis are differentiable"
        ins, out = terms
        for k, sub in enumerate(ins):
            if len(set(sub)) != len(sub):
                return f"operand {k} repeats an index ({sub!r}: a diagonal)"
            others = set(out).union(*[set(s) for j, s in enumerate(ins) if j != k])
            if not set(sub) <= others:
                return f"an index of operand {k} ({sub!r}) is summed over that operand alone"
        return None

    @staticmethod
    def backward(ctx) -> None:
        ins, out = _einsum_terms(ctx.node.equation)
        conns = ctx.node.input_connectors()
        g = ctx.output_grad("Output")
        for k, conn in enumerate(conns):
            if not ctx.needs_grad(conn):
                continue
            operands = {"Inputs__0": g}
            subs = [out]
            for j, other in enumerate(conns):
                if j != k:
                    operands[f"Inputs__{len(operands)}"] = ctx.value(other)
                    subs.append(ins[j])
            ctx.onnx("Einsum", operands, {"Output": ctx.input_grad(conn)}, equation=f"{','.join(subs)}->{ins[k]}")
