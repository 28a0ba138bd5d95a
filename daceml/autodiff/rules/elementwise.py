"""Gradient rules of the elementwise ops, by symbolic differentiation.

Ops: every op of :mod:`daceml.onnx.ops.elementwise` with a floating-point result:
Abs Neg Exp Log Sqrt Reciprocal Pow Sin Cos Tan Asin Acos Atan Sinh Cosh Tanh Asinh
Acosh Atanh Erf Sign Floor Ceil Round Clip Add Sub Mul Div Sum Mean Max Min Where Relu
LeakyRelu PRelu Elu Selu Celu Gelu HardSigmoid HardSwish Sigmoid Softplus Softsign Mish
ThresholdedRelu Identity Dropout (inference).

The forward expression of the op (its one-line function, attributes and type tests
folded for the node) is differentiated with sympy with respect to each input that needs
a gradient; the derivative becomes a C++ tasklet ``dX = dY * d(expr)/dX`` in one map over
the output, followed by a sum over the broadcast dims where the input broadcasts.
Derivatives that are constants need no map (``Add``: the output gradient itself,
``Sub``: a scaled copy); zero derivatives (``Floor``, ``Sign``) give zeros.

:func:`derivative_of` registers a hand-written derivative where the symbolic one is
poorer: ``Relu`` (0 at 0, as PyTorch), ``Sigmoid`` and ``Tanh`` (from the output: no
overflow in ``exp``), ``Abs`` (0 at 0).
"""
import ast
import inspect
import logging
import textwrap
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import sympy as sp

import dace
from dace import symbolic as dsym

from daceml.autodiff import symbolic
from daceml.autodiff.registry import GradientRule, gradient_rule
from daceml.onnx.ops import elementwise as fwd
from daceml.onnx.ops.common import broadcast_index, constant_input, full_index, map_ranges
from daceml.onnx.schema import ParamKind

log = logging.getLogger(__name__)

#: elementwise ops whose results are not floating point (never on a differentiated path)
_NOT_FLOAT = {"IsNaN", "IsInf", "Not", "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual",
              "GreaterOrEqual", "BitShift", "Mod"}

_FUNCTIONS: Dict[str, Callable] = {}
_OVERRIDES: Dict[Tuple[str, str], Callable] = {}


def _scan() -> None:
    if not _FUNCTIONS:
        for value in vars(fwd).values():
            impl = getattr(value, "implementation", None)
            if callable(value) and impl is not None and getattr(impl, "op", None):
                _FUNCTIONS[impl.op] = value


def forward_expression(op: str) -> Optional[Callable]:
    """The forward function of elementwise op ``op`` (None if it is not elementwise)."""
    _scan()
    return _FUNCTIONS.get(op)


def register_forward(op: str, func: Callable) -> None:
    """Makes the symbolic rule differentiate elementwise op ``op`` defined by ``func``
    (for elementwise ops registered outside :mod:`daceml.onnx.ops.elementwise`)."""
    _scan()
    _FUNCTIONS[op] = func
    _register(op)


def derivative_of(op: str, input_name: str):
    """Registers a hand-written derivative of ``op``'s output with respect to input
    ``input_name``: a one-expression function whose parameters are names of the op's
    inputs, outputs and attributes."""

    def register(func: Callable) -> Callable:
        _OVERRIDES[(op, input_name)] = func
        return func

    return register


@derivative_of("Relu", "X")
def _relu(X):
    return 1 if X > 0 else 0


@derivative_of("Sigmoid", "X")
def _sigmoid(Y):
    return Y * (1 - Y)


@derivative_of("Tanh", "input")
def _tanh(output):
    return 1 - output * output


@derivative_of("Abs", "X")
def _abs(X):
    return 1 if X > 0 else (-1 if X < 0 else 0)


def _parse(func: Callable) -> Tuple[List[ast.expr], Dict[str, Any]]:
    """The return expression(s) of a one-expression function and its parameter defaults."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    body = [s for s in tree.body[0].body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Return):
        raise TypeError(f"function {func.__name__} must consist of one return statement")
    value = body[0].value
    results = list(value.elts) if isinstance(value, ast.Tuple) else [value]
    defaults = {n: p.default for n, p in inspect.signature(func).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return results, defaults


def in_symbol(conn: str) -> sp.Symbol:
    return sp.Symbol(f"__in_{conn}", real=True)


def out_symbol(conn: str) -> sp.Symbol:
    return sp.Symbol(f"__out_{conn}", real=True)


_SIGNED_INTS = (dace.int8, dace.int16, dace.int32, dace.int64)
_UNSIGNED = (dace.uint8, dace.uint16, dace.uint32, dace.uint64, dace.bool_)


def _type_test(test: str, dtype) -> bool:
    floating = dtype in (dace.float16, dace.float32, dace.float64)
    return {"is_float": floating, "is_signed": floating or dtype in _SIGNED_INTS,
            "is_unsigned": dtype in _UNSIGNED, "is_bool": dtype == dace.bool_}[test]


def _environment(node, state, sdfg, defaults: Dict[str, Any], with_outputs: bool):
    """Names of a node's expression: input connectors as symbols (variadic ones as lists),
    absent inputs and attributes as constants, outputs as symbols (``with_outputs``)."""
    names: Dict[str, Any] = {}
    variadic: Dict[str, List[sp.Expr]] = {}
    dtypes: Dict[str, Any] = {}
    present: Dict[str, List[str]] = {}
    for conn, param in node.iter_parameters():
        present.setdefault(param, []).append(conn)
    first = node.in_desc(state, sdfg, node.input_connectors()[0]).dtype
    for p in node.schema.inputs:
        conns = present.get(p.name, [])
        dtypes[p.name] = node.in_desc(state, sdfg, conns[0]).dtype if conns else first
        if p.kind is ParamKind.VARIADIC:
            variadic[p.name] = [in_symbol(c) for c in conns]
        elif conns:
            names[p.name] = in_symbol(conns[0])
        elif p.name in defaults:
            value = defaults[p.name]
            if value is fwd.LOWEST or value is fwd.HIGHEST:
                value = -sp.oo if value is fwd.LOWEST else sp.oo
            names[p.name] = value
    if with_outputs:
        for conn, param in node.iter_parameters(outputs=True):
            names.setdefault(param, out_symbol(conn))
    for attr, spec in node.schema.attributes.items():
        if attr in names:
            continue
        value = getattr(node, attr)
        if value is None:
            value = defaults.get(attr, spec.default)
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, (bool, int, float, str)):
            names[attr] = value
    return names, variadic, (lambda test, name: _type_test(test, dtypes.get(name, first)))


def derivatives(node, state, sdfg, conns: List[str]) -> Tuple[str, Dict[str, sp.Expr]]:
    """(differentiated output connector, {input connector: derivative}) of an elementwise node."""
    op = node.schema.name
    func = forward_expression(op)
    if func is None:
        raise symbolic.NotDifferentiable(f"{op} is not an elementwise op")
    results, defaults = _parse(func)
    out_conn = node.output_connectors()[0]
    schema_outputs = [p.name for p in node.schema.outputs]
    result = results[schema_outputs.index(out_conn)] if len(results) > 1 else results[0]
    forward = None
    params = dict(node.iter_parameters())
    derivs = {}
    for conn in conns:
        override = _OVERRIDES.get((op, params[conn]))
        if override is not None:
            tree, = _parse(override)[0]
            names, variadic, type_test = _environment(node, state, sdfg, {}, with_outputs=True)
            derivs[conn] = symbolic.to_sympy(tree, names, variadic, type_test)
            continue
        if forward is None:
            names, variadic, type_test = _environment(node, state, sdfg, defaults, with_outputs=False)
            forward = symbolic.to_sympy(result, names, variadic, type_test)
        derivs[conn] = symbolic.derivative(forward, in_symbol(conn))
    return out_conn, derivs


def _dropout_reason(node, state, sdfg) -> Optional[str]:
    if "training_mode" in node.in_connectors:
        value = constant_input(node, state, sdfg, "training_mode")
        if value is None or bool(np.asarray(value).reshape(-1)[0]):
            return "only inference-mode Dropout (training_mode a constant false) is differentiable"
    return None


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(dsym.simplify(x - y) == 0 for x, y in zip(a, b))


class ElementwiseGradient(GradientRule):
    """``dX = dY * d(expr)/dX`` from the symbolic derivative of the forward expression."""

    @staticmethod
    def why_not(node, state, sdfg):
        if node.schema.name == "Dropout":
            reason = _dropout_reason(node, state, sdfg)
            if reason:
                return reason
        try:
            conns = [c for c in node.input_connectors() if node.in_desc(state, sdfg, c).dtype in
                     (dace.float32, dace.float64)]
            derivatives(node, state, sdfg, conns)
        except symbolic.NotDifferentiable as ex:
            return f"symbolic differentiation failed: {ex}"
        return None

    @staticmethod
    def backward(ctx) -> None:
        node = ctx.node
        out_conn, derivs = derivatives(node, ctx.forward_state, ctx.forward_sdfg, ctx.grad_inputs)
        for conn in node.output_connectors():
            if conn != out_conn and ctx.output_grad(conn) is not None:
                raise ValueError(f"{node.describe()}: output {conn!r} is not differentiable")
        grad_out = ctx.output_grad_or_zero(out_conn)
        out_shape = ctx.shape(out_conn)
        for conn in ctx.grad_inputs:
            d = sp.simplify(derivs[conn]) if len(derivs[conn].free_symbols) == 0 else derivs[conn]
            in_shape = ctx.shape(conn)
            same = _same_shape(in_shape, out_shape)
            if d.is_zero:
                ctx.fill(ctx.input_grad(conn), 0)
                continue
            if not d.free_symbols:
                c = float(d)
                if same and c == 1:
                    ctx.set_input_grad(conn, grad_out)
                else:
                    ctx.reduce_to(grad_out, ctx.input_grad(conn), scale=c)
                continue
            dtype = ctx.desc(conn).dtype
            target = ctx.input_grad(conn) if same else ctx.temp(out_shape, dtype, f"d{conn}_full")
            ranges = map_ranges(out_shape)
            idx = list(ranges)
            at = full_index(out_shape, idx)
            inputs = {"__g": dace.Memlet(f"{grad_out}[{at}]")}
            for sym in sorted(d.free_symbols, key=str):
                name = str(sym)
                if name.startswith("__in_"):
                    c = name[len("__in_"):]
                    arr = ctx.value(c)
                    inputs[name] = dace.Memlet(f"{arr}[{broadcast_index(ctx.shape(c), len(out_shape), idx)}]")
                elif name.startswith("__out_"):
                    c = name[len("__out_"):]
                    inputs[name] = dace.Memlet(f"{ctx.value(c)}[{at}]")
                else:
                    raise ValueError(f"{node.describe()}: derivative uses unknown symbol {name}")
            single = dtype == dace.float32 and all(ctx.desc(c).dtype == dace.float32 for c in node.in_connectors)
            if single:  # float math, like the forward kernel: vectorizes at full width
                code = f"__d = __g * ({symbolic.to_cpp(d, single=True)});"
            else:
                code = f"__d = ({dtype.ctype})((double)__g * ({symbolic.to_cpp(d)}));"
            ctx.mapped(f"d{conn}", ranges, inputs, {"__d": dace.Memlet(f"{target}[{at}]")}, code)
            if not same:
                ctx.reduce_to(target, ctx.input_grad(conn))


def _register(op: str) -> None:
    cls = type(f"{op}Gradient", (ElementwiseGradient, ), {"__module__": __name__,
                                                          "__doc__": ElementwiseGradient.__doc__})
    gradient_rule(op, "symbolic")(cls)


def _register_all() -> None:
    _scan()
    for op in _FUNCTIONS:
        if op not in _NOT_FLOAT:
            _register(op)


_register_all()
