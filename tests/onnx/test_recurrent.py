"""Pure LSTM / GRU / RNN implementations against onnxruntime (and against eager PyTorch
through DaceModule). Several nodes share one model (one compile) wherever they can."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from daceml import config
from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model, run_onnxruntime

TOL = dict(rtol=1e-4, atol=1e-4)


def rand(rng, *shape, dtype=np.float32, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def weights(rng, prefix: str, gates: int, nd: int, inp: int, hidden: int, bias=True, peepholes=False, **kw):
    w = {f"{prefix}_W": rand(rng, nd, gates * hidden, inp, **kw),
         f"{prefix}_R": rand(rng, nd, gates * hidden, hidden, **kw)}
    if bias:
        w[f"{prefix}_B"] = rand(rng, nd, 2 * gates * hidden, **kw)
    if peepholes:
        w[f"{prefix}_P"] = rand(rng, nd, 3 * hidden, **kw)
    return w


def test_time_major_all_directions_and_options():
    """layout 0: every op, every direction, sequence_lens, initial states, peepholes, clip,
    input_forget, linear_before_reset, missing B, and subsets of the outputs."""
    rng = np.random.default_rng(0)
    S, B, I, H = 5, 3, 4, 6
    inputs = {"X": rand(rng, S, B, I), "sl": np.array([5, 2, 4], np.int32), "h0": rand(rng, 2, B, H),
              "c0": rand(rng, 2, B, H), "h1": rand(rng, 1, B, H)}
    inits = {}
    inits.update(weights(rng, "l", 4, 2, I, H, peepholes=True))
    inits.update(weights(rng, "lr", 4, 1, I, H, bias=False))
    inits.update(weights(rng, "g", 3, 2, I, H))
    inits.update(weights(rng, "gf", 3, 1, I, H, bias=False))
    inits.update(weights(rng, "r", 1, 2, I, H))
    inits.update(weights(rng, "rr", 1, 1, I, H))
    nodes = [
        helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B", "sl", "h0", "c0", "l_P"], ["ly", "lh", "lc"],
                         hidden_size=H, direction="bidirectional"),
        helper.make_node("LSTM", ["X", "lr_W", "lr_R", "", "", "h1"], ["lry", "", "lrc"], hidden_size=H,
                         direction="reverse", clip=0.7, input_forget=1),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B", "sl", "h0"], ["gy", "gh"], hidden_size=H,
                         direction="bidirectional"),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B", "sl", "h0"], ["gy1", "gh1"], hidden_size=H,
                         direction="bidirectional", linear_before_reset=1, clip=0.9),
        helper.make_node("GRU", ["X", "gf_W", "gf_R"], ["", "gfh"], hidden_size=H),
        helper.make_node("RNN", ["X", "r_W", "r_R", "r_B", "sl", "h0"], ["ry", "rh"], hidden_size=H,
                         direction="bidirectional"),
        helper.make_node("RNN", ["X", "rr_W", "rr_R", "rr_B", "sl"], ["rry"], hidden_size=H, direction="reverse",
                         activations=["Relu"], clip=1.5),
    ]
    outs = ["ly", "lh", "lc", "lry", "lrc", "gy", "gh", "gy1", "gh1", "gfh", "ry", "rh", "rry"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, inits), inputs, **TOL)


def test_batch_major_layout():
    """layout 1: X (batch, seq, input), states (batch, directions, hidden), Y (batch, seq, directions,
    hidden). onnxruntime has no layout 1: compared with its layout-0 result, transposed."""
    rng = np.random.default_rng(1)
    S, B, I, H = 4, 3, 5, 3
    inputs = {"X": rand(rng, B, S, I), "sl": np.array([3, 4, 1], np.int32), "h0": rand(rng, B, 2, H),
              "c0": rand(rng, B, 2, H), "h1": rand(rng, B, 1, H)}
    inits = {}
    inits.update(weights(rng, "l", 4, 2, I, H, peepholes=True))
    inits.update(weights(rng, "g", 3, 1, I, H))
    inits.update(weights(rng, "r", 1, 1, I, H))

    def nodes(layout):
        return [
            helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B", "sl", "h0", "c0", "l_P"], ["ly", "lh", "lc"],
                             hidden_size=H, direction="bidirectional", layout=layout),
            helper.make_node("GRU", ["X", "g_W", "g_R", "g_B", "sl", "h1"], ["gy", "gh"], hidden_size=H,
                             direction="reverse", layout=layout),
            helper.make_node("RNN", ["X", "r_W", "r_R", "r_B", "", "h1"], ["", "rh"], hidden_size=H, layout=layout),
        ]

    outs = ["ly", "lh", "lc", "gy", "gh", "rh"]
    got = ONNXModel(make_model(nodes(1), inputs, outs, inits))(**inputs)
    time_major = {k: (v.transpose(1, 0, 2) if v.ndim == 3 else v) for k, v in inputs.items()}
    expected = run_onnxruntime(make_model(nodes(0), time_major, outs, inits), time_major)
    for name, g, e in zip(outs, got, expected):
        e = e.transpose(2, 0, 1, 3) if e.ndim == 4 else e.transpose(1, 0, 2)
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, err_msg=name, **TOL)


def test_activation_functions():
    """Every optional activation of the spec, alpha/beta consumed in order, defaults for the
    rest; different activations per direction. (ThresholdedRelu, Affine and ScaledTanh get their
    alpha/beta explicitly: onnxruntime defaults them to 0, not to the ONNX operators' defaults.)"""
    rng = np.random.default_rng(2)
    S, B, I, H = 4, 2, 3, 4
    inputs = {"X": rand(rng, S, B, I, scale=1.0)}
    inits = {}
    inits.update(weights(rng, "l", 4, 2, I, H, scale=1.0))
    inits.update(weights(rng, "g", 3, 2, I, H, scale=1.0))
    inits.update(weights(rng, "r", 1, 2, I, H, scale=1.0))
    inits.update(weights(rng, "r2", 1, 2, I, H, scale=1.0))
    inits.update(weights(rng, "r3", 1, 1, I, H, scale=1.0))
    nodes = [
        helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B"], ["ly", "lh", "lc"], hidden_size=H,
                         direction="bidirectional",
                         activations=["HardSigmoid", "Elu", "Softplus", "Sigmoid", "ScaledTanh", "Softsign"],
                         activation_alpha=[0.3, 0.9, 0.8], activation_beta=[0.4, 1.1]),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B"], ["gy", "gh"], hidden_size=H, direction="bidirectional",
                         activations=["HardSigmoid", "LeakyRelu", "Sigmoid", "Affine"],
                         activation_alpha=[0.25, 0.2, 0.7], activation_beta=[0.45, -0.1]),
        helper.make_node("RNN", ["X", "r_W", "r_R", "r_B"], ["ry", "rh"], hidden_size=H, direction="bidirectional",
                         activations=["ThresholdedRelu", "LeakyRelu"], activation_alpha=[0.4]),
        helper.make_node("RNN", ["X", "r2_W", "r2_R", "r2_B"], ["r2y"], hidden_size=H, direction="bidirectional",
                         activations=["Affine", "Elu"], activation_alpha=[0.5, 0.3], activation_beta=[0.2]),
        helper.make_node("RNN", ["X", "r3_W", "r3_R", "r3_B"], ["r3y"], hidden_size=H, activations=["Softsign"]),
    ]
    outs = ["ly", "lh", "lc", "gy", "gh", "ry", "rh", "r2y", "r3y"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, inits), inputs, **TOL)


def test_parallel_sizes():
    """Big enough for the parallel path: several unit blocks and a tail block; X with more
    (direction, batch row group) pairs than threads (each thread runs its rows through all steps)
    and X2 with fewer (the units of each step are shared out, a barrier per step)."""
    rng = np.random.default_rng(3)
    S, B, I, H = 6, 5, 40, 70
    inputs = {"X": rand(rng, S, B, I, scale=0.3), "sl": np.array([6, 3, 5, 0, 6], np.int32),
              "X2": rand(rng, S, 3, I, scale=0.3), "sl2": np.array([4, 6, 1], np.int32)}
    inits = {}
    inits.update(weights(rng, "l", 4, 2, I, H, peepholes=True, scale=0.2))
    inits.update(weights(rng, "g", 3, 2, I, H, scale=0.2))
    inits.update(weights(rng, "r", 1, 2, I, H, scale=0.2))
    inits.update(weights(rng, "l1", 4, 1, I, H, scale=0.2))
    inits.update(weights(rng, "g1", 3, 1, I, H, scale=0.2))
    inits.update(weights(rng, "r1", 1, 1, I, H, scale=0.2))
    nodes = [
        helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B", "sl", "", "", "l_P"], ["ly", "lh", "lc"],
                         hidden_size=H, direction="bidirectional"),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B", "sl"], ["gy", "gh"], hidden_size=H,
                         direction="bidirectional"),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B"], ["gy1", "gh1"], hidden_size=H,
                         direction="bidirectional", linear_before_reset=1),
        helper.make_node("RNN", ["X", "r_W", "r_R", "r_B", "sl"], ["ry", "rh"], hidden_size=H,
                         direction="bidirectional"),
        helper.make_node("LSTM", ["X2", "l1_W", "l1_R", "l1_B", "sl2"], ["l2y", "l2h", "l2c"], hidden_size=H),
        helper.make_node("GRU", ["X2", "g1_W", "g1_R", "g1_B", "sl2"], ["g2y", "g2h"], hidden_size=H,
                         direction="reverse"),
        helper.make_node("RNN", ["X2", "r1_W", "r1_R", "r1_B"], ["r2y", "r2h"], hidden_size=H),
    ]
    outs = ["ly", "lh", "lc", "gy", "gh", "gy1", "gh1", "ry", "rh", "l2y", "l2h", "l2c", "g2y", "g2h", "r2y", "r2h"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, inits), inputs, **TOL)


def test_symbolic_sizes():
    """Sequence length and batch symbolic (named S and N, as the kernel's own sizes are):
    one build runs several sizes."""
    rng = np.random.default_rng(6)
    I, H = 5, 20
    inits = {}
    inits.update(weights(rng, "l", 4, 2, I, H))
    inits.update(weights(rng, "g", 3, 1, I, H, bias=False))
    nodes = [helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B", "sl"], ["ly", "lh", "lc"], hidden_size=H,
                              direction="bidirectional"),
             helper.make_node("GRU", ["X", "g_W", "g_R"], ["gy", "gh"], hidden_size=H, linear_before_reset=1)]
    outs = ["ly", "lh", "lc", "gy", "gh"]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["S", "N", I]),
                     helper.make_tensor_value_info("sl", TensorProto.INT32, ["N"])],
        [helper.make_empty_tensor_value_info(o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    model = onnx.shape_inference.infer_shapes(model)
    dm = ONNXModel(model)
    for S, N in ((4, 3), (7, 1), (2, 9)):
        inputs = {"X": rand(rng, S, N, I), "sl": rng.integers(0, S + 1, N).astype(np.int32)}
        for name, g, e in zip(outs, dm(**inputs), run_onnxruntime(model, inputs)):
            np.testing.assert_allclose(g, e, err_msg=f"{name} at S={S}, N={N}", **TOL)


def test_float64_and_old_opset():
    """float64 (onnxruntime has float32 kernels only: compared with onnxruntime on the same
    values in float32, and with onnx's reference evaluator in float64); opset 7 versions."""
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(4)
    S, B, I, H = 4, 2, 3, 5
    inputs = {"X": rand(rng, S, B, I, dtype=np.float64), "h0": rand(rng, 1, B, H, dtype=np.float64),
              "c0": rand(rng, 1, B, H, dtype=np.float64)}
    inits = {}
    inits.update(weights(rng, "l", 4, 1, I, H, peepholes=True, dtype=np.float64))
    inits.update(weights(rng, "g", 3, 1, I, H, dtype=np.float64))
    inits.update(weights(rng, "r", 1, 1, I, H, dtype=np.float64))
    nodes = [
        helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B", "", "h0", "c0", "l_P"], ["ly", "lh", "lc"], hidden_size=H),
        helper.make_node("GRU", ["X", "g_W", "g_R", "g_B", "", "h0"], ["gy", "gh"], hidden_size=H),
        helper.make_node("RNN", ["X", "r_W", "r_R", "r_B", "", "h0"], ["ry", "rh"], hidden_size=H),
    ]
    outs = ["ly", "lh", "lc", "gy", "gh", "ry", "rh"]
    model = make_model(nodes, inputs, outs, inits, opset=7)
    got = ONNXModel(model)(**inputs)
    assert all(g.dtype == np.float64 for g in got)
    expected = ReferenceEvaluator(model).run(None, inputs)
    for name, g, e in zip(outs, got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=name)
    model32 = make_model(nodes, {k: v.astype(np.float32) for k, v in inputs.items()}, outs,
                         {k: v.astype(np.float32) for k, v in inits.items()}, opset=7)
    expected = run_onnxruntime(model32, {k: v.astype(np.float32) for k, v in inputs.items()})
    for name, g, e in zip(outs, got, expected):
        np.testing.assert_allclose(g, e, err_msg=name, **TOL)


def test_why_not():
    """Unsupported element types and malformed attributes are refused at import, with the reason."""
    rng = np.random.default_rng(5)
    cases = [
        ({"X": rand(rng, 2, 1, 3, dtype=np.float16)}, weights(rng, "l", 4, 1, 3, 2, dtype=np.float16), {},
         "float32 and float64"),
        ({"X": rand(rng, 2, 1, 3)}, weights(rng, "l", 4, 1, 3, 2), {"activations": ["Tanh"]}, "needs 3"),
        ({"X": rand(rng, 2, 1, 3)}, weights(rng, "l", 4, 1, 3, 2), {"activations": ["Sigmoid", "Gelu", "Tanh"]},
         "unknown activation function 'Gelu'"),
    ]
    for inputs, inits, attrs, reason in cases:
        node = helper.make_node("LSTM", ["X", "l_W", "l_R", "l_B"], ["y"], name="lstm", hidden_size=2, **attrs)
        with config.patch(allow_onnxruntime_fallback=False):
            with pytest.raises(UnsupportedOpsError, match=f"lstm.*{reason}"):
                ONNXModel(make_model([node], inputs, ["y"], inits))


def test_zoo_lstm_dace_module():
    """nn.LSTM(8, 16, batch_first=True) through the dynamo exporter and DaceModule, against eager."""
    torch = pytest.importorskip("torch")
    from daceml.testing import zoo
    from daceml.torch import DaceModule
    module, args = zoo.make("lstm")
    module = module.eval()
    with torch.no_grad():
        expected = module(*args)
        got = DaceModule(module)(*args)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
