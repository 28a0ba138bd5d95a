"""Symbolic differentiation of elementwise expressions (Python ASTs) with sympy.

:func:`to_sympy` turns an elementwise op's expression (the one-line functions of
:mod:`daceml.onnx.ops.elementwise`, after attributes and type tests are folded) into a
sympy expression: conditionals become ``Piecewise``, ``max``/``min`` become
``Piecewise``, ``math.f`` the sympy functions. Step functions (floor, ceil, round,
sign) have derivative zero. :func:`to_cpp` prints a (derivative) expression as C++.
"""
import ast
import math
from typing import Callable, Dict, List, Optional

import sympy as sp
from sympy.printing.cxx import CXX11CodePrinter


class NotDifferentiable(ValueError):
    """The expression uses something symbolic differentiation does not handle."""


def _step(name: str, cxx: str) -> type:
    """A sympy function with derivative zero, printed as C++ ``cxx(arg)``."""

    def fdiff(self, argindex=1):
        return sp.S.Zero

    return type(name, (sp.Function, ), {"fdiff": fdiff, "_cxx": cxx})


Floor = _step("Floor", "std::floor")
Ceil = _step("Ceil", "std::ceil")
Rint = _step("Rint", "std::rint")
Trunc = _step("Trunc", "std::trunc")

_UNARY: Dict[str, Callable] = {
    "exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan,
    "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh, "tanh": sp.tanh,
    "asinh": sp.asinh, "acosh": sp.acosh, "atanh": sp.atanh, "erf": sp.erf, "fabs": sp.Abs,
    "expm1": lambda x: sp.exp(x) - 1, "log1p": lambda x: sp.log(1 + x), "log10": lambda x: sp.log(x, 10),
    "floor": Floor, "ceil": Ceil, "trunc": Trunc,
}


def _piecewise_max(a, b):
    return sp.Piecewise((a, sp.Ge(a, b)), (b, True))


def _piecewise_min(a, b):
    return sp.Piecewise((a, sp.Le(a, b)), (b, True))


def _as_condition(x):
    if isinstance(x, (sp.logic.boolalg.Boolean, sp.core.relational.Relational)) or x in (sp.true, sp.false):
        return x
    return sp.Ne(x, 0)


_TYPE_TESTS = ("is_float", "is_signed", "is_unsigned", "is_bool")


def _numeric(x):
    """A relational used as a number (``(x > 0) - (x < 0)``) is 1 or 0."""
    if isinstance(x, (sp.core.relational.Relational, sp.logic.boolalg.Boolean)) and not isinstance(x, sp.Symbol):
        if x == sp.true:
            return sp.Integer(1)
        if x == sp.false:
            return sp.Integer(0)
        return sp.Piecewise((1, x), (0, True))
    return x


class _Converter(ast.NodeVisitor):

    def __init__(self, names: Dict[str, object], variadic: Dict[str, List[sp.Expr]],
                 type_test: Optional[Callable[[str, str], bool]]):
        self.names = names
        self.variadic = variadic
        self.type_test = type_test

    def generic_visit(self, node):
        raise NotDifferentiable(f"cannot differentiate {ast.unparse(node)!r}")

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            return sp.true if v else sp.false
        if isinstance(v, int):
            return sp.Integer(v)
        if isinstance(v, float):
            if math.isinf(v):
                return sp.oo if v > 0 else -sp.oo
            if math.isnan(v):
                return sp.nan
            return sp.Float(v, 17)
        if isinstance(v, str):
            return v  # compared with string attributes only
        raise NotDifferentiable(f"constant {v!r}")

    def visit_Name(self, node):
        if node.id in self.names:
            value = self.names[node.id]
            if isinstance(value, bool):
                return sp.true if value else sp.false
            if isinstance(value, int):
                return sp.Integer(value)
            if isinstance(value, float):
                return self.visit_Constant(ast.Constant(value))
            return value  # a sympy expression, or a string attribute (compared with ==)
        raise NotDifferentiable(f"unknown name {node.id!r}")

    def visit_BinOp(self, node):
        a, b = _numeric(self.visit(node.left)), _numeric(self.visit(node.right))
        op = type(node.op)
        if op is ast.Add:
            return a + b
        if op is ast.Sub:
            return a - b
        if op is ast.Mult:
            return a * b
        if op is ast.Div:
            return a / b
        if op is ast.Pow:
            return a**b
        raise NotDifferentiable(f"operator {type(node.op).__name__} in {ast.unparse(node)!r}")

    def visit_UnaryOp(self, node):
        x = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -x
        if isinstance(node.op, ast.UAdd):
            return x
        if isinstance(node.op, ast.Not):
            return sp.Not(_as_condition(x))
        raise NotDifferentiable(f"operator in {ast.unparse(node)!r}")

    def visit_Compare(self, node):
        ops = {ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt, ast.GtE: sp.Ge, ast.Eq: sp.Eq, ast.NotEq: sp.Ne}
        left = self.visit(node.left)
        terms = []
        for op, right in zip(node.ops, node.comparators):
            r = self.visit(right)
            if isinstance(left, str) or isinstance(r, str):  # string attributes: known now
                if type(op) not in (ast.Eq, ast.NotEq):
                    raise NotDifferentiable(f"comparison in {ast.unparse(node)!r}")
                terms.append(sp.true if (left == r) == isinstance(op, ast.Eq) else sp.false)
                left = r
                continue
            if type(op) not in ops:
                raise NotDifferentiable(f"comparison in {ast.unparse(node)!r}")
            terms.append(ops[type(op)](left, r))
            left = r
        return terms[0] if len(terms) == 1 else sp.And(*terms)

    def visit_BoolOp(self, node):
        values = [_as_condition(self.visit(v)) for v in node.values]
        return sp.And(*values) if isinstance(node.op, ast.And) else sp.Or(*values)

    def visit_IfExp(self, node):
        test = _as_condition(self.visit(node.test))
        if test == sp.true:
            return self.visit(node.body)
        if test == sp.false:
            return self.visit(node.orelse)
        return sp.Piecewise((_numeric(self.visit(node.body)), test), (_numeric(self.visit(node.orelse)), True))

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math":
            name = func.attr
            args = [self.visit(a) for a in node.args]
            if name in _UNARY and len(args) == 1:
                return _UNARY[name](args[0])
            if name == "pow" and len(args) == 2:
                return args[0]**args[1]
            raise NotDifferentiable(f"math.{name}")
        if isinstance(func, ast.Name) and func.id in _TYPE_TESTS and self.type_test is not None:
            if len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
                raise NotDifferentiable(f"{func.id}() takes one input name")
            return sp.true if self.type_test(func.id, node.args[0].id) else sp.false
        if isinstance(func, ast.Name):
            name = func.id
            if name in ("sum", "max", "min", "len") and len(node.args) == 1 and \
                    isinstance(node.args[0], ast.Name) and node.args[0].id in self.variadic:
                values = self.variadic[node.args[0].id]
                if name == "len":
                    return sp.Integer(len(values))
                if name == "sum":
                    return sp.Add(*values)
                result = values[0]
                for v in values[1:]:
                    result = (_piecewise_max if name == "max" else _piecewise_min)(result, v)
                return result
            args = [self.visit(a) for a in node.args]
            if name == "abs" and len(args) == 1:
                return sp.Abs(args[0])
            if name == "round" and len(args) == 1:
                return Rint(args[0])
            if name in ("max", "min") and len(args) == 2:
                return (_piecewise_max if name == "max" else _piecewise_min)(*args)
        raise NotDifferentiable(f"call {ast.unparse(node)!r}")


def to_sympy(tree: ast.expr, names: Dict[str, object], variadic: Optional[Dict[str, List[sp.Expr]]] = None,
             type_test: Optional[Callable[[str, str], bool]] = None) -> sp.Expr:
    """The sympy expression of ``tree``. ``names`` maps the names it uses to symbols or
    constants (numbers, strings), ``variadic`` a variadic input's name to its symbols (for
    ``sum``/``max``/``min``/``len``); ``type_test(test, name)`` answers ``is_float(name)`` etc.
    Conditionals on constants are decided here, so an untaken branch may hold anything."""
    return _numeric(_Converter(names, variadic or {}, type_test).visit(tree))


def derivative(expr: sp.Expr, symbol: sp.Symbol) -> sp.Expr:
    d = sp.diff(expr, symbol)
    if d.has(sp.Derivative) or d.has(sp.Subs):
        raise NotDifferentiable(f"sympy left {d} unevaluated")
    return d


class _Printer(CXX11CodePrinter):
    #: print constants as float literals (a float32 derivative computed in float, vectorized)
    single = False

    def _literal(self, value: float) -> str:
        return f"{value!r}f" if self.single and math.isfinite(value) else repr(value)

    def _print_Integer(self, expr):
        return f"{int(expr)}.0f" if self.single and abs(int(expr)) < 2**24 else super()._print_Integer(expr)

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and 2 <= int(exp) <= 4:  # a product: exact, and no pow() call
            b = self.parenthesize(base, 1000)
            return "(" + "*".join([b] * int(exp)) + ")"
        return super()._print_Pow(expr)

    def _print_Function(self, expr):
        cxx = getattr(type(expr), "_cxx", None)
        if cxx is not None:
            return f"{cxx}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Function(expr)

    def _print_Float(self, expr):
        return self._literal(float(expr))

    def _print_Pi(self, expr):
        return self._literal(math.pi)

    def _print_Exp1(self, expr):
        return self._literal(math.e)

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return f"({'float' if self.single else 'double'})(({x} > 0) - ({x} < 0))"

    def _print_Infinity(self, expr):
        return "__builtin_inf()"

    def _print_NegativeInfinity(self, expr):
        return "(-__builtin_inf())"

    def _print_Rational(self, expr):
        suffix = "f" if self.single else ""
        return f"({expr.p}.0{suffix} / {expr.q}.0{suffix})"

    def _print_BooleanTrue(self, expr):
        return "true"

    def _print_BooleanFalse(self, expr):
        return "false"


def to_cpp(expr: sp.Expr, single: bool = False) -> str:
    """C++ text of ``expr`` (Piecewise as nested ``?:``, constants as double literals, or as
    float literals with ``single``: then a float expression stays float, as PyTorch computes
    float32 gradients)."""
    expr = expr.subs({sp.sqrt(2): sp.Float(math.sqrt(2), 17), sp.pi: sp.Float(math.pi, 17)})
    printer = _Printer()
    printer.single = single
    return " ".join(printer.doprint(expr).split())
