"""Elementwise ops (daceml/onnx/ops/elementwise.py) against onnxruntime.

Each test builds one model of many nodes, so that one compile checks many ops; outputs
of ops onnxruntime lacks for a dtype are checked against numpy.
"""
import math

import numpy as np
import onnx
import pytest
from onnx import helper

from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model, run_onnxruntime

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def _softplus(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))


def F32(value):
    """A float attribute's value as ONNX stores it (float32)."""
    return float(np.float32(value))


LEAKY_RELU_ALPHA, HARD_SIGMOID_ALPHA = F32(0.01), F32(0.2)  # the ONNX defaults, as float32

#: numpy references of ops that onnxruntime lacks for some dtypes (inputs, attributes -> output)
REFERENCE = {
    "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh,
    "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh, "Erf": _erf, "Sign": np.sign,
    "Softplus": _softplus, "Softsign": lambda x: x / (1 + np.abs(x)),
    "Mish": lambda x: x * np.tanh(_softplus(x)),
    "LeakyRelu": lambda x, alpha=LEAKY_RELU_ALPHA: np.where(x >= 0, x, alpha * x),
    "Elu": lambda x, alpha=1.0: np.where(x >= 0, x, alpha * np.expm1(x)),
    "Selu": lambda x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875:
        gamma * np.where(x > 0, x, alpha * np.expm1(x)),
    "Gelu": lambda x, approximate="none": (
        0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))) if approximate == "tanh"
        else 0.5 * x * (1 + _erf(x / np.sqrt(2)))),
    "HardSigmoid": lambda x, alpha=HARD_SIGMOID_ALPHA, beta=0.5: np.clip(alpha * x + beta, 0, 1),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "ThresholdedRelu": lambda x, alpha=1.0: np.where(x > alpha, x, 0),
    "PRelu": lambda x, slope: np.where(x >= 0, x, slope * x),
    "Relu": lambda x: np.where(x < 0, 0, x),
    "Mean": lambda *xs: sum(xs) / len(xs),
    "Max": lambda *xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
    "Min": lambda *xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
    "Pow": lambda x, y: np.power(x.astype(np.float64), y).astype(x.dtype),
    "Mod": lambda a, b, fmod=0: np.fmod(a, b) if fmod else np.mod(a, b),
    "Neg": np.negative, "Abs": np.abs,
    "Where": np.where,
}


class Graph:
    """Collects nodes; each node's output becomes a graph output. Ops in ``numpy_ops``
    (those onnxruntime lacks for the dtype tested) are checked against :data:`REFERENCE`."""

    def __init__(self, values, numpy_ops=()):
        self.values = values
        self.numpy_ops = set(numpy_ops)
        self.nodes = []
        self.outputs = []
        self.numpy_only = {}  # output -> expected value

    def add(self, op, inputs, n_outputs=1, expected=None, **attrs):
        name = f"{op}_{len(self.nodes)}"
        outs = [f"{name}_out{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        self.outputs += outs
        if expected is None and op in self.numpy_ops:
            args = [self.values[i] for i in inputs]
            attrs = {k: F32(v) if isinstance(v, float) else v for k, v in attrs.items()}
            with np.errstate(all="ignore"):
                expected = np.asarray(REFERENCE[op](*args, **attrs)).astype(args[-1].dtype)
        if expected is not None:
            for out, value in zip(outs, expected if isinstance(expected, tuple) else (expected, )):
                if value is not None:
                    self.numpy_only[out] = value
        return outs[0]


def check(graph, inputs, initializers=None, opset=20, rtol=1e-5, atol=1e-5):
    """Runs the graph with daceml once; compares with onnxruntime (and numpy where given)."""
    model = make_model(graph.nodes, inputs, graph.outputs, initializers, opset=opset)
    got = ONNXModel(model)(**inputs)
    got = dict(zip(graph.outputs, got if isinstance(got, tuple) else [got]))
    ort_nodes = [n for n in graph.nodes if n.output[0] not in graph.numpy_only]
    ort_outputs = [o for n in ort_nodes for o in n.output]
    expected = dict(zip(ort_outputs, run_onnxruntime(
        make_model(ort_nodes, inputs, ort_outputs, initializers, opset=opset), inputs)))
    expected.update(graph.numpy_only)
    failures = []
    for node in graph.nodes:
        for out in node.output:
            g, e = np.asarray(got[out]), np.asarray(expected[out])
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            what = f"{node.op_type} ({node.name}, {out}, {attrs})"
            try:
                assert g.shape == e.shape, f"shape {g.shape} != {e.shape}"
                assert g.dtype == e.dtype, f"dtype {g.dtype} != {e.dtype}"
                if np.issubdtype(e.dtype, np.floating):
                    np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)
                else:
                    np.testing.assert_array_equal(g, e)
            except AssertionError as ex:
                failures.append(f"{what}: {ex}")
    assert not failures, f"{len(failures)} output(s) differ:\n" + "\n".join(failures)


#: float ops without an onnxruntime kernel for the dtype (onnxruntime 1.32, CPU)
ORT_LACKS = {
    np.float64: ("Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Erf LeakyRelu Elu Selu Gelu HardSigmoid "
                 "HardSwish Softplus Softsign Mish ThresholdedRelu Mean PRelu").split(),
    np.float16: ["Sign"],  # onnxruntime's float16 Sign gives 0 for NaN (its float32 Sign, and numpy, NaN)
}
FLOAT_TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13), np.float16: (2e-3, 1e-3)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_ops(dtype):
    rng = np.random.default_rng(0)
    shape = (3, 4)

    def rand(low, high, shape=shape):
        return rng.uniform(low, high, shape).astype(dtype)

    x = rand(-0.9, 0.9)
    z = x.copy()
    z[0, :2] += dtype(0.5)
    inputs = {
        "x": x,  # in (-1, 1)
        "z": z,  # x with some elements changed (Equal)
        "p": rand(0.5, 3),  # positive
        "q": rand(1.1, 3),  # > 1 (Acosh)
        "w": rand(-3, 3, (3, 1)),
        "y": rand(0.5, 2, (4, )),
        "big": np.array([-100, -20, -1, 0, 1, 20, 60, 100], dtype),
        "halves": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.49, -3.7], dtype),
        "special": np.array([np.nan, np.inf, -np.inf, 0, -0.0, 1, -1, 3.5], dtype),
        "c": rng.uniform(0, 1, shape) > 0.5,
        "d": rng.uniform(0, 1, (4, )) > 0.5,
    }
    inits = {"lo": np.array(-0.3, dtype), "hi": np.array(0.4, dtype), "slope": rand(0.1, 0.5, (4, )),
             "train": np.array(False)}
    g = Graph({**inputs, **inits}, numpy_ops=ORT_LACKS.get(dtype, ()))
    for op in ("Abs Neg Exp Sin Cos Tan Asin Acos Atan Sinh Cosh Tanh Asinh Atanh Erf Sign Relu Sigmoid "
               "Softsign Mish HardSwish Identity Softplus").split():
        g.add(op, ["x"])
    for op in "Log Sqrt Reciprocal".split():
        g.add(op, ["p"])
    g.add("Acosh", ["q"])
    for op in "Floor Ceil Round".split():
        g.add(op, ["halves"])
    for op in "Softplus Sigmoid Mish Exp Tanh".split():
        g.add(op, ["big"])
    for op in "IsNaN IsInf Sign Abs Neg Relu Floor Max".split():
        g.add(op, ["special"])
    g.add("IsInf", ["special"], detect_negative=0)
    g.add("IsInf", ["special"], detect_positive=0)
    g.add("LeakyRelu", ["x"], alpha=0.2)
    g.add("LeakyRelu", ["x"])
    g.add("Elu", ["x"], alpha=0.5)
    g.add("Selu", ["x"])
    g.add("Selu", ["x"], alpha=1.5, gamma=2.0)
    if dtype == np.float32:  # Celu is float32-only
        g.add("Celu", ["x"], alpha=2.0)
    g.add("Gelu", ["x"])
    g.add("Gelu", ["x"], approximate="tanh")
    g.add("HardSigmoid", ["w"])
    g.add("HardSigmoid", ["w"], alpha=0.3, beta=0.4)
    g.add("ThresholdedRelu", ["x"], alpha=0.5)
    g.add("PRelu", ["x", "slope"])
    for op in "Add Sub Mul Div".split():
        g.add(op, ["x", "y"])
    g.add("Pow", ["p", "y"])
    g.add("Pow", ["x", "w"] if dtype != np.float16 else ["p", "y"])  # negative bases: NaN unless integral
    g.add("Mod", ["x", "w"], fmod=1)
    for op in "Equal Less Greater LessOrEqual GreaterOrEqual".split():
        g.add(op, ["x", "z"])
        g.add(op, ["x", "w"])
    for op in "Sum Mean Max Min".split():
        g.add(op, ["x", "y", "w"])
        g.add(op, ["w"])
    g.add("Max", ["special", "special"])
    g.add("Where", ["c", "x", "w"])
    g.add("Where", ["d", "w", "y"])
    g.add("Clip", ["x"])
    g.add("Clip", ["x", "lo"])
    g.add("Clip", ["x", "", "hi"])
    g.add("Clip", ["x", "lo", "hi"])
    g.add("Clip", ["x", "hi", "lo"])  # min > max: everything is max
    g.add("Dropout", ["x"])
    g.add("Dropout", ["x", "", "train"], n_outputs=2)
    if dtype == np.float16:  # conversions at the edges: largest, subnormal, overflow, underflow
        inputs["edge"] = np.array([65504, -65504, 6e-8, -3e-6, 6.1e-5, 1e-3, 300, 0.1], dtype)
        for op in ("Neg", "Abs", "Identity", "Sqrt"):
            g.add(op, ["edge"] if op != "Sqrt" else ["p"])
        g.add("Add", ["edge", "edge"])  # 2 * 65504 -> inf
        g.add("Mul", ["edge", "edge"])  # 6e-8 ** 2 -> 0
        g.add("Div", ["edge", "big"])
    if dtype == np.float32:
        g.add("Not", ["c"])
        for op in "And Or Xor Equal".split():
            g.add(op, ["c", "d"])
        g.add("Where", ["c", "c", "d"], expected=np.where(inputs["c"], inputs["c"], inputs["d"]))
    rtol, atol = FLOAT_TOLERANCE[dtype]
    check(g, inputs, inits, rtol=rtol, atol=atol)


#: integer ops without an onnxruntime kernel for the dtype (onnxruntime 1.32, CPU)
ORT_LACKS_INT = {
    np.int64: ["Relu", "PRelu"],
    np.int32: ["PRelu"],
    np.uint64: ["Where", "PRelu"],
}


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_ops(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    signed = info.min < 0
    x = rng.integers(max(info.min, -100), min(info.max, 100), (3, 4), endpoint=True).astype(dtype)
    x[0, 0], x[0, 1] = info.min, info.max
    y = rng.integers(1, 9, (4, )).astype(dtype)
    if signed:
        y[::2] = -y[::2]  # negative divisors
    inputs = {"x": x, "y": y, "w": rng.integers(0 if not signed else -20, 20, (3, 1)).astype(dtype),
              "e": rng.integers(0, 5, (3, 4)).astype(dtype),
              "k": np.array([-2, -1, 2, 3] if signed else [0, 1, 2, 3], dtype), "c": rng.uniform(0, 1, (3, 4)) > 0.5}
    inits = {"lo": np.array(-7 if signed else 3, dtype), "hi": np.array(60, dtype)}
    g = Graph({**inputs, **inits}, numpy_ops=ORT_LACKS_INT.get(dtype, ()))
    for op in ("Abs Sign Identity Clip" + (" Neg" if signed else "")).split():
        g.add(op, ["x"])
    for op in "Add Sub Mul Div Equal Less Greater LessOrEqual GreaterOrEqual Max Min".split():
        g.add(op, ["x", "y"])
    g.add("Mod", ["x", "y"])
    g.add("Mod", ["x", "y"], fmod=1)
    g.add("Max", ["x", "y", "w"])
    g.add("Min", ["w", "x", "y"])
    g.add("Clip", ["x", "lo", "hi"])
    g.add("Clip", ["x", "lo"])
    g.add("Where", ["c", "x", "w"])
    if dtype in (np.int8, np.int32, np.int64):
        g.add("Relu", ["x"])
    if dtype in (np.int32, np.int64, np.uint64):
        g.add("PRelu", ["x", "y"])
    if dtype in (np.int32, np.int64):
        g.add("Pow", ["w", "e"])
        g.add("Pow", ["y", "k"])  # negative exponents: 1 / y**-k truncated toward zero, as in onnxruntime
    if not signed:
        g.add("BitShift", ["x", "e"], direction="LEFT")
        g.add("BitShift", ["x", "e"], direction="RIGHT")
    check(g, inputs, inits)


def test_older_opsets():
    """Attributes where newer opsets have inputs (Clip-6, Dropout-10), and other old versions."""
    rng = np.random.default_rng(2)
    inputs = {"x": rng.uniform(-2, 2, (2, 5)).astype(np.float32),
              "s": np.array([np.inf, -np.inf, np.nan, 1, -1], np.float32),
              "i": rng.integers(-9, 9, (2, 5)).astype(np.int32), "j": np.array([3, -4, 5, -6, 7], np.int32)}
    g = Graph(inputs)
    g.add("Clip", ["x"], min=-0.5, max=0.25)
    g.add("Clip", ["x"], min=0.1)
    g.add("Clip", ["x"])
    # the mask of inference-mode Dropout is all true (ONNX reference); onnxruntime's Dropout-10 gives false
    g.add("Dropout", ["x"], n_outputs=2, ratio=0.3, expected=(inputs["x"], np.ones((2, 5), bool)))
    g.add("IsInf", ["s"], detect_negative=0)
    g.add("LeakyRelu", ["x"], alpha=0.3)
    g.add("Selu", ["x"])
    g.add("Max", ["x", "x"])
    g.add("Sum", ["x"])
    g.add("Mean", ["x", "x", "x"])
    g.add("Mod", ["i", "j"])
    g.add("Div", ["i", "j"])
    g.add("Sign", ["x"])
    check(g, inputs, opset=10)


def test_symbolic_shapes_and_scalars():
    """Named dims stay symbolic (one build, two sizes); rank-0 inputs and outputs broadcast."""
    f = onnx.TensorProto.FLOAT
    graph_inputs = [helper.make_tensor_value_info("x", f, ["N", 4]), helper.make_tensor_value_info("s", f, []),
                    helper.make_tensor_value_info("y", f, [1, 4]),
                    helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, ["N", 1])]
    nodes = [helper.make_node("Add", ["x", "s"], ["add"]), helper.make_node("Mul", ["s", "s"], ["scalar"]),
             helper.make_node("Where", ["c", "x", "s"], ["where"]), helper.make_node("Max", ["x", "y", "s"], ["max"]),
             helper.make_node("Clip", ["x", "s"], ["clip"]), helper.make_node("Sigmoid", ["x"], ["sigmoid"])]
    outputs = ["add", "scalar", "where", "max", "clip", "sigmoid"]
    graph = helper.make_graph(nodes, "symbolic", graph_inputs,
                              [helper.make_empty_tensor_value_info(o) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dm = ONNXModel(model)
    rng = np.random.default_rng(3)
    for n in (5, 2):
        inputs = {"x": rng.standard_normal((n, 4)).astype(np.float32), "s": np.array(0.25, np.float32),
                  "y": rng.standard_normal((1, 4)).astype(np.float32), "c": rng.uniform(0, 1, (n, 1)) > 0.5}
        got = dm(**inputs)
        expected = run_onnxruntime(model, inputs)
        for name, g, e in zip(outputs, got, expected):
            assert np.asarray(g).shape == e.shape, name
            np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7, err_msg=name)


def _dropout_model(train_as_input: bool):
    x = np.ones((2, 3), np.float32)
    inputs = {"x": x, "train": np.array(True)} if train_as_input else {"x": x}
    inits = None if train_as_input else {"train": np.array(True)}
    node = helper.make_node("Dropout", ["x", "", "train"], ["out"], name="my_dropout")
    return make_model([node], inputs, ["out"], inits)


@pytest.mark.parametrize("train_as_input", [False, True])
def test_dropout_training_mode_is_refused(train_as_input):
    with pytest.raises(UnsupportedOpsError) as info:
        ONNXModel(_dropout_model(train_as_input))
    message = str(info.value)
    assert "my_dropout" in message and "training_mode" in message
    assert ("not a constant" in message) == train_as_input


def test_every_documented_op_is_registered():
    from daceml.onnx.ops import elementwise, registry
    doc = elementwise.__doc__.split("Each op is")[0]
    words = doc.replace(",", " ").split()
    ops = [w for w in words if w[:1].isupper() and w.isalpha() and w not in ("Ops", "Elementwise")]
    missing = [op for op in ops if "pure" not in registry.implementations(op)]
    assert not missing
    assert len(ops) > 60
