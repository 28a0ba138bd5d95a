"""BLAS implementations (``blas``: OpenBLAS, ``mkl``: oneMKL) of MatMul and Gemm against onnxruntime,
every shape case."""
import numpy as np
import pytest
from onnx import helper

from daceml.onnx import ONNXModel
from daceml.onnx.nodes import ONNXOp
from daceml.testing.onnx_compare import make_model, run_onnxruntime


LIBRARIES = ["blas", "mkl"]


def _all_blas(model: ONNXModel, library: str = "blas"):
    for node, _ in model.sdfg.all_nodes_recursive():
        if isinstance(node, ONNXOp):
            node.implementation = library


def check(model, inputs, library, rtol=1e-4, atol=1e-4):
    expected = run_onnxruntime(model, inputs)
    dm = ONNXModel(model)
    _all_blas(dm, library)
    got = dm(**inputs)
    got = got if isinstance(got, tuple) else (got, )
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_cases(dtype, library):
    rng = np.random.default_rng(0)
    shapes = {  # A, B
        "mm2d": ((5, 7), (7, 3)),
        "nd_2d": ((2, 3, 5, 7), (7, 4)),
        "batched": ((3, 5, 7), (3, 7, 2)),
        "broadcast": ((2, 1, 5, 7), (1, 3, 7, 4)),
        "vec_mat": ((7, ), (2, 7, 3)),
        "mat_vec": ((2, 5, 7), (7, )),
        "vec_vec": ((7, ), (7, )),
        "shared_a": ((5, 7), (3, 7, 2)),
        "shared_b4d": ((2, 3, 5, 7), (7, 2)),
    }
    nodes, inputs, outputs = [], {}, []
    for name, (sa, sb) in shapes.items():
        inputs[f"{name}_a"] = rng.standard_normal(sa).astype(dtype)
        inputs[f"{name}_b"] = rng.standard_normal(sb).astype(dtype)
        nodes.append(helper.make_node("MatMul", [f"{name}_a", f"{name}_b"], [f"{name}_y"]))
        outputs.append(f"{name}_y")
    check(make_model(nodes, inputs, outputs), inputs, library, rtol=1e-5 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("library", LIBRARIES)
def test_gemm_cases(library):
    rng = np.random.default_rng(1)
    f = np.float32
    a, at = rng.standard_normal((4, 6)).astype(f), rng.standard_normal((6, 4)).astype(f)
    b, bt = rng.standard_normal((6, 3)).astype(f), rng.standard_normal((3, 6)).astype(f)
    inputs = {"a": a, "at": at, "b": b, "bt": bt, "c_row": rng.standard_normal((3, )).astype(f),
              "c_col": rng.standard_normal((4, 1)).astype(f), "c_full": rng.standard_normal((4, 3)).astype(f),
              "c_scalar": np.array([0.5], f)}
    nodes = [
        helper.make_node("Gemm", ["a", "b", "c_row"], ["y0"]),
        helper.make_node("Gemm", ["at", "bt", "c_col"], ["y1"], transA=1, transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["a", "bt", "c_full"], ["y2"], transB=1, beta=-1.0),
        helper.make_node("Gemm", ["at", "b"], ["y3"], transA=1, alpha=3.0),
        helper.make_node("Gemm", ["a", "b", "c_scalar"], ["y4"]),
    ]
    check(make_model(nodes, inputs, [f"y{i}" for i in range(5)]), inputs, library)


@pytest.mark.parametrize("library", LIBRARIES)
def test_symbolic_batch(library):
    import onnx
    w = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "sym",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8])],
                              [onnx.numpy_helper.from_array(w, "w")])
    dm = ONNXModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    _all_blas(dm, library)
    for n in (1, 9):
        xv = np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(dm(xv), xv @ w, rtol=1e-5, atol=1e-5)


def test_blas_does_not_apply_to_integers():
    from daceml.onnx.ops import registry
    a = np.ones((2, 2), np.int64)
    dm = ONNXModel(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": a}, ["y"]))
    (node, state) = [(n, s) for n, s in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp)][0]
    for library in LIBRARIES:
        reason = registry.why_not_all(node, state, dm.sdfg)[library]
        assert "int64" in reason and "float32 or float64" in reason


def test_mkl_is_set_to_the_gnu_openmp_threading_layer():
    """oneMKL uses the GNU OpenMP threading layer: the same thread pool as the program's maps."""
    import os
    from daceml.targets import cpu
    rng = np.random.default_rng(3)
    inputs = {"a": rng.standard_normal((64, 32)).astype(np.float32),
              "b": rng.standard_normal((32, 16)).astype(np.float32)}
    check(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, ["y"]), inputs, "mkl")
    assert os.environ["MKL_THREADING_LAYER"] == "GNU" and cpu.MKL.is_installed()


@pytest.mark.parametrize("library", LIBRARIES)
def test_conv_cases(library):
    """2-D convs as GEMMs: 1x1 (straight GEMM), padded, strided, dilated, grouped, with and without bias."""
    rng = np.random.default_rng(4)
    f = np.float32
    cases = {  # name: (x shape, w shape, attributes, bias)
        "pointwise": ((2, 8, 5, 6), (12, 8, 1, 1), {}, True),
        "pad3x3": ((2, 4, 7, 7), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}, True),
        "stride2": ((1, 3, 9, 8), (5, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}, False),
        "dilated": ((1, 2, 9, 9), (3, 2, 3, 3), {"dilations": [2, 2]}, True),
        "grouped": ((2, 8, 6, 6), (4, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
        "pointwise_strided": ((1, 4, 6, 6), (3, 4, 1, 1), {"strides": [2, 2]}, False),
    }
    nodes, inputs, outputs = [], {}, []
    for name, (xs, ws, attrs, bias) in cases.items():
        inputs[f"{name}_x"] = rng.standard_normal(xs).astype(f)
        inputs[f"{name}_w"] = rng.standard_normal(ws).astype(f)
        names = [f"{name}_x", f"{name}_w"]
        if bias:
            inputs[f"{name}_b"] = rng.standard_normal(ws[0]).astype(f)
            names.append(f"{name}_b")
        nodes.append(helper.make_node("Conv", names, [f"{name}_y"], **attrs))
        outputs.append(f"{name}_y")
    check(make_model(nodes, inputs, outputs), inputs, library)


@pytest.mark.parametrize("library", LIBRARIES)
def test_products_split_between_threads(library):
    """Products large enough for OpenBLAS's wrapper to split them between the OpenMP threads: by rows
    (more rows than columns), by columns (blocks of 16, a ragged last block), transposed operands, and
    batches smaller and larger than the thread count (in sequence, each split / in parallel), and
    products with one row or one column (matrix-vector products, split the same way)."""
    rng = np.random.default_rng(5)
    f = np.float32
    inputs = {"rows_a": rng.standard_normal((1001, 37)), "rows_b": rng.standard_normal((37, 50)),
              "cols_a": rng.standard_normal((97, 41)), "cols_b": rng.standard_normal((41, 1003)),
              "gt_a": rng.standard_normal((64, 300)), "gt_b": rng.standard_normal((517, 64)),
              "gt_c": rng.standard_normal((517, )),
              "gr_a": rng.standard_normal((30, 700)), "gr_b": rng.standard_normal((30, 20)),
              "v1_a": rng.standard_normal((1, 600)), "v1_b": rng.standard_normal((700, 600)),
              "v1_c": rng.standard_normal((700, )),
              "v2_a": rng.standard_normal((1, 300)), "v2_b": rng.standard_normal((300, 701)),
              "v3_a": rng.standard_normal((600, 300)), "v3_b": rng.standard_normal((300, 1)),
              "v4_a": rng.standard_normal((300, 650)), "v4_b": rng.standard_normal((1, 300)),
              "b1_a": rng.standard_normal((1, 301, 40)), "b1_b": rng.standard_normal((1, 40, 230)),
              "b5_a": rng.standard_normal((5, 3, 90, 40)), "b5_b": rng.standard_normal((5, 3, 40, 110))}
    inputs = {k: v.astype(f) for k, v in inputs.items()}
    nodes = [helper.make_node("MatMul", ["rows_a", "rows_b"], ["rows_y"]),
             helper.make_node("MatMul", ["cols_a", "cols_b"], ["cols_y"]),
             helper.make_node("Gemm", ["gt_a", "gt_b", "gt_c"], ["gt_y"], transA=1, transB=1, alpha=0.5),
             helper.make_node("Gemm", ["gr_a", "gr_b"], ["gr_y"], transA=1),
             helper.make_node("Gemm", ["v1_a", "v1_b", "v1_c"], ["v1_y"], transB=1, beta=0.5),
             helper.make_node("MatMul", ["v2_a", "v2_b"], ["v2_y"]),
             helper.make_node("MatMul", ["v3_a", "v3_b"], ["v3_y"]),
             helper.make_node("Gemm", ["v4_a", "v4_b"], ["v4_y"], transA=1, transB=1, alpha=2.0),
             helper.make_node("MatMul", ["b1_a", "b1_b"], ["b1_y"]),
             helper.make_node("MatMul", ["b5_a", "b5_b"], ["b5_y"])]
    outputs = ["rows_y", "cols_y", "gt_y", "gr_y", "v1_y", "v2_y", "v3_y", "v4_y", "b1_y", "b5_y"]
    check(make_model(nodes, inputs, outputs), inputs, library)


def test_mkl_conv_leaves_depthwise_to_the_pure_kernel():
    from daceml.onnx.ops import registry
    x = np.ones((1, 4, 5, 5), np.float32)
    w = np.ones((4, 1, 3, 3), np.float32)
    dm = ONNXModel(make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=4)], {"x": x, "w": w}, ["y"]))
    (node, state) = [(n, s) for n, s in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp)][0]
    assert "depthwise" in registry.why_not_all(node, state, dm.sdfg)["mkl"]
