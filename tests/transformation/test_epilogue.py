"""Residual additions and activations fused into the Conv before them, a squeeze-excitation scale
into the 1x1 Conv after it (FuseEpilogues, level 2): the pure direct kernel and the MKL GEMM conv
compute them; results equal onnxruntime's."""
import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from daceml.onnx import ONNXModel
from daceml.onnx.nodes import ONNXOp
from daceml.onnx.ops import epilogue, registry
from daceml.targets.cpu import MKL, OpenBLAS
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.testing.torch_compare import assert_gradients_match
from daceml.torch import DaceModule
from daceml.transformation import optimize, pipeline
from daceml.transformation.epilogue import FuseEpilogues
from daceml.transformation.passes import ChooseImplementations, ExpandLibraryNodes


def _conv_chain():
    """Convs of both implementations, each followed by what can be fused (and two that cannot)."""
    rng = np.random.default_rng(0)
    inits = {}

    def conv(name, x, cin, cout, k, group=1):
        inits[f"{name}_w"] = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k / group)
                              ).astype(np.float32)
        inits[f"{name}_b"] = rng.standard_normal(cout).astype(np.float32)
        return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], name=name, pads=[k // 2] * 4, group=group)

    inits.update(lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))
    nodes = [
        conv("c1", "x", 8, 64, 1), helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"]),             # pure, ReLU6
        conv("c2", "a1", 64, 64, 1), helper.make_node("Add", ["a1", "c2"], ["s2"]),                   # blas, residual
        helper.make_node("Relu", ["s2"], ["a2"]),                                                      # ... then Relu
        conv("c3", "a2", 64, 64, 3, group=64), helper.make_node("Sigmoid", ["c3"], ["g3"]),           # depthwise, SiLU
        helper.make_node("Mul", ["c3", "g3"], ["a3"]),
        conv("c4", "a3", 64, 32, 3), helper.make_node("LeakyRelu", ["c4"], ["a4"], alpha=0.1),        # blas im2col
        conv("c5", "a4", 32, 32, 3), helper.make_node("HardSwish", ["c5"], ["a5"]),                   # blas im2col
        conv("c6", "a5", 32, 16, 1), helper.make_node("Sigmoid", ["c6"], ["a6"]),                     # pure
        conv("c7", "a6", 16, 16, 3), helper.make_node("Add", ["c7", "a6"], ["s7"]),                   # pure, residual
        helper.make_node("Tanh", ["s7"], ["a7"]),
        conv("c8", "a7", 16, 16, 1), helper.make_node("HardSigmoid", ["c8"], ["a8"], alpha=0.3, beta=0.4),
        conv("c9", "a8", 16, 16, 1), helper.make_node("Relu", ["c9"], ["r9"]),                        # c9 read twice:
        helper.make_node("Add", ["r9", "c9"], ["y"]),                                                  # not fused
        # squeeze-excitation before a 1x1 conv (blas): the scale goes into the conv's weights
        helper.make_node("GlobalAveragePool", ["a2"], ["p10"]), helper.make_node("Sigmoid", ["p10"], ["s10"]),
        helper.make_node("Mul", ["s10", "a2"], ["m10"]), conv("c10", "m10", 64, 16, 1),
    ]
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    return make_model(nodes, {"x": x}, ["y", "c10"], inits), x


def test_fused_sigmoid_and_silu_over_the_whole_float_range():
    """Fused float Sigmoid / SiLU compute exp with daceml_expf (cpu_support/vecmath.h): checked
    against float64 on every tenth of [-30, 30] and out to +-120 (beyond its clamp), NaN kept."""
    values = np.concatenate([np.linspace(-30, 30, 601), np.linspace(-120, 120, 2401),
                             [np.float32(88.8), -88.8, 0.0, -0.0, 1e-30, -1e-30, np.nan]]).astype(np.float32)
    x = np.resize(values, (1, 4, 16, 48))
    x.reshape(-1)[:values.size] = values
    w = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)  # the conv passes x through exactly
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="c1"), helper.make_node("Sigmoid", ["c1"], ["sig"]),
             helper.make_node("Conv", ["x", "w"], ["c2"], name="c2"), helper.make_node("Sigmoid", ["c2"], ["g2"]),
             helper.make_node("Mul", ["c2", "g2"], ["silu"])]
    dm = ONNXModel(make_model(nodes, {"x": x}, ["sig", "silu"], {"w": w}))
    optimize(dm, passes=pipeline(4))
    assert "daceml_expf" in "".join(n.code.as_string for n, _ in dm.sdfg.all_nodes_recursive()
                                    if hasattr(n, "code")), "the epilogues should be fused"
    sig, silu = dm(x)
    x64 = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x.astype(np.float64))  # 0 * NaN: NaN in every channel
    with np.errstate(over="ignore", invalid="ignore"):
        sig64 = 1 / (1 + np.exp(-x64))
    np.testing.assert_allclose(sig, sig64, rtol=1e-6, atol=1e-30, equal_nan=True)
    np.testing.assert_allclose(silu, x64 * sig64, rtol=1e-6, atol=1e-30, equal_nan=True)
    assert np.isnan(sig.reshape(-1)[values.size - 1]) and np.isnan(silu.reshape(-1)[values.size - 1])


@pytest.mark.skipif(not OpenBLAS.is_installed(), reason="the scipy-openblas32 wheel is not installed")
def test_activations_and_residuals_fuse_into_both_conv_implementations():
    model, x = _conv_chain()
    expected = run_onnxruntime(model, {"x": x})
    dm = ONNXModel(model)
    levels = pipeline(4)
    optimize(dm, passes=[levels[0], [ChooseImplementations()]])
    convs = {n.onnx_node_name: (n, s) for n, s in dm.sdfg.all_nodes_recursive()
             if isinstance(n, ONNXOp) and n.schema.name == "Conv"}
    impls = {name: registry.would_select(n, s, dm.sdfg).name for name, (n, s) in convs.items()}
    assert {impls["c1"], impls["c3"], impls["c7"]} == {"pure"}
    assert {impls["c2"], impls["c4"], impls["c5"], impls["c10"]} == {"blas"}
    fuse = FuseEpilogues()
    assert fuse.apply(dm.sdfg, dm) == 12, fuse.detail
    fused = {name: epilogue.describe(n) for name, (n, _) in convs.items()}
    assert fused == {"c1": "Clip(0, 6)", "c2": "+ residual then Relu", "c3": "SiLU", "c4": "LeakyRelu(0.1)",
                     "c5": "HardSwish", "c6": "Sigmoid", "c7": "+ residual then Tanh", "c8": "HardSigmoid(0.3, 0.4)",
                     "c9": "", "c10": "input channels scaled"}
    ops = sorted(n.schema.name for n, _ in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp))
    assert ops == ["Add"] + ["Conv"] * 10 + ["GlobalAveragePool", "Relu", "Sigmoid"]
    optimize(dm, passes=[[p for p in levels[1] if not isinstance(p, (ChooseImplementations, FuseEpilogues))]] +
             levels[2:])
    outputs = dm(x)
    assert len(outputs) == len(expected) == 2
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_an_epilogue_is_never_dropped_by_another_implementation():
    model, _ = _conv_chain()
    dm = ONNXModel(model)
    node, state = next((n, s) for n, s in dm.sdfg.all_nodes_recursive()
                       if isinstance(n, ONNXOp) and n.schema.name == "Conv")
    node.epilogue = "Relu"
    for name, impl in registry.implementations("Conv").items():
        reason = registry._reason(impl, node, state, dm.sdfg)
        if not hasattr(impl, "epilogues"):
            assert reason is not None and "epilogue" in reason, name
    node.epilogue = "Softplus"  # no implementation computes it
    assert registry.would_select(node, state, dm.sdfg) is None
    assert "Softplus epilogue" in str(pytest.raises(Exception, registry.select, node, state, dm.sdfg).value)


class _ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return torch.relu(self.c2(torch.relu(self.c1(x))) + x)


def test_gradients_through_fused_convs_equal_eager():
    torch.manual_seed(0)
    m = _ResBlock()
    x = torch.randn(2, 4, 6, 6)
    dm = DaceModule(_ResBlock(), name="epilogue_training")
    dm.load_state_dict(m.state_dict())
    assert_gradients_match(m, dm, x)
    with torch.no_grad():
        torch.testing.assert_close(dm(x), m(x), rtol=1e-4, atol=1e-4)


class _FeedForward(nn.Module):
    """A transformer feed-forward block on 3-D input (the exporter's MatMul + Add, made a Gemm
    between reshapes at level 1), and a 2-D linear layer with ReLU."""

    def __init__(self):
        super().__init__()
        self.up, self.down, self.head = nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(16, 8)

    def forward(self, x):
        h = x + self.down(torch.nn.functional.gelu(self.up(x)))
        return torch.relu(self.head(h.reshape(-1, 16)))


@pytest.mark.parametrize("library", ["blas", "mkl"])
def test_gelu_residual_and_relu_fuse_into_gemms(library, monkeypatch):
    from daceml.transformation import passes
    if library == "mkl" and not MKL.is_installed():
        pytest.skip("the mkl wheels are an optional extra")
    if library == "blas" and not OpenBLAS.is_installed():
        pytest.skip("OpenBLAS is not installed")
    monkeypatch.setitem(passes.FAST_IMPLEMENTATIONS["cpu"], "Gemm", [library])
    torch.manual_seed(0)
    m = _FeedForward().eval()
    x = torch.randn(2, 5, 16)
    proto = torch.onnx.export(m, (x, ), dynamo=True, external_data=False).model_proto
    dm = ONNXModel(proto, name=f"epilogue_gemms_{library}")
    report = optimize(dm, level=4)
    fuse = next(p for p in report.passes if p.name == "FuseEpilogues")
    assert fuse.changes == 3, fuse.detail  # Gelu, the residual Add, Relu
    with torch.no_grad():
        np.testing.assert_allclose(dm(x.numpy()), m(x).numpy(), rtol=1e-5, atol=1e-5)


class _Wide(nn.Module):
    """Products big enough to be split between threads: 96x520x64 by 16-column blocks (the last
    one ragged), 96x64x520 by rows; bias + ReLU, and bias + residual + GELU."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(64, 520), nn.Linear(520, 64)

    def forward(self, x):
        return torch.nn.functional.gelu(x + self.down(torch.relu(self.up(x))))


def test_epilogues_of_products_split_between_threads():
    if not OpenBLAS.is_installed():
        pytest.skip("OpenBLAS is not installed")
    torch.manual_seed(0)
    m = _Wide().eval()
    x = torch.randn(96, 64)
    proto = torch.onnx.export(m, (x, ), dynamo=True, external_data=False).model_proto
    dm = ONNXModel(proto, name="epilogue_blocks")
    report = optimize(dm, level=4)
    fuse = next(p for p in report.passes if p.name == "FuseEpilogues")
    assert fuse.changes == 3, fuse.detail  # Relu, the residual Add, Gelu
    with torch.no_grad():
        np.testing.assert_allclose(dm(x.numpy()), m(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("library", ["blas", "mkl"])
def test_constant_scales_become_the_matmul_alpha(library, monkeypatch):
    """``Div(MatMul, c)`` (attention's scaling) and ``Mul(c, MatMul)`` fold into the BLAS call's
    alpha; ``Div(c, MatMul)`` (no scale of the product) and a scale by a tensor stay nodes."""
    from daceml.transformation import passes
    if library == "mkl" and not MKL.is_installed():
        pytest.skip("the mkl wheels are an optional extra")
    if library == "blas" and not OpenBLAS.is_installed():
        pytest.skip("OpenBLAS is not installed")
    monkeypatch.setitem(passes.FAST_IMPLEMENTATIONS["cpu"], "MatMul", [library])
    rng = np.random.default_rng(0)
    f = np.float32
    inputs = {"q": rng.standard_normal((2, 3, 5, 4)).astype(f), "k": rng.standard_normal((2, 3, 4, 5)).astype(f),
              "w": rng.standard_normal((4, 6)).astype(f), "t": rng.standard_normal((2, 3, 5, 5)).astype(f)}
    inits = {"c": np.array(np.sqrt(4.0) * 1.5, f), "g": np.array([0.3], f)}
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"]), helper.make_node("Div", ["s", "c"], ["y1"]),
             helper.make_node("MatMul", ["q", "w"], ["p"]), helper.make_node("Mul", ["g", "p"], ["y2"]),
             helper.make_node("MatMul", ["q", "k"], ["r"]), helper.make_node("Div", ["c", "r"], ["y3"]),
             helper.make_node("MatMul", ["q", "k"], ["u"]), helper.make_node("Mul", ["u", "t"], ["y4"])]
    model = make_model(nodes, inputs, ["y1", "y2", "y3", "y4"], inits)
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model, name=f"epilogue_alpha_{library}")
    optimize(dm, passes=[passes.level_passes(1)])
    report = optimize(dm, passes=[[ChooseImplementations(), FuseEpilogues()]])
    assert report.passes[-1].changes == 2, report.passes[-1].detail
    scales = sorted(n.output_scale for n, _ in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp)
                    and n.schema.name == "MatMul")
    assert scales == pytest.approx([0.3, 1 / 3, 1, 1]), scales
    optimize(dm, passes=[[passes.ExpandLibraryNodes()], passes.level_passes(3), passes.level_passes(4)])
    for got, want in zip(dm(**inputs), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _LearnedScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4, 6, 5))
        self.scale = nn.Parameter(torch.tensor(0.125))

    def forward(self, q):
        return torch.matmul(q, self.w) * self.scale


def test_a_parameter_scale_is_not_folded_as_a_constant():
    """A learnable scalar is passed live on every call: changing it changes the result (it is
    not baked into the MatMul's alpha)."""
    torch.manual_seed(0)
    m = _LearnedScale().eval()
    q = torch.randn(3, 4, 2, 6)
    dm = DaceModule(m, name="epilogue_learned_scale")
    with torch.no_grad():
        np.testing.assert_allclose(dm(q).numpy(), m(q).numpy(), rtol=1e-5, atol=1e-6)
        m.scale.fill_(-2.0)
        np.testing.assert_allclose(dm(q).numpy(), m(q).numpy(), rtol=1e-5, atol=1e-6)


def test_squeeze_excitation_pooling_fuses_into_the_depthwise_conv():
    """The ReduceMean / GlobalAveragePool of a depthwise conv's output becomes the conv's second
    output (the mean of each plane after the epilogue); pools over other dims, and pools of convs
    not computing whole planes per task, stay nodes. Results equal onnxruntime's."""
    rng = np.random.default_rng(3)
    c = 12
    inits = {"wd": rng.standard_normal((c, 1, 3, 3)).astype(np.float32), "bd": rng.standard_normal(c).astype(np.float32),
             "w1": (rng.standard_normal((4, c, 1, 1)) * 0.3).astype(np.float32),
             "w2": (rng.standard_normal((c, 4, 1, 1)) * 0.3).astype(np.float32),
             "wp": (rng.standard_normal((6, c, 1, 1)) * 0.3).astype(np.float32),
             "wf": (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32),
             "spatial": np.array([-1, -2], np.int64), "all": np.array([1, 2, 3], np.int64)}
    nodes = [
        # MBConv's middle: depthwise conv + SiLU, squeeze-excitation, scaled 1x1 projection
        helper.make_node("Conv", ["x", "wd", "bd"], ["d"], name="dw", group=c, pads=[1] * 4),
        helper.make_node("Sigmoid", ["d"], ["ds"]), helper.make_node("Mul", ["d", "ds"], ["y"]),
        helper.make_node("ReduceMean", ["y", "spatial"], ["p"], name="pool"),
        helper.make_node("Conv", ["p", "w1"], ["e1"]), helper.make_node("Relu", ["e1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["e2"]), helper.make_node("Sigmoid", ["e2"], ["s"]),
        helper.make_node("Mul", ["y", "s"], ["m"]), helper.make_node("Conv", ["m", "wp"], ["out"], name="project"),
        # a stride-2 depthwise conv pooled by GlobalAveragePool (and read by nothing else)
        helper.make_node("Conv", ["x", "wd"], ["d2"], name="dw2", group=c, pads=[1] * 4, strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["d2"], ["g2"], name="gap"),
        # not fused: a mean over channels too, and a full conv (its tasks compute rows)
        helper.make_node("Conv", ["x", "wd"], ["d3"], name="dw3", group=c, pads=[1] * 4),
        helper.make_node("ReduceMean", ["d3", "all"], ["g3"], name="pool_all", keepdims=0),
        helper.make_node("Conv", ["x", "wf"], ["f"], name="full", pads=[1] * 4),
        helper.make_node("ReduceMean", ["f", "spatial"], ["g4"], name="pool_full"),
    ]
    x = rng.standard_normal((2, c, 13, 11)).astype(np.float32)
    model = make_model(nodes, {"x": x}, ["out", "g2", "g3", "g4"], inits)
    expected = run_onnxruntime(model, {"x": x})
    dm = ONNXModel(model)
    levels = pipeline(4)
    optimize(dm, passes=[levels[0], [p for p in levels[1] if not isinstance(p, ExpandLibraryNodes)]])
    pooled = {n.onnx_node_name for n, _ in dm.sdfg.all_nodes_recursive()
              if isinstance(n, ONNXOp) and epilogue.POOLED_MEAN in n.out_connectors}
    assert pooled == {"dw", "dw2"}
    left = sorted(n.onnx_node_name for n, _ in dm.sdfg.all_nodes_recursive()
                  if isinstance(n, ONNXOp) and n.schema.name in ("ReduceMean", "GlobalAveragePool"))
    assert left == ["pool_all", "pool_full"]
    optimize(dm, passes=[[p for p in levels[1] if isinstance(p, ExpandLibraryNodes)]] + levels[2:])
    outputs = dm(x)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the whole pipeline, checked pass by pass against the unoptimized program
    optimize(ONNXModel(model), verify=True)
