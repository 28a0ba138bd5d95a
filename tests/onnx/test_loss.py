"""Pure NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss against onnxruntime.

Several nodes share one model (one compile) wherever they can."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from daceml import config
from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model

TOL = dict(rtol=1e-5, atol=1e-5)


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def labels(rng, shape, classes, ignore=None, dtype=np.int64):
    t = rng.integers(0, classes, size=shape).astype(dtype)
    if ignore is not None:
        t.ravel()[::3] = ignore
    return t


def test_every_reduction_weight_ignore_index_and_log_prob():
    """2-D, 3-D and 5-D scores; none/sum/mean; with and without weights and ignore_index
    (in and out of the class range); SoftmaxCrossEntropyLoss with its log_prob output."""
    rng = np.random.default_rng(0)
    inputs = {
        "x2": rand(rng, 6, 5), "t2": labels(rng, (6, ), 5),
        "x3": rand(rng, 3, 5, 4), "t3": labels(rng, (3, 4), 5, ignore=2),
        "x5": rand(rng, 2, 5, 3, 2, 4), "t5": labels(rng, (2, 3, 2, 4), 5, ignore=-1),
    }
    inits = {"w": rng.random(5).astype(np.float32) + 0.5}
    sce, nll = "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"
    nodes = [
        helper.make_node(sce, ["x2", "t2"], ["sce_mean"], name="sce_mean"),
        helper.make_node(sce, ["x2", "t2", "w"], ["sce_sum_w", "sce_lp"], name="sce_sum_w", reduction="sum"),
        helper.make_node(sce, ["x3", "t3", "w"], ["sce_none_w_ii"], name="sce_none_w_ii", reduction="none",
                         ignore_index=2),
        helper.make_node(sce, ["x3", "t3"], ["sce_mean_ii", "sce_lp3"], name="sce_mean_ii", ignore_index=2),
        helper.make_node(sce, ["x5", "t5", "w"], ["sce_mean_w_neg_ii", "sce_lp5"], name="sce_mean_w_neg_ii",
                         ignore_index=-1),
        helper.make_node(nll, ["x2", "t2"], ["nll_none"], name="nll_none", reduction="none"),
        helper.make_node(nll, ["x3", "t3", "w"], ["nll_mean_w_ii"], name="nll_mean_w_ii", ignore_index=2),
        helper.make_node(nll, ["x3", "t3"], ["nll_sum_ii"], name="nll_sum_ii", reduction="sum", ignore_index=2),
        helper.make_node(nll, ["x5", "t5", "w"], ["nll_none_w_neg_ii"], name="nll_none_w_neg_ii", reduction="none",
                         ignore_index=-1),
        helper.make_node(nll, ["x5", "t5"], ["nll_mean_neg_ii"], name="nll_mean_neg_ii", ignore_index=-1),
    ]
    outs = [o for n in nodes for o in n.output]
    model = make_model(nodes, inputs, outs, inits, opset=13)
    assert_matches_onnxruntime(model, inputs, **TOL)


def test_float64_int32_labels_and_symbolic_sizes():
    """float64 scores, int32 labels, batch and spatial size symbolic: one build, two sizes."""
    rng = np.random.default_rng(1)
    vi = helper.make_tensor_value_info
    sce, nll = "SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"
    nodes = [
        helper.make_node(sce, ["x", "t", "w"], ["sce", "lp"], name="sce", ignore_index=0),
        helper.make_node(sce, ["x", "t"], ["sce_none"], name="sce_none", reduction="none"),
        helper.make_node(nll, ["x", "t"], ["nll_sum"], name="nll_sum", reduction="sum"),
        helper.make_node(nll, ["x", "t", "w"], ["nll_mean"], name="nll_mean"),
    ]
    graph_inputs = [vi("x", TensorProto.DOUBLE, ["N", 4, "S"]), vi("t", TensorProto.INT32, ["N", "S"])]
    outs = [o for n in nodes for o in n.output]
    w = helper.make_tensor("w", TensorProto.DOUBLE, [4], [0.5, 1.0, 2.0, 1.5])
    g = helper.make_graph(nodes, "g", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    for n, s in ((2, 3), (5, 1)):
        inputs = {"x": rand(rng, n, 4, s, dtype=np.float64), "t": labels(rng, (n, s), 4, dtype=np.int32)}
        inputs["t"].ravel()[0] = 1  # at least one label not ignored
        assert_matches_onnxruntime(model, inputs, rtol=1e-12, atol=1e-12)


def test_float16_is_rejected_with_a_reason():
    rng = np.random.default_rng(2)
    inputs = {"x": rand(rng, 3, 4).astype(np.float16), "t": labels(rng, (3, ), 4)}
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["loss"], name="nll_half")
    model = make_model([node], inputs, ["loss"], opset=13)
    with config.patch(allow_onnxruntime_fallback=False), \
            pytest.raises(UnsupportedOpsError, match="nll_half.*float16.*float32 and float64"):
        ONNXModel(model)
