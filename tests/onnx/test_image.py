"""Pure Resize, GridSample, AffineGrid, Col2Im, CenterCropPad, DFT and STFT against
onnxruntime, and against the ONNX reference implementation where onnxruntime departs
from it (the conformance suite's expected outputs come from the reference).

Several nodes share one model (one compile) wherever they can."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from daceml import config
from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model

TOL = dict(rtol=1e-5, atol=1e-5)


def f32(*v):
    return np.array(v, np.float32)


def i64(*v):
    return np.array(v, np.int64)


def scalar(v):
    return np.array(v, np.int64)


def assert_matches_reference(model, inputs, rtol=1e-5, atol=1e-5):
    """Runs ``model`` with daceml (pure implementations only) and the ONNX reference evaluator."""
    expected = ReferenceEvaluator(model).run(None, inputs)
    with config.patch(allow_onnxruntime_fallback=False):
        dm = ONNXModel(model)
    got = dm(**inputs)
    got = list(got) if isinstance(got, tuple) else [got]
    for out, g, e in zip(model.graph.output, got, expected):
        g = np.asarray(g)
        assert g.shape == e.shape, f"{out.name}: shape {g.shape} != {e.shape}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=out.name)
        else:
            np.testing.assert_array_equal(g, e, err_msg=out.name)


def pure(model, inputs, **tol):
    with config.patch(allow_onnxruntime_fallback=False):
        return assert_matches_onnxruntime(model, inputs, **tol)


def resize(name, inputs, **attrs):
    return helper.make_node("Resize", inputs, [name], name=name, **attrs)


def test_resize_modes_and_coordinate_transforms():
    """Every mode, nearest_mode and coordinate transform; cubic_coeff_a, exclude_outside,
    antialias, tf_crop_and_resize with extrapolation, axes (negative too), the aspect ratio
    policies, scales given at run time, int32."""
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 5, 7)).astype(np.float32), "rs": f32(1, 1, 1.7, 0.6),
              "xi": rng.integers(-1000, 1000, (1, 2, 3, 4)).astype(np.int32)}
    inits = {"s_up": f32(1, 1, 2, 3), "s_dn": f32(1, 1, 0.5, 0.6), "s_mix": f32(1, 1, 1.5, 0.5),
             "z_up": i64(2, 3, 9, 11), "z_dn": i64(2, 3, 3, 4), "z_ax": i64(4, 4), "s2": f32(2.0, 1.5),
             "roi": f32(0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2), "roi_ax": f32(0.1, 0.3, 0.8, 0.9), "z_i": i64(1, 2, 4, 3)}
    nodes = [
        resize("near_up", ["x", "", "s_up"]),
        resize("near_floor_asym", ["x", "", "", "z_dn"], nearest_mode="floor",
               coordinate_transformation_mode="asymmetric"),
        resize("near_ceil_ac", ["x", "", "", "z_up"], nearest_mode="ceil",
               coordinate_transformation_mode="align_corners"),
        resize("near_prefer_ceil", ["x", "", "s_mix"], nearest_mode="round_prefer_ceil"),
        resize("lin_up", ["x", "", "s_up"], mode="linear"),
        resize("lin_ac", ["x", "", "", "z_up"], mode="linear", coordinate_transformation_mode="align_corners"),
        resize("lin_pt_dn", ["x", "", "", "z_dn"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        resize("lin_asym", ["x", "", "s_mix"], mode="linear", coordinate_transformation_mode="asymmetric"),
        resize("cub_up", ["x", "", "s_up"], mode="cubic"),
        resize("cub_excl", ["x", "", "", "z_up"], mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1),
        resize("cub_asym_dn", ["x", "", "s_dn"], mode="cubic", coordinate_transformation_mode="asymmetric"),
        resize("lin_aa", ["x", "", "", "z_dn"], mode="linear", antialias=1),
        resize("cub_aa", ["x", "", "s_dn"], mode="cubic", antialias=1),
        resize("lin_aa_mix", ["x", "", "s_mix"], mode="linear", antialias=1),
        resize("tf_crop", ["x", "roi", "", "z_up"], mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
               extrapolation_value=-3.0),
        resize("tf_crop_near", ["x", "roi", "", "z_dn"], coordinate_transformation_mode="tf_crop_and_resize"),
        resize("tf_crop_axes", ["x", "roi_ax", "", "z_ax"], axes=[2, 3], mode="linear",
               coordinate_transformation_mode="tf_crop_and_resize"),
        resize("not_larger", ["x", "", "", "z_ax"], axes=[2, 3], keep_aspect_ratio_policy="not_larger", mode="linear"),
        resize("not_smaller", ["x", "", "", "z_ax"], axes=[3, 2], keep_aspect_ratio_policy="not_smaller"),
        resize("neg_axes", ["x", "", "s2"], axes=[-1, 2], mode="cubic"),
        resize("runtime_scales", ["x", "", "rs"], mode="linear"),
        resize("int32_nearest", ["xi", "", "", "z_i"]),
    ]
    outs = [n.output[0] for n in nodes]
    model = make_model(nodes, inputs, outs, inits, opset=19)
    for out in model.graph.output:  # shape inference cannot know the shape from run-time scales
        if out.name == "runtime_scales":
            out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [2, 3, 8, 4]))
    pure(model, inputs, **TOL)


def test_resize_where_onnxruntime_departs_from_the_reference():
    """half_pixel_symmetric with a fractional output size, linear on uint8 (round half to even),
    float64 (onnxruntime has no float64 Resize), cubic antialias on a 3-D tensor."""
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((1, 2, 5, 7)).astype(np.float32),
              "u8": rng.integers(0, 256, (1, 2, 5, 6)).astype(np.uint8),
              "xd": rng.standard_normal((2, 9, 6))}
    inits = {"s_mix": f32(1, 1, 1.5, 0.5), "s_u8": f32(1, 1, 0.7, 1.6), "s_d": f32(1, 0.4, 2.5)}
    nodes = [
        resize("hps", ["x", "", "s_mix"], mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
        resize("u8_linear", ["u8", "", "s_u8"], mode="linear"),
        resize("f64_cubic_aa", ["xd", "", "s_d"], mode="cubic", antialias=1),
        resize("f64_nearest", ["xd", "", "s_d"], nearest_mode="ceil"),
    ]
    model = make_model(nodes, inputs, [n.output[0] for n in nodes], inits, opset=19)
    assert_matches_reference(model, inputs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opset", [10, 11])
def test_resize_older_opsets(opset):
    """Resize-10 (asymmetric coordinates, onnxruntime's nearest rounding) and Resize-11
    (tf_half_pixel_for_nn, empty roi/scales initializers)."""
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((1, 2, 5, 7)).astype(np.float32)}
    if opset == 10:
        inits = {"s_up": f32(1, 1, 2, 3), "s_dn": f32(1, 1, 0.5, 0.6), "s_odd": f32(1, 1, 1.3, 2.7)}
        nodes = [resize("near_up", ["x", "s_up"]), resize("near_dn", ["x", "s_dn"]), resize("near_odd", ["x", "s_odd"]),
                 resize("lin_dn", ["x", "s_dn"], mode="linear"), resize("lin_odd", ["x", "s_odd"], mode="linear")]
    else:
        inits = {"s_mix": f32(1, 1, 1.5, 0.5), "empty": f32(), "z": i64(1, 2, 8, 4), "s_odd": f32(1, 1, 1.3, 2.7)}
        nodes = [resize("nn_tf_half_pixel", ["x", "empty", "s_odd"],
                        coordinate_transformation_mode="tf_half_pixel_for_nn"),
                 resize("lin_sizes", ["x", "empty", "empty", "z"], mode="linear"),
                 resize("cub", ["x", "empty", "s_mix"], mode="cubic"),
                 resize("near", ["x", "empty", "s_odd"])]
    model = make_model(nodes, inputs, [n.output[0] for n in nodes], inits, opset=opset)
    pure(model, inputs, **TOL)


def _grid(rng, *shape):
    return (rng.random(shape) * 2.6 - 1.3).astype(np.float32)  # partly outside [-1, 1]


def test_gridsample_affinegrid_dft_stft_col2im_centercroppad():
    rng = np.random.default_rng(3)
    node = helper.make_node
    inputs = {"X": rng.standard_normal((2, 3, 5, 6)).astype(np.float32), "G": _grid(rng, 2, 4, 7, 2),
              "X3": rng.standard_normal((1, 2, 3, 4, 5)).astype(np.float32), "G3": _grid(rng, 1, 2, 3, 4, 3),
              "Xd": rng.standard_normal((1, 2, 4, 5)), "Gd": rng.random((1, 3, 3, 2)) * 2.4 - 1.2,
              "theta": rng.standard_normal((2, 2, 3)).astype(np.float32),
              "theta3": rng.standard_normal((2, 3, 4)).astype(np.float32),
              "sig": rng.standard_normal((2, 12, 1)).astype(np.float32),
              "csig": rng.standard_normal((1, 10, 2)).astype(np.float32),
              "cx": rng.standard_normal((2, 6, 3, 2)).astype(np.float32),
              "rx": rng.standard_normal((2, 7, 3, 1)).astype(np.float32),
              "col": rng.standard_normal((2, 12, 25)).astype(np.float32),
              "img": rng.standard_normal((4, 7, 5)).astype(np.float32),
              "imgi": rng.integers(-9, 9, (5, 6)).astype(np.int32)}
    inits = {"size": i64(2, 3, 4, 5), "size3": i64(2, 3, 2, 3, 4), "L8": scalar(8), "L10": scalar(10),
             "ax1": scalar(1), "ax2": scalar(2), "axm2": scalar(-2), "step3": scalar(3), "fl4": scalar(4),
             "win": np.hanning(6).astype(np.float32), "image_shape": i64(5, 6), "block": i64(2, 3),
             "crop": i64(6, 3), "crop_all": i64(3, 8, 9), "crop_int": i64(7, 4)}

    def gs(name, x, g, **kw):
        return node("GridSample", [x, g], [name], name=name, **kw)

    nodes = [
        gs("gs_lin_zeros", "X", "G"), gs("gs_lin_border_ac", "X", "G", padding_mode="border", align_corners=1),
        gs("gs_lin_reflection", "X", "G", padding_mode="reflection"), gs("gs_near", "X", "G", mode="nearest"),
        gs("gs_near_refl_ac", "X", "G", mode="nearest", padding_mode="reflection", align_corners=1),
        gs("gs_cub_refl", "X", "G", mode="cubic", padding_mode="reflection"),
        gs("gs_cub_zeros_ac", "X", "G", mode="cubic", align_corners=1),
        gs("gs3_lin", "X3", "G3"), gs("gs3_near_border", "X3", "G3", mode="nearest", padding_mode="border"),
        gs("gs_f64", "Xd", "Gd", padding_mode="reflection"),
        node("AffineGrid", ["theta", "size"], ["ag"], name="ag"),
        node("AffineGrid", ["theta", "size"], ["ag_ac"], name="ag_ac", align_corners=1),
        node("AffineGrid", ["theta3", "size3"], ["ag3"], name="ag3"),
        node("AffineGrid", ["theta3", "size3"], ["ag3_ac"], name="ag3_ac", align_corners=1),
        node("DFT", ["sig", "L8", "ax1"], ["dft_truncated"], name="dft_truncated"),
        node("DFT", ["sig", "", "ax1"], ["dft_onesided"], name="dft_onesided", onesided=1),
        node("DFT", ["cx", "", "ax1"], ["dft_inverse"], name="dft_inverse", inverse=1),
        node("DFT", ["cx", "L8", "ax2"], ["dft_padded"], name="dft_padded"),
        node("DFT", ["cx", "L10", "ax1"], ["dft_irfft"], name="dft_irfft", inverse=1, onesided=1),
        node("DFT", ["cx"], ["dft_default_axis"], name="dft_default_axis"),
        node("DFT", ["rx", "", "axm2"], ["dft_negative_axis"], name="dft_negative_axis"),
        node("STFT", ["sig", "step3", "", "fl4"], ["stft_frame_length"], name="stft_frame_length", onesided=1),
        node("STFT", ["sig", "step3", "win"], ["stft_window"], name="stft_window", onesided=0),
        node("STFT", ["csig", "step3", "win"], ["stft_complex"], name="stft_complex", onesided=0),
        node("Col2Im", ["col", "image_shape", "block"], ["col2im"], name="col2im", pads=[1, 0, 0, 1]),
        node("CenterCropPad", ["img", "crop"], ["ccp_axes"], name="ccp_axes", axes=[1, -1]),
        node("CenterCropPad", ["img", "crop_all"], ["ccp_all"], name="ccp_all"),
        node("CenterCropPad", ["imgi", "crop_int"], ["ccp_int"], name="ccp_int"),
    ]
    model = make_model(nodes, inputs, [n.output[0] for n in nodes], inits, opset=20)
    pure(model, inputs, rtol=1e-4, atol=2e-5)


def test_where_onnxruntime_departs_from_the_reference():
    """GridSample cubic with border padding (the reference clamps the coordinate first),
    DFT's real inverse of odd length, 3-D Col2Im with dilations, strides and pads."""
    rng = np.random.default_rng(4)
    node = helper.make_node
    inputs = {"X": rng.standard_normal((1, 2, 5, 6)).astype(np.float32), "G": _grid(rng, 1, 4, 7, 2),
              "cx": rng.standard_normal((2, 6, 3, 2)).astype(np.float32),
              "col3": rng.standard_normal((1, 8, 12)).astype(np.float32)}
    inits = {"L5": scalar(5), "ax1": scalar(1), "image_shape": i64(3, 4, 5), "block": i64(2, 2, 2)}
    nodes = [
        node("GridSample", ["X", "G"], ["gs_cub_border"], name="gs_cub_border", mode="cubic", padding_mode="border"),
        node("DFT", ["cx", "L5", "ax1"], ["irfft_odd"], name="irfft_odd", inverse=1, onesided=1),
        node("Col2Im", ["col3", "image_shape", "block"], ["col2im_3d"], name="col2im_3d", dilations=[1, 2, 1],
             strides=[1, 1, 2], pads=[0, 0, 1, 0, 0, 0]),
    ]
    model = make_model(nodes, inputs, [n.output[0] for n in nodes], inits, opset=20)
    assert_matches_reference(model, inputs, rtol=1e-5, atol=1e-5)


def test_opset17_gridsample16_dft17_stft():
    """GridSample-16's bilinear/bicubic/nearest names, DFT-17's axis attribute."""
    rng = np.random.default_rng(5)
    node = helper.make_node
    inputs = {"X": rng.standard_normal((2, 3, 5, 6)).astype(np.float32), "G": _grid(rng, 2, 4, 7, 2),
              "sig": rng.standard_normal((2, 12, 1)).astype(np.float32)}
    inits = {"step": scalar(3), "win": np.hanning(6).astype(np.float32)}
    nodes = [
        node("GridSample", ["X", "G"], ["bilinear"], name="bilinear"),
        node("GridSample", ["X", "G"], ["bicubic"], name="bicubic", mode="bicubic", padding_mode="reflection"),
        node("GridSample", ["X", "G"], ["nearest"], name="nearest", mode="nearest", align_corners=1),
        node("DFT", ["sig"], ["dft"], name="dft"),
        node("DFT", ["sig"], ["idft"], name="idft", axis=1, inverse=1),
        node("STFT", ["sig", "step", "win"], ["stft"], name="stft", onesided=1),
    ]
    model = make_model(nodes, inputs, [n.output[0] for n in nodes], inits, opset=17)
    pure(model, inputs, rtol=1e-4, atol=2e-5)


def test_symbolic_batch():
    """Batch size symbolic: one build serves two sizes."""
    rng = np.random.default_rng(6)
    node = helper.make_node
    vi = helper.make_tensor_value_info
    nodes = [
        node("Resize", ["x", "", "s"], ["up"], name="up", axes=[2, 3], mode="linear"),
        node("GridSample", ["x", "g"], ["gs"], name="gs", padding_mode="border"),
        node("CenterCropPad", ["x", "crop"], ["ccp"], name="ccp", axes=[2, 3]),
    ]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [2], [2.0, 0.5]),
             helper.make_tensor("crop", TensorProto.INT64, [2], [3, 8])]
    graph_inputs = [vi("x", TensorProto.FLOAT, ["N", 2, 4, 6]), vi("g", TensorProto.FLOAT, ["N", 3, 5, 2])]
    outputs = [vi("up", TensorProto.FLOAT, ["N", 2, 8, 3]), vi("gs", TensorProto.FLOAT, ["N", 2, 3, 5]),
               vi("ccp", TensorProto.FLOAT, ["N", 2, 3, 8])]
    g = helper.make_graph(nodes, "g", graph_inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    for n in (1, 3):
        inputs = {"x": rng.standard_normal((n, 2, 4, 6)).astype(np.float32), "g": _grid(rng, n, 3, 5, 2)}
        pure(model, inputs, **TOL)


def test_unsupported_configurations_name_the_reason():
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((1, 1, 4, 4)).astype(np.float16)}
    nodes = [resize("half", ["x", "", "s"])]
    model = make_model(nodes, inputs, ["half"], {"s": f32(1, 1, 2, 2)}, opset=19)
    with config.patch(allow_onnxruntime_fallback=False), \
            pytest.raises(UnsupportedOpsError, match="half.*float16.*float32, float64 and the integer types"):
        ONNXModel(model)
    inputs = {"x": rng.standard_normal((1, 1, 4, 4)).astype(np.float32)}
    nodes = [resize("aa_nearest", ["x", "", "s"], antialias=1)]
    model = make_model(nodes, inputs, ["aa_nearest"], {"s": f32(1, 1, 0.5, 0.5)}, opset=19)
    with config.patch(allow_onnxruntime_fallback=False), \
            pytest.raises(UnsupportedOpsError, match="aa_nearest.*antialias=1 is not defined for mode='nearest'"):
        ONNXModel(model)
