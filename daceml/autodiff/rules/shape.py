"""Gradient rules of the shape and indexing ops (data movement, no arithmetic).

Ops: Reshape Flatten Squeeze Unsqueeze (flat copy of the output gradient), Transpose
(an ONNX Transpose with the inverse permutation), Concat (each input's slab of the
output gradient), Split (the output gradients side by side, zeros for unused outputs),
Slice (the output gradient scattered into zeros at the sliced positions), Gather
(zeros, then a scatter-add over the indices), Expand (a sum over the expanded dims),
Cast between floating-point types, Pad (constant mode: the unpadded window).

Index arithmetic uses the arrays' strides; sizes may be symbolic.
"""
import math
from typing import List, Optional

import numpy as np

from daceml.autodiff.kernels import offset
from daceml.autodiff.registry import GradientRule, gradient_rule
from daceml.onnx.ops.common import cpp, normalize_axis

_FLOATS = ("float", "double")


def _params(shape) -> List[str]:
    return [f"__p{k}" for k in range(len(shape))]


def _ranges(shape) -> dict:
    return {f"__p{k}": f"0:{s}" for k, s in enumerate(shape)} or {"__p0": "0:1"}


class _FlatCopy(GradientRule):
    """The gradient of the (only) float input is the output gradient, reshaped (a flat copy)."""

    @staticmethod
    def backward(ctx) -> None:
        out = ctx.node.output_connectors()[0]
        conn = ctx.node.input_connectors()[0]
        ctx.copy(ctx.output_grad(out), ctx.input_grad(conn))


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    gradient_rule(_op)(type(f"{_op}Gradient", (_FlatCopy, ), {"__module__": __name__, "__doc__": _FlatCopy.__doc__}))


@gradient_rule("Cast")
class CastGradient(GradientRule):
    """Cast between floating-point types: the output gradient converted back."""

    @staticmethod
    def why_not(node, state, sdfg):
        for d in (node.in_desc(state, sdfg, "input"), node.out_desc(state, sdfg, "output")):
            if d.dtype.ctype not in _FLOATS:
                return f"a Cast involving {d.dtype.to_string()} is not differentiable"
        return None

    @staticmethod
    def backward(ctx) -> None:
        ctx.copy(ctx.output_grad("output"), ctx.input_grad("input"))


@gradient_rule("CastLike")
class CastLikeGradient(GradientRule):
    """CastLike between floating-point types: the output gradient converted back to ``input``'s type
    (``target_type`` only gives the type: no gradient flows to it)."""

    @staticmethod
    def why_not(node, state, sdfg):
        for d in (node.in_desc(state, sdfg, "input"), node.out_desc(state, sdfg, "output")):
            if d.dtype.ctype not in _FLOATS:
                return f"a CastLike involving {d.dtype.to_string()} is not differentiable"
        return None

    @staticmethod
    def backward(ctx) -> None:
        # target_type is in registry.VALUE_FREE_INPUTS: never in ctx.grad_inputs
        ctx.copy(ctx.output_grad_or_zero("output"), ctx.input_grad("input"))


@gradient_rule("Transpose")
class TransposeGradient(GradientRule):
    """Transpose: the output gradient transposed back (inverse permutation)."""

    @staticmethod
    def backward(ctx) -> None:
        rank = len(ctx.shape("data"))
        perm = list(ctx.node.perm) if ctx.node.perm else list(reversed(range(rank)))
        inverse = [0] * rank
        for d, p in enumerate(perm):
            inverse[p] = d
        ctx.onnx("Transpose", {"data": ctx.output_grad("transposed")}, {"transposed": ctx.input_grad("data")},
                 perm=inverse)


@gradient_rule("Concat")
class ConcatGradient(GradientRule):
    """Concat: each input's gradient is its slab of the output gradient."""

    @staticmethod
    def backward(ctx) -> None:
        out_desc = ctx.desc("concat_result")
        rank = len(out_desc.shape)
        axis = normalize_axis(ctx.node, int(ctx.node.axis), rank)
        g = ctx.output_grad("concat_result")
        start = 0
        for conn in ctx.node.input_connectors():
            shape = ctx.shape(conn)
            if ctx.needs_grad(conn):
                p = _params(shape)
                src = list(p)
                src[axis] = f"{p[axis]} + {cpp(start)}"
                code = f"__out[{offset(ctx.desc(conn).strides, p)}] = __g[{offset(out_desc.strides, src)}];"
                ctx.kernel(f"concat_{conn}", _ranges(shape), {"__g": g}, {"__out": ctx.input_grad(conn)}, code)
            start = start + shape[axis]


@gradient_rule("Split")
class SplitGradient(GradientRule):
    """Split: the output gradients side by side along the axis (zeros for outputs without one)."""

    @staticmethod
    def backward(ctx) -> None:
        in_desc = ctx.desc("input")
        shape = list(in_desc.shape)
        axis = normalize_axis(ctx.node, int(ctx.node.axis or 0), len(shape))
        p = _params(shape)
        inputs, lines, start = {}, [], 0
        for k, conn in enumerate(ctx.node.output_connectors()):
            d = ctx.desc(conn)
            size = d.shape[axis]
            g = ctx.output_grad(conn)
            src = list(p)
            src[axis] = f"({p[axis]} - {cpp(start)})"
            value = "0" if g is None else f"__g{k}[{offset(d.strides, src)}]"
            if g is not None:
                inputs[f"__g{k}"] = g
            lines.append(f"if ({p[axis]} < {cpp(start + size)}) {{ __out[__at] = {value}; }}")
            start = start + size
        code = f"const long long __at = {offset(in_desc.strides, p)};\n" + "\nelse ".join(lines)
        ctx.kernel("split", _ranges(shape), inputs, {"__out": ctx.input_grad("input")}, code)


def _slice_constants(node, ctx_or_const, rank):
    """(starts, ends, axes, steps) of a Slice node from its constant inputs (or attributes before opset 10)."""
    if node.schema.since_version < 10:
        starts, ends = list(node.starts), list(node.ends)
        axes = list(node.axes) if node.axes else list(range(len(starts)))
        return starts, ends, axes, [1] * len(starts)
    get = ctx_or_const
    starts, ends = get("starts"), get("ends")
    if starts is None or ends is None:
        return None
    axes = get("axes")
    steps = get("steps")
    if (axes is None and "axes" in node.in_connectors) or (steps is None and "steps" in node.in_connectors):
        return None
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    return starts, ends, [a % rank for a in axes], steps


def _const_getter(node, state, sdfg):
    from daceml.onnx.ops.common import constant_input
    return lambda conn: constant_input(node, state, sdfg, conn)


@gradient_rule("Slice")
class SliceGradient(GradientRule):
    """Slice: zeros, except the sliced positions, which get the output gradient."""

    @staticmethod
    def why_not(node, state, sdfg):
        rank = len(node.in_desc(state, sdfg, "data").shape)
        params = _slice_constants(node, _const_getter(node, state, sdfg), rank)
        if params is None:
            return "starts, ends, axes and steps must be constants of the model"
        shape = node.in_desc(state, sdfg, "data").shape
        for s, a, st in zip(params[0], params[2], params[3]):
            if st == 0:
                return "a step of 0 is invalid"
            try:
                int(shape[a])
            except TypeError:
                if s < 0 or st < 0:
                    return f"dim {a} is symbolic; only non-negative starts and steps are supported on it"
        return None

    @staticmethod
    def backward(ctx) -> None:
        node = ctx.node
        in_desc, out_desc = ctx.desc("data"), ctx.desc("output")
        shape = list(in_desc.shape)
        starts, _, axes, steps = _slice_constants(node, _const_getter(node, ctx.forward_state, ctx.forward_sdfg),
                                                  len(shape))
        p = _params(shape)
        src = list(p)
        conds = []
        for s, a, st in zip(starts, axes, steps):
            try:
                n = int(shape[a])
                s = s + n if s < 0 else s
                s = max(0, min(s, n if st > 0 else n - 1))
            except TypeError:
                pass
            conds.append(f"(({p[a]} - {cpp(s)}) % {st} == 0)")
            q = f"(({p[a]} - {cpp(s)}) / {st})"
            conds.append(f"({q} >= 0) && ({q} < {cpp(out_desc.shape[a])})")
            src[a] = q
        code = (f"__out[{offset(in_desc.strides, p)}] = ({' && '.join(conds) or 'true'}) ? "
                f"__g[{offset(out_desc.strides, src)}] : 0;")
        ctx.kernel("slice", _ranges(shape), {"__g": ctx.output_grad("output")}, {"__out": ctx.input_grad("data")},
                   code)


@gradient_rule("Gather")
class GatherGradient(GradientRule):
    """Gather: zeros, then the output gradient added at the gathered positions (repeated
    indices accumulate). Parallel over the dims around the axis, sequential over indices."""

    @staticmethod
    def backward(ctx) -> None:
        data = ctx.desc("data")
        shape = list(data.shape)
        axis = normalize_axis(ctx.node, int(ctx.node.axis or 0), len(shape))
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
        n_idx = ctx.desc("indices").total_size
        dim = shape[axis]
        T = data.dtype.ctype
        code = f"""
const long long __A = {cpp(dim)}, __I = {cpp(inner)}, __J = {cpp(n_idx)};
{T}* __dst = __out + __o * __A * __I + __i;
const {T}* __src = __g + __o * __J * __I + __i;
for (long long __a = 0; __a < __A; ++__a) __dst[__a * __I] = 0;
for (long long __j = 0; __j < __J; ++__j) {{
    long long __k = (long long)__idx[__j];
    if (__k < 0) __k += __A;
    __dst[__k * __I] += __src[__j * __I];
}}"""
        ctx.kernel("gather", {"__o": f"0:{outer}", "__i": f"0:{inner}"},
                   {"__g": ctx.output_grad("output"), "__idx": ctx.value("indices")},
                   {"__out": ctx.input_grad("data")}, code)


@gradient_rule("Expand")
class ExpandGradient(GradientRule):
    """Expand: the output gradient summed over the expanded dims."""

    @staticmethod
    def backward(ctx) -> None:
        ctx.reduce_to(ctx.output_grad("output"), ctx.input_grad("input"))


@gradient_rule("Pad")
class PadGradient(GradientRule):
    """Pad (constant mode): the output gradient's window over the input."""

    @staticmethod
    def _pads(node, get) -> Optional[List[int]]:
        if node.schema.since_version < 11:
            return list(node.pads)
        pads = get("pads")
        return None if pads is None else [int(v) for v in np.asarray(pads).reshape(-1)]

    @staticmethod
    def why_not(node, state, sdfg):
        if (node.mode or "constant") != "constant":
            return f"mode {node.mode!r}: only constant padding is differentiable"
        get = _const_getter(node, state, sdfg)
        if PadGradient._pads(node, get) is None:
            return "pads must be a constant of the model"
        if "axes" in node.in_connectors and get("axes") is None:
            return "axes must be a constant of the model"
        return None

    @staticmethod
    def backward(ctx) -> None:
        node = ctx.node
        in_desc, out_desc = ctx.desc("data"), ctx.desc("output")
        rank = len(in_desc.shape)
        get = _const_getter(node, ctx.forward_state, ctx.forward_sdfg)
        pads = PadGradient._pads(node, get)
        axes = list(range(rank))
        if "axes" in node.in_connectors:
            axes = [int(a) % rank for a in np.asarray(get("axes")).reshape(-1)]
        begin = [0] * rank
        for k, a in enumerate(axes):
            begin[a] = pads[k]
        p = _params(in_desc.shape)
        src = [f"{q} + {b}" if b else q for q, b in zip(p, begin)]
        conds = [f"({s} >= 0) && ({s} < {cpp(out_desc.shape[d])})" for d, s in enumerate(src) if begin[d] < 0]
        value = f"__g[{offset(out_desc.strides, src)}]"
        if conds:
            value = f"({' && '.join(conds)}) ? {value} : 0"
        ctx.kernel("pad", _ranges(in_desc.shape), {"__g": ctx.output_grad("output")},
                   {"__out": ctx.input_grad("data")}, f"__out[{offset(in_desc.strides, p)}] = {value};")
