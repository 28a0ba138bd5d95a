"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting, comparisons,
logic, activations.

Ops: Abs Neg Exp Log Sqrt Reciprocal Relu Sigmoid Tanh Erf Floor Ceil Sign
Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Softplus Softsign
LeakyRelu Elu Selu Celu HardSigmoid HardSwish ThresholdedRelu Mish Gelu
Add Sub Mul Div Pow Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Not
Where Max Min Sum Mean Identity Dropout (inference) PRelu.

Each op is a two-line function decorated with :func:`elementwise`: its parameter
names are the ONNX input names (and attribute names, read from the node), and its
single ``return`` expression becomes the body of a DaCe tasklet inside a map over
the output. Inputs broadcast the numpy way.
"""
import ast
import inspect
import textwrap
from typing import Callable, Dict, List, Optional

import dace

from daceml.onnx.dtypes import is_float
from daceml.onnx.ops.common import broadcast_index, full_index, map_ranges, nested_sdfg
from daceml.onnx.ops.registry import Implementation, op_implementation

#: names usable inside elementwise expressions besides inputs and attributes
_MATH = {"math", "max", "min", "abs", "float", "int", "bool", "dace"}


class _Rename(ast.NodeTransformer):

    def __init__(self, mapping: Dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node: ast.Name):
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node


def _return_expression(func: Callable) -> ast.expr:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    fdef = tree.body[0]
    body = [s for s in fdef.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Return):
        raise TypeError(f"elementwise op function {func.__name__} must consist of one return statement")
    return body[0].value


def _literal(value) -> str:
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else f"float({str(value)!r})"
    return repr(value)


def elementwise(op: str, name: str = "pure", output: str = "", why_not: Optional[Callable] = None,
                float_only: bool = False):
    """Registers a pure elementwise implementation of ``op`` from a one-expression function.

    Parameters of the function that are inputs of the op become tasklet inputs;
    the others are attributes of the node, substituted as constants.
    """

    def decorator(func: Callable) -> Callable:
        expr = _return_expression(func)
        params = list(inspect.signature(func).parameters)

        class ElementwiseImplementation(Implementation):
            __doc__ = f"{op}: elementwise `{ast.unparse(expr)}` in one map over the output."

            @staticmethod
            def why_not_(node, state, sdfg):
                inputs = {p.name for p in node.schema.inputs}
                for p in params:
                    if p not in inputs and p not in node.schema.attributes:
                        return f"{op} has no input or attribute {p!r}"
                outputs = node.output_connectors()
                if len(outputs) != 1 and not output:
                    return f"elementwise implementations write one output, the node has {outputs}"
                if float_only:
                    for c in node.input_connectors():
                        if not is_float(node.in_desc(state, sdfg, c).dtype):
                            return f"input {c!r} is {node.in_desc(state, sdfg, c).dtype}, this expression needs floats"
                return why_not(node, state, sdfg) if why_not is not None else None

            why_not = staticmethod(why_not_)

            @staticmethod
            def expansion(node, state, sdfg):
                return expand_elementwise(node, state, sdfg, expr, params, output)

        ElementwiseImplementation.__name__ = ElementwiseImplementation.__qualname__ = f"Elementwise{op}"
        op_implementation(op, name)(ElementwiseImplementation)
        func.implementation = ElementwiseImplementation
        return func

    return decorator


def expand_elementwise(node, state, sdfg, expr: ast.expr, params: List[str], output: str = "") -> dace.SDFG:
    nsdfg, nstate, descs = nested_sdfg(node, state, sdfg)
    out_conn = output or node.output_connectors()[0]
    out_desc = descs[out_conn]
    out_shape = tuple(out_desc.shape)
    ranges = map_ranges(out_shape)
    idx = list(ranges)
    present = set(node.input_connectors())
    rename: Dict[str, str] = {}
    inputs = {}
    for p in params:
        if p in present:
            rename[p] = f"__in_{p}"
            inputs[f"__in_{p}"] = dace.Memlet(
                f"{p}[{broadcast_index(descs[p].shape, len(out_shape), idx)}]")
        elif p in node.schema.attributes:
            value = getattr(node, p)
            rename[p] = _literal(value)
    body = _Rename({k: v for k, v in rename.items() if k in present})
    code_expr = body.visit(ast.parse(ast.unparse(expr), mode="eval")).body
    code = ast.unparse(code_expr)
    for p, literal in rename.items():
        if p not in present:
            code = ast.unparse(_Rename({p: f"__attr_{p}"}).visit(ast.parse(code, mode="eval")).body)
            code = code.replace(f"__attr_{p}", literal)
    nstate.add_mapped_tasklet(
        f"{node.label}_{node.schema.name}",
        ranges,
        inputs=inputs,
        code=f"__out = {code}",
        outputs={"__out": dace.Memlet(f"{out_conn}[{full_index(out_shape, idx)}]")},
        external_edges=True,
    )
    return nsdfg


# --- unary math -------------------------------------------------------------------------------

@elementwise("Abs")
def abs_(X):
    return abs(X)


@elementwise("Neg")
def neg(X):
    return -X


@elementwise("Exp", float_only=True)
def exp(input):
    return math.exp(input)


@elementwise("Log", float_only=True)
def log(input):
    return math.log(input)


@elementwise("Sqrt", float_only=True)
def sqrt(X):
    return math.sqrt(X)


@elementwise("Reciprocal", float_only=True)
def reciprocal(X):
    return 1 / X


@elementwise("Relu")
def relu(X):
    return X if X > 0 else X * 0


@elementwise("Sigmoid", float_only=True)
def sigmoid(X):
    return 1 / (1 + math.exp(-X))


@elementwise("Tanh", float_only=True)
def tanh(input):
    return math.tanh(input)


@elementwise("Erf", float_only=True)
def erf(input):
    return math.erf(input)


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


@elementwise("Div", float_only=True)
def div(A, B):
    return A / B


@elementwise("Pow", float_only=True)
def pow_(X, Y):
    return math.pow(X, Y)


@elementwise("Identity")
def identity(input):
    return input
