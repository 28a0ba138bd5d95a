"""Pure shape and indexing ops against onnxruntime.

Several nodes share one model (one compile) wherever they can."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import assert_matches_onnxruntime, make_model, run_onnxruntime

I64 = np.int64


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def ints(*values):
    return np.array(values, dtype=I64)


def test_demo_shape_ops():
    """The ops a PyTorch CNN/MLP export uses: Reshape (0 and -1) Flatten Transpose Concat Squeeze
    Unsqueeze Shape Size Gather Slice Cast Expand."""
    rng = np.random.default_rng(0)
    inputs = {"x": rand(rng, 2, 3, 4, 5), "v": rand(rng, 6), "idx": np.array([[0, -1], [2, 1]], dtype=I64)}
    inits = {"shp": ints(0, -1, 5), "ax": ints(0, 2), "sq": ints(0),
             "st": ints(1, -1, 10), "en": ints(3, -100, -1), "sax": ints(1, 3, 2), "sst": ints(1, -2, 1),
             "eshape": ints(3, 1, 6)}
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["reshape"], name="reshape"),
        helper.make_node("Flatten", ["x"], ["flatten"], name="flatten", axis=2),
        helper.make_node("Transpose", ["x"], ["tr_perm"], name="tr_perm", perm=[2, 0, 3, 1]),
        helper.make_node("Transpose", ["x"], ["tr_default"], name="tr_default"),
        helper.make_node("Transpose", ["tr_perm"], ["tr_back"], name="tr_back", perm=[1, 3, 0, 2]),
        helper.make_node("Concat", ["x", "tr_back", "x"], ["concat"], name="concat", axis=-1),
        helper.make_node("Unsqueeze", ["v", "ax"], ["unsqueeze"], name="unsqueeze"),
        helper.make_node("Squeeze", ["unsqueeze", "sq"], ["squeeze"], name="squeeze"),
        helper.make_node("Squeeze", ["unsqueeze"], ["squeeze_all"], name="squeeze_all"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape", start=1),
        helper.make_node("Shape", ["x"], ["shape_mid"], name="shape_mid", start=-3, end=-1),
        helper.make_node("Size", ["x"], ["size"], name="size"),
        helper.make_node("Gather", ["x", "idx"], ["gather"], name="gather", axis=2),
        helper.make_node("Slice", ["x", "st", "en", "sax", "sst"], ["slice"], name="slice"),
        helper.make_node("Cast", ["x"], ["cast"], name="cast", to=TensorProto.INT32),
        helper.make_node("Expand", ["v", "eshape"], ["expand"], name="expand"),
    ]
    outs = ["reshape", "flatten", "tr_perm", "tr_default", "concat", "unsqueeze", "squeeze", "squeeze_all", "shape",
            "shape_mid", "size", "gather", "slice", "cast", "expand"]
    model = make_model(nodes, inputs, outs, initializers=inits)
    dm, _ = assert_matches_onnxruntime(model, inputs)
    for op in ("Reshape", "Flatten", "Transpose", "Concat", "Gather", "Slice", "Cast", "Expand"):
        assert dm.implementation_table[op] == "pure"


def test_indexing_padding_and_layout_ops():
    rng = np.random.default_rng(1)
    inputs = {"x": rand(rng, 2, 8, 3, 4), "m": rand(rng, 4, 5), "p3": rand(rng, 3, 4, 5),
              "gi": rng.integers(-4, 4, (4, 3)).astype(I64),
              "ndi": np.array([[[0, 1]], [[1, -2]]], dtype=I64), "oh": np.array([[1, -1], [3, 0]], dtype=I64)}
    inits = {"sp": ints(3, 5), "rep": ints(2, 1, 3), "pads": ints(1, 0, 2, 0, 2, 1),
             "pv": np.array(1.5, dtype=np.float32), "r0": np.array(2, dtype=I64), "r1": np.array(11, dtype=I64),
             "rd": np.array(3, dtype=I64), "fr0": np.array(1.0, dtype=np.float32),
             "fr1": np.array(-1.0, dtype=np.float32), "frd": np.array(-0.5, dtype=np.float32),
             "cshape": ints(2, 3), "depth": np.array(4, dtype=I64),
             "ohv": np.array([-1, 5], dtype=np.float32), "tk": np.array(1, dtype=I64),
             "sei": np.array([[1, 0, 2], [0, -1, 1]], dtype=I64), "seu": rand(rng, 2, 3),
             "sndi": np.array([[1], [3]], dtype=I64), "sndu": rand(rng, 2, 5), "ilike": np.array([1], dtype=np.int32)}
    nodes = [
        helper.make_node("Split", ["x", "sp"], ["split0", "split1"], name="split", axis=1),
        helper.make_node("Split", ["x"], ["halves0", "halves1"], name="halves", axis=-1, num_outputs=2),
        helper.make_node("GatherElements", ["m", "gi"], ["gather_el"], name="gather_el", axis=1),
        helper.make_node("GatherND", ["x", "ndi"], ["gather_nd"], name="gather_nd", batch_dims=1),
        helper.make_node("Tile", ["p3", "rep"], ["tile"], name="tile"),
        helper.make_node("Pad", ["p3", "pads", "pv"], ["pad_constant"], name="pad_constant"),
        helper.make_node("Pad", ["p3", "pads"], ["pad_reflect"], name="pad_reflect", mode="reflect"),
        helper.make_node("Pad", ["p3", "pads"], ["pad_edge"], name="pad_edge", mode="edge"),
        helper.make_node("Range", ["r0", "r1", "rd"], ["range"], name="range"),
        helper.make_node("Range", ["fr0", "fr1", "frd"], ["range_f"], name="range_f"),
        helper.make_node("ConstantOfShape", ["cshape"], ["const_of_shape"], name="const_of_shape",
                         value=numpy_helper.from_array(np.array([7], dtype=I64))),
        helper.make_node("ConstantOfShape", ["cshape"], ["zeros"], name="zeros"),
        helper.make_node("OneHot", ["oh", "depth", "ohv"], ["onehot"], name="onehot", axis=1),
        helper.make_node("Trilu", ["m", "tk"], ["triu"], name="triu"),
        helper.make_node("Trilu", ["m"], ["tril"], name="tril", upper=0),
        helper.make_node("DepthToSpace", ["x"], ["d2s_crd"], name="d2s_crd", blocksize=2, mode="CRD"),
        helper.make_node("DepthToSpace", ["x"], ["d2s_dcr"], name="d2s_dcr", blocksize=2),
        helper.make_node("SpaceToDepth", ["d2s_dcr"], ["s2d"], name="s2d", blocksize=2),
        helper.make_node("ScatterElements", ["m", "sei", "seu"], ["scatter_add"], name="scatter_add", axis=1,
                         reduction="add"),
        helper.make_node("ScatterND", ["m", "sndi", "sndu"], ["scatter_nd"], name="scatter_nd"),
        helper.make_node("CastLike", ["m", "ilike"], ["cast_like"], name="cast_like"),
    ]
    outs = [o for n in nodes for o in n.output]
    model = make_model(nodes, inputs, outs, initializers=inits)
    assert_matches_onnxruntime(model, inputs)


def test_symbolic_batch():
    """A symbolic batch dim through the shape ops: one build serves every batch size."""
    rng = np.random.default_rng(2)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "zero": np.array(0, dtype=I64), "idx": ints(2, 0, 1), "st": ints(1), "en": ints(-1), "ax2": ints(2),
        "pads": ints(0, 1, 0, 0, 0, 2, 0, 0), "ax0": ints(0)}.items()]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="batch"),
        helper.make_node("Size", ["x"], ["size"], name="size"),
        helper.make_node("Flatten", ["x"], ["flat"], name="flatten"),
        helper.make_node("Transpose", ["x"], ["xt"], name="transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Concat", ["xt", "xt"], ["cat"], name="concat", axis=-1),
        helper.make_node("Gather", ["x", "idx"], ["gathered"], name="gather", axis=1),
        helper.make_node("Slice", ["x", "st", "en", "ax2"], ["sliced"], name="slice"),
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="pad", mode="reflect"),
        helper.make_node("Unsqueeze", ["x", "ax0"], ["unsq"], name="unsqueeze"),
        helper.make_node("Split", ["x"], ["split0", "split1"], name="split", axis=1, num_outputs=2),
    ]
    outs = ["shape", "batch", "size", "flat", "cat", "gathered", "sliced", "padded", "unsq", "split0", "split1"]
    g = helper.make_graph(nodes, "g", [x], [helper.make_empty_tensor_value_info(o) for o in outs], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    dm = ONNXModel(model)
    assert "N" in dm.sdfg.symbols
    programs = []
    for n in (1, 3):
        feeds = {"x": rand(rng, n, 3, 4, 5)}
        got, expected = dm(**feeds), run_onnxruntime(model, feeds)
        for i, (g_, e) in enumerate(zip(got, expected)):
            assert g_.shape == e.shape and g_.dtype == e.dtype, f"{outs[i]}: {g_.shape} vs {e.shape}"
            np.testing.assert_array_equal(g_, e, err_msg=outs[i])
        programs.append(dm.compiled)
    assert programs[0] is programs[1]


def test_parameters_computed_by_the_graph():
    """The dynamic-flatten pattern of exported models (Shape -> Gather -> Concat -> Reshape), and
    Slice / Pad parameters computed by the graph rather than constants (read at run time)."""
    rng = np.random.default_rng(5)
    inputs = {"x": rand(rng, 2, 3, 4, 5)}
    inits = {"zero": ints(0), "minus1": ints(-1), "two": ints(2), "ends": ints(2**62, -100), "ax": ints(1, 3),
             "step": ints(1, -2), "pads0": ints(0, 1, 0, 0, 0, 2, 0, 0), "pads_ax": ints(2, 3)}
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "zero"], ["n"], name="batch_dim"),
        helper.make_node("Concat", ["n", "minus1"], ["newshape"], name="newshape", axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["flat"], name="flatten_dyn"),
        # starts = shape[[1, 3]] - 2 = [1, 3], computed by the graph
        helper.make_node("Gather", ["shp", "ax"], ["dims"], name="dims"),
        helper.make_node("Sub", ["dims", "two"], ["starts"], name="starts"),
        helper.make_node("Slice", ["x", "starts", "ends", "ax", "step"], ["sliced"], name="slice_rt"),
        helper.make_node("Add", ["pads0", "zero"], ["pads_rt"], name="pads_rt"),
        helper.make_node("Pad", ["x", "pads_rt"], ["padded"], name="pad_rt", mode="edge"),
        helper.make_node("Slice", ["pads0", "zero", "two"], ["pads2"], name="pads2"),
        helper.make_node("Concat", ["pads2", "pads2"], ["pads4"], name="pads4", axis=0),
        helper.make_node("Pad", ["x", "pads4", "", "pads_ax"], ["padded_axes"], name="pad_axes_rt"),
    ]
    # ONNX shape inference cannot follow the computed parameters: the output shapes are declared
    # in the graph, as exporters do
    outs = {"flat": None, "sliced": [2, 2, 4, 2], "padded": [2, 6, 4, 5], "padded_axes": [2, 3, 4, 7]}
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_empty_tensor_value_info(k) if v is None else helper.make_tensor_value_info(k, TensorProto.FLOAT, v)
         for k, v in outs.items()], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    assert_matches_onnxruntime(model, inputs)


def test_old_opsets_take_attributes():
    """Opset 9: Slice, Squeeze, Unsqueeze, Split and Pad take their parameters as attributes."""
    rng = np.random.default_rng(3)
    inputs = {"x": rand(rng, 3, 1, 6)}
    nodes = [
        helper.make_node("Slice", ["x"], ["slice"], name="slice", starts=[-2, 1], ends=[100, 5], axes=[0, 2]),
        helper.make_node("Squeeze", ["x"], ["squeeze"], name="squeeze", axes=[1]),
        helper.make_node("Unsqueeze", ["x"], ["unsqueeze"], name="unsqueeze", axes=[0, 3]),
        helper.make_node("Split", ["x"], ["split0", "split1"], name="split", axis=2, split=[2, 4]),
        helper.make_node("Pad", ["x"], ["pad"], name="pad", pads=[1, 0, 0, 0, 2, 1], value=-3.0),
        helper.make_node("Flatten", ["x"], ["flatten"], name="flatten", axis=0),
    ]
    outs = ["slice", "squeeze", "unsqueeze", "split0", "split1", "pad", "flatten"]
    model = make_model(nodes, inputs, outs, opset=9)
    assert_matches_onnxruntime(model, inputs)


def test_edge_cases():
    """Scalar indices, negative steps and clamping, casts between types (float16 too), scatter reductions,
    wrap padding on chosen axes, default OneHot axis, batched Trilu with negative k."""
    rng = np.random.default_rng(4)
    m = rand(rng, 4, 6)
    inputs = {"m": m, "v": rand(rng, 5), "b": m > 0, "i32": np.array([[0, -1, 3]], dtype=np.int32),
              "t3": rand(rng, 2, 4, 4), "h": (rand(rng, 3, 5) * 1000).astype(np.float16)}
    inits = {"s0": np.array(-2, dtype=I64), "s1": np.array(1, dtype=I64),
             "st": ints(-1, 100), "en": ints(-100, 1), "sax": ints(0, 1), "sst": ints(-1, -2),
             "st2": ints(-1000), "en2": ints(1000), "sax2": ints(-1),
             "sei": np.array([[1, 1, 0]], dtype=I64), "seu": rand(rng, 1, 3),
             "sndi": np.array([[1, 2], [1, 2], [0, 0]], dtype=I64), "sndu": rand(rng, 3),
             "pads": ints(2, 3), "pax": ints(1), "depth": np.array(3, dtype=np.int32),
             "ohv": np.array([0, 1], dtype=np.float32), "tk": np.array(-1, dtype=I64)}
    nodes = [
        helper.make_node("Gather", ["m", "s0"], ["gather_scalar"], name="gather_scalar", axis=0),
        helper.make_node("Gather", ["v", "s1"], ["gather_rank0"], name="gather_rank0"),
        helper.make_node("Gather", ["m", "i32"], ["gather_i32"], name="gather_i32", axis=-1),
        helper.make_node("Slice", ["m", "st", "en", "sax", "sst"], ["slice_neg"], name="slice_neg"),
        helper.make_node("Slice", ["m", "st2", "en2", "sax2"], ["slice_clamp"], name="slice_clamp"),
        helper.make_node("Cast", ["m"], ["to_bool"], name="to_bool", to=TensorProto.BOOL),
        helper.make_node("Cast", ["b"], ["from_bool"], name="from_bool", to=TensorProto.FLOAT),
        helper.make_node("Cast", ["i32"], ["to_double"], name="to_double", to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["m"], ["to_i64"], name="to_i64", to=TensorProto.INT64),
        helper.make_node("ScatterElements", ["m", "sei", "seu"], ["scatter_max"], name="scatter_max", axis=0,
                         reduction="max"),
        helper.make_node("ScatterElements", ["m", "sei", "seu"], ["scatter_none"], name="scatter_none", axis=1),
        helper.make_node("ScatterND", ["m", "sndi", "sndu"], ["scatter_nd_mul"], name="scatter_nd_mul",
                         reduction="mul"),
        helper.make_node("Pad", ["m", "pads", "", "pax"], ["pad_wrap"], name="pad_wrap", mode="wrap"),
        helper.make_node("OneHot", ["i32", "depth", "ohv"], ["onehot"], name="onehot"),
        helper.make_node("Trilu", ["t3", "tk"], ["trilu"], name="trilu"),
        helper.make_node("Identity", ["m"], ["identity"], name="identity"),
        helper.make_node("Cast", ["m"], ["to_half"], name="to_half", to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["from_half"], name="from_half", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["h"], ["half_t"], name="half_t"),
    ]
    outs = [o for n in nodes for o in n.output]
    model = make_model(nodes, inputs, outs, initializers=inits)
    dm, got = assert_matches_onnxruntime(model, inputs)
    assert got[1].shape == ()
