"""Gradient rules of convolution and pooling over N-D images laid out (N, C, D1, ..., Dk).

Ops: Conv (groups and depthwise included, strides, dilations, pads, auto_pad), MaxPool
(the gradient goes to the first maximum of each window, as in PyTorch), AveragePool
(count_include_pad, ceil_mode), GlobalAveragePool, GlobalMaxPool.

The window geometry is the forward implementation's
(:func:`daceml.onnx.ops.conv_pool.window`), baked into the code as constants:

- Conv dX: a map over (batch, input channel); each tasklet accumulates its image plane
  (in double) over the output channels of its group and the kernel taps.
- Conv dW: a map over (output channel, input channel of the group); a loop per tap over
  the batch and the output positions that tap reaches.
- Conv dB: a map over output channels summing the output gradient.
- Pools: a map over (batch, channel) planes; windows may overlap, so each plane is
  accumulated by one tasklet.
"""
import math
from typing import List

from daceml.autodiff.registry import GradientRule, gradient_rule
from daceml.onnx.ops import conv_pool as fwd
from daceml.onnx.ops.common import cpp

_FLOATS = ("float", "double")
_ALLOC = "#include <vector>\n#include <limits>\n"


def _strides(sizes: List[int]) -> List[int]:
    return [math.prod(sizes[j + 1:]) for j in range(len(sizes))]


def _flat(var: str, strides: List[int]) -> str:
    return " + ".join(f"{var}{j} * {s}" for j, s in enumerate(strides)) or "0"


def _window(node, state, sdfg, kernel=None):
    x = node.in_desc(state, sdfg, "X")
    y = node.out_desc(state, sdfg, "Y")
    ceil = bool(getattr(node, "ceil_mode", 0) or 0)
    return fwd.window(node, x.shape, y.shape, kernel, ceil_mode=ceil,
                      has_dilations="dilations" in node.schema.attributes)


def _reason(check):
    try:
        check()
    except Exception as ex:  # the forward's geometry checks raise their own exception type
        return str(ex)
    return None


def _tap_loops(win) -> str:
    """Loops over the kernel taps ``__t{j}``, each followed by the range ``[__olo{j}, __ohi{j})``
    of output positions whose window reaches the image at that tap (input ``__o * s + __off``)."""
    code = ""
    for j in range(win.k):
        s, d, p, n, o = win.strides[j], win.dilations[j], win.pads_begin[j], win.ins[j], win.outs[j]
        code += f"for (long long __t{j} = 0; __t{j} < {win.kernel[j]}; ++__t{j}) {{\n"
        code += f"const long long __off{j} = __t{j} * {d} - {p};\n"
        code += f"const long long __olo{j} = __off{j} >= 0 ? 0 : (-__off{j} + {s - 1}) / {s};\n"
        code += (f"long long __ohi{j} = {n - 1} - __off{j} >= 0 ? ({n - 1} - __off{j}) / {s} + 1 : 0;\n"
                 f"if (__ohi{j} > {o}) __ohi{j} = {o};\n")
    return code


def _out_loops(win) -> str:
    code = ""
    for j in range(win.k):
        code += f"for (long long __o{j} = __olo{j}; __o{j} < __ohi{j}; ++__o{j}) {{\n"
        code += f"const long long __i{j} = __o{j} * {win.strides[j]} + __off{j};\n"
    return code


@gradient_rule("Conv")
class ConvGradient(GradientRule):
    """Conv: dX, dW and dB as three maps (see the module docstring)."""

    @staticmethod
    def why_not(node, state, sdfg):
        for c in ("X", "W", "B"):
            if c in node.in_connectors and node.in_desc(state, sdfg, c).dtype.ctype not in _FLOATS:
                return f"input {c!r} is {node.in_desc(state, sdfg, c).dtype.to_string()}; only float32/float64"
        w = node.in_desc(state, sdfg, "W")
        return _reason(lambda: (_window(node, state, sdfg, [int(v) for v in w.shape[2:]]),
                                int(node.in_desc(state, sdfg, "X").shape[1]), [int(v) for v in w.shape]))

    @staticmethod
    def backward(ctx) -> None:
        node = ctx.node
        x, w = ctx.desc("X"), ctx.desc("W")
        win = _window(node, ctx.forward_state, ctx.forward_sdfg, [int(v) for v in w.shape[2:]])
        T = x.dtype.ctype
        batch = cpp(x.shape[0])
        group = int(node.group or 1)
        C, M = int(x.shape[1]), int(w.shape[0])
        Cg, Mg = C // group, M // group
        IP, OP, KP = math.prod(win.ins), math.prod(win.outs), math.prod(win.kernel)
        ist, ost, kst = _strides(win.ins), _strides(win.outs), _strides(win.kernel)
        g = ctx.output_grad("Y")
        close = "}\n" * win.k
        if ctx.needs_grad("X"):
            code = f"""const long long __g0 = __ci / {Cg}, __c = __ci - __g0 * {Cg};
std::vector<double> __acc({IP}, 0.0);
for (long long __m = __g0 * {Mg}; __m < (__g0 + 1) * {Mg}; ++__m) {{
const {T}* __yp = __gy + (__n * {M} + __m) * {OP};
const {T}* __wp = __w + (__m * {Cg} + __c) * {KP};
{_tap_loops(win)}const double __wv = __wp[{_flat("__t", kst)}];
{_out_loops(win)}__acc[{_flat("__i", ist)}] += __wv * __yp[{_flat("__o", ost)}];
{close}{close}}}
{T}* __xp = __dx + (__n * {C} + __ci) * {IP};
for (long long __s = 0; __s < {IP}; ++__s) __xp[__s] = ({T})__acc[__s];
"""
            ctx.kernel("conv_dx", {"__n": f"0:{x.shape[0]}", "__ci": f"0:{C}"},
                           {"__gy": g, "__w": ctx.value("W")}, {"__dx": ctx.input_grad("X")}, code, _ALLOC)
        if ctx.needs_grad("W"):
            code = f"""const long long __ci = (__m / {Mg}) * {Cg} + __c;
{_tap_loops(win)}double __acc = 0;
for (long long __n = 0; __n < {batch}; ++__n) {{
const {T}* __xp = __x + (__n * {C} + __ci) * {IP};
const {T}* __yp = __gy + (__n * {M} + __m) * {OP};
{_out_loops(win)}__acc += (double)__yp[{_flat("__o", ost)}] * __xp[{_flat("__i", ist)}];
{close}}}
__dw[(__m * {Cg} + __c) * {KP} + {_flat("__t", kst)}] = ({T})__acc;
{close}"""
            ctx.kernel("conv_dw", {"__m": f"0:{M}", "__c": f"0:{Cg}"}, {"__gy": g, "__x": ctx.value("X")},
                       {"__dw": ctx.input_grad("W")}, code)
        if ctx.needs_grad("B"):
            code = f"""double __acc = 0;
for (long long __n = 0; __n < {batch}; ++__n) {{
const {T}* __yp = __gy + (__n * {M} + __m) * {OP};
for (long long __s = 0; __s < {OP}; ++__s) __acc += __yp[__s];
}}
__db[__m] = ({T})__acc;
"""
            ctx.kernel("conv_db", {"__m": f"0:{M}"}, {"__gy": g}, {"__db": ctx.input_grad("B")}, code)


def _table(name: str, values) -> str:
    return f"static const long long {name}[{len(values)}] = {{{', '.join(str(int(v)) for v in values)}}};\n"


class _PoolGradient(GradientRule):
    kind = "max"

    @staticmethod
    def why_not(node, state, sdfg):
        if node.in_desc(state, sdfg, "X").dtype.ctype not in _FLOATS:
            return "only float32/float64"
        return _reason(lambda: _window(node, state, sdfg))

    @classmethod
    def backward(cls, ctx) -> None:
        node = ctx.node
        x = ctx.desc("X")
        win = _window(node, ctx.forward_state, ctx.forward_sdfg)
        T = x.dtype.ctype
        k = win.k
        IP, OP = math.prod(win.ins), math.prod(win.outs)
        ist, ost = _strides(win.ins), _strides(win.outs)
        code = ""
        for j in range(k):
            rng = [win.tap_range(j, o) for o in range(win.outs[j])]
            code += _table(f"__klo{j}", [r[0] for r in rng]) + _table(f"__khi{j}", [r[1] for r in rng])
        if cls.kind == "avg":
            include = bool(node.count_include_pad or 0)
            for j in range(k):
                counts = []
                for o in range(win.outs[j]):
                    if include:
                        start = o * win.strides[j] - win.pads_begin[j]
                        counts.append(sum(1 for t in range(win.kernel[j]) if -win.pads_begin[j] <= start + t *
                                          win.dilations[j] < win.ins[j] + win.pads_end[j]))
                    else:
                        lo, hi = win.tap_range(j, o)
                        counts.append(hi - lo)
                code += _table(f"__cnt{j}", counts)
        plane = "(__n * __C + __c)"
        code += f"const long long __C = {cpp(x.shape[1])};\n"
        if cls.kind == "max":
            code += f"const {T}* __xp = __x + {plane} * {IP};\n"
        code += f"""const {T}* __yp = __gy + {plane} * {OP};
std::vector<double> __acc({IP}, 0.0);
"""
        for j in range(k):
            code += f"for (long long __o{j} = 0; __o{j} < {win.outs[j]}; ++__o{j}) {{\n"
        out_at = _flat("__o", ost)
        taps = ""
        for j in range(k):
            taps += f"for (long long __k{j} = __klo{j}[__o{j}]; __k{j} < __khi{j}[__o{j}]; ++__k{j}) {{\n"
            taps += (f"const long long __i{j} = __o{j} * {win.strides[j]} - {win.pads_begin[j]} + "
                     f"__k{j} * {win.dilations[j]};\n")
        in_at = _flat("__i", ist)
        if cls.kind == "max":
            code += f"long long __arg = -1; {T} __best = -std::numeric_limits<{T}>::infinity();\n"
            code += taps + f"const long long __at = {in_at};\n"
            code += "if (__arg < 0 || __xp[__at] > __best) { __best = __xp[__at]; __arg = __at; }\n"
            code += "}\n" * k
            code += f"if (__arg >= 0) __acc[__arg] += __yp[{out_at}];\n"
        else:
            div = " * ".join(f"__cnt{j}[__o{j}]" for j in range(k))
            code += f"const double __v = (double)__yp[{out_at}] / (double)({div});\n"
            code += taps + f"__acc[{in_at}] += __v;\n" + "}\n" * k
        code += "}\n" * k
        code += f"for (long long __s = 0; __s < {IP}; ++__s) __dx[{plane} * {IP} + __s] = ({T})__acc[__s];\n"
        inputs = {"__gy": ctx.output_grad("Y")}
        if cls.kind == "max":
            inputs["__x"] = ctx.value("X")
        ctx.kernel(f"{cls.kind}pool", {"__n": f"0:{x.shape[0]}", "__c": f"0:{x.shape[1]}"}, inputs,
                   {"__dx": ctx.input_grad("X")}, code, _ALLOC)


@gradient_rule("MaxPool")
class MaxPoolGradient(_PoolGradient):
    """MaxPool: each output gradient goes to the first maximum of its window."""
    kind = "max"


@gradient_rule("AveragePool")
class AveragePoolGradient(_PoolGradient):
    """AveragePool: each output gradient spread evenly over its window (the forward's divisor)."""
    kind = "avg"


class _GlobalPoolGradient(GradientRule):
    kind = "avg"

    @staticmethod
    def why_not(node, state, sdfg):
        d = node.in_desc(state, sdfg, "X")
        if d.dtype.ctype not in _FLOATS:
            return "only float32/float64"
        if len(d.shape) < 2:
            return "expected (N, C, D1, ..., Dk)"
        return None

    @classmethod
    def backward(cls, ctx) -> None:
        x = ctx.desc("X")
        T = x.dtype.ctype
        size = cpp(math.prod(x.shape[2:])) if len(x.shape) > 2 else "1"
        plane = f"(__n * {cpp(x.shape[1])} + __c)"
        if cls.kind == "avg":
            code = f"""const {T} __v = ({T})((double)__gy[{plane}] / (double){size});
for (long long __s = 0; __s < {size}; ++__s) __dx[{plane} * {size} + __s] = __v;
"""
            inputs = {"__gy": ctx.output_grad("Y")}
        else:
            code = f"""const {T}* __xp = __x + {plane} * {size};
long long __arg = 0;
for (long long __s = 1; __s < {size}; ++__s) if (__xp[__s] > __xp[__arg]) __arg = __s;
for (long long __s = 0; __s < {size}; ++__s) __dx[{plane} * {size} + __s] = __s == __arg ? __gy[{plane}] : 0;
"""
            inputs = {"__gy": ctx.output_grad("Y"), "__x": ctx.value("X")}
        ctx.kernel(f"global{cls.kind}pool", {"__n": f"0:{x.shape[0]}", "__c": f"0:{x.shape[1]}"}, inputs,
                   {"__dx": ctx.input_grad("X")}, code)


@gradient_rule("GlobalAveragePool")
class GlobalAveragePoolGradient(_GlobalPoolGradient):
    """GlobalAveragePool: the output gradient divided by the image size, over the image."""
    kind = "avg"


@gradient_rule("GlobalMaxPool")
class GlobalMaxPoolGradient(_GlobalPoolGradient):
    """GlobalMaxPool: the output gradient to the first maximum of the image."""
    kind = "max"
