"""Pure Conv / ConvTranspose / pooling implementations against onnxruntime.

Several nodes share one model (one compile) wherever they can."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model
from daceml.transformation import optimize

TOL = dict(rtol=1e-4, atol=1e-4)


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def graph_model(nodes, inputs, outputs, inits=(), opset=20):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def test_conv_variants():
    rng = np.random.default_rng(0)
    inputs = {"x": rand(rng, 2, 4, 9, 10), "x1": rand(rng, 2, 3, 11), "x3": rand(rng, 1, 2, 5, 6, 7)}
    inits = {
        "W": rand(rng, 6, 4, 3, 3), "B": rand(rng, 6),
        "Wdw": rand(rng, 4, 1, 3, 3),
        "Wdw2": rand(rng, 8, 1, 3, 2), "Bdw2": rand(rng, 8),
        "Wg": rand(rng, 6, 2, 2, 3),
        "W1x1": rand(rng, 5, 4, 1, 1),
        "W1": rand(rng, 5, 3, 3),
        "W3": rand(rng, 4, 2, 2, 3, 3), "B3": rand(rng, 4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["plain"], name="plain", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "Wdw"], ["depthwise"], name="depthwise", group=4, strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        # a channel multiplier of 2, asymmetric padding, dilation: each task pads its own plane
        helper.make_node("Conv", ["x", "Wdw2", "Bdw2"], ["dw_mult"], name="dw_mult", group=4, pads=[1, 2, 0, 1],
                         dilations=[1, 2]),
        helper.make_node("Conv", ["x", "Wg"], ["grouped"], name="grouped", group=2, dilations=[2, 1],
                         pads=[0, 2, 1, 0], strides=[1, 2]),
        helper.make_node("Conv", ["x", "W1x1"], ["pointwise"], name="pointwise"),
        helper.make_node("Conv", ["x", "W"], ["valid"], name="valid", auto_pad="VALID", strides=[2, 3]),
        helper.make_node("Conv", ["x1", "W1"], ["conv1d"], name="conv1d", strides=[2], pads=[2, 1], dilations=[2]),
        helper.make_node("Conv", ["x3", "W3", "B3"], ["conv3d"], name="conv3d", auto_pad="SAME_LOWER",
                         strides=[2, 1, 2]),
        helper.make_node("Conv", ["x", "W"], ["asym"], name="asym", pads=[2, 0, 1, 1], kernel_shape=[3, 3]),
        # unpadded, stride 1: read in place, the last vector of each plane from a zero-filled copy
        helper.make_node("Conv", ["x", "Wg"], ["grouped_valid"], name="grouped_valid", group=2, dilations=[1, 2]),
        helper.make_node("Conv", ["x1", "W1"], ["conv1d_valid"], name="conv1d_valid"),
    ]
    outs = ["plain", "depthwise", "dw_mult", "grouped", "pointwise", "valid", "conv1d", "conv3d", "asym",
            "grouped_valid", "conv1d_valid"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, inits), inputs, **TOL)


def test_conv_transpose_variants():
    rng = np.random.default_rng(1)
    inputs = {"x": rand(rng, 2, 4, 7, 8), "x1": rand(rng, 1, 3, 6)}
    inits = {"W": rand(rng, 4, 3, 3, 3), "B": rand(rng, 6), "W2": rand(rng, 4, 2, 3, 2), "W1": rand(rng, 3, 2, 4)}
    nodes = [
        helper.make_node("ConvTranspose", ["x", "W", "B"], ["grouped"], name="grouped", group=2, strides=[2, 2],
                         pads=[1, 0, 1, 1], output_padding=[1, 0]),
        helper.make_node("ConvTranspose", ["x", "W2"], ["dilated"], name="dilated", strides=[2, 3], dilations=[1, 2]),
        helper.make_node("ConvTranspose", ["x", "W2"], ["shape_upper"], name="shape_upper", strides=[2, 2],
                         output_shape=[14, 15], auto_pad="SAME_UPPER"),
        helper.make_node("ConvTranspose", ["x", "W2"], ["shape_lower"], name="shape_lower", strides=[2, 2],
                         output_shape=[14, 15], auto_pad="SAME_LOWER"),
        helper.make_node("ConvTranspose", ["x1", "W1"], ["t1d"], name="t1d", strides=[3], pads=[1, 2]),
    ]
    outs = ["grouped", "dilated", "shape_upper", "shape_lower", "t1d"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs, inits), inputs, **TOL)


def test_pools():
    rng = np.random.default_rng(2)
    inputs = {"x": rand(rng, 2, 4, 9, 10), "x1": rand(rng, 2, 3, 11), "x3": rand(rng, 1, 2, 5, 6, 7),
              "xi": rng.integers(-128, 127, (1, 2, 6, 7), dtype=np.int8), "xd": rand(rng, 1, 2, 6, 7, dtype=np.float64)}
    nodes = [
        helper.make_node("MaxPool", ["x"], ["max_ceil", "max_ind"], name="max_ceil", kernel_shape=[3, 3],
                         strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0]),
        helper.make_node("MaxPool", ["x"], ["max_dil", "max_ind_col"], name="max_dil", kernel_shape=[2, 3],
                         dilations=[2, 2], storage_order=1, pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["x3"], ["max3d"], name="max3d", kernel_shape=[2, 2, 2], auto_pad="SAME_UPPER",
                         strides=[2, 2, 2]),
        helper.make_node("MaxPool", ["xi"], ["max_int8"], name="max_int8", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["xd"], ["max_f64"], name="max_f64", kernel_shape=[3, 2], pads=[1, 0, 1, 1]),
        # no Indices, no dilation: one output row per map iteration (ResNet's stem pool; ceil mode)
        helper.make_node("MaxPool", ["x"], ["max_rows"], name="max_rows", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["x"], ["max_rows_ceil"], name="max_rows_ceil", kernel_shape=[3, 2],
                         strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1),
        helper.make_node("AveragePool", ["x"], ["avg_incl"], name="avg_incl", kernel_shape=[3, 2], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("AveragePool", ["x"], ["avg_ceil"], name="avg_ceil", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("AveragePool", ["x"], ["avg_ceil_incl"], name="avg_ceil_incl", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1, count_include_pad=1),
        helper.make_node("AveragePool", ["x"], ["avg_dil"], name="avg_dil", kernel_shape=[3, 3], dilations=[2, 1],
                         pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["x1"], ["avg1d"], name="avg1d", kernel_shape=[3], strides=[2], pads=[1, 1]),
        helper.make_node("LpPool", ["x"], ["lp3"], name="lp3", kernel_shape=[2, 2], p=3, strides=[2, 2]),
        helper.make_node("LpPool", ["x"], ["lp2"], name="lp2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["x"], ["gavg"], name="gavg"),
        helper.make_node("GlobalMaxPool", ["x3"], ["gmax"], name="gmax"),
        helper.make_node("GlobalLpPool", ["x"], ["glp"], name="glp"),
    ]
    outs = ["max_ceil", "max_ind", "max_dil", "max_ind_col", "max3d", "max_int8", "max_f64", "max_rows", "max_rows_ceil",
            "avg_incl", "avg_ceil", "avg_ceil_incl", "avg_dil",
            "avg1d", "lp3", "lp2", "gavg", "gmax", "glp"]
    assert_matches_onnxruntime(make_model(nodes, inputs, outs), inputs, **TOL)


def test_symbolic_batch_cnn():
    """A small CNN with a symbolic batch dim: one build serves two batch sizes."""
    rng = np.random.default_rng(3)
    inits = {"W1": rand(rng, 8, 3, 3, 3), "B1": rand(rng, 8), "W2": rand(rng, 8, 1, 3, 3),
             "W3": rand(rng, 6, 8, 1, 1), "B3": rand(rng, 6)}
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2"], ["c2"], name="c2", group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c2", "W3", "B3"], ["c3"], name="c3"),
        helper.make_node("AveragePool", ["c3"], ["a3"], name="a3", kernel_shape=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c3"], ["g3"], name="g3"),
    ]
    model = graph_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 20])],
                        [helper.make_empty_tensor_value_info(o) for o in ("a3", "g3")],
                        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel()) for k, v in inits.items()])
    for batch in (1, 3):
        x = rand(rng, batch, 3, 16, 20)
        dm, got = assert_matches_onnxruntime(model, {"x": x}, **TOL)
        assert got[0].shape == (batch, 6, 3, 4) and got[1].shape == (batch, 6, 1, 1)


def _conv_model(x_shape, w_shape, b_shape=None, **attrs):
    inits = [helper.make_tensor("W", TensorProto.FLOAT, w_shape, np.zeros(w_shape, np.float32).ravel())]
    names = ["x", "W"]
    if b_shape:
        inits.append(helper.make_tensor("B", TensorProto.FLOAT, b_shape, np.zeros(b_shape, np.float32).ravel()))
        names.append("B")
    node = helper.make_node("Conv", names, ["y"], name="conv_bad", **attrs)
    return graph_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                       [helper.make_empty_tensor_value_info("y")], inits)


def test_weight_channels_contradicting_input_name_the_node():
    with pytest.raises(UnsupportedOpsError) as info:
        ONNXModel(_conv_model([1, 3, 8, 8], [4, 2, 3, 3]))
    msg = str(info.value)
    assert "conv_bad" in msg and "Conv" in msg
    assert "weight W has 2 input channels per group, but input X has 3 channels" in msg


def test_bias_and_symbolic_spatial_dims_are_reported():
    with pytest.raises(UnsupportedOpsError, match=r"conv_bad.*bias B has shape \(5,\), expected \(4,\)"):
        ONNXModel(_conv_model([1, 3, 8, 8], [4, 3, 3, 3], [5]))
    with pytest.raises(UnsupportedOpsError, match="conv_bad.*must be static"):
        ONNXModel(_conv_model(["N", 3, "H", 8], [4, 3, 3, 3]))


def _flush_against_a_guard_page(values: np.ndarray):
    """A copy of ``values`` whose last byte ends a page, followed by a page no one may read: a
    read past its end is a segfault, not a silently ignored garbage lane."""
    import ctypes
    import mmap
    page = mmap.PAGESIZE
    size = -(-values.nbytes // page) * page
    buf = mmap.mmap(-1, size + page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + size, page, 0) == 0, ctypes.get_errno()  # PROT_NONE
    arr = np.frombuffer(buf, dtype=values.dtype, count=values.size, offset=size - values.nbytes).reshape(values.shape)
    arr[...] = values
    return arr, buf


def test_unpadded_convs_read_their_input_in_place_and_not_past_its_end():
    rng = np.random.default_rng(1)
    x = rand(rng, 1, 5, 7, 9)  # 63-element planes: the last vector of every plane is partial
    inits = {"W1x1": rand(rng, 8, 5, 1, 1), "W3": rand(rng, 4, 5, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "W1x1"], ["pointwise"], name="pointwise"),
             helper.make_node("Conv", ["x", "W3"], ["valid"], name="valid")]
    model = ONNXModel(make_model(nodes, {"x": x}, ["pointwise", "valid"], inits))
    optimize(model, level=4)
    labels = [n.label for n, _ in model.sdfg.all_nodes_recursive()]
    assert {label for label in labels if label.endswith("_conv_map")} == {"pointwise_conv_map", "valid_conv_map"}, labels
    assert not any("_pad" in label for label in labels), "unpadded convs should read X in place"
    guarded, keep = _flush_against_a_guard_page(x)
    got = model(x=guarded)
    want = model(x=x.copy())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    ref = [np.einsum("mc,nchw->nmhw", inits["W1x1"][:, :, 0, 0], x)]
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    del keep
