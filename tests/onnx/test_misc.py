"""Miscellaneous ops (daceml/onnx/ops/misc.py) against onnxruntime.

One model of many nodes per test, so that one compile checks many ops and variants.
Ops whose output sizes depend on the data (NonZero, NonMaxSuppression, Unique) are
checked with the output shapes declared in the model.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import helper

from daceml import config
from daceml.errors import UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.testing.onnx_compare import run_onnxruntime

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def _pure_only():
    """Every node through its pure implementation: no onnxruntime fallback."""
    with config.patch(allow_onnxruntime_fallback=False):
        yield


class Graph:
    """Collects nodes (each output a graph output), constant initializers and declared outputs."""

    def __init__(self):
        self.nodes, self.outputs, self.inits, self.declared, self.expected = [], [], {}, {}, {}

    def const(self, value, dtype=np.int64):
        name = f"const_{len(self.inits)}"
        self.inits[name] = np.array(value, dtype)
        return name

    def add(self, op, inputs, n_outputs=1, declare: Optional[Sequence] = None, expected=None, **attrs) -> List[str]:
        """A node; ``declare`` gives (element type, shape) per output to write into the model;
        ``expected`` replaces onnxruntime's value of the first output."""
        name = f"{op}_{len(self.nodes)}"
        outs = [f"{name}_out{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        self.outputs += outs
        for out, decl in zip(outs, declare or []):
            self.declared[out] = decl
        if expected is not None:
            self.expected[outs[0]] = expected
        return outs

    def model(self, inputs: Dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
        vi_in = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
                 for k, v in inputs.items()]
        vi_out = [helper.make_tensor_value_info(o, *self.declared[o]) if o in self.declared
                  else helper.make_empty_tensor_value_info(o) for o in self.outputs]
        inits = [onnx.numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, "misc", vi_in, vi_out, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, 10)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def check(g: Graph, inputs: Dict[str, np.ndarray], opset: int, rtol=1e-5, atol=1e-6):
    model = g.model(inputs, opset)
    got = ONNXModel(model)(**inputs)
    got = got if isinstance(got, tuple) else (got, )
    expected = run_onnxruntime(model, inputs)
    failures = []
    for name, node_got, exp in zip(g.outputs, got, expected):
        node_got, exp = np.asarray(node_got), g.expected.get(name, exp)
        try:
            assert node_got.shape == exp.shape, f"shape {node_got.shape} != {exp.shape}"
            assert node_got.dtype == exp.dtype, f"dtype {node_got.dtype} != {exp.dtype}"
            if np.issubdtype(exp.dtype, np.floating):
                np.testing.assert_allclose(node_got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(node_got, exp)
        except AssertionError as ex:
            failures.append(f"{name}: {ex}")
    assert not failures, f"{len(failures)} output(s) differ:\n" + "\n".join(failures)


def test_bitwise_selection_and_linear_algebra():
    """Bitwise ops (broadcasting), Shrink, LpNormalization, TopK, Compress, EyeLike, Det,
    ReverseSequence in one model."""
    rng = np.random.default_rng(0)
    inputs = {
        "i32": rng.integers(-2**31, 2**31 - 1, (3, 4), dtype=np.int64).astype(np.int32),
        "i32b": rng.integers(-2**31, 2**31 - 1, (4, ), dtype=np.int64).astype(np.int32),
        "u8": rng.integers(0, 255, (2, 3, 4), endpoint=True).astype(np.uint8),
        "i16": rng.integers(-300, 300, (5, )).astype(np.int16),
        "x": rng.standard_normal((3, 4, 5)).astype(np.float32),
        "z": np.array([[0, 0, 0], [1, -2, 2]], np.float32),
        "ties": np.array([[3, 1, 3, 2, 3], [0, 0, 0, 0, 0]], np.float32),
        "k": np.array([2], np.int64),
        "cond": np.array([True, False, True], bool),
        "m": rng.standard_normal((2, 3, 3)).astype(np.float32),
        "m2": rng.standard_normal((4, 4)).astype(np.float64),
        "m3": rng.standard_normal((4, 4)).astype(np.float32),
        "lens": np.array([1, 4, 2, 3], np.int64),
    }
    g = Graph()
    g.add("BitwiseAnd", ["i32", "i32b"])
    g.add("BitwiseOr", ["i32", "i32b"])
    g.add("BitwiseXor", ["i32b", "i32"])
    g.add("BitwiseNot", ["u8"])
    g.add("BitwiseNot", ["i16"])
    g.add("BitwiseAnd", ["u8", "u8"])
    g.add("Shrink", ["x"])
    g.add("Shrink", ["x"], bias=0.3, lambd=0.8)
    g.add("LpNormalization", ["x"])
    g.add("LpNormalization", ["x"], axis=0, p=1)
    g.add("LpNormalization", ["z"], p=1)  # a zero row gives zeros
    g.add("LpNormalization", ["z"], p=2)
    g.add("TopK", ["x", g.const([3])], 2)
    g.add("TopK", ["x", g.const([2])], 2, axis=1, largest=0)
    g.add("TopK", ["ties", g.const([3])], 2, axis=-1)
    g.add("TopK", ["ties", g.const([4])], 2, axis=1, largest=0, sorted=1)
    g.add("TopK", ["x", "k"], 2, declare=[(onnx.TensorProto.FLOAT, [3, 2, 5]), (onnx.TensorProto.INT64, [3, 2, 5])],
          axis=1)
    g.add("Compress", ["x", "cond"], axis=0, declare=[(onnx.TensorProto.FLOAT, [2, 4, 5])])
    g.add("Compress", ["x", g.const([False, True, True, False, True], bool)], axis=-1,
          declare=[(onnx.TensorProto.FLOAT, [3, 4, 3])])
    g.add("Compress", ["x", g.const([True, False, False, True], bool)], declare=[(onnx.TensorProto.FLOAT, [2])])
    g.add("EyeLike", ["m2"])
    g.add("EyeLike", ["i32"], k=1, dtype=onnx.TensorProto.FLOAT)
    g.add("EyeLike", ["i32"], k=-2)
    g.add("Det", ["m"])
    g.add("Det", ["m3"])
    g.add("ReverseSequence", ["m2", "lens"], batch_axis=1, time_axis=0)
    g.add("ReverseSequence", ["m2", "lens"], batch_axis=0, time_axis=1)
    check(g, inputs, opset=18)


def test_quantization():
    """QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked; 8 and 16 bits),
    DynamicQuantizeLinear, QLinearMatMul, ConvInteger, QLinearConv."""
    rng = np.random.default_rng(1)
    u8, i8 = np.uint8, np.int8
    inputs = {
        "x": (rng.standard_normal((2, 3, 4)) * 40).astype(np.float32),
        "xr": np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1e9, -1e9, 3.49], np.float32),
        "qa": rng.integers(0, 255, (2, 3, 5), endpoint=True).astype(u8),
        "qb": rng.integers(0, 255, (5, 4), endpoint=True).astype(u8),
        "sa": rng.integers(-128, 127, (3, 5), endpoint=True).astype(i8),
        "sb": rng.integers(-128, 127, (2, 5, 4), endpoint=True).astype(i8),
        "img": rng.integers(0, 255, (1, 4, 6, 5), endpoint=True).astype(u8),
        "i32": rng.integers(-1000, 1000, (3, 4)).astype(np.int32),
    }
    g = Graph()
    s, z = g.const(0.7, np.float32), g.const(120, u8)
    g.add("QuantizeLinear", ["x", s, z])
    g.add("QuantizeLinear", ["xr", g.const(1.0, np.float32), g.const(-3, i8)])
    g.add("QuantizeLinear", ["x", g.const([0.5, 1.0, 2.0], np.float32), g.const([-10, 0, 10], i8)], axis=1)
    g.add("QuantizeLinear", ["x", g.const([0.25, 3.0, 1.0, 0.5], np.float32)], axis=2,
          output_dtype=onnx.TensorProto.INT16)
    g.add("QuantizeLinear", ["x", g.const(np.full((2, 3, 2), 0.3), np.float32), g.const(np.full((2, 3, 2), 7), u8)],
          axis=2, block_size=2)
    g.add("DequantizeLinear", ["qa", g.const(0.02, np.float32), g.const(128, u8)])
    g.add("DequantizeLinear", ["sa", g.const([0.1, 0.2, 0.3], np.float32), g.const([1, -2, 3], i8)], axis=0)
    g.add("DequantizeLinear", ["i32", g.const(0.5, np.float32)])
    g.add("DequantizeLinear", ["qa", g.const(np.full((2, 3, 3), 0.01), np.float32)], axis=2, block_size=2)
    g.add("DynamicQuantizeLinear", ["x"], 3)
    g.add("DynamicQuantizeLinear", ["xr"], 3)
    g.add("QLinearMatMul", ["qa", g.const(0.05, np.float32), g.const(100, u8), "qb", g.const(0.03, np.float32),
                            g.const(130, u8), g.const(0.2, np.float32), g.const(110, u8)])
    g.add("QLinearMatMul", ["sa", g.const(0.05, np.float32), g.const(3, i8), "sb", g.const(0.03, np.float32),
                            g.const(-2, i8), g.const(0.4, np.float32), g.const(-7, i8)])
    w = rng.integers(0, 255, (6, 2, 3, 2), endpoint=True).astype(u8)
    g.add("ConvInteger", ["img", g.const(w, u8), g.const(3, u8), g.const(5, u8)], group=2, pads=[1, 0, 1, 1],
          strides=[2, 1])
    g.add("ConvInteger", ["img", g.const(w[:, :, :2, :2].copy(), u8)], group=2, dilations=[2, 2])
    g.add("QLinearConv", ["img", g.const(0.04, np.float32), g.const(120, u8), g.const(w, u8),
                          g.const(np.linspace(0.01, 0.03, 6), np.float32), g.const(np.arange(120, 126), u8),
                          g.const(2.0, np.float32), g.const(128, u8), g.const(np.arange(-300, 300, 100), np.int32)],
          group=2, pads=[1, 1, 1, 1])
    check(g, inputs, opset=21)


def test_upsample_and_scatter():
    """Upsample (nearest, linear; scales an input read at run time, or an attribute in opset 7),
    Scatter (the old name of ScatterElements)."""
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((1, 2, 3, 4)).astype(np.float32),
              "scales": np.array([1, 1, 2, 1.5], np.float32),
              "data": np.zeros((3, 4), np.float32),
              "idx": np.array([[1, 0, 2, 0], [0, 2, 1, 1]], np.int64),
              "upd": rng.standard_normal((2, 4)).astype(np.float32)}
    g = Graph()
    f = onnx.TensorProto.FLOAT
    g.add("Upsample", ["x", "scales"], declare=[(f, [1, 2, 6, 6])])
    g.add("Upsample", ["x", "scales"], mode="linear", declare=[(f, [1, 2, 6, 6])])
    g.add("Upsample", ["x", g.const([1, 1, 3, 2], np.float32)])
    g.add("Scatter", ["data", "idx", "upd"])
    g.add("Scatter", ["data", g.const([[3], [0], [1]]), g.const([[1.0], [2.0], [3.0]], np.float32)], axis=1)
    check(g, inputs, opset=9)
    # opset 7: the scales an attribute
    g = Graph()
    g.add("Upsample", ["x"], scales=[1.0, 2.0, 1.0, 2.0])
    g.add("Upsample", ["x"], scales=[1.0, 1.0, 2.0, 2.0], mode="linear")
    check(g, {"x": inputs["x"]}, opset=7)


def test_data_dependent_outputs():
    """NonZero, NonMaxSuppression, Unique (output shapes declared), MaxUnpool, RoiAlign, MaxRoiPool."""
    i64, f = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, -0.1, 1, 0.9], [0, 10, 1, 11], [0, 10.1, 1, 11.1],
                       [0, 100, 1, 101]]], np.float32)
    inputs = {
        "c": np.array([[1, 0, 2], [0, 0, 3]], np.float32),
        "boxes": np.concatenate([boxes, boxes[:, ::-1]]),
        "scores": np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]] * 2, np.float32),
        "u": np.array([2, 1, 1, 3, 4, 3, 1], np.float32),
        "u2": np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4]], np.int64),
        "pooled": np.array([[[[5, 6], [7, 8]]]], np.float32),
        "ind": np.array([[[[5, 7], [13, 15]]]], np.int64),
        "X": np.arange(2 * 2 * 8 * 8, dtype=np.float32).reshape(2, 2, 8, 8) / 10,
        "rois": np.array([[0, 0, 7, 7], [1.5, 2.2, 5.1, 6.3], [4, 4, 2, 3]], np.float32),
        "bidx": np.array([0, 1, 1], np.int64),
    }
    g = Graph()
    g.add("NonZero", ["c"], declare=[(i64, [2, 3])])
    g.add("NonMaxSuppression", ["boxes", "scores", g.const([2]), g.const([0.5], np.float32),
                                g.const([0.0], np.float32)], declare=[(i64, [8, 3])])
    g.add("NonMaxSuppression", ["boxes", "scores", g.const([3]), g.const([0.3], np.float32)],
          declare=[(i64, [12, 3])])
    g.add("Unique", ["u"], 4, declare=[(f, [4]), (i64, [4]), (i64, [7]), (i64, [4])])
    g.add("Unique", ["u"], 4, sorted=0, declare=[(f, [4]), (i64, [4]), (i64, [7]), (i64, [4])])
    g.add("Unique", ["u2"], 4, axis=0, declare=[(i64, [2, 3]), (i64, [2]), (i64, [3]), (i64, [2])])
    g.add("MaxUnpool", ["pooled", "ind"], kernel_shape=[2, 2], strides=[2, 2])
    # onnxruntime takes the indices as flat over output_shape; the ONNX reference (and the
    # conformance case test_maxunpool_export_with_output_shape) over the unpadded shape
    padded = np.zeros((1, 1, 5, 5), np.float32)
    padded[0, 0, :4, :4].flat[[5, 7, 13, 15]] = [5, 6, 7, 8]
    g.add("MaxUnpool", ["pooled", "ind", g.const([1, 1, 5, 5])], kernel_shape=[2, 2], strides=[2, 2],
          declare=[(f, [1, 1, 5, 5])], expected=padded)
    g.add("RoiAlign", ["X", "rois", "bidx"], output_height=3, output_width=2, sampling_ratio=2)
    g.add("RoiAlign", ["X", "rois", "bidx"], output_height=2, output_width=2, spatial_scale=0.5, mode="max",
          coordinate_transformation_mode="output_half_pixel")
    g.add("RoiAlign", ["X", "rois", "bidx"], output_height=2, output_width=3)
    g.add("MaxRoiPool", ["X", g.const([[0, 0, 0, 7, 7], [1, 1.4, 2.6, 5, 6.5], [1, 6, 6, 3, 2]], np.float32)],
          pooled_shape=[3, 2])
    g.add("MaxRoiPool", ["X", g.const([[1, 2, 2, 14, 10]], np.float32)], pooled_shape=[2, 4], spatial_scale=0.5)
    check(g, inputs, opset=16, rtol=1e-4, atol=1e-5)


def test_data_dependent_output_size_is_refused():
    """NonZero without a declared output shape: refused at import, naming the node."""
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"], name="my_nonzero")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_empty_tensor_value_info("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    with pytest.raises(UnsupportedOpsError) as info:
        ONNXModel(model)
    assert "my_nonzero" in str(info.value) and "depends on the input values" in str(info.value)


def test_every_documented_op_is_registered():
    from daceml.onnx.ops import misc, registry
    ops = ("BitwiseAnd BitwiseOr BitwiseXor BitwiseNot Shrink TopK Compress NonZero Unique NonMaxSuppression "
           "LpNormalization Det EyeLike ReverseSequence Scatter Upsample MaxUnpool RoiAlign MaxRoiPool QuantizeLinear "
           "DequantizeLinear DynamicQuantizeLinear ConvInteger QLinearConv QLinearMatMul").split()
    assert all(op in misc.__doc__ for op in ops)
    assert [op for op in ops if "pure" not in registry.implementations(op)] == []

