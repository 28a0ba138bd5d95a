"""Transposes around batched MatMuls folded into the GEMM's strides (FoldTransposesIntoMatMul)."""
import math

import numpy as np
import pytest
import torch
from onnx import helper
from dace.sdfg.nodes import MapEntry
from torch import nn

from daceml.onnx import ONNXModel
from daceml.onnx.nodes import ONNXOp
from daceml.targets.cpu import MKL, OpenBLAS
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.testing.torch_compare import assert_gradients_match
from daceml.torch import DaceModule
from daceml.transformation import optimize, passes

pytestmark = pytest.mark.skipif(not OpenBLAS.is_installed(), reason="the scipy-openblas32 wheel is not installed")


def _fold_count(report) -> int:
    return next(p for p in report.passes if p.name == "FoldTransposesIntoMatMul").changes


@pytest.mark.parametrize("library", ["blas", "mkl"])
def test_attention_layouts_read_and_written_in_place(library, monkeypatch):
    """Heads split from (b, s, h, d) as A (perm 0213), as a transposed B (0231), a broadcast B
    (rank 4 against rank 4 with batch 1) and the product written back to (b, s, h, d), with
    either library (OpenBLAS: one call per batch index; oneMKL: strided batch calls)."""
    if library == "mkl" and not MKL.is_installed():
        pytest.skip("the mkl wheels are an optional extra")
    monkeypatch.setitem(passes.FAST_IMPLEMENTATIONS["cpu"], "MatMul", [library])
    rng = np.random.default_rng(0)
    f = np.float32
    b, s, h, d = 2, 5, 3, 4
    inputs = {"q": rng.standard_normal((b, s, h, d)).astype(f), "k": rng.standard_normal((b, s, h, d)).astype(f),
              "v": rng.standard_normal((b, s, h, d)).astype(f), "w": rng.standard_normal((1, h, d, 6)).astype(f)}
    nodes = [
        helper.make_node("Transpose", ["q"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),                  # (b, h, s, s)
        helper.make_node("Transpose", ["v"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["scores", "vh"], ["ctx"]),                 # (b, h, s, d)
        helper.make_node("Transpose", ["ctx"], ["y"], perm=[0, 2, 1, 3]),     # back to (b, s, h, d)
        helper.make_node("Transpose", ["q"], ["qh2"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh2", "w"], ["z"]),                       # B broadcast over the batch
    ]
    model = make_model(nodes, inputs, ["y", "z"])
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model)
    report = optimize(dm, level=4)
    assert _fold_count(report) == 5
    assert not any(isinstance(n, ONNXOp) for n, _ in dm.sdfg.all_nodes_recursive())
    got = dm(**inputs)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


class _SelfAttention(nn.Module):
    def __init__(self, hidden=16, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, x):
        b, s, hd = x.shape
        d = hd // self.heads
        q, k, v = (lin(x).reshape(b, s, self.heads, d).transpose(1, 2) for lin in self.qkv)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (att @ v).transpose(1, 2).reshape(b, s, hd)


def test_self_attention_inference_and_gradients_equal_eager():
    torch.manual_seed(0)
    m = _SelfAttention()
    x = torch.randn(2, 6, 16)
    dm = DaceModule(_SelfAttention(), name="fold_transposes_attention")
    dm.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(dm(x), m(x), rtol=1e-5, atol=1e-5)
    maps = [n.map.label for n, _ in dm.sdfg.all_nodes_recursive() if isinstance(n, MapEntry)]
    assert not [label for label in maps if "ranspose" in label], maps  # all four folded
    assert_gradients_match(m, dm, x)
