"""Pure MatMul / Gemm / MatMulInteger / Einsum against onnxruntime.

Several nodes share one model (one compile) wherever they can. Sizes are chosen to
cross the kernel's blocks: 8-row micro tiles, 64-row and 256-column work items,
32-column panels and 256-deep k blocks."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daceml.errors import DacemlError
from daceml.onnx import ONNXModel
from daceml.onnx.ops import registry
from daceml.onnx.ops.linalg import parse_einsum
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model, run_onnxruntime

TOL = dict(rtol=1e-4, atol=1e-4)


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def symbolic_model(nodes, inputs, outputs, inits=None, opset=20):
    """A model whose graph inputs have named (symbolic) dims: inputs maps name -> (elem type, shape)."""
    vis = [helper.make_tensor_value_info(k, t, shape) for k, (t, shape) in inputs.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    m = helper.make_model(helper.make_graph(nodes, "g", vis, outs, inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def check_outputs(got, expected, **tol):
    got = got if isinstance(got, tuple) else (got, )
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape and g.dtype == e.dtype, f"output {i}: {g.shape} {g.dtype} vs {e.shape} {e.dtype}"
        np.testing.assert_allclose(g, e, err_msg=f"output {i}", **tol)


def test_matmul_every_case():
    rng = np.random.default_rng(0)
    inputs = {
        "a": rand(rng, 130, 600), "b": rand(rng, 600, 300),  # remainder rows/cols/k, several blocks
        "v": rand(rng, 600), "w": rand(rng, 5),
        "a4": rand(rng, 2, 1, 3, 5), "b3": rand(rng, 4, 5, 7),  # batch dims broadcast: (2, 4, 3, 7)
        "one": rand(rng, 1, 600),
        "ia": rng.integers(-9, 9, (9, 17)).astype(np.int64), "ib": rng.integers(-9, 9, (17, 33)).astype(np.int64),
        "ja": rng.integers(-9, 9, (2, 3, 4)).astype(np.int32), "jb": rng.integers(-9, 9, (4, 2)).astype(np.int32),
    }
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["mm"], name="mm"),
        helper.make_node("MatMul", ["v", "b"], ["vec_mat"], name="vec_mat"),
        helper.make_node("MatMul", ["a", "v"], ["mat_vec"], name="mat_vec"),
        helper.make_node("MatMul", ["v", "v"], ["dot"], name="dot"),
        helper.make_node("MatMul", ["a4", "b3"], ["batched"], name="batched"),
        helper.make_node("MatMul", ["w", "b3"], ["vec_batched"], name="vec_batched"),
        helper.make_node("MatMul", ["a4", "w"], ["batched_vec"], name="batched_vec"),
        helper.make_node("MatMul", ["one", "b"], ["row"], name="row"),
        helper.make_node("MatMul", ["ia", "ib"], ["int64"], name="int64"),
        helper.make_node("MatMul", ["ja", "jb"], ["int32"], name="int32"),
    ]
    outs = ["mm", "vec_mat", "mat_vec", "dot", "batched", "vec_batched", "batched_vec", "row", "int64", "int32"]
    model = make_model(nodes, inputs, outs)
    dm, got = assert_matches_onnxruntime(model, inputs, **TOL)
    assert dm.implementation_table["MatMul"] == "pure"
    assert got[3].shape == ()


def test_gemm_transposes_scales_and_bias_broadcast():
    rng = np.random.default_rng(1)
    inputs = {"a": rand(rng, 70, 40), "at": rand(rng, 40, 70), "b": rand(rng, 40, 90), "bt": rand(rng, 90, 40),
              "x1": rand(rng, 1, 40), "x3": rand(rng, 3, 40), "x5": rand(rng, 5, 40)}
    inits = {"c_mn": rand(rng, 70, 90), "c_n": rand(rng, 90), "c_m1": rand(rng, 70, 1), "c_s": np.float32(0.5),
             "c_1n": rand(rng, 1, 90)}
    nodes = [
        helper.make_node("Gemm", ["a", "b", "c_mn"], ["g_plain"], name="g_plain"),
        helper.make_node("Gemm", ["at", "b", "c_n"], ["g_ta"], name="g_ta", transA=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["a", "bt", "c_m1"], ["g_tb"], name="g_tb", transB=1),
        helper.make_node("Gemm", ["at", "bt", "c_s"], ["g_tab"], name="g_tab", transA=1, transB=1, beta=-1.0),
        helper.make_node("Gemm", ["a", "b"], ["g_noc"], name="g_noc", alpha=3.0),
        # few rows times a transposed B (the dot-product path) and one row (B read in place)
        helper.make_node("Gemm", ["x1", "bt", "c_n"], ["g_row_tb"], name="g_row_tb", transB=1),
        helper.make_node("Gemm", ["x3", "bt", "c_1n"], ["g_rows_tb"], name="g_rows_tb", transB=1),
        helper.make_node("Gemm", ["x5", "bt", "c_n"], ["g_5rows_tb"], name="g_5rows_tb", transB=1),
        helper.make_node("Gemm", ["x1", "b", "c_n"], ["g_row"], name="g_row"),
    ]
    outs = ["g_plain", "g_ta", "g_tb", "g_tab", "g_noc", "g_row_tb", "g_rows_tb", "g_5rows_tb", "g_row"]
    model = make_model(nodes, inputs, outs, initializers=inits)
    assert_matches_onnxruntime(model, inputs, **TOL)


def test_symbolic_batch_mlp():
    """A Linear-ReLU-Linear MLP as exported (Gemm with transB) and a batched MatMul, batch dims symbolic:
    one build serves every batch size."""
    rng = np.random.default_rng(2)
    inits = {"w1": rand(rng, 32, 20), "b1": rand(rng, 32), "w2": rand(rng, 10, 32), "b2": rand(rng, 10),
             "wk": rand(rng, 20, 6)}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
        helper.make_node("MatMul", ["s", "wk"], ["k"], name="proj"),
    ]
    model = symbolic_model(nodes, {"x": (TensorProto.FLOAT, ["N", 20]), "s": (TensorProto.FLOAT, ["batch", "seq", 20])},
                           ["y", "k"], inits)
    dm = ONNXModel(model)
    assert "N" in dm.sdfg.symbols and "batch" in dm.sdfg.symbols
    programs = []
    for n, b, s in ((1, 1, 3), (67, 2, 70)):
        feeds = {"x": rand(rng, n, 20), "s": rand(rng, b, s, 20)}
        check_outputs(dm(**feeds), run_onnxruntime(model, feeds), **TOL)
        programs.append(dm.compiled)
    assert programs[0] is programs[1]  # one build for both sizes


def test_float16_and_double():
    """float16 is converted exactly (DaCe's own half conversions are wrong) and accumulated in float."""
    rng = np.random.default_rng(6)
    inputs = {"a": rand(rng, 5, 70, dtype=np.float16), "b": rand(rng, 70, 40, dtype=np.float16),
              "d": rand(rng, 9, 30, dtype=np.float64), "e": rand(rng, 20, 30, dtype=np.float64)}
    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["y16"], name="mm16"),
        helper.make_node("Gemm", ["d", "e"], ["y64"], name="gemm64", transB=1, alpha=0.25),
    ]
    model = make_model(nodes, inputs, ["y16", "y64"])
    assert_matches_onnxruntime(model, inputs, rtol=1e-2, atol=2e-2)


def test_matmul_integer():
    rng = np.random.default_rng(3)
    inputs = {"a": rng.integers(0, 255, (9, 40)).astype(np.uint8), "b": rng.integers(0, 255, (40, 70)).astype(np.uint8),
              "sb": rng.integers(-128, 127, (40, 70)).astype(np.int8)}
    inits = {"azp": np.uint8(12), "bzp": np.uint8(200), "bzp_col": rng.integers(-5, 5, 70).astype(np.int8)}
    nodes = [
        helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["q"], name="q"),
        helper.make_node("MatMulInteger", ["a", "b"], ["q_nozp"], name="q_nozp"),
        helper.make_node("MatMulInteger", ["a", "sb", "azp", "bzp_col"], ["q_col"], name="q_col"),
    ]
    model = make_model(nodes, inputs, ["q", "q_nozp", "q_col"], initializers=inits)
    # the exact products (int64), not onnxruntime: its uint8 x int8 kernel saturates on CPUs
    # without AVX-512 (pairs of products summed in int16: VPMADDUBSW), where it is off by thousands
    a = inputs["a"].astype(np.int64)
    expected = [(a - 12) @ (inputs["b"].astype(np.int64) - 200), a @ inputs["b"].astype(np.int64),
                (a - 12) @ (inputs["sb"].astype(np.int64) - inits["bzp_col"].astype(np.int64))]
    got = ONNXModel(model)(**inputs)
    for name, g, e in zip(["q", "q_nozp", "q_col"], got, expected):
        assert g.dtype == np.int32, name
        np.testing.assert_array_equal(g, e, err_msg=name)
    # onnxruntime agrees where both operands are uint8
    reference = run_onnxruntime(model, inputs)
    np.testing.assert_array_equal(reference[0], expected[0])
    np.testing.assert_array_equal(reference[1], expected[1])


def test_einsum_equations():
    rng = np.random.default_rng(4)
    inputs = {"a": rand(rng, 3, 4), "b": rand(rng, 4, 5), "sq": rand(rng, 4, 4), "v": rand(rng, 4),
              "q": rand(rng, 2, 3, 5, 8), "k": rand(rng, 2, 3, 6, 8), "x": rand(rng, 2, 3, 4)}
    eqs = {
        "mm": (["a", "b"], "ij,jk->ik"),
        "attn": (["q", "k"], "bhqd,bhkd->bhqk"),
        "diag": (["sq"], "ii->i"),
        "trace": (["sq"], "ii"),
        "outer": (["v", "v"], "i,j->ij"),
        "ell_t": (["x"], "...ij->...ji"),
        "total": (["a"], "ij->"),
        "implicit": (["b", "a"], "jk,ij"),
        "three": (["a", "b", "v"], "ij,jk,j->ik"),
    }
    nodes = [helper.make_node("Einsum", ins, [name], name=name, equation=eq) for name, (ins, eq) in eqs.items()]
    model = make_model(nodes, inputs, list(eqs))
    assert_matches_onnxruntime(model, inputs, **TOL)


def test_parse_einsum():
    assert parse_einsum("ij,jk->ik", [2, 2]) == (["ij", "jk"], "ik")
    assert parse_einsum("ji,jk", [2, 2]) == (["ji", "jk"], "ik")
    assert parse_einsum("...ij,...jk->...ik", [4, 3]) == (["ABij", "Bjk"], "ABik")
    assert parse_einsum("...i", [3]) == (["ABi"], "ABi")
    with pytest.raises(ValueError, match="does not match"):
        parse_einsum("ijk->i", [2])


def test_mismatched_inner_dims_name_the_node():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [5, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"], name="bad_mm")], "g", [a, b], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(DacemlError, match="bad_mm"):
        ONNXModel(model)


def test_mismatched_inner_dims_in_the_implementation():
    """The implementation's own check (e.g. for a graph changed after import) names the node and the shapes."""
    rng = np.random.default_rng(5)
    inputs = {"a": rand(rng, 3, 4), "b": rand(rng, 4, 6)}
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm_node")], inputs, ["y"])
    dm = ONNXModel(model)
    dm.sdfg.arrays["b"].set_shape((5, 6))
    node, state = next((n, s) for n, s in dm.sdfg.all_nodes_recursive() if hasattr(n, "schema"))
    reason = registry.why_not_all(node, state, dm.sdfg)["pure"]
    assert "inner dims do not match" in reason and "(5, 6)" in reason
