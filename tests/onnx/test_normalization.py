"""Pure normalization and softmax-family implementations against onnxruntime.

Several nodes share one model (one compile) wherever they can."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model

TOL = dict(rtol=1e-4, atol=1e-4)


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def declare_output(model, name, shape, elem=TensorProto.FLOAT):
    """onnx's shape inference leaves GroupNormalization's output shape unknown: declare it."""
    for out in model.graph.output:
        if out.name == name:
            out.CopyFrom(helper.make_tensor_value_info(name, elem, list(shape)))
    return model


def test_norms_and_softmax_opset21():
    rng = np.random.default_rng(0)
    inputs = {"x": rand(rng, 2, 6, 5, 4), "s": rand(rng, 3, 4, 11)}
    inits = {
        "scale": rand(rng, 6), "bias": rand(rng, 6), "mean": rand(rng, 6), "var": rng.random(6).astype(np.float32) + .5,
        "ln_scale": rand(rng, 4, 11), "ln_bias": rand(rng, 11), "ln_scale4": rand(rng, 4),
    }
    nodes = [
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["inorm"], name="inorm"),
        helper.make_node("LayerNormalization", ["s", "ln_scale", "ln_bias"], ["ln", "ln_mean", "ln_inv"], name="ln",
                         axis=-2),
        helper.make_node("LayerNormalization", ["x", "ln_scale4"], ["ln_nobias"], name="ln_nobias", epsilon=1e-3),
        helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["gn"], name="gn", num_groups=3, epsilon=1e-4),
        helper.make_node("LRN", ["x"], ["lrn3"], name="lrn3", size=3, alpha=0.01, beta=0.6, bias=2.0),
        helper.make_node("LRN", ["x"], ["lrn5"], name="lrn5", size=5),
        helper.make_node("Softmax", ["s"], ["softmax_last"], name="softmax_last"),
        helper.make_node("Softmax", ["s"], ["softmax_mid"], name="softmax_mid", axis=1),
        helper.make_node("LogSoftmax", ["s"], ["logsoftmax_first"], name="logsoftmax_first", axis=0),
        helper.make_node("LogSoftmax", ["s"], ["logsoftmax_last"], name="logsoftmax_last"),
        helper.make_node("Hardmax", ["s"], ["hardmax_mid"], name="hardmax_mid", axis=1),
    ]
    outs = ["bn", "inorm", "ln", "ln_mean", "ln_inv", "ln_nobias", "gn", "lrn3", "lrn5", "softmax_last",
            "softmax_mid", "logsoftmax_first", "logsoftmax_last", "hardmax_mid"]
    model = declare_output(make_model(nodes, inputs, outs, inits, opset=21), "gn", inputs["x"].shape)
    assert_matches_onnxruntime(model, inputs, **TOL)


def test_opset12_softmax_coerces_to_2d_and_opset18_groupnorm():
    """Before opset 13 the softmax family normalizes the 2-D coercion at axis; GroupNormalization-18
    has one scale and bias per group."""
    rng = np.random.default_rng(1)
    inputs = {"s": rand(rng, 3, 4, 5)}
    nodes = [
        helper.make_node("Softmax", ["s"], ["softmax"], name="softmax"),
        helper.make_node("LogSoftmax", ["s"], ["logsoftmax"], name="logsoftmax", axis=2),
        helper.make_node("Hardmax", ["s"], ["hardmax"], name="hardmax", axis=0),
    ]
    model = make_model(nodes, inputs, ["softmax", "logsoftmax", "hardmax"], opset=12)
    assert_matches_onnxruntime(model, inputs, **TOL)

    inputs = {"x": rand(rng, 2, 6, 3, 4)}
    inits = {"scale": rand(rng, 2), "bias": rand(rng, 2)}
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["gn"], name="gn", num_groups=2)
    model = declare_output(make_model([node], inputs, ["gn"], inits, opset=18), "gn", inputs["x"].shape)
    assert_matches_onnxruntime(model, inputs, **TOL)


def test_symbolic_dims_and_large_logits():
    """Batch and sequence length symbolic; one build serves several sizes; softmax is stable on
    logits far beyond exp's range."""
    rng = np.random.default_rng(2)
    inits = {"g": rand(rng, 8), "b": rand(rng, 8), "scale": rand(rng, 3), "bias": rand(rng, 3),
             "mean": rand(rng, 3), "var": rng.random(3).astype(np.float32) + .5}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln"),
        helper.make_node("Softmax", ["x"], ["sm_row"], name="sm_row"),
        helper.make_node("Softmax", ["x"], ["sm_seq"], name="sm_seq", axis=1),
        helper.make_node("LogSoftmax", ["x"], ["lsm_seq"], name="lsm_seq", axis=1),
        helper.make_node("BatchNormalization", ["y", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
    ]
    vi = helper.make_tensor_value_info
    graph_inputs = [vi("x", TensorProto.FLOAT, ["N", "S", 8]), vi("y", TensorProto.FLOAT, ["N", 3, "S"])]
    g = helper.make_graph(nodes, "g", graph_inputs,
                          [helper.make_empty_tensor_value_info(o) for o in ("ln", "sm_row", "sm_seq", "lsm_seq", "bn")],
                          [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel()) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    for n, s in ((1, 5), (3, 2)):
        x = rand(rng, n, s, 8) * 1000
        y = rand(rng, n, 3, s)
        _, got = assert_matches_onnxruntime(model, {"x": x, "y": y}, **TOL)
        assert all(np.isfinite(o).all() for o in got)


def test_vector_softmax_rows_with_masks_and_extremes():
    """Rows of 40 (two 16-lane vectors and a tail): masked (-inf) logits give exact zeros, logits
    far apart (exp underflowing to denormals and to zero) and huge ones stay finite and match
    onnxruntime, for Softmax and LogSoftmax."""
    rng = np.random.default_rng(4)
    x = rand(rng, 6, 40) * 10
    x[0, 3] = x[0, 20] = x[0, 39] = -np.inf                     # attention masks, in a vector and in the tail
    x[1] *= 1000                                               # exp far beyond float's range
    x[2, :] = -90.0
    x[2, 0] = 0.0                                              # exp(-90): a denormal
    x[3, :] = -200.0
    x[3, 17] = 0.0                                             # exp(-200): zero
    x[4, :] = np.float32(3.0)                                  # a flat row
    x[5, 9] = np.nan                                           # NaN spreads over its row, as in torch
    nodes = [helper.make_node("Softmax", ["x"], ["sm"], name="sm"),
             helper.make_node("LogSoftmax", ["x"], ["lsm"], name="lsm")]
    expected, got = assert_matches_onnxruntime(make_model(nodes, {"x": x}, ["sm", "lsm"]), {"x": x}, **TOL)
    sm = got[0]
    assert (sm[0, [3, 20, 39]] == 0).all() and np.isfinite(sm[:5]).all()
    assert np.isnan(sm[5]).all() and np.isnan(got[1][5]).all()
    np.testing.assert_allclose(sm[:5].sum(axis=1), 1, rtol=1e-5)


def test_vector_norm_rows_through_every_loop_and_far_from_zero():
    """Rows of 150 (two 64-float blocks of four accumulators, one 16-float vector and a tail of 6)
    and planes of 156 for InstanceNormalization and GroupNormalization, with values offset by
    100 and -50 (the variance of the deviations, not of the raw values) and one row constant.
    The reference is float64 numpy: onnxruntime's LayerNormalization computes E[x^2] - E[x]^2
    and is off by 5e-4 on rows offset by 1000."""
    from daceml.onnx import ONNXModel
    rng = np.random.default_rng(5)
    x = rand(rng, 5, 150) + 100
    x[4] = 7.0
    p = rand(rng, 2, 4, 12, 13) * 3 - 50
    inits = {"g": rand(rng, 150), "b": rand(rng, 150), "s4": rand(rng, 4), "b4": rand(rng, 4)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln", "ln_mean", "ln_inv"], name="ln"),
             helper.make_node("InstanceNormalization", ["p", "s4", "b4"], ["inorm"], name="inorm"),
             helper.make_node("GroupNormalization", ["p", "s4", "b4"], ["gn"], name="gn", num_groups=2)]
    model = declare_output(make_model(nodes, {"x": x, "p": p}, ["ln", "ln_mean", "ln_inv", "inorm", "gn"], inits,
                                      opset=21), "gn", p.shape)
    ln, ln_mean, ln_inv, inorm, gn = ONNXModel(model)(x=x, p=p)

    def norm(v, axes, eps=1e-5):
        v = v.astype(np.float64)
        mean = v.mean(axis=axes, keepdims=True)
        inv = 1 / np.sqrt(((v - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
        return (v - mean) * inv, mean, inv
    y, mean, inv = norm(x, 1)
    np.testing.assert_allclose(ln, y * inits["g"] + inits["b"], **TOL)
    np.testing.assert_allclose(ln_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(ln_inv, inv, rtol=1e-4)
    s4, b4 = inits["s4"][:, None, None], inits["b4"][:, None, None]
    np.testing.assert_allclose(inorm, norm(p, (2, 3))[0] * s4 + b4, **TOL)
    grouped = norm(p.reshape(2, 2, 2 * 12 * 13), 2)[0].reshape(p.shape)
    np.testing.assert_allclose(gn, grouped * s4 + b4, **TOL)


def test_layernorm_blocks_of_rows_with_statistics_outputs():
    """LayerNormalization over blocks of rows (each work item sums the next row inside the
    normalize loop of the one before): 4x64 rows of 150 (blocks of 4, rows through every loop
    and a tail) with the Mean and InvStdDev outputs, rows offset by 100 and -50 and one
    constant; 130 rows of 24 without B (blocks of 2). Against float64 numpy."""
    from daceml.onnx.ops.normalization import _row_block
    assert _row_block([4, 64, 150], 2) == 4 and _row_block([130, 24], 1) == 2
    rng = np.random.default_rng(6)
    x = rand(rng, 4, 64, 150)
    x[0] += 100
    x[1, 1::3] -= 50
    x[2, 5] = 3.0
    y = rand(rng, 130, 24)
    inits = {"g": rand(rng, 150), "b": rand(rng, 150), "g24": rand(rng, 24)}
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln", "ln_mean", "ln_inv"], name="ln"),
             helper.make_node("LayerNormalization", ["y", "g24"], ["ln24"], name="ln24", epsilon=1e-3)]
    model = make_model(nodes, {"x": x, "y": y}, ["ln", "ln_mean", "ln_inv", "ln24"], inits, opset=21)
    ln, ln_mean, ln_inv, ln24 = ONNXModel(model)(x=x, y=y)

    def norm(v, eps):
        v = v.astype(np.float64)
        mean = v.mean(axis=-1, keepdims=True)
        inv = 1 / np.sqrt(((v - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
        return (v - mean) * inv, mean, inv
    want, mean, inv = norm(x, 1e-5)
    np.testing.assert_allclose(ln, want * inits["g"] + inits["b"], **TOL)
    np.testing.assert_allclose(ln_mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ln_inv, inv, rtol=1e-4)
    np.testing.assert_allclose(ln24, norm(y, 1e-3)[0] * inits["g24"], **TOL)


def test_batchnorm_training_mode_is_rejected_with_the_node_name():
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], name="bn_train",
                              training_mode=1)]
    vi = helper.make_tensor_value_info
    inits = [helper.make_tensor(k, TensorProto.FLOAT, [3], [1.0, 1.0, 1.0]) for k in "sbmv"]
    outputs = [vi("y", TensorProto.FLOAT, [2, 3, 4]), vi("rm", TensorProto.FLOAT, [3]), vi("rv", TensorProto.FLOAT, [3])]
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [2, 3, 4])], outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 10
    with pytest.raises(UnsupportedOpsError, match="bn_train.*training_mode=1 is not supported"):
        ONNXModel(model)
