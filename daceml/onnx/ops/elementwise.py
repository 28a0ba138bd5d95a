"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting, comparisons,
logic, activations.

Ops:
- math: Abs Neg Exp Log Sqrt Reciprocal Pow Sin Cos Tan Asin Acos Atan Sinh Cosh Tanh
  Asinh Acosh Atanh Erf Sign Floor Ceil Round Mod BitShift Clip
- arithmetic: Add Sub Mul Div; variadic Sum Mean Max Min
- tests and logic: IsNaN IsInf Not And Or Xor Equal Less Greater LessOrEqual GreaterOrEqual Where
- activations: Relu LeakyRelu PRelu Elu Selu Celu Gelu HardSigmoid HardSwish Sigmoid
  Softplus Softsign Mish ThresholdedRelu
- Identity, Dropout (inference: the output is the input, the mask all true)

Each op is a short function decorated with :func:`elementwise`. Its parameter names are
the ONNX input and attribute names; its single ``return`` expression (a tuple for ops
with several outputs) becomes the body of a DaCe Python tasklet inside one map over the
output. Inputs broadcast the numpy way. Within the expression:

- an attribute is its value on the node; if the model leaves it out, the ONNX default,
  or the parameter's default in the function signature where one is given;
- an optional input the model leaves out is the parameter's default (``LOWEST`` and
  ``HIGHEST`` stand for the limits of the op's type);
- a variadic input (``data_0`` of Sum ...) is a tuple: ``sum``, ``max``, ``min`` and
  ``len`` of it are expanded when the node is expanded;
- ``is_float(X)``, ``is_signed(X)``, ``is_unsigned(X)`` and ``is_bool(X)`` ask about the
  element type of input ``X``; they, attributes and conditional expressions over them
  are evaluated when the node is expanded, so a branch that does not apply to the
  element type is never compiled;
- Python's operators, ``abs``, ``round``, ``max``, ``min`` and ``math.f`` mean what they
  mean in Python, for every element type: ``round`` rounds half to even, ``%`` takes the
  sign of the divisor and ``math.fmod`` that of the dividend (for integers too), ``max``
  and ``min`` propagate NaN (numpy's maximum / minimum); ``/`` is C++'s (integers
  truncate, as in onnxruntime); ``math.inf``, ``math.nan`` and ``math.pi`` are constants.

float16 values are computed in float32 (DaCe's own CPU ``half`` converts wrongly; see
:data:`daceml.onnx.ops.common.HALF_HELPERS`). Code is compiled without -ffast-math, so
NaN tests such as ``X != X`` hold.
"""
import ast
import copy
import inspect
import math
import textwrap
from typing import Any, Callable, Dict, List, Optional

import dace
import numpy as np

from daceml.onnx.dtypes import is_float
from daceml.onnx.ops.common import (add_helper_code, broadcast_index, constant_input, full_index, map_ranges,
                                    nested_sdfg, use_half_helpers)
from daceml.onnx.ops.registry import Implementation, op_implementation
from daceml.onnx.schema import ParamKind


class _Limit:
    """A signature default standing for a limit of the op's element type."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


#: the lowest / highest value of the element type (-inf / inf for floats)
LOWEST = _Limit("LOWEST")
HIGHEST = _Limit("HIGHEST")

#: ``math.f`` that DaCe's ``dace::math`` namespace provides; other ``math.f`` become the C library's ``f``
_DACE_MATH = {"exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "pow", "log10"}
#: ``math.f`` usable in expressions (Python's math module names; C has each under the same name)
_C_MATH = {"asin", "acos", "atan", "asinh", "acosh", "atanh", "erf", "floor", "ceil", "expm1", "log1p", "copysign",
           "trunc", "fabs"}
#: ``math.f`` that are helpers of :data:`_HELPERS`
_HELPER_MATH = {"fmod": "daceml_fmod"}
#: Python builtins usable in expressions -> C++ names
_BUILTINS = {"abs": "abs", "round": "rint", "max": "daceml_max", "min": "daceml_min"}


def is_signed(dtype: dace.typeclass) -> bool:
    """A float or signed integer type (in expressions: ``is_signed(X)`` of an input)."""
    return is_float(dtype) or dtype in (dace.int8, dace.int16, dace.int32, dace.int64)


def is_unsigned(dtype: dace.typeclass) -> bool:
    """An unsigned integer type or bool (in expressions: ``is_unsigned(X)`` of an input)."""
    return dtype in (dace.uint8, dace.uint16, dace.uint32, dace.uint64, dace.bool_)


def is_bool(dtype: dace.typeclass) -> bool:
    """bool (in expressions: ``is_bool(X)`` of an input)."""
    return dtype == dace.bool_


#: compile-time questions about an input's element type (``is_float`` is daceml.onnx.dtypes')
_TYPE_TESTS = {f.__name__: f for f in (is_float, is_signed, is_unsigned, is_bool)}

#: C++ for the Python builtins and operators whose C++ namesakes differ: NaN-propagating
#: max and min (numpy's maximum / minimum), ``%`` (the sign of the divisor, as in Python)
#: and ``math.fmod`` (the sign of the dividend, for integers too)
_HELPERS = r"""
#include <cmath>
#include <type_traits>
template <typename A, typename B>
static inline typename std::common_type<A, B>::type daceml_max(const A& a, const B& b) {
    return (a >= b || a != a) ? a : b;
}
template <typename A, typename B>
static inline typename std::common_type<A, B>::type daceml_min(const A& a, const B& b) {
    return (a <= b || a != a) ? a : b;
}
template <typename A, typename B, typename C = typename std::common_type<A, B>::type>
static inline typename std::enable_if<std::is_integral<C>::value, C>::type daceml_fmod(const A& a, const B& b) {
    return (C)(a % b);
}
template <typename A, typename B, typename C = typename std::common_type<A, B>::type>
static inline typename std::enable_if<!std::is_integral<C>::value, C>::type daceml_fmod(const A& a, const B& b) {
    return std::fmod((C)a, (C)b);
}
template <typename A, typename B, typename C = typename std::common_type<A, B>::type>
static inline C daceml_mod(const A& a, const B& b) {
    C r = daceml_fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? (C)(r + b) : r;
}
"""


class ElementwiseError(TypeError):
    """An elementwise op function uses something its expressions cannot."""


def _limit_value(limit: _Limit, dtype: dace.typeclass) -> ast.expr:
    if is_float(dtype):
        value = -math.inf if limit is LOWEST else math.inf
    elif dtype == dace.bool_:
        value = limit is HIGHEST
    else:
        info = np.iinfo(dtype.as_numpy_dtype())
        value = int(info.min if limit is LOWEST else info.max)
    return _constant(value)


def _constant(value: Any) -> ast.expr:
    """An AST for a Python constant (see :class:`_CConstants` for those C++ writes differently)."""
    if isinstance(value, (bool, np.bool_)):
        return ast.Constant(bool(value))
    if isinstance(value, (int, np.integer)):
        return ast.Constant(int(value))
    if isinstance(value, (float, np.floating)):
        return ast.Constant(float(value))
    return ast.Constant(value)


class _CConstants(ast.NodeTransformer):
    """Writes the constants that are no C++ literal as expressions: infinities and NaN
    (calls, as DaCe would take a bare name for a symbol) and INT64_MIN."""

    def visit_Constant(self, node: ast.Constant):
        value = node.value
        if isinstance(value, float) and not math.isfinite(value):
            inf = ast.Call(ast.Name("__builtin_inf", ast.Load()), [], [])
            if math.isnan(value):
                return ast.BinOp(inf, ast.Mult(), ast.Constant(0))
            return inf if value > 0 else ast.UnaryOp(ast.USub(), inf)
        if isinstance(value, int) and not isinstance(value, bool) and value == -2**63:
            return ast.BinOp(ast.Constant(-2**63 + 1), ast.Sub(), ast.Constant(1))
        return node


class _FloatConstants(ast.NodeTransformer):
    """Writes float literals as float32 (``dace.float32(0.5)``, C++ ``dace::float32(0.5)``)."""

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, float):
            return ast.Call(ast.Attribute(ast.Name("dace", ast.Load()), "float32", ast.Load()), [node], [])
        return node


def _is_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant)


def _fold(node: ast.expr) -> ast.expr:
    """Evaluates sub-expressions made of constants only; picks the branch of a conditional
    (and drops operands of ``and``/``or``) whose value is known."""

    class Folder(ast.NodeTransformer):

        def generic_visit(self, node):
            node = super().generic_visit(node)
            if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp)):
                children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
                c_division = (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod))
                              and all(isinstance(getattr(c, "value", None), int) for c in children))
                if all(_is_constant(c) for c in children) and not c_division:  # C++ divides integers otherwise
                    try:
                        code = compile(ast.fix_missing_locations(ast.Expression(node)), "<fold>", "eval")
                        value = eval(code, {"__builtins__": {}})
                    except (ArithmeticError, TypeError, ValueError):  # e.g. 1 / 0: left to the C++ compiler
                        return node
                    if isinstance(value, (bool, int, float, str)):
                        return ast.copy_location(ast.Constant(value), node)
            if isinstance(node, ast.BoolOp):
                values = []
                for v in node.values:
                    if _is_constant(v):
                        if bool(v.value) == isinstance(node.op, ast.Or):
                            return ast.Constant(bool(v.value))  # short-circuits
                        continue  # an operand that does not change the result
                    values.append(v)
                if not values:
                    return ast.Constant(isinstance(node.op, ast.And))
                return values[0] if len(values) == 1 else ast.BoolOp(node.op, values)
            return node

        def visit_IfExp(self, node):
            test = self.visit(node.test)
            if _is_constant(test):
                return self.visit(node.body if test.value else node.orelse)
            return ast.IfExp(test, self.visit(node.body), self.visit(node.orelse))

    return Folder().visit(node)


class _Expression:
    """The parsed op function: parameters, signature defaults, return expression(s)."""

    def __init__(self, op: str, func: Callable):
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        fdef = tree.body[0]
        body = [s for s in fdef.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        if len(body) != 1 or not isinstance(body[0], ast.Return):
            raise TypeError(f"elementwise op function {func.__name__} must consist of one return statement")
        value = body[0].value
        self.op = op
        self.results: List[ast.expr] = list(value.elts) if isinstance(value, ast.Tuple) else [value]
        signature = inspect.signature(func)
        self.params = list(signature.parameters)
        self.defaults = {name: p.default for name, p in signature.parameters.items()
                         if p.default is not inspect.Parameter.empty}

    def source(self) -> str:
        return ", ".join(ast.unparse(r) for r in self.results)


def _check(expr: _Expression, node, state, sdfg) -> Optional[str]:
    """None if ``expr`` can expand ``node``, else why not."""
    inputs = {p.name for p in node.schema.inputs}
    present = {base for c, base in node.iter_parameters()}
    for p in expr.params:
        if p in inputs:
            if p not in present and p not in expr.defaults:
                return f"input {p!r} is missing"
        elif p in node.schema.attributes:
            if getattr(node, p) is None and node.schema.attributes[p].default is None and p not in expr.defaults:
                return f"attribute {p!r} is missing and has no default"
        else:
            return f"{node.schema.name} (opset {node.schema.since_version}) has no input or attribute {p!r}"
    outputs = node.output_connectors()
    if len(expr.results) == 1 and len(outputs) != 1:
        return f"this implementation writes one output, the node has {outputs}"
    if len(outputs) > len(expr.results):
        return f"this implementation writes {len(expr.results)} outputs, the node has {outputs}"
    return None


class _Builder:
    """Turns an :class:`_Expression` into tasklet code for one node, in two passes:
    :meth:`compile_time` replaces what is known when the node is expanded (attributes, absent
    inputs, type tests) by constants and folds; :meth:`lower` turns inputs into tasklet
    connectors and Python functions and operators into their C++ counterparts."""

    def __init__(self, expr: _Expression, node, descs: Dict[str, Any]):
        self.expr = expr
        self.node = node
        self.descs = descs
        self.inputs = {p.name: p for p in node.schema.inputs}
        #: schema input name -> connectors present (one, or several for a variadic input)
        self.connectors: Dict[str, List[str]] = {}
        for conn, base in node.iter_parameters():
            self.connectors.setdefault(base, []).append(conn)
        #: the op's element type (of its first input): what LOWEST and HIGHEST refer to
        self.dtype = descs[node.input_connectors()[0]].dtype
        #: input connectors the code reads
        self.reads: List[str] = []
        self.uses_half = False
        self.uses_helpers = False

    def code(self, result: ast.expr, out_conn: str) -> str:
        """``__out_<out_conn> = <result>`` as Python tasklet code."""
        tree = copy.deepcopy(result)  # the transformers change the tree in place
        tree = _fold(self.lower(_fold(self.compile_time(tree))))
        if self.descs[out_conn].dtype == dace.float16:
            if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "daceml_h2f":
                tree = tree.args[0]  # a float16 input copied as it is
            else:
                self.uses_half = True
                tree = ast.Call(ast.Name("daceml_f2h", ast.Load()), [tree], [])
        tree = _CConstants().visit(tree)
        if self.single_precision():
            tree = _FloatConstants().visit(tree)
        return f"__out_{out_conn} = {ast.unparse(ast.fix_missing_locations(tree))}"

    def single_precision(self) -> bool:
        """True when every input and output of the node is float32: the expression is then
        computed in float (as PyTorch does), not promoted to double by its constants, so the
        compiler vectorizes it at full width (math functions through glibc's libmvec)."""
        return bool(self.descs) and all(d.dtype == dace.float32 for d in self.descs.values())

    def dtype_of(self, param: str) -> dace.typeclass:
        conns = self.connectors.get(param)
        if param not in self.inputs:
            raise ElementwiseError(f"{self.expr.op}: type tests take an input name, got {param!r}")
        return self.descs[conns[0]].dtype if conns else self.dtype

    def constant(self, param: str) -> ast.expr:
        """The value of an attribute or absent optional input."""
        if param in self.inputs:
            value = self.expr.defaults[param]
        else:
            value = getattr(self.node, param)
            if value is None:
                value = self.expr.defaults.get(param, self.node.schema.attributes[param].default)
            if isinstance(value, bytes):
                value = value.decode()
        if isinstance(value, _Limit):
            return _limit_value(value, self.dtype)
        return _constant(value)

    def read(self, conn: str) -> ast.expr:
        """An input element (float16 widened to float)."""
        if conn not in self.reads:
            self.reads.append(conn)
        name = ast.Name(f"__in_{conn}", ast.Load())
        if self.descs[conn].dtype == dace.float16:
            self.uses_half = True
            return ast.Call(ast.Name("daceml_h2f", ast.Load()), [name], [])
        return name

    def compile_time(self, tree: ast.expr) -> ast.expr:
        builder = self

        class CompileTime(ast.NodeTransformer):

            def visit_Call(self, node: ast.Call):
                if isinstance(node.func, ast.Name) and node.func.id in _TYPE_TESTS:
                    if len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
                        raise ElementwiseError(f"{builder.expr.op}: {node.func.id}() takes one input name")
                    return ast.Constant(bool(_TYPE_TESTS[node.func.id](builder.dtype_of(node.args[0].id))))
                return self.generic_visit(node)

            def visit_Name(self, node: ast.Name):
                if node.id in builder.expr.params and not builder.connectors.get(node.id):
                    return builder.constant(node.id)
                return node

        return CompileTime().visit(tree)

    def lower(self, tree: ast.expr) -> ast.expr:
        builder = self

        def call(name: str, *args: ast.expr) -> ast.Call:
            builder.uses_helpers = builder.uses_helpers or name.startswith("daceml_")
            return ast.Call(ast.Name(name, ast.Load()), list(args), [])

        class Lower(ast.NodeTransformer):

            def visit_Call(self, node: ast.Call):
                func, args = node.func, node.args
                if (isinstance(func, ast.Name) and func.id in ("sum", "max", "min", "len") and len(args) == 1
                        and isinstance(args[0], ast.Name) and args[0].id in builder.inputs
                        and builder.inputs[args[0].id].kind is ParamKind.VARIADIC):
                    reads = [builder.read(c) for c in builder.connectors.get(args[0].id, [])]
                    if func.id == "len":
                        return ast.Constant(len(reads))
                    result = reads[0]
                    for r in reads[1:]:
                        result = ast.BinOp(result, ast.Add(), r) if func.id == "sum" else call(_BUILTINS[func.id],
                                                                                               result, r)
                    return result
                node = self.generic_visit(node)
                if isinstance(node.func, ast.Name) and node.func.id in _BUILTINS:
                    return call(_BUILTINS[node.func.id], *node.args)
                return node

            def visit_Attribute(self, node: ast.Attribute):
                if isinstance(node.value, ast.Name) and node.value.id == "math":
                    if node.attr in ("inf", "nan", "pi"):
                        return _constant(getattr(math, node.attr))
                    if node.attr in _C_MATH:
                        return ast.Name(node.attr, ast.Load())
                    if node.attr in _HELPER_MATH:
                        builder.uses_helpers = True
                        return ast.Name(_HELPER_MATH[node.attr], ast.Load())
                    if node.attr not in _DACE_MATH:
                        raise ElementwiseError(f"{builder.expr.op}: math.{node.attr} is not available in "
                                               "elementwise expressions")
                return self.generic_visit(node)

            def visit_BinOp(self, node: ast.BinOp):
                node = self.generic_visit(node)
                if isinstance(node.op, ast.Mod):  # Python's %: the result has the divisor's sign
                    return call("daceml_mod", node.left, node.right)
                return node

            def visit_Name(self, node: ast.Name):
                conns = builder.connectors.get(node.id)
                if node.id in builder.expr.params and conns:
                    if len(conns) != 1 or builder.inputs[node.id].kind is ParamKind.VARIADIC:
                        raise ElementwiseError(f"{builder.expr.op}: variadic input {node.id!r} can only be used "
                                               "in sum(), max(), min() and len()")
                    return builder.read(conns[0])
                return node

        return Lower().visit(tree)


def expand_elementwise(node, state, sdfg, expr: _Expression) -> dace.SDFG:
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    builder = _Builder(expr, node, descs)
    out_conns = node.output_connectors()
    schema_outputs = [p.name for p in node.schema.outputs]
    out_shape = tuple(descs[out_conns[0]].shape)
    ranges = map_ranges(out_shape)
    idx = list(ranges)
    lines, outputs = [], {}
    for conn in out_conns:
        result = expr.results[schema_outputs.index(conn)] if len(expr.results) > 1 else expr.results[0]
        lines.append(builder.code(result, conn))
        outputs[f"__out_{conn}"] = dace.Memlet(f"{conn}[{full_index(out_shape, idx)}]")
    # inputs the code does not read (e.g. Dropout's ratio) stay unconnected in the nested SDFG
    inputs = {f"__in_{conn}": dace.Memlet(f"{conn}[{broadcast_index(descs[conn].shape, len(out_shape), idx)}]")
              for conn in builder.reads}
    if builder.uses_half:
        use_half_helpers(nsdfg)
    if builder.uses_helpers:
        add_helper_code(nsdfg, "elementwise", _HELPERS)
    tasklet, entry, _ = nstate.add_mapped_tasklet(
        f"{node.label}_{node.schema.name}",
        ranges,
        inputs=inputs,
        code="\n".join(lines),
        outputs=outputs,
        external_edges=True,
    )
    # OpenMP over every dim but the innermost (a batch of 1 still splits over the threads); the
    # innermost loop stays a plain loop the compiler vectorizes
    entry.map.collapse = max(1, len(ranges) - 1)
    for conn in out_conns:
        if descs[conn].dtype == dace.float16:
            # DaCe's CPU half has no default constructor, so a half-typed output connector
            # (declared before it is assigned) does not compile: write through a pointer.
            tasklet.out_connectors[f"__out_{conn}"] = dace.pointer(dace.float16)
    return nsdfg


def elementwise(op: str, name: str = "pure", why_not: Optional[Callable] = None):
    """Registers a pure elementwise implementation of ``op`` from a one-expression function
    (see the module docstring for what the expression may use)."""

    def decorator(func: Callable) -> Callable:
        expr = _Expression(op, func)
        extra_check = why_not

        class ElementwiseImplementation(Implementation):
            __doc__ = f"{op}: elementwise `{expr.source()}` in one map over the output."

            @staticmethod
            def why_not(node, state, sdfg):
                reason = _check(expr, node, state, sdfg)
                if reason is None and extra_check is not None:
                    reason = extra_check(node, state, sdfg)
                return reason

            @staticmethod
            def expansion(node, state, sdfg):
                return expand_elementwise(node, state, sdfg, expr)

        ElementwiseImplementation.__name__ = ElementwiseImplementation.__qualname__ = f"Elementwise{op}"
        op_implementation(op, name)(ElementwiseImplementation)
        func.implementation = ElementwiseImplementation
        return func

    return decorator


# --- unary math -------------------------------------------------------------------------------

@elementwise("Abs")
def abs_(X):
    return abs(X) if is_signed(X) else X


@elementwise("Neg")
def neg(X):
    return -X


@elementwise("Exp")
def exp(input):
    return math.exp(input)


@elementwise("Log")
def log(input):
    return math.log(input)


@elementwise("Sqrt")
def sqrt(X):
    return math.sqrt(X)


@elementwise("Reciprocal")
def reciprocal(X):
    return 1 / X


@elementwise("Sin")
def sin(input):
    return math.sin(input)


@elementwise("Cos")
def cos(input):
    return math.cos(input)


@elementwise("Tan")
def tan(input):
    return math.tan(input)


@elementwise("Asin")
def asin(input):
    return math.asin(input)


@elementwise("Acos")
def acos(input):
    return math.acos(input)


@elementwise("Atan")
def atan(input):
    return math.atan(input)


@elementwise("Sinh")
def sinh(input):
    return math.sinh(input)


@elementwise("Cosh")
def cosh(input):
    return math.cosh(input)


@elementwise("Tanh")
def tanh(input):
    return math.tanh(input)


@elementwise("Asinh")
def asinh(input):
    return math.asinh(input)


@elementwise("Acosh")
def acosh(input):
    return math.acosh(input)


@elementwise("Atanh")
def atanh(input):
    return math.atanh(input)


@elementwise("Erf")
def erf(input):
    return math.erf(input)


@elementwise("Sign")
def sign(input):
    return input if is_float(input) and input != input else (input > 0) - (input < 0)


@elementwise("Floor")
def floor(X):
    return math.floor(X)


@elementwise("Ceil")
def ceil(X):
    return math.ceil(X)


@elementwise("Round")
def round_(X):
    return round(X)


@elementwise("IsNaN")
def isnan(X):
    return X != X


@elementwise("IsInf")
def isinf(X, detect_positive=1, detect_negative=1):
    return (detect_positive and X == math.inf) or (detect_negative and X == -math.inf)


@elementwise("Clip")
def clip(input, min=LOWEST, max=HIGHEST):
    return max if input > max or min > max else (min if input < min else input)


# --- binary arithmetic --------------------------------------------------------------------------

@elementwise("Add")
def add(A, B):
    return A + B


@elementwise("Sub")
def sub(A, B):
    return A - B


@elementwise("Mul")
def mul(A, B):
    return A * B


@elementwise("Div")
def div(A, B):
    return A / B  # C++ division: integers truncate toward zero, as in onnxruntime


@elementwise("Pow")
def pow_(X, Y):
    return math.pow(X, Y) if is_float(X) else math.pow(dace.float64(X), dace.float64(Y))


@elementwise("Mod")
def mod(A, B, fmod=0):
    return math.fmod(A, B) if fmod else A % B


@elementwise("BitShift")
def bit_shift(X, Y, direction):
    return X << Y if direction == "LEFT" else X >> Y


# --- variadic -------------------------------------------------------------------------------

@elementwise("Sum")
def sum_(data_0):
    return sum(data_0)


@elementwise("Mean")
def mean(data_0):
    return sum(data_0) / len(data_0)


@elementwise("Max")
def max_(data_0):
    return max(data_0)


@elementwise("Min")
def min_(data_0):
    return min(data_0)


# --- comparisons and logic ------------------------------------------------------------------

@elementwise("Equal")
def equal(A, B):
    return A == B


@elementwise("Less")
def less(A, B):
    return A < B


@elementwise("Greater")
def greater(A, B):
    return A > B


@elementwise("LessOrEqual")
def less_or_equal(A, B):
    return A <= B


@elementwise("GreaterOrEqual")
def greater_or_equal(A, B):
    return A >= B


@elementwise("Not")
def not_(X):
    return not X


@elementwise("And")
def and_(A, B):
    return A and B


@elementwise("Or")
def or_(A, B):
    return A or B


@elementwise("Xor")
def xor(A, B):
    return A != B


@elementwise("Where")
def where(condition, X, Y):
    return X if condition else Y


# --- activations ----------------------------------------------------------------------------

@elementwise("Relu")
def relu(X):
    return 0 if X < 0 else X  # NaN stays NaN


@elementwise("LeakyRelu")
def leaky_relu(X, alpha=0.01):
    return X if X >= 0 else alpha * X


@elementwise("PRelu")
def prelu(X, slope):
    return X if X >= 0 else slope * X


@elementwise("Elu")
def elu(X, alpha=1.0):
    return X if X >= 0 else alpha * math.expm1(X)


@elementwise("Selu")
def selu(X, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * X if X > 0 else gamma * alpha * math.expm1(X)


@elementwise("Celu")
def celu(X, alpha=1.0):
    return X if X >= 0 else alpha * math.expm1(X / alpha)


@elementwise("Gelu")
def gelu(X, approximate="none"):
    return (0.5 * X * (1 + math.tanh(0.7978845608028654 * (X + 0.044715 * X * X * X))) if approximate == "tanh"
            else 0.5 * X * (1 + math.erf(X * 0.7071067811865476)))


@elementwise("HardSigmoid")
def hard_sigmoid(X, alpha=0.2, beta=0.5):
    return max(0.0, min(1.0, alpha * X + beta))


@elementwise("HardSwish")
def hard_swish(X):
    return X * max(0.0, min(1.0, X / 6 + 0.5))


@elementwise("Sigmoid")
def sigmoid(X):
    return 1 / (1 + math.exp(-X))


@elementwise("Softplus")
def softplus(X):
    return X + math.log1p(math.exp(-X)) if X > 0 else math.log1p(math.exp(X))


@elementwise("Softsign")
def softsign(input):
    return input / (1 + abs(input))


@elementwise("Mish")
def mish(X):
    return X * math.tanh(X + math.log1p(math.exp(-X)) if X > 0 else math.log1p(math.exp(X)))


@elementwise("ThresholdedRelu")
def thresholded_relu(X, alpha=1.0):
    return X if X > alpha else 0


# --- copies ---------------------------------------------------------------------------------

@elementwise("Identity")
def identity(input):
    return input


def _dropout_why_not(node, state, sdfg):
    if "training_mode" in node.in_connectors:
        value = constant_input(node, state, sdfg, "training_mode")
        if value is None:
            return ("training_mode is not a constant; only inference (training_mode false) is supported, "
                    "fold the graph with training_mode=False")
        if bool(np.asarray(value).reshape(-1)[0]):
            return "training_mode is true; only inference-mode Dropout is supported"
    return None


@elementwise("Dropout", why_not=_dropout_why_not)
def dropout(data):
    return data, True
