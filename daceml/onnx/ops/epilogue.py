"""Epilogues: an activation (and a residual addition) computed by an operator's implementation
on the output it has just written, instead of by a separate node that reads and writes the
whole tensor again.

A node carries its epilogue in two properties every ONNX node has (``ONNXOp.epilogue``, the
activation's op name, and ``ONNXOp.epilogue_params``) plus, for a residual addition, an input
connector :data:`RESIDUAL` (a tensor of the output's shape added before the activation). They
are set by the level-2 pass ``FuseEpilogues`` (``daceml/transformation/epilogue.py``), and only
on nodes whose implementation lists the activation in its ``epilogues``; the registry rejects
every other implementation for such a node, so an epilogue is never silently dropped.

:func:`cpp_apply` is the C++ loop an implementation runs over what it wrote; the expressions
match the elementwise implementations of the ops (NaN stays NaN through Relu, Clip with
min > max gives max, ...).
"""
from typing import Dict, Optional, Sequence, Tuple

#: the input connector of a residual addition (added to the output before the activation)
RESIDUAL = "__daceml_residual"
#: the input connector of a per-image, per-channel scale of the input (a squeeze-excitation's
#: ``X * S[N, C, 1, 1]`` before a 1x1 conv becomes a scale of the conv's weights per image)
INPUT_SCALE = "__daceml_input_scale"
#: the Conv input connector of its Winograd-transformed weights (:mod:`daceml.onnx.ops.winograd`)
WINOGRAD_WEIGHTS = "__daceml_winograd_weights"
#: the inputs daceml's passes add to ONNX nodes beyond their op's schema
FUSED_INPUTS = (RESIDUAL, INPUT_SCALE, WINOGRAD_WEIGHTS)
#: the output connector of the mean of each output plane (after the epilogue): a Conv computing
#: what a ReduceMean over its spatial dims (a squeeze-excitation's pooling) read from it
POOLED_MEAN = "__daceml_pooled_mean"
#: the outputs daceml's passes add to ONNX nodes beyond their op's schema
FUSED_OUTPUTS = (POOLED_MEAN, )

#: activation -> (names of its parameters, in epilogue_params order; their defaults)
ACTIVATIONS: Dict[str, Tuple[Tuple[str, ...], Tuple[float, ...]]] = {
    "Relu": ((), ()),
    "Clip": (("min", "max"), (float("-inf"), float("inf"))),
    "LeakyRelu": (("alpha", ), (0.01, )),
    "HardSigmoid": (("alpha", "beta"), (0.2, 0.5)),
    "HardSwish": ((), ()),
    "Sigmoid": ((), ()),
    "Tanh": ((), ()),
    # x * sigmoid(x): the exporters' SiLU / Swish (a Sigmoid and a Mul reading the same tensor)
    "SiLU": ((), ()),
    # approximate: 0 (erf) or 1 (tanh)
    "Gelu": (("approximate", ), (0.0, )),
}


def _literal(value: float, T: str) -> str:
    if value == float("inf"):
        return f"std::numeric_limits<{T}>::infinity()"
    if value == float("-inf"):
        return f"(-std::numeric_limits<{T}>::infinity())"
    return f"({T}){float(value)!r}"


def activation_expr(kind: str, params: Sequence[float], T: str, v: str) -> str:
    """C++ expression of activation ``kind`` of the value ``v`` (of C type ``T``)."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown epilogue activation {kind!r}; known: {sorted(ACTIVATIONS)}")
    names, defaults = ACTIVATIONS[kind]
    if len(params) != len(names):
        raise ValueError(f"epilogue {kind} takes {len(names)} parameter(s) {list(names)}, got {list(params)}")
    p = [_literal(x, T) for x in params]
    # float: daceml_expf (cpu_support/vecmath.h, force-included), inline where expf would be a
    # call into libmvec per vector. What a fused SiLU adds to a conv (over a fused Relu; 2 threads,
    # interleaved A/B) fell 13-33%: 8x24x56x56 -> 144 1x1 0.89 -> 0.59 ms, its depthwise 3x3 0.67 -> 0.58
    exp = "daceml_expf" if T == "float" else "exp"
    tanh = "tanhf" if T == "float" else "tanh"
    zero, one = f"({T})0", f"({T})1"
    if kind == "Relu":
        return f"({v} < {zero} ? {zero} : {v})"
    if kind == "Clip":
        lo, hi = p
        return f"(({v} > {hi} || {lo} > {hi}) ? {hi} : ({v} < {lo} ? {lo} : {v}))"
    if kind == "LeakyRelu":
        return f"({v} >= {zero} ? {v} : {p[0]} * {v})"
    if kind == "HardSigmoid":
        return f"std::max({zero}, std::min({one}, {p[0]} * {v} + {p[1]}))"
    if kind == "HardSwish":
        return f"({v} * std::max({zero}, std::min({one}, {v} / ({T})6 + ({T})0.5)))"
    if kind == "Sigmoid":
        return f"({one} / ({one} + {exp}(-{v})))"
    if kind == "Tanh":
        return f"{tanh}({v})"
    if kind == "Gelu":
        erf = "erff" if T == "float" else "erf"
        if params[0]:
            return (f"(({T})0.5 * {v} * ({one} + {tanh}(({T})0.7978845608028654 * "
                    f"({v} + ({T})0.044715 * {v} * {v} * {v}))))")
        return f"(({T})0.5 * {v} * ({one} + {erf}({v} * ({T})0.7071067811865476)))"
    return f"({v} * ({one} / ({one} + {exp}(-{v}))))"  # SiLU


def has_epilogue(node) -> bool:
    """An activation or residual to apply to the output (the input scale is not one)."""
    return bool(getattr(node, "epilogue", "")) or RESIDUAL in node.in_connectors


def alpha(node, T: str) -> str:
    """C++ literal of the constant a BLAS call multiplies its product by (``node.output_scale``)."""
    return _literal(getattr(node, "output_scale", 1.0), T)


def why_not(impl, node) -> Optional[str]:
    """None if implementation class ``impl`` computes ``node``'s epilogue (or there is none),
    else the reason (for the registry)."""
    supported = getattr(impl, "epilogues", ())
    kind = getattr(node, "epilogue", "")
    if kind and kind not in supported:
        return f"the node has a fused {kind} epilogue, which this implementation does not compute"
    if RESIDUAL in node.in_connectors and "residual" not in supported:
        return "the node has a fused residual addition, which this implementation does not compute"
    if POOLED_MEAN in node.out_connectors and "pooled_mean" not in supported:
        return "the node also writes the mean of each output plane (a fused pooling), which this implementation " \
               "does not compute"
    if INPUT_SCALE in node.in_connectors and "input_scale" not in supported:
        return "the node has a fused scale of its input channels, which this implementation does not compute"
    if getattr(node, "output_scale", 1.0) != 1.0 and "output_scale" not in supported:
        return f"the node's output is scaled by a fused constant {node.output_scale:g}, which this implementation " \
               "does not do"
    if getattr(node, "operand_perms", None) and "operand_perms" not in supported:
        return f"the node reads or writes through fused transposes {dict(node.operand_perms)}, which this " \
               "implementation does not do"
    return None


def check_residual(node, state, sdfg, output: str) -> None:
    """Raises Rejected unless the residual input (if any) has the shape and type of ``output``."""
    from daceml.onnx.ops.registry import Rejected
    if RESIDUAL not in node.in_connectors:
        return
    r, y = node.in_desc(state, sdfg, RESIDUAL), node.out_desc(state, sdfg, output)
    if tuple(r.shape) != tuple(y.shape) or r.dtype != y.dtype:
        raise Rejected(f"the fused residual is {r.dtype}{list(r.shape)}; it must be {y.dtype}{list(y.shape)} "
                       f"like output {output!r}")


def cpp_apply(node, T: str, out: str, count: str, bias: Optional[str] = None, residual: Optional[str] = None,
              index: str = "__e") -> str:
    """C++ statements: ``out[i] = act(out[i] (+ bias) (+ residual[i]))`` for i < ``count`` (the
    loop variable is ``index``; ``bias`` is an expression added to every element, e.g. a channel's
    bias). Empty if there is nothing to do."""
    kind = getattr(node, "epilogue", "")
    if not kind and bias is None and residual is None:
        return ""
    value = f"{out}[{index}]"
    if bias is not None:
        value = f"{value} + {bias}"
    if residual is not None:
        value = f"{value} + {residual}[{index}]"
    if kind:
        code = f"const {T} __v = {value}; {out}[{index}] = {activation_expr(kind, list(node.epilogue_params), T, '__v')};"
    else:
        code = f"{out}[{index}] = {value};"
    return f"for (long long {index} = 0; {index} < {count}; ++{index}) {{ {code} }}\n"


def describe(node) -> str:
    """The epilogue in words ('' if none), for logs and errors."""
    parts = []
    if getattr(node, "operand_perms", None):
        parts.append("transposed operands " + ", ".join(f"{c}{list(p)}" for c, p in sorted(node.operand_perms.items())))
    if INPUT_SCALE in node.in_connectors:
        parts.append("input channels scaled")
    if WINOGRAD_WEIGHTS in node.in_connectors:
        parts.append("Winograd-transformed weights")
    if getattr(node, "output_scale", 1.0) != 1.0:
        parts.append(f"x {node.output_scale:g}")
    if RESIDUAL in node.in_connectors:
        parts.append("+ residual")
    kind = getattr(node, "epilogue", "")
    if kind:
        params = list(node.epilogue_params)
        parts.append(kind + (f"({', '.join(f'{p:g}' for p in params)})" if params else ""))
    return " then ".join(parts)
