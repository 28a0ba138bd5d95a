"""The onnxruntime fallback: nodes run through the stock onnxruntime package from compiled code."""
import numpy as np
import pytest
from onnx import helper

from daceml import config
from daceml.onnx import ONNXModel
from daceml.onnx.ops import registry
from daceml.testing.onnx_compare import make_model, run_onnxruntime

pytestmark = pytest.mark.onnxruntime_fallback


OPS = ("Relu", "Softmax", "Mul", "TopK")


@pytest.fixture
def prefer_onnxruntime():
    for op in OPS:
        registry.prefer(op, ["onnxruntime"])
    yield
    for op in OPS:
        registry.prefer(op, None)


def _model():
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Softmax", ["r"], ["s"], axis=1),
             helper.make_node("Mul", ["s", "x"], ["y"]), helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)]
    return make_model(nodes, {"x": x}, ["y", "v", "i"], {"k": np.array([2], np.int64)}), x


def test_every_node_through_onnxruntime_matches(prefer_onnxruntime):
    model, x = _model()
    dm = ONNXModel(model)
    assert set(dm.implementation_table.values()) == {"onnxruntime"}
    got = dm(x)
    for g, e in zip(got, run_onnxruntime(model, {"x": x})):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    # weights and inputs change per call; the callbacks see the new buffers
    got2 = dm(2 * x)
    for g, e in zip(got2, run_onnxruntime(model, {"x": 2 * x})):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_fallback_comes_last_and_can_be_switched_off():
    model, x = _model()
    with config.patch(default_implementations=["onnxruntime", "pure"]):
        assert registry.candidate_order("Relu")[-1] == "onnxruntime"
    with config.patch(allow_onnxruntime_fallback=False):
        assert "onnxruntime" not in registry.candidate_order("Relu")
        dm = ONNXModel(model)
        assert "onnxruntime" not in dm.implementation_table.values()
    assert registry.implementations("Relu")["onnxruntime"].is_fallback


def test_error_inside_onnxruntime_is_raised_not_lost(prefer_onnxruntime):
    model, x = _model()
    dm = ONNXModel(model)
    dm(x)
    runner = next(iter(dm.fallbacks.values()))
    session = runner.session
    runner.session = None  # the next call fails inside the callback
    with pytest.raises(RuntimeError, match="run through onnxruntime, failed"):
        dm(x)
    runner.session = session
    dm(x)
