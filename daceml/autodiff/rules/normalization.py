"""Gradient rules of normalization and the softmax family.

Ops: Softmax (``dX = Y (dY - sum(dY Y))``), LogSoftmax (``dX = dY - exp(Y) sum(dY)``),
LayerNormalization (dX per row from the recomputed mean and inverse deviation; dScale
and dB summed over the rows), BatchNormalization in inference mode (per channel).

Each is a map over independent rows (or channels) with C++ loops inside; sums are in
double. Softmax follows its opset: before 13 the rows are the input coerced to 2-D at
``axis``, from 13 on the single ``axis`` (rows may be strided).
"""
import math

import dace

from daceml.autodiff.registry import GradientRule, gradient_rule
from daceml.onnx.ops.common import cpp, normalize_axis

_FLOATS = ("float", "double")


def _float_reason(node, state, sdfg, conns):
    for c in conns:
        if c in node.in_connectors and node.in_desc(state, sdfg, c).dtype.ctype not in _FLOATS:
            return f"input {c!r} is {node.in_desc(state, sdfg, c).dtype.to_string()}; only float32/float64"
    return None


def _softmax_geometry(node, shape):
    """(outer, n, inner): rows of ``n`` elements ``inner`` apart, ``outer * inner`` of them."""
    rank = len(shape)
    default = 1 if node.schema.since_version < 13 else -1
    axis = normalize_axis(node, int(node.axis if node.axis is not None else default), rank)
    if node.schema.since_version < 13:
        return math.prod(shape[:axis]), math.prod(shape[axis:]), 1
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


class _SoftmaxGradient(GradientRule):
    log = False

    @staticmethod
    def why_not(node, state, sdfg):
        return _float_reason(node, state, sdfg, ["input"])

    @classmethod
    def backward(cls, ctx) -> None:
        desc = ctx.desc("input")
        outer, n, inner = _softmax_geometry(ctx.node, list(desc.shape))
        T = desc.dtype.ctype
        at = "(__base + __j * __inner)"
        if cls.log:
            sum_term, value = f"__g[{at}]", f"__g[{at}] - std::exp((double)__y[{at}]) * __s"
        else:
            sum_term, value = f"(double)__g[{at}] * __y[{at}]", f"__y[{at}] * (__g[{at}] - __s)"
        code = f"""const long long __n = {cpp(n)}, __inner = {cpp(inner)};
const long long __base = __o * __n * __inner + __i;
double __s = 0;
for (long long __j = 0; __j < __n; ++__j) __s += {sum_term};
for (long long __j = 0; __j < __n; ++__j) __out[{at}] = ({T})({value});
"""
        ctx.kernel("logsoftmax" if cls.log else "softmax", {"__o": f"0:{outer}", "__i": f"0:{inner}"},
                   {"__g": ctx.output_grad("output"), "__y": ctx.value("output")},
                   {"__out": ctx.input_grad("input")}, code)


@gradient_rule("Softmax")
class SoftmaxGradient(_SoftmaxGradient):
    """Softmax: ``dX = Y (dY - sum_row(dY Y))``, from the stored output."""
    log = False


@gradient_rule("LogSoftmax")
class LogSoftmaxGradient(_SoftmaxGradient):
    """LogSoftmax: ``dX = dY - exp(Y) sum_row(dY)``, from the stored output."""
    log = True


@gradient_rule("LayerNormalization")
class LayerNormalizationGradient(GradientRule):
    """LayerNormalization: mean and inverse deviation recomputed per row; dX per row
    (``inv (dY s - mean(dY s) - xhat mean(dY s xhat))``); dScale, dB summed over rows."""

    @staticmethod
    def why_not(node, state, sdfg):
        reason = _float_reason(node, state, sdfg, ["X", "Scale", "B"])
        if reason:
            return reason
        shape = list(node.in_desc(state, sdfg, "X").shape)
        axis = normalize_axis(node, int(node.axis if node.axis is not None else -1), len(shape))
        row = math.prod(shape[axis:])
        for c in ("Scale", "B"):
            if c in node.in_connectors:
                size = node.in_desc(state, sdfg, c).total_size
                try:
                    if int(size) != int(row):
                        return f"{c} has {size} elements, a row {row}; only per-element scale and bias are supported"
                except TypeError:
                    return f"{c} has {size} elements, a row {row}; sizes must be static"
        return None

    @staticmethod
    def backward(ctx) -> None:
        node = ctx.node
        for c in ("Mean", "InvStdDev"):
            if ctx.output_grad(c) is not None:
                raise ValueError(f"{node.describe()}: the gradient of output {c} is not supported")
        x = ctx.desc("X")
        shape = list(x.shape)
        axis = normalize_axis(node, int(node.axis if node.axis is not None else -1), len(shape))
        rows, n = math.prod(shape[:axis]), math.prod(shape[axis:])
        eps = repr(float(node.epsilon if node.epsilon is not None else 1e-5))
        T = x.dtype.ctype
        g, xv, s = ctx.output_grad("Y"), ctx.value("X"), ctx.value("Scale")
        row_stats = f"""const long long __n = {cpp(n)};
const {T}* __xr = __x + __r * __n;
double __mean = 0;
#pragma omp simd reduction(+:__mean)
for (long long __j = 0; __j < __n; ++__j) __mean += __xr[__j];
__mean /= (double)__n;
double __var = 0;
#pragma omp simd reduction(+:__var)
for (long long __j = 0; __j < __n; ++__j) {{ const double __d = __xr[__j] - __mean; __var += __d * __d; }}
__var /= (double)__n;
const double __inv = 1.0 / std::sqrt(__var + {eps});
"""
        need_params = ctx.needs_grad("Scale") or ctx.needs_grad("B")
        # the row statistics are stored only for the parameter gradients: an output nothing reads
        # would be removed as dead dataflow, leaving the tasklet's store through an unset pointer
        outputs, code = {}, row_stats
        if need_params:
            stats = ctx.temp([rows, 2], dace.float64, "stats")
            outputs["__st"] = stats
            code += "__st[2 * __r] = __mean; __st[2 * __r + 1] = __inv;\n"
        if ctx.needs_grad("X"):
            outputs["__dx"] = ctx.input_grad("X")
            code += f"""const {T}* __gr = __g + __r * __n;
double __sg = 0, __sgx = 0;
#pragma omp simd reduction(+:__sg, __sgx)
for (long long __j = 0; __j < __n; ++__j) {{
    const double __gs = (double)__gr[__j] * __s[__j];
    __sg += __gs; __sgx += __gs * (__xr[__j] - __mean) * __inv;
}}
__sg /= (double)__n; __sgx /= (double)__n;
for (long long __j = 0; __j < __n; ++__j) {{
    const double __xh = (__xr[__j] - __mean) * __inv;
    __dx[__r * __n + __j] = ({T})(__inv * ((double)__gr[__j] * __s[__j] - __sg - __xh * __sgx));
}}
"""
        ctx.kernel("layernorm_dx", {"__r": f"0:{rows}"}, {"__x": xv, "__g": g, "__s": s}, outputs, code)
        if need_params:
            outputs, body = {}, ""
            if ctx.needs_grad("Scale"):
                outputs["__ds"] = ctx.input_grad("Scale")
                body += f"__ds[__j] = ({T})__a;\n"
            if ctx.needs_grad("B"):
                outputs["__db"] = ctx.input_grad("B")
                body += f"__db[__j] = ({T})__b;\n"
            # blocks of columns, rows outside: contiguous (vectorized) reads instead of a column walk
            block = 64
            code = f"""const long long __n = {cpp(n)};
const long long __j0 = __blk * {block};
const long long __w = __n - __j0 < {block} ? __n - __j0 : {block};
double __sa[{block}] = {{0}}, __sb[{block}] = {{0}};
for (long long __r = 0; __r < {cpp(rows)}; ++__r) {{
    const double __m = __st[2 * __r], __i = __st[2 * __r + 1];
    const {T}* __gr = __g + __r * __n + __j0;
    const {T}* __xr = __x + __r * __n + __j0;
    #pragma omp simd
    for (long long __k = 0; __k < __w; ++__k) {{
        __sa[__k] += (double)__gr[__k] * ((__xr[__k] - __m) * __i);
        __sb[__k] += __gr[__k];
    }}
}}
for (long long __k = 0; __k < __w; ++__k) {{
    const long long __j = __j0 + __k;
    const double __a = __sa[__k], __b = __sb[__k];
""" + body + "}\n"
            blocks = -(-int(n) // block) if not dace.symbolic.issymbolic(n) else f"int_ceil({cpp(n)}, {block})"
            ctx.kernel("layernorm_dparams", {"__blk": f"0:{blocks}"}, {"__x": xv, "__g": g, "__st": stats}, outputs,
                       code)


@gradient_rule("BatchNormalization")
class BatchNormalizationGradient(GradientRule):
    """BatchNormalization in inference mode: ``dX = dY scale inv`` per channel; dscale, dB,
    dmean, dvar summed over batch and image."""

    @staticmethod
    def why_not(node, state, sdfg):
        if int(getattr(node, "training_mode", 0) or 0):
            return "training_mode=1 is not supported (export the model in eval mode)"
        if len(node.output_connectors()) != 1:
            return "only the inference form (one output) is supported"
        return _float_reason(node, state, sdfg, ["X", "scale", "B", "input_mean", "input_var"])

    @staticmethod
    def backward(ctx) -> None:
        x = ctx.desc("X")
        shape = list(x.shape)
        T = x.dtype.ctype
        batch, channels = shape[0], shape[1] if len(shape) > 1 else 1
        plane = math.prod(shape[2:]) if len(shape) > 2 else 1
        eps = repr(float(ctx.node.epsilon if ctx.node.epsilon is not None else 1e-5))
        g = ctx.output_grad("Y")
        inputs = {"__g": g, "__s": ctx.value("scale"), "__v": ctx.value("input_var")}
        head = f"const long long __C = {cpp(channels)}, __P = {cpp(plane)};\n" \
               f"const double __inv = 1.0 / std::sqrt((double)__v[__c] + {eps});\n"
        if ctx.needs_grad("X"):
            code = head + f"""const long long __base = (__n * __C + __c) * __P;
const double __f = __s[__c] * __inv;
for (long long __k = 0; __k < __P; ++__k) __out[__base + __k] = ({T})(__g[__base + __k] * __f);
"""
            ctx.kernel("batchnorm_dx", {"__n": f"0:{batch}", "__c": f"0:{channels}"}, dict(inputs),
                       {"__out": ctx.input_grad("X")}, code)
        params = [c for c in ("scale", "B", "input_mean", "input_var") if ctx.needs_grad(c)]
        if params:
            inputs = dict(inputs, __x=ctx.value("X"), __m=ctx.value("input_mean"))
            code = head + f"""double __sg = 0, __sgx = 0;
for (long long __n = 0; __n < {cpp(batch)}; ++__n)
    for (long long __k = 0; __k < __P; ++__k) {{
        const long long __at = (__n * __C + __c) * __P + __k;
        __sg += __g[__at]; __sgx += (double)__g[__at] * (__x[__at] - __m[__c]);
    }}
"""
            values = {"scale": "__sgx * __inv", "B": "__sg", "input_mean": "-__s[__c] * __inv * __sg",
                      "input_var": "-0.5 * __s[__c] * __sgx * __inv * __inv * __inv"}
            outputs = {}
            for k, c in enumerate(params):
                outputs[f"__d{k}"] = ctx.input_grad(c)
                code += f"__d{k}[__c] = ({T})({values[c]});\n"
            ctx.kernel("batchnorm_dparams", {"__c": f"0:{channels}"}, inputs, outputs, code)
