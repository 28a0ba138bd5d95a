"""Pure Attention, RotaryEmbedding, RMSNormalization, LinearAttention and
CausalConvWithState against onnxruntime, or against onnx's reference evaluator where
onnxruntime lacks the op or opset. Several nodes share one model (one compile)."""
from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from daceml import config
from daceml.onnx import ONNXModel
from daceml.onnx.ops import registry
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def run_dace(model: onnx.ModelProto, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
    with config.patch(allow_onnxruntime_fallback=False):
        got = ONNXModel(model)(**inputs)
    return [np.asarray(g) for g in (got if isinstance(got, tuple) else [got])]


def assert_matches_reference(model: onnx.ModelProto, inputs: Dict[str, np.ndarray], rtol=1e-5, atol=1e-5):
    expected = ReferenceEvaluator(model).run(None, inputs)
    got = run_dace(model, inputs)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape and g.dtype == e.dtype, f"output {i}: {g.shape} {g.dtype} vs {e.shape} {e.dtype}"
        tol = dict(rtol=max(rtol, 2e-3), atol=max(atol, 2e-3)) if e.dtype == np.float16 else dict(rtol=rtol, atol=atol)
        np.testing.assert_allclose(g, e, **tol, err_msg=f"output {model.graph.output[i].name}")


def test_attention_opset23_against_onnxruntime():
    """4-D MHA with a float mask and qk output; 3-D GQA, causal, with a boolean mask;
    past/present cache with softcap and mode-2 qk output; a scaled
    float64 attention with a rank-3 mask."""
    rng = np.random.default_rng(0)
    B, Sq, Skv, P, D = 2, 4, 6, 3, 8
    inputs = {
        "q4": rand(rng, B, 3, Sq, D), "k4": rand(rng, B, 3, Skv, D), "v4": rand(rng, B, 3, Skv, 5),
        "fmask": rand(rng, Sq, Skv),
        "q3": rand(rng, B, Sq, 4 * D), "k3": rand(rng, B, Skv, 2 * D), "v3": rand(rng, B, Skv, 2 * D),
        "bmask": rng.random((B, 1, Sq, Skv)) > 0.3,
        "pk": rand(rng, B, 3, P, D), "pv": rand(rng, B, 3, P, 5), "pmask": rand(rng, Sq, P + Skv),
        "qd": rand(rng, 1, 2, Sq, D, dtype=np.float64), "kd": rand(rng, 1, 2, Skv, D, dtype=np.float64),
        "vd": rand(rng, 1, 2, Skv, D, dtype=np.float64), "dmask": rand(rng, 2, Sq, Skv, dtype=np.float64),
    }
    nodes = [
        helper.make_node("Attention", ["q4", "k4", "v4", "fmask"], ["y1", "", "", "qk1"]),
        helper.make_node("Attention", ["q3", "k3", "v3", "bmask"], ["y2"], q_num_heads=4, kv_num_heads=2,
                         is_causal=1),
        helper.make_node("Attention", ["q4", "k4", "v4", "pmask", "pk", "pv"], ["y3", "pres_k", "pres_v", "qk3"],
                         softcap=2.5, qk_matmul_output_mode=2),
        helper.make_node("Attention", ["qd", "kd", "vd", "dmask"], ["y4"], scale=0.3),
    ]
    outs = ["y1", "qk1", "y2", "y3", "pres_k", "pres_v", "qk3", "y4"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, opset=23), inputs, rtol=1e-4, atol=1e-5)


def test_attention_opset25_against_reference():
    """Sliding windows, the causal frontier of an external cache (nonpad_kv_seqlen), a
    fully masked row, mode-3 probabilities with double softmax precision, and float16."""
    rng = np.random.default_rng(1)
    B, Sq, Skv, D = 2, 3, 7, 4
    inputs = {
        "q": rand(rng, B, 2, Sq, D), "k": rand(rng, B, 1, Skv, D), "v": rand(rng, B, 1, Skv, D),
        "nonpad": np.array([5, 2], np.int64),
        "mask": np.array([[True] * Skv, [True] * Skv, [False] * Skv]),
        "qh": rand(rng, B, Sq, 2 * D, dtype=np.float16), "kh": rand(rng, B, Skv, 2 * D, dtype=np.float16),
        "vh": rand(rng, B, Skv, 2 * D, dtype=np.float16),
    }
    nodes = [
        helper.make_node("Attention", ["q", "k", "v", "", "", "", "nonpad"], ["y1"], is_causal=1,
                         left_window_size=1),
        helper.make_node("Attention", ["q", "k", "v", "mask"], ["y2", "", "", "p2"], left_window_size=2,
                         right_window_size=1, qk_matmul_output_mode=3, softmax_precision=TensorProto.DOUBLE),
        helper.make_node("Attention", ["qh", "kh", "vh"], ["y3"], q_num_heads=2, kv_num_heads=2, is_causal=1),
    ]
    outs = ["y1", "y2", "p2", "y3"]
    model = make_model(nodes, inputs, outs, opset=25)
    assert_matches_reference(model, inputs, rtol=1e-3, atol=1e-3)
    # the row whose mask is all False is zero in Y and in the probabilities
    y2, p2 = run_dace(model, inputs)[1:3]
    assert not np.isnan(y2).any() and np.all(y2[:, :, 2] == 0) and np.all(p2[:, :, 2] == 0)


def test_rotary_and_rms_normalization_against_onnxruntime():
    rng = np.random.default_rng(2)
    B, H, S, D = 2, 3, 5, 8
    inputs = {
        "x4": rand(rng, B, H, S, D), "cos": rand(rng, 16, D // 2), "sin": rand(rng, 16, D // 2),
        "pos": rng.integers(0, 16, (B, S)).astype(np.int64),
        "x3": rand(rng, B, S, H * D), "cos3": rand(rng, B, S, 2), "sin3": rand(rng, B, S, 2),
        "w": rand(rng, D), "w2": rand(rng, S, D),
    }
    nodes = [
        helper.make_node("RotaryEmbedding", ["x4", "cos", "sin", "pos"], ["r1"]),
        helper.make_node("RotaryEmbedding", ["x4", "cos", "sin", "pos"], ["r2"], interleaved=1),
        helper.make_node("RotaryEmbedding", ["x3", "cos3", "sin3"], ["r3"], num_heads=H, rotary_embedding_dim=4),
        helper.make_node("RMSNormalization", ["x4", "w"], ["n1"]),
        helper.make_node("RMSNormalization", ["x4", "w2"], ["n2"], axis=-2, epsilon=0.1),
    ]
    outs = ["r1", "r2", "r3", "n1", "n2"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, opset=23), inputs, rtol=1e-5, atol=1e-5)


def test_linear_attention_and_causal_conv_against_reference():
    """opset 27 (onnxruntime lacks both ops): every update rule, GQA, past state; the
    convolution in float16."""
    rng = np.random.default_rng(3)
    B, T, Hq, Hkv, dk, dv = 2, 5, 4, 2, 3, 4
    inputs = {
        "q": rand(rng, B, T, Hq * dk), "k": rand(rng, B, T, Hkv * dk) * 0.5, "v": rand(rng, B, T, Hkv * dv),
        "s0": rand(rng, B, Hkv, dk, dv), "g": -np.abs(rand(rng, B, T, Hkv * dk)), "gh": -np.abs(rand(rng, B, T, Hkv)),
        "beta": rng.random((B, T, Hkv)).astype(np.float32),
        "x": rand(rng, B, 3, 7, dtype=np.float16), "wc": rand(rng, 3, 1, 4, dtype=np.float16),
        "bc": rand(rng, 3, dtype=np.float16), "st": rand(rng, B, 3, 3, dtype=np.float16),
    }
    heads = dict(q_num_heads=Hq, kv_num_heads=Hkv)
    nodes = [
        helper.make_node("LinearAttention", ["q", "k", "v"], ["o1", "s1"], update_rule="linear", **heads),
        helper.make_node("LinearAttention", ["q", "k", "v", "s0", "gh"], ["o2", "s2"], update_rule="gated",
                         scale=0.5, **heads),
        helper.make_node("LinearAttention", ["q", "k", "v", "", "", "beta"], ["o3", "s3"], update_rule="delta",
                         **heads),
        helper.make_node("LinearAttention", ["q", "k", "v", "s0", "g", "beta"], ["o4", "s4"], **heads),
        helper.make_node("CausalConvWithState", ["x", "wc", "bc", "st"], ["c1", "cs1"], activation="silu"),
        helper.make_node("CausalConvWithState", ["x", "wc"], ["c2", "cs2"]),
    ]
    outs = ["o1", "s1", "o2", "s2", "o3", "s3", "o4", "s4", "c1", "cs1", "c2", "cs2"]
    assert_matches_reference(make_model(nodes, inputs, outs, opset=27), inputs, rtol=1e-4, atol=1e-5)


def test_symbolic_batch_and_sequence():
    """Batch and sequence lengths symbolic: one build runs two sizes."""
    D = 8
    vi = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("RMSNormalization", ["x", "w"], ["xn"]),
         helper.make_node("Attention", ["xn", "k", "k"], ["y"], q_num_heads=2, kv_num_heads=1, is_causal=1)],
        "g", [vi("x", ["B", "S", 2 * D]), vi("w", [2 * D]), vi("k", ["B", "T", D])], [vi("y", ["B", "S", 2 * D])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    rng = np.random.default_rng(4)
    with config.patch(allow_onnxruntime_fallback=False):
        dm = ONNXModel(model)
        for b, s, t in ((2, 3, 5), (1, 6, 4)):
            inputs = {"x": rand(rng, b, s, 2 * D), "w": rand(rng, 2 * D), "k": rand(rng, b, t, D)}
            expected = ReferenceEvaluator(model).run(None, inputs)[0]
            np.testing.assert_allclose(np.asarray(dm(**inputs)), expected, rtol=1e-4, atol=1e-5)


def test_why_not_names_the_problem():
    """No compile: an inapplicable node is refused with a reason."""
    from daceml.onnx.nodes import node_class
    import dace
    sdfg = dace.SDFG("why_not")
    state = sdfg.add_state()
    node = node_class("Attention", 23)("att")
    state.add_node(node)
    for name, shape in (("Q", (1, 4, 16)), ("K", (1, 4, 16)), ("V", (1, 4, 16)), ("Y", (1, 4, 16))):
        sdfg.add_array(name, shape, dace.float32)
    for name in ("Q", "K", "V"):
        state.add_edge(state.add_read(name), None, node, name, dace.Memlet(name))
    state.add_edge(node, "Y", state.add_write("Y"), None, dace.Memlet("Y"))
    reason = registry.implementations("Attention")["pure"].why_not(node, state, sdfg)
    assert reason is not None and "q_num_heads" in reason
    node.q_num_heads, node.kv_num_heads = 3, 3
    assert "divisible" in registry.implementations("Attention")["pure"].why_not(node, state, sdfg)
    node.q_num_heads, node.kv_num_heads = 4, 4
    assert registry.implementations("Attention")["pure"].why_not(node, state, sdfg) is None


@pytest.mark.parametrize("op", ["Attention", "RotaryEmbedding", "RMSNormalization", "LinearAttention",
                                "CausalConvWithState"])
def test_registered(op):
    assert "pure" in registry.implementations(op)
