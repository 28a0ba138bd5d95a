"""3x3 stride-1 convolutions as Winograd F(2x2, 3x3) (daceml/onnx/ops/winograd.py and the level-2
pass daceml.transformation.winograd)."""
import numpy as np
import torch
from onnx import helper
from torch import nn

from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.torch import DaceModule
from daceml.transformation import optimize
from daceml.transformation.winograd import profitable


def test_winograd_convs_match_onnxruntime_at_every_pad_and_plane_shape():
    """One graph: symmetric pads on an odd plane (13x15: partial tiles on both sides) with bias,
    ReLU and a residual fused; no padding; asymmetric pads; a batch of 2. A 7x7 plane and a
    conv with 16 channels stay on the other kernels (not profitable)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 32, 13, 15)).astype(np.float32)
    small = rng.standard_normal((2, 16, 7, 7)).astype(np.float32)
    inits = {"w1": rng.standard_normal((40, 32, 3, 3)).astype(np.float32) * 0.2,
             "b1": rng.standard_normal(40).astype(np.float32),
             "w2": rng.standard_normal((40, 40, 3, 3)).astype(np.float32) * 0.2,
             "w3": rng.standard_normal((36, 32, 3, 3)).astype(np.float32) * 0.2,
             "w4": rng.standard_normal((16, 16, 3, 3)).astype(np.float32) * 0.2}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="sym", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="same", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s2"]),
             helper.make_node("Relu", ["s2"], ["y_sym"]),
             helper.make_node("Conv", ["x", "w3"], ["y_valid"], name="valid"),
             helper.make_node("Conv", ["x", "w3"], ["y_asym"], name="asym", pads=[2, 0, 1, 2]),
             helper.make_node("Conv", ["small", "w4"], ["y_small"], name="small", pads=[1, 1, 1, 1])]
    inputs = {"x": x, "small": small}
    outputs = ["y_sym", "y_valid", "y_asym", "y_small"]
    proto = make_model(nodes, inputs, outputs, inits)
    expected = run_onnxruntime(proto, inputs)
    model = ONNXModel(proto)
    report = optimize(model)
    assert "4 Conv(s) as Winograd" in str(report), report
    got = model(**inputs)
    for name, e, g in zip(outputs, expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=name)
    # (the ONNX nodes are expanded by now: which convs were transformed shows in the hoisted weights)
    transformed = sorted(name.split("_winograd_U")[0] for name in model.weight_prep.derived if "_winograd_U" in name)
    assert len(transformed) == 4 and not any("small" in name for name in transformed), transformed


def test_transformed_weights_follow_parameter_updates():
    """The weight transform is hoisted: it runs once, and again after an in-place update."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1)).eval()
    x = torch.randn(1, 32, 16, 16)
    dm = DaceModule(m, name="winograd_update")
    with torch.no_grad():
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)
        prep = dm.onnx_model.weight_prep
        assert sum("winograd_U" in name for name in prep.derived) == 2, prep.derived
        runs = prep.runs
        dm(x)
        assert prep.runs == runs
        m[2].weight.mul_(-0.5)
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)
        assert prep.runs == runs + 1


def test_profitability_by_channels_and_tiles():
    assert profitable(64, 64, 56, 56) and profitable(256, 256, 14, 14)
    assert not profitable(512, 512, 7, 7)       # 16 tiles: thin GEMMs
    assert not profitable(16, 64, 56, 56) and not profitable(64, 16, 56, 56)
