"""Horizontal fusion: sibling GEMMs reading the same input become one GEMM (FuseSiblingGemms)."""
import math

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from daceml.onnx import ONNXModel
from daceml.targets.cpu import OpenBLAS
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.testing.torch_compare import assert_gradients_match
from daceml.torch import DaceModule
from daceml.transformation import optimize, pipeline
from daceml.transformation.horizontal import FuseSiblingGemms
from daceml.transformation.linear import MatMulAddToGemm

pytestmark = pytest.mark.skipif(not OpenBLAS.is_installed(), reason="the scipy-openblas32 wheel is not installed")


def _with_fusion(levels):
    """The pipeline's levels with FuseSiblingGemms right after MatMulAddToGemm in level 1."""
    first = list(levels[0])
    at = next(i for i, p in enumerate(first) if isinstance(p, MatMulAddToGemm)) + 1
    return [first[:at] + [FuseSiblingGemms()] + first[at:]] + [list(lv) for lv in levels[1:]]


def test_sibling_gemms_fuse_and_match_onnxruntime():
    """Three projections of x with biases fuse (different widths); a product of x without
    bias, one with B not transposed and one of another input stay alone."""
    rng = np.random.default_rng(0)
    f = np.float32
    m, k = 6, 8
    inputs = {"x": rng.standard_normal((m, k)).astype(f), "z": rng.standard_normal((m, k)).astype(f)}
    weights = {"wq": (5, k), "bq": (5, ), "wk": (7, k), "bk": (7, ), "wv": (3, k), "bv": (3, ), "wo": (4, k),
               "wp": (k, 2), "bp": (2, ), "wz": (4, k), "bz": (4, )}
    inits = {name: rng.standard_normal(shape).astype(f) for name, shape in weights.items()}
    nodes = [helper.make_node("Gemm", ["x", "wq", "bq"], ["q"], transB=1),
             helper.make_node("Gemm", ["x", "wk", "bk"], ["k"], transB=1),
             helper.make_node("Gemm", ["x", "wv", "bv"], ["v0"], transB=1),
             helper.make_node("Relu", ["v0"], ["v"]),
             helper.make_node("Gemm", ["x", "wo"], ["o"], transB=1),
             helper.make_node("Gemm", ["x", "wp", "bp"], ["p"]),
             helper.make_node("Gemm", ["z", "wz", "bz"], ["y"], transB=1)]
    model = make_model(nodes, inputs, ["q", "k", "v", "o", "p", "y"], initializers=inits)
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model)
    report = optimize(dm, passes=_with_fusion(pipeline(4)))
    fusion = next(p for p in report.passes if p.name == "FuseSiblingGemms")
    assert fusion.changes == 3, fusion.detail
    got = dm(**inputs)
    for g, e, name in zip(got, expected, ["q", "k", "v", "o", "p", "y"]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


def test_fused_weights_are_concatenated_once_per_parameter_version():
    """In an ONNXModel the Concat of the weights is hoisted into the weight-prep program (level
    2); the main program keeps one Gemm and the Split."""
    rng = np.random.default_rng(1)
    f = np.float32
    inputs = {"x": rng.standard_normal((4, 6)).astype(f)}
    inits = {f"w{i}": rng.standard_normal((5, 6)).astype(f) for i in range(3)}
    nodes = [helper.make_node("Gemm", ["x", f"w{i}"], [f"y{i}"], transB=1) for i in range(3)]
    model = make_model(nodes, inputs, ["y0", "y1", "y2"], initializers=inits)
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model)
    levels = _with_fusion(pipeline(2))
    optimize(dm, passes=levels)
    labels = [getattr(n, "label", "") for n, _ in dm.sdfg.all_nodes_recursive()]
    assert dm.weight_prep is not None and not [label for label in labels if "concat" in label]
    assert [label for label in labels if label.endswith("_fused_blas")], labels
    assert any("weights_concat" in getattr(n, "label", "") for n, _ in dm.weight_prep.sdfg.all_nodes_recursive())
    for g, e in zip(dm(**inputs), expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


class _Attention(nn.Module):
    def __init__(self, hidden=16, heads=4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, x):
        b, s, hd = x.shape
        d = hd // self.heads
        q, k, v = (lin(x).reshape(b, s, self.heads, d).transpose(1, 2) for lin in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (att @ v).transpose(1, 2).reshape(b, s, hd)


def test_fused_projections_in_a_module_follow_weight_updates_and_train():
    """Q/K/V of a torch module fused through a post-import hook: inference after an in-place
    weight update (the hoisted Concat re-runs), and the gradients of every parameter."""
    torch.manual_seed(0)
    eager = _Attention()
    wrapped = _Attention()
    wrapped.load_state_dict(eager.state_dict())
    dm = DaceModule(wrapped, name="horizontal_attention")
    fused = []
    dm.append_post_import_hook("fuse_qkv", lambda model: fused.append(
        optimize(model, passes=[[MatMulAddToGemm(), FuseSiblingGemms()]])))
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(dm(x), eager(x), rtol=1e-5, atol=1e-5)
        for m in (eager, wrapped):
            m.k.weight.mul_(-2.0)
            m.v.bias.add_(0.5)
        torch.testing.assert_close(dm(x), eager(x), rtol=1e-5, atol=1e-5)
    assert next(p for p in fused[0].passes if p.name == "FuseSiblingGemms").changes == 3
    assert_gradients_match(eager, dm, x)
