"""Gradient rules of the reductions.

Ops: ReduceSum ReduceMean (the output gradient broadcast back over the reduced dims,
divided by their size for the mean), ReduceSumSquare (``2 x dY``), ReduceL2
(``x / y dY``), ReduceLogSumExp (``exp(x - y) dY``), ReduceMax ReduceMin (the gradient
goes to the elements equal to the result, shared evenly among ties, as
``torch.amax``).

``axes`` is an attribute in old opsets and a constant input in new ones; no axes means
all axes (or none with ``noop_with_empty_axes``).
"""
import math
from typing import List, Optional

import numpy as np

from daceml.autodiff.kernels import offset
from daceml.autodiff.registry import GradientRule, gradient_rule
from daceml.onnx.ops.common import constant_input, cpp

_FLOATS = ("float", "double")


def reduced_axes(node, state, sdfg, rank: int) -> Optional[List[int]]:
    """The reduced axes of a reduction node (None if they are not known at build time)."""
    if "axes" in node.schema.attributes:
        axes = node.axes
    elif "axes" in node.in_connectors:
        value = constant_input(node, state, sdfg, "axes")
        if value is None:
            return None
        axes = [int(v) for v in np.asarray(value).reshape(-1)]
    else:
        axes = None
    if not axes:
        noop = "noop_with_empty_axes" in node.schema.attributes and int(node.noop_with_empty_axes or 0)
        return [] if noop else list(range(rank))
    return sorted(int(a) % max(rank, 1) for a in axes)


class _ReduceGradient(GradientRule):
    #: C++ expression of the input gradient from ``__gv`` (output gradient), ``__xv``
    #: (input element), ``__yv`` (output element) and ``__cnt`` (reduced elements)
    expression = "__gv"
    reads_x = False
    reads_y = False

    @classmethod
    def why_not(cls, node, state, sdfg):
        d = node.in_desc(state, sdfg, "data")
        if d.dtype.ctype not in _FLOATS:
            return f"input is {d.dtype.to_string()}; only float32/float64"
        if reduced_axes(node, state, sdfg, len(d.shape)) is None:
            return "axes must be a constant of the model"
        return None

    @classmethod
    def backward(cls, ctx) -> None:
        x, y = ctx.desc("data"), ctx.desc("reduced")
        shape = list(x.shape)
        axes = reduced_axes(ctx.node, ctx.forward_state, ctx.forward_sdfg, len(shape))
        keep = int(1 if ctx.node.keepdims is None else ctx.node.keepdims)
        p = [f"__p{k}" for k in range(len(shape))]
        y_idx = []
        for d in range(len(shape)):
            if d in axes:
                if keep:
                    y_idx.append("0")
            else:
                y_idx.append(p[d])
        y_at = offset(y.strides, y_idx) if len(y_idx) == len(y.shape) else "0"
        count = math.prod([shape[a] for a in axes]) if axes else 1
        inputs = {"__g": ctx.output_grad("reduced")}
        code = f"const double __gv = __g[{y_at}];\nconst double __cnt = {cpp(count)};\n"
        if cls.reads_x or cls.max_like:
            inputs["__x"] = ctx.value("data")
            code += f"const double __xv = __x[{offset(x.strides, p)}];\n"
        if cls.reads_y or cls.max_like:
            inputs["__y"] = ctx.value("reduced")
            code += f"const double __yv = __y[{y_at}];\n"
        if cls.max_like:
            # ties share the gradient: count the elements of this slice equal to the result
            loops, idx = "", list(p)
            for a in axes:
                idx[a] = f"__t{a}"
                loops += f"for (long long __t{a} = 0; __t{a} < {cpp(shape[a])}; ++__t{a})\n"
            code += (f"long long __ties = 0;\n{loops}__ties += (__x[{offset(x.strides, idx)}] == __yv);\n")
        code += f"__out[{offset(x.strides, p)}] = ({x.dtype.ctype})({cls.expression});"
        ranges = {q: f"0:{s}" for q, s in zip(p, shape)} or {"__p0": "0:1"}
        ctx.kernel(ctx.node.schema.name.lower(), ranges, inputs, {"__out": ctx.input_grad("data")}, code)

    max_like = False


def _rule(op: str, expression: str, doc: str, reads_x=False, reads_y=False, max_like=False) -> None:
    gradient_rule(op)(type(f"{op}Gradient", (_ReduceGradient, ), {
        "__module__": __name__, "__doc__": doc, "expression": expression, "reads_x": reads_x, "reads_y": reads_y,
        "max_like": max_like}))


_rule("ReduceSum", "__gv", "ReduceSum: the output gradient broadcast over the reduced dims.")
_rule("ReduceMean", "__gv / __cnt", "ReduceMean: the output gradient broadcast, divided by the reduced size.")
_rule("ReduceSumSquare", "2 * __xv * __gv", "ReduceSumSquare: 2 x dY.", reads_x=True)
_rule("ReduceL2", "(__yv == 0 ? 0.0 : __xv / __yv) * __gv", "ReduceL2: x / y dY (0 where y is 0).", reads_x=True,
      reads_y=True)
_rule("ReduceLogSumExp", "std::exp(__xv - __yv) * __gv", "ReduceLogSumExp: softmax(x) dY.", reads_x=True,
      reads_y=True)
_rule("ReduceMax", "(__xv == __yv ? __gv / __ties : 0.0)", "ReduceMax: dY to the maxima, shared among ties.",
      max_like=True)
_rule("ReduceMin", "(__xv == __yv ? __gv / __ties : 0.0)", "ReduceMin: dY to the minima, shared among ties.",
      max_like=True)
