"""The graph rewrites and copy elimination on their own: each changes the graph as described and
keeps results (``verify=True`` compiles and compares before and after every pass)."""
import numpy as np
import pytest
from onnx import helper

from daceml.onnx import ONNXModel
from daceml.onnx.nodes import ONNXOp
from daceml.testing.onnx_compare import make_model, run_onnxruntime
from daceml.transformation import optimize, pipeline
from daceml.transformation.base import UnorderedAccessError, check_ordered_accesses


def _ops(model):
    return sorted(n.schema.name for n, _ in model.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp))


def _linear_model():
    """The exported form of nn.Linear on a 3-D input: Transpose(W), MatMul, Add(bias), then a
    reshape of the result; and a linear layer without bias on a 2-D input."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    inits = {"w": rng.standard_normal((6, 8)).astype(np.float32), "b": rng.standard_normal(6).astype(np.float32),
             "w2": rng.standard_normal((4, 18)).astype(np.float32), "shape": np.array([2, 18], np.int64)}
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["lin"]), helper.make_node("Relu", ["lin"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["flat"]),
             helper.make_node("Transpose", ["w2"], ["w2t"], perm=[1, 0]), helper.make_node("MatMul", ["flat", "w2t"], ["y"])]
    return make_model(nodes, {"x": x}, ["y"], inits), x


def test_linear_layers_become_gemms_reading_the_weight_in_place():
    model, x = _linear_model()
    expected = run_onnxruntime(model, {"x": x})[0]
    dm = ONNXModel(model)
    report = optimize(dm, level=1, verify=True)
    assert report.first_changing_pass is None
    ops = _ops(dm)
    assert "Transpose" not in ops and "MatMul" not in ops and ops.count("Gemm") == 2
    gemms = [n for n, _ in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp) and n.schema.name == "Gemm"]
    assert all(g.transB == 1 for g in gemms)
    assert sorted(len(g.in_connectors) for g in gemms) == [2, 3]  # the bias became C where there was one
    np.testing.assert_allclose(dm(x), expected, rtol=1e-5, atol=1e-5)


def test_reshapes_become_views_without_copies():
    model, x = _linear_model()
    expected = run_onnxruntime(model, {"x": x})[0]
    dm = ONNXModel(model)
    report = optimize(dm, level=4, verify=True)
    views = next(p for p in report.passes if p.name == "ReshapesAsViews")
    assert views.changes == 3, views.detail  # flatten + unflatten of the 3-D Gemm, and the user's Reshape
    assert not any("copy" in str(n) for n, _ in dm.sdfg.all_nodes_recursive())
    np.testing.assert_allclose(dm(x), expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_folds_into_the_conv_before_it():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "cb": rng.standard_normal(4).astype(np.float32),
             "scale": rng.uniform(0.5, 2, 4).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32),
             "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 2, 4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Conv", ["bn", "w2"], ["c2"]),  # no bias
             helper.make_node("BatchNormalization", ["c2", "scale", "bias", "mean", "var"], ["y"])]
    inits["w2"] = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    model = make_model(nodes, {"x": x}, ["y"], inits)
    expected = run_onnxruntime(model, {"x": x})[0]
    dm = ONNXModel(model)
    report = optimize(dm, level=1, verify=True)
    assert report.first_changing_pass is None
    assert "BatchNormalization" not in _ops(dm) and _ops(dm).count("Conv") == 2
    np.testing.assert_allclose(dm(x), expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_fold_orders_reads_of_a_computed_bias_after_its_writer():
    """The exporter gives a Conv without bias an Expand(0) bias: the folded bias must read that
    computed transient through the node it is written to (a second, unconnected read node of it
    raced with the Expand once everything was inlined into one state: NaNs in MobileNetV2)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "zero": np.zeros(1, np.float32),
             "cshape": np.array([4], np.int64),
             "scale": rng.uniform(0.5, 2, 4).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32),
             "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 2, 4).astype(np.float32)}
    nodes = [helper.make_node("Expand", ["zero", "cshape"], ["cb"]),
             helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], inits)
    expected = run_onnxruntime(model, {"x": x})[0]
    dm = ONNXModel(model)
    optimize(dm, level=1)
    assert "BatchNormalization" not in _ops(dm)
    check_ordered_accesses(dm.sdfg)
    optimize(dm, passes=pipeline(4)[1:])
    check_ordered_accesses(dm.sdfg)
    np.testing.assert_allclose(dm(x), expected, rtol=1e-4, atol=1e-4)


def test_unordered_reads_are_reported():
    import dace
    sdfg = dace.SDFG("unordered")
    sdfg.add_array("a", [4], dace.float32)
    sdfg.add_transient("t", [4], dace.float32)
    sdfg.add_array("b", [4], dace.float32)
    state = sdfg.add_state()
    state.add_mapped_tasklet("write", {"i": "0:4"}, {"x": dace.Memlet("a[i]")}, "y = x", {"y": dace.Memlet("t[i]")},
                             external_edges=True)
    state.add_mapped_tasklet("read", {"i": "0:4"}, {"x": dace.Memlet("t[i]")}, "y = x", {"y": dace.Memlet("b[i]")},
                             external_edges=True)
    with pytest.raises(UnorderedAccessError, match="transient 't' is written by .* and read by"):
        check_ordered_accesses(sdfg)


def test_layout_chains_merge_and_identities_go():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    inits = {"s1": np.array([6, 20], np.int64), "s2": np.array([2, 60], np.int64)}
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 1, 3, 2]),  # merged into one
             helper.make_node("Cast", ["t2"], ["c"], to=1),  # float -> float: removed
             helper.make_node("Transpose", ["c"], ["t3"], perm=[0, 1, 2, 3]),  # identity: removed
             helper.make_node("Reshape", ["t3", "s1"], ["r1"]),
             helper.make_node("Reshape", ["r1", "s2"], ["r2"]),  # merged into one
             helper.make_node("CastLike", ["lo", "r2"], ["lo_cast"]),  # float like float: removed
             helper.make_node("Clip", ["r2", "lo_cast"], ["y"])]
    inits["lo"] = np.array(0.25, np.float32)
    model = make_model(nodes, {"x": x}, ["y"], inits)
    expected = run_onnxruntime(model, {"x": x})[0]
    dm = ONNXModel(model)
    report = optimize(dm, level=1, verify=True)
    assert report.first_changing_pass is None
    assert _ops(dm) == ["Clip", "Reshape", "Transpose"], _ops(dm)
    np.testing.assert_allclose(dm(x), expected)


def test_zero_pads_of_spatial_dims_fold_into_convs():
    """Folded: a Pad before a padded Conv (pads add up), a Pad with an explicit zero value over
    given axes before a strided Conv. Kept: a non-zero value, a channel pad, reflect mode, a
    crop (negative pads) and a Pad read by two nodes."""
    rng = np.random.default_rng(0)
    f = np.float32
    x = rng.standard_normal((1, 3, 10, 12)).astype(f)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(f), "w5": rng.standard_normal((4, 5, 3, 3)).astype(f),
             "p1": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "p2": np.array([1, 0, 0, 2], np.int64),
             "ax": np.array([2, 3], np.int64), "zero": np.array(0, f), "one5": np.array(1.5, f),
             "pc": np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64), "p3": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
             "neg": np.array([0, 0, -1, 0, 0, 0, 0, -1], np.int64)}
    nodes = [
        helper.make_node("Pad", ["x", "p1"], ["a1"]), helper.make_node("Conv", ["a1", "w"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("Pad", ["x", "p2", "zero", "ax"], ["a2"]),
        helper.make_node("Conv", ["a2", "w"], ["y2"], strides=[2, 2]),
        helper.make_node("Pad", ["x", "p3", "one5"], ["a3"]), helper.make_node("Conv", ["a3", "w"], ["y3"]),
        helper.make_node("Pad", ["x", "pc"], ["a4"]), helper.make_node("Conv", ["a4", "w5"], ["y4"]),
        helper.make_node("Pad", ["x", "p3"], ["a5"], mode="reflect"), helper.make_node("Conv", ["a5", "w"], ["y5"]),
        helper.make_node("Pad", ["x", "neg"], ["a6"]), helper.make_node("Conv", ["a6", "w"], ["y6"]),
        helper.make_node("Pad", ["x", "p3"], ["a7"]), helper.make_node("Conv", ["a7", "w"], ["y7"]),
        helper.make_node("Relu", ["a7"], ["y8"]),
    ]
    outputs = [f"y{i}" for i in range(1, 9)]
    model = make_model(nodes, {"x": x}, outputs, inits)
    expected = run_onnxruntime(model, {"x": x})
    dm = ONNXModel(model, name="fold_pad_conv")
    report = optimize(dm, level=1)
    fold = next(p for p in report.passes if p.name == "FoldPadIntoConv")
    assert fold.changes == 2, fold.detail
    assert _ops(dm).count("Pad") == 5
    pads = sorted(list(n.pads) for n, _ in dm.sdfg.all_nodes_recursive() if isinstance(n, ONNXOp)
                  and n.schema.name == "Conv" and n.pads)
    assert [2, 3, 3, 2] in pads and [1, 0, 0, 2] in pads, pads
    for got, want in zip(dm(x=x), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
