"""Reductions, ArgMax/ArgMin and CumSum (daceml/onnx/ops/reduction.py) against onnxruntime.

One model of many nodes per test, so that one compile checks many ops and variants;
outputs of ops onnxruntime lacks for a dtype are checked against numpy.
"""
import dace
import numpy as np
import onnx
import pytest
from onnx import helper

from daceml import config
from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model, run_onnxruntime

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _pure_only():
    """Every node through its pure implementation: no onnxruntime fallback."""
    with config.patch(allow_onnxruntime_fallback=False):
        yield

REDUCE_OPS = ("ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
              "ReduceLogSumExp ReduceSumSquare").split()


class Graph:
    """Collects nodes (each output a graph output) and constant initializers."""

    def __init__(self):
        self.nodes, self.outputs, self.inits, self.expected = [], [], {}, {}

    def const(self, value, dtype=np.int64):
        name = f"const_{len(self.inits)}"
        self.inits[name] = np.array(value, dtype)
        return name

    def add(self, op, inputs, expected=None, **attrs):
        name = f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, **attrs))
        self.outputs.append(name + "_out")
        if expected is not None:
            self.expected[name + "_out"] = expected

    def reduce(self, op, x, axes=None, opset=18, expected=None, **attrs):
        """A ReduceX node; ``axes`` as an input from opset 18 (13 for ReduceSum), else an attribute."""
        if axes is None:
            self.add(op, [x], expected, **attrs)
        elif opset >= 18 or (op == "ReduceSum" and opset >= 13):
            self.add(op, [x, self.const(axes)], expected, **attrs)
        else:
            self.add(op, [x], expected, axes=axes, **attrs)


def check(g, inputs, opset=18, rtol=1e-5, atol=1e-6):
    model = make_model(g.nodes, inputs, g.outputs, g.inits, opset=opset)
    got = ONNXModel(model)(**inputs)
    got = dict(zip(g.outputs, got if isinstance(got, tuple) else [got]))
    ort_nodes = [n for n in g.nodes if n.output[0] not in g.expected]
    ort_outs = [n.output[0] for n in ort_nodes]
    expected = dict(zip(ort_outs, run_onnxruntime(make_model(ort_nodes, inputs, ort_outs, g.inits, opset=opset),
                                                  inputs)))
    expected.update(g.expected)
    failures = []
    for node in g.nodes:
        out = node.output[0]
        got_, exp = np.asarray(got[out]), np.asarray(expected[out])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        consts = {i: g.inits[i].tolist() for i in node.input if i in g.inits}
        try:
            assert got_.shape == exp.shape, f"shape {got_.shape} != {exp.shape}"
            assert got_.dtype == exp.dtype, f"dtype {got_.dtype} != {exp.dtype}"
            if np.issubdtype(exp.dtype, np.floating):
                np.testing.assert_allclose(got_.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(got_, exp)
        except AssertionError as ex:
            failures.append(f"{node.op_type} {node.name} {attrs} {consts}: {ex}")
    assert not failures, f"{len(failures)} output(s) differ:\n" + "\n".join(failures)


def _int_logsumexp(v, axes, keepdims=1):
    """Integer ReduceLogSumExp: the exact value truncated toward zero (onnxruntime instead
    sums exp(v - max) in the integer type, which makes it max + log(count of maxima));
    integer types were dropped from the op in opset 28."""
    exact = np.log(np.exp(v.astype(np.float64)).sum(axis=tuple(axes), keepdims=bool(keepdims)))
    return np.trunc(exact).astype(v.dtype)


def add_reductions(g, x, positive, opset=18, values=None):
    """Every ReduceX over several axes / keepdims / noop_with_empty_axes variants."""
    for op in REDUCE_OPS:
        data = positive if op == "ReduceLogSum" else x
        if op == "ReduceLogSumExp" and np.issubdtype(values[x].dtype, np.integer):
            v = values[x]
            g.reduce(op, x, [1], opset, expected=_int_logsumexp(v, [1]))
            g.reduce(op, x, [0, -1], opset, keepdims=0, expected=_int_logsumexp(v, [0, 2], 0))
            g.reduce(op, x, None, opset, keepdims=0, expected=_int_logsumexp(v, [0, 1, 2], 0))
            continue
        g.reduce(op, data, [1], opset)
        g.reduce(op, data, [0, -1], opset, keepdims=0)
        g.reduce(op, data, None, opset, keepdims=0)
        g.reduce(op, data, None, opset)
    g.reduce("ReduceSum", x, [], opset, noop_with_empty_axes=1)
    if opset >= 18:
        g.reduce("ReduceSumSquare", x, None, opset, noop_with_empty_axes=1)
    g.reduce("ReduceMax", x, [2, 0, 1], opset, keepdims=1)


def add_arg_and_cumsum(g, x, ties):
    for op in ("ArgMax", "ArgMin"):
        g.add(op, [x])
        g.add(op, [x], axis=-1, keepdims=0)
        g.add(op, [ties], axis=1)
        g.add(op, [ties], axis=1, select_last_index=1)
    for attrs in ({}, {"exclusive": 1}, {"reverse": 1}, {"exclusive": 1, "reverse": 1}):
        g.add("CumSum", [x, g.const(1)], **attrs)
    g.add("CumSum", [x, g.const([-1], np.int32)])
    g.add("CumSum", [x, g.const(0)], reverse=1)


TOLERANCE = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12), np.float16: (3e-3, 3e-3)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_reductions(dtype):
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.uniform(-2, 2, (2, 3, 4)).astype(dtype),
        "p": rng.uniform(0.5, 2, (2, 3, 4)).astype(dtype),
        "ties": np.array([[[1, 3, 3, 0], [2, 2, 2, 2], [0, 5, 1, 5]]] * 2, dtype),
        # exp() of these overflows unless the maximum is subtracted first; -inf rows stay -inf
        "big": np.array([[80, 90, 100], [-1000, -1001, -1002], [-np.inf, -np.inf, -np.inf]], dtype),
    }
    if dtype == np.float16:
        inputs["big"] = np.array([[8, 9, 10], [-100, -101, -102], [-np.inf, -np.inf, -np.inf]], dtype)
    g = Graph()
    add_reductions(g, "x", "p", values=inputs)
    add_arg_and_cumsum(g, "x", "ties")
    g.reduce("ReduceLogSumExp", "big", [1])
    g.reduce("ReduceMax", "big", [1], keepdims=0)
    check(g, inputs, rtol=TOLERANCE[dtype][0], atol=TOLERANCE[dtype][1])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_reductions(dtype):
    rng = np.random.default_rng(1)
    inputs = {"x": rng.integers(-9, 9, (2, 3, 4)).astype(dtype), "p": rng.integers(1, 9, (2, 3, 4)).astype(dtype),
              "ties": np.array([[[1, 3, 3, 0], [2, 2, 2, 2], [0, 5, 1, 5]]] * 2, dtype)}
    g = Graph()
    add_reductions(g, "x", "p", values=inputs)
    add_arg_and_cumsum(g, "x", "ties")
    g.reduce("ReduceL2", "p", [1])
    g.reduce("ReduceLogSumExp", "p", [2], expected=_int_logsumexp(inputs["p"], [2]))
    check(g, inputs)


def test_small_types():
    """int8 / uint8 / bool Max, Min, ArgMax, ArgMin (what onnxruntime has); uint32 / uint64
    sums and products against numpy (onnxruntime has no unsigned reductions)."""
    rng = np.random.default_rng(2)
    inputs = {"i8": rng.integers(-128, 127, (3, 5), endpoint=True).astype(np.int8),
              "u8": rng.integers(0, 255, (3, 5), endpoint=True).astype(np.uint8),
              "b": rng.uniform(0, 1, (3, 5)) > 0.7,
              "u32": rng.integers(0, 2**32 - 1, (3, 5), endpoint=True).astype(np.uint32),
              "u64": rng.integers(0, 2**63, (3, 5)).astype(np.uint64) * np.uint64(2)}
    g = Graph()
    for x in ("i8", "u8", "b"):
        for op in ("ReduceMax", "ReduceMin"):
            g.reduce(op, x, [1], opset=20)
            g.reduce(op, x, None, opset=20, keepdims=0)
        if x != "b":
            g.add("ArgMax", [x], axis=1)
            g.add("ArgMin", [x], axis=0, keepdims=0)
    with np.errstate(over="ignore"):  # unsigned sums and products wrap around
        for x in ("u32", "u64"):
            v = inputs[x]
            g.reduce("ReduceSum", x, [1], opset=20, expected=v.sum(axis=1, keepdims=True, dtype=v.dtype))
            g.reduce("ReduceProd", x, [0], opset=20, keepdims=0, expected=v.prod(axis=0, dtype=v.dtype))
            g.reduce("ReduceMax", x, None, opset=20, keepdims=0, expected=v.max())
            g.add("CumSum", [x, g.const(1)], expected=v.cumsum(axis=1, dtype=v.dtype))
    check(g, inputs, opset=20)


def test_axes_attribute_opset13():
    """Opset 13: axes an attribute (ReduceMean, ReduceMax, ...) but an input of ReduceSum."""
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((3, 4, 2)).astype(np.float32),
              "p": rng.uniform(0.5, 2, (3, 4, 2)).astype(np.float32)}
    g = Graph()
    add_reductions(g, "x", "p", opset=13, values=inputs)
    check(g, inputs, opset=13)


def test_symbolic_dims():
    """Reductions over a symbolic dim and beside it; one build serves two sizes."""
    f = onnx.TensorProto.FLOAT
    g = Graph()
    g.reduce("ReduceSum", "x", [0])
    g.reduce("ReduceMean", "x", [1], keepdims=0)
    g.reduce("ReduceLogSumExp", "x", None, keepdims=0)
    g.add("ArgMax", ["x"], axis=0)
    g.add("CumSum", ["x", g.const(0)], reverse=1)
    graph = helper.make_graph(g.nodes, "symbolic", [helper.make_tensor_value_info("x", f, ["N", 3])],
                              [helper.make_empty_tensor_value_info(o) for o in g.outputs],
                              [onnx.numpy_helper.from_array(v, k) for k, v in g.inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dm = ONNXModel(model)
    rng = np.random.default_rng(4)
    for n in (5, 2):
        inputs = {"x": rng.standard_normal((n, 3)).astype(np.float32)}
        for name, got, exp in zip(g.outputs, dm(**inputs), run_onnxruntime(model, inputs)):
            assert np.asarray(got).shape == exp.shape, name
            np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6, err_msg=name)
    # N = 0: empty reductions give the identity (onnxruntime refuses an empty ArgMax)
    total, mean, logsumexp, argmax, cumsum = dm(x=np.zeros((0, 3), np.float32))
    np.testing.assert_array_equal(total, np.zeros((1, 3), np.float32))
    assert mean.shape == (0, ) and cumsum.shape == (0, 3)
    assert logsumexp == -np.inf
    np.testing.assert_array_equal(argmax, np.zeros((1, 3), np.int64))


def test_runtime_axes():
    """Axes (and CumSum's / CumProd's axis) given as graph inputs, read at run time, with the
    outputs declared: keepdims=1 (the shapes settle the axes), keepdims=0 where the shapes do
    not (the run-time kernel), an empty axes input (known to be empty), integer and float16."""
    f, f16, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT32
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 3, 4)).astype(np.float32),
              "c": rng.uniform(0.5, 2, (3, 3, 2)).astype(np.float32),
              "ci": rng.integers(-9, 9, (3, 3, 2)).astype(np.int32),
              "h": rng.standard_normal((3, 3, 2)).astype(np.float16),
              "a1": np.array([1], np.int64), "a02": np.array([0, -1], np.int64),
              "none": np.zeros((0, ), np.int64), "ax": np.array(-2, np.int64), "ax32": np.array(0, np.int32)}
    nodes, declared = [], {}

    def add(op, ins, shape=None, elem=f, **attrs):
        name = f"{op}_{len(nodes)}"
        nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        declared[name] = (elem, shape)

    add("ReduceSum", ["x", "a1"], [2, 1, 4])
    add("ReduceMean", ["x", "a1"], [2, 4], keepdims=0)
    add("ReduceSumSquare", ["c", "a02"], [1, 3, 1])
    add("ReduceMax", ["c", "a1"], [3, 2], keepdims=0)
    add("ReduceLogSumExp", ["c", "a02"], [3], keepdims=0)
    add("ReduceL2", ["c", "a1"], [3, 2], keepdims=0)
    add("ReduceProd", ["c", "a02"], [3], keepdims=0)
    add("ReduceMean", ["c", "a1"], [3, 2], keepdims=0)
    add("ReduceMin", ["ci", "a1"], [3, 2], i32, keepdims=0)
    add("ReduceSum", ["ci", "a02"], [3], i32, keepdims=0)
    add("ReduceMax", ["h", "a1"], [3, 2], f16, keepdims=0)
    add("ReduceSum", ["x", "none"], [2, 3, 4], noop_with_empty_axes=1)
    add("ReduceSum", ["x", "none"], [1, 1, 1])
    add("CumSum", ["x", "ax"], [2, 3, 4])
    add("CumSum", ["ci", "ax32"], [3, 3, 2], i32, reverse=1, exclusive=1)
    add("CumProd", ["c", "ax"], [3, 3, 2], reverse=1)
    add("CumProd", ["c", "ax32"], [3, 3, 2], exclusive=1)
    graph = helper.make_graph(
        nodes, "runtime_axes",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, *v) for k, v in declared.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    model.ir_version = 10
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    got = ONNXModel(model)(**inputs)
    failures = []
    for name, g, e in zip(declared, got, run_onnxruntime(model, inputs)):
        try:
            assert np.asarray(g).shape == e.shape and np.asarray(g).dtype == e.dtype, (np.asarray(g).shape, e.shape)
            np.testing.assert_allclose(np.asarray(g, np.float64), e.astype(np.float64), rtol=2e-3 if
                                       e.dtype == np.float16 else 1e-5, atol=1e-6)
        except AssertionError as ex:
            failures.append(f"{name}: {ex}")
    assert not failures, "\n".join(failures)


def test_runtime_axes_with_unknown_output_size_is_refused():
    """Run-time axes and an output whose dims the model names but no input defines: refused at
    import, naming the node and the output."""
    f = onnx.TensorProto.FLOAT
    node = helper.make_node("ReduceSum", ["x", "axes"], ["out"], name="my_sum", keepdims=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", f, [2, 3]),
                                            helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("out", f, ["m"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    with pytest.raises(UnsupportedOpsError) as info:
        ONNXModel(model)
    message = str(info.value)
    assert "my_sum" in message and "size of output 'reduced'" in message


def test_axes_from_shapes():
    """Which reduced axes the input and output shapes settle (None: known only at run time)."""
    from daceml.onnx.ops.reduction import _axes_from_shapes
    n = dace.symbol("n")
    assert _axes_from_shapes((2, 3, 4), (2, 1, 4), True) == [1]
    assert _axes_from_shapes((2, 1, 4), (2, 1, 1), True) == [2]
    assert _axes_from_shapes((n, 3), (1, 3), True) == [0]
    assert _axes_from_shapes((n, 3), (n, 3), True) == []
    assert _axes_from_shapes((2, 3), (2, 5), True) is None
    assert _axes_from_shapes((2, 3, 4), (2, 4), False) == [1]
    assert _axes_from_shapes((3, 3, 2), (3, 2), False) is None  # axis 0 or 1
    assert _axes_from_shapes((2, 1, 1), (2, 1), False) in ([1], [2])  # size-1 axes: either
    assert _axes_from_shapes((3, 4), (1, ), False) == [0, 1]  # a rank-0 output
    assert _axes_from_shapes((3, 1), (1, ), False) in ([0], [0, 1])


def test_every_documented_op_is_registered():
    from daceml.onnx.ops import reduction, registry
    ops = REDUCE_OPS + ["ArgMax", "ArgMin", "CumSum", "CumProd"]
    assert all(op in reduction.__doc__ for op in ops)
    assert [op for op in ops if "pure" not in registry.implementations(op)] == []
