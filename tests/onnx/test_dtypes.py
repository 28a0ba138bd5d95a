"""Element types numpy lacks (bfloat16, float8, float4, int4/uint4, int2/uint2): storage,
the call boundary, and Cast/CastLike/QuantizeLinear/DequantizeLinear against ml_dtypes
and onnx's reference evaluator.

Four compiled models: every Cast from float32/float16/float64 to each exotic type and
back (bits compared over special values, all ties and random values), a bfloat16
pass-through model (inputs/outputs, rank 0, Transpose, CastLike, torch), a float8
weight, and quantization to / from int4, float8 and float4.
"""
import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import dace
from daceml.errors import InputTypeError, UnsupportedOpsError
from daceml.onnx import ONNXModel
from daceml.onnx import dtypes as odt

ml_dtypes = pytest.importorskip("ml_dtypes")

OPSET = 25
FLOAT_TYPES = ["BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1"]
INT_TYPES = ["INT4", "UINT4", "INT2", "UINT2"]
F8 = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"]


def _np(name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(getattr(TP, name)))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)


def _model(nodes, inputs, outputs, initializers=()):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


# --- no compiler ---------------------------------------------------------------------------------

def test_storage_types_and_record():
    assert odt.storage_type(TP.BFLOAT16) == dace.uint16
    assert odt.storage_type(TP.FLOAT8E4M3FN) == dace.uint8
    assert odt.storage_type(TP.INT4) == dace.uint8
    assert odt.storage_type(TP.FLOAT) == dace.float32
    assert odt.storage_type(TP.STRING) is None
    for code, t in odt.EXOTIC_TYPES.items():
        assert t.numpy == np.dtype(helper.tensor_dtype_to_np_dtype(code))
        assert t.numpy.itemsize == t.storage.bytes  # one element per storage element: views, no copies
    m = ONNXModel(_model([helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)],
                         [("x", TP.BFLOAT16, [3])], [("y", TP.FLOAT, [3])]))
    desc = m.sdfg.arrays[m._array("x")]
    assert desc.dtype == dace.uint16 and odt.logical_type(desc) == TP.BFLOAT16
    assert odt.numpy_dtype_of(desc) == np.dtype(ml_dtypes.bfloat16)
    assert odt.logical_type(desc.clone()) == TP.BFLOAT16  # survives nesting
    assert odt.logical_type(m.sdfg.arrays[m._array("y")]) == TP.FLOAT
    # a uint16 model differs in content, so the two never share a cached build
    from daceml import compiler
    m16 = ONNXModel(_model([helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)],
                           [("x", TP.UINT16, [3])], [("y", TP.FLOAT, [3])]))
    assert compiler.content_hash(m.sdfg) != compiler.content_hash(m16.sdfg)
    assert m.implementation_table["Cast"] == "pure"


def test_ops_that_would_compute_on_bits_are_refused():
    model = _model([helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=TP.FLOAT)],
                   [("x", TP.BFLOAT16, [3])], [("y", TP.FLOAT, [3])])
    with pytest.raises(UnsupportedOpsError, match="bfloat16 is supported only by"):
        ONNXModel(model)


def test_input_dtype_checked():
    m = ONNXModel(_model([helper.make_node("Cast", ["x"], ["y"], to=TP.FLOAT)],
                         [("x", TP.INT4, [3])], [("y", TP.FLOAT, [3])]))
    with pytest.raises(InputTypeError, match="int4"):
        m.arguments([np.zeros(3, np.uint8)])
    torch = pytest.importorskip("torch")
    with pytest.raises(InputTypeError, match="torch has no dtype"):
        m.arguments([torch.zeros(3, dtype=torch.uint8)])


# --- compiled --------------------------------------------------------------------------------------

def _float_probe() -> np.ndarray:
    """float32 values that exercise every rounding path of every exotic float format: each
    representable value, the midpoints between neighbours (ties) and their float32
    neighbours, specials, and random values over a wide range."""
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-30, 3.4e38, -3.4e38, 1e6, -1e6]
    for name in FLOAT_TYPES + ["FLOAT8E8M0"]:
        dt = _np(name)
        codes = np.arange(2 ** (16 if dt.itemsize == 2 else 4 if name == "FLOAT4E2M1" else 8),
                          dtype=np.uint16 if dt.itemsize == 2 else np.uint8)
        v = codes.view(dt).astype(np.float32)
        v = np.unique(v[np.isfinite(v)])
        if dt.itemsize == 2:  # bfloat16: a sample of its 65536 values
            v = v[::97]
        mids = (v[:-1].astype(np.float64) + v[1:]) / 2
        mids32 = mids.astype(np.float32)
        vals += list(v) + list(mids32) + list(np.nextafter(mids32, np.float32(np.inf))) + \
            list(np.nextafter(mids32, np.float32(-np.inf)))
    rng = np.random.default_rng(0)
    vals += list((rng.standard_normal(4000) * np.exp2(rng.integers(-40, 40, 4000))).astype(np.float32))
    vals += list(np.arange(-20, 20, 0.25, dtype=np.float32))
    return np.array(vals, dtype=np.float32)


def _reference(x: np.ndarray, name: str, saturate: bool) -> np.ndarray:
    """The ONNX reference evaluator's Cast (onnx.reference.ops.op_cast)."""
    from onnx.reference.ops.op_cast import cast_to
    return cast_to(x, getattr(TP, name), saturate)


def _same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, what
    g, w = _bits(got), _bits(want)
    nan = np.isnan(got.astype(np.float32)) & np.isnan(want.astype(np.float32))  # NaN payloads may differ
    bad = np.flatnonzero((g != w) & ~nan)
    assert bad.size == 0, f"{what}: {bad.size} of {g.size} differ, e.g. at {bad[:5]}: got {g[bad[:5]]}, " \
                          f"expected {w[bad[:5]]}"


def test_cast_all_exotic_types_against_reference():
    x = _float_probe()
    n = x.size
    nodes, outputs = [], []
    for name in FLOAT_TYPES + INT_TYPES + ["FLOAT8E8M0"]:
        code = getattr(TP, name)
        nodes.append(helper.make_node("Cast", ["x"], [f"to_{name}"], to=code))
        outputs.append((f"to_{name}", code, [n]))
        nodes.append(helper.make_node("Cast", [f"to_{name}"], [f"back_{name}"], to=TP.FLOAT))
        outputs.append((f"back_{name}", TP.FLOAT, [n]))
    for name in F8:
        code = getattr(TP, name)
        nodes.append(helper.make_node("Cast", ["x"], [f"nosat_{name}"], to=code, saturate=0))
        outputs.append((f"nosat_{name}", code, [n]))
    for mode in ("down", "nearest"):
        nodes.append(helper.make_node("Cast", ["x"], [f"e8m0_{mode}"], to=TP.FLOAT8E8M0, round_mode=mode))
        outputs.append((f"e8m0_{mode}", TP.FLOAT8E8M0, [n]))
    # from float16 and float64, and between two exotic types and to integers
    nodes += [helper.make_node("Cast", ["x16"], ["h_e5m2"], to=TP.FLOAT8E5M2),
              helper.make_node("Cast", ["x64"], ["d_bf16"], to=TP.BFLOAT16),
              helper.make_node("Cast", ["to_BFLOAT16"], ["bf_e4m3"], to=TP.FLOAT8E4M3FN),
              helper.make_node("Cast", ["to_INT4"], ["i4_i8"], to=TP.INT8),
              helper.make_node("Cast", ["to_FLOAT8E4M3FN"], ["e4m3_h"], to=TP.FLOAT16),
              helper.make_node("Cast", ["i32"], ["i32_u4"], to=TP.UINT4)]
    outputs += [("h_e5m2", TP.FLOAT8E5M2, [n]), ("d_bf16", TP.BFLOAT16, [n]), ("bf_e4m3", TP.FLOAT8E4M3FN, [n]),
                ("i4_i8", TP.INT8, [n]), ("e4m3_h", TP.FLOAT16, [n]), ("i32_u4", TP.UINT4, [n])]
    model = ONNXModel(_model(nodes, [("x", TP.FLOAT, [n]), ("x16", TP.FLOAT16, [n]), ("x64", TP.DOUBLE, [n]),
                                     ("i32", TP.INT32, [n])], outputs))
    with np.errstate(over="ignore"):
        x16 = x.astype(np.float16)
    x64 = x.astype(np.float64) * (1 + 2.0 ** -30)  # between float32 values: rounded to float32 first, as ml_dtypes
    i32 = np.arange(n, dtype=np.int32) - n // 2
    with np.errstate(all="ignore"):
        got = dict(zip([o[0] for o in outputs], model(x, x16, x64, i32)))
        for name in FLOAT_TYPES + INT_TYPES + ["FLOAT8E8M0"]:
            want = _reference(x, name, True)
            _same_bits(got[f"to_{name}"], want, f"float32 -> {name}")
            np.testing.assert_array_equal(got[f"back_{name}"], want.astype(np.float32), f"{name} -> float32")
        for name in F8:
            _same_bits(got[f"nosat_{name}"], _reference(x, name, False), f"float32 -> {name}, saturate=0")
        for mode in ("down", "nearest"):
            want = numpy_helper.to_float8e8m0(x, True, mode)
            _same_bits(got[f"e8m0_{mode}"], want, f"float32 -> e8m0 {mode}")
        _same_bits(got["h_e5m2"], _reference(x16, "FLOAT8E5M2", True), "float16 -> e5m2")
        _same_bits(got["d_bf16"], x64.astype(ml_dtypes.bfloat16), "float64 -> bfloat16")
        _same_bits(got["bf_e4m3"], _reference(got["to_BFLOAT16"].astype(np.float32), "FLOAT8E4M3FN", True),
                   "bfloat16 -> e4m3fn")
        np.testing.assert_array_equal(got["i4_i8"], got["to_INT4"].astype(np.int8))
        np.testing.assert_array_equal(got["e4m3_h"], got["to_FLOAT8E4M3FN"].astype(np.float16))
        _same_bits(got["i32_u4"], i32.astype(ml_dtypes.uint4), "int32 -> uint4")


def test_bfloat16_at_the_boundary():
    """bfloat16 in and out (numpy ml_dtypes and torch), rank 0, a bit-moving op, CastLike."""
    nodes = [helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0]),
             helper.make_node("CastLike", ["f", "a"], ["fl"]),
             helper.make_node("Cast", ["s"], ["s32"], to=TP.FLOAT)]
    model = ONNXModel(_model(nodes, [("a", TP.BFLOAT16, [2, 3]), ("f", TP.FLOAT, [4]), ("s", TP.BFLOAT16, [])],
                             [("t", TP.BFLOAT16, [3, 2]), ("fl", TP.BFLOAT16, [4]), ("s32", TP.FLOAT, [])]))
    a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16) / 3
    f = np.array([1.00390625, -2.5, 3e38, np.inf], np.float32)
    s = np.array(1.5, dtype=ml_dtypes.bfloat16)
    t, fl, s32 = model(a, f, s)
    assert t.dtype == ml_dtypes.bfloat16 and fl.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(_bits(t), _bits(np.ascontiguousarray(a.T)))
    np.testing.assert_array_equal(_bits(fl), _bits(f.astype(ml_dtypes.bfloat16)))
    assert s32.shape == () and s32 == 1.5
    torch = pytest.importorskip("torch")
    ta = torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    tt, tfl, ts = model(ta, torch.from_numpy(f), torch.tensor(1.5, dtype=torch.bfloat16))
    assert tt.dtype == torch.bfloat16 and torch.equal(tt, ta.T.contiguous())
    assert tfl.dtype == torch.bfloat16 and ts.item() == 1.5


def test_float8_weight():
    w = np.array([0.5, -448, 3.0, 0.015625], np.float32).astype(ml_dtypes.float8_e4m3fn)
    init = numpy_helper.from_array(w, "w")
    model = ONNXModel(_model([helper.make_node("Cast", ["w"], ["y"], to=TP.FLOAT)], [],
                             [("y", TP.FLOAT, [4])], [init]))
    np.testing.assert_array_equal(model(), w.astype(np.float32))


def test_quantize_dequantize_exotic_against_reference():
    """QuantizeLinear to / DequantizeLinear from int4 (per axis, with zero point), float8
    (per tensor, saturating) and float4 (blocked); ordinary Q/DQ stays misc.py's."""
    from onnx.reference import ReferenceEvaluator
    x = (np.random.default_rng(1).standard_normal((4, 6)) * 9).astype(np.float32)
    x[0, :3] = [np.inf, -1e9, 0.5]
    inits = [numpy_helper.from_array(np.array([1.0, 2.0, 0.5, 3.0], np.float32), "s_axis"),
             numpy_helper.from_array(np.array([1, -2, 0, 3], np.float32).astype(ml_dtypes.int4), "zp_i4"),
             numpy_helper.from_array(np.array(0.25, np.float32), "s_t"),
             numpy_helper.from_array(np.array([[1.0, 2.0], [0.5, 4.0], [2.0, 1.0], [1.0, 0.25]], np.float32), "s_blk"),
             numpy_helper.from_array(np.zeros((4, 2), np.float32).astype(ml_dtypes.float4_e2m1fn), "zp_f4"),
             numpy_helper.from_array(np.array(0.5, np.float32), "s_u8")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_axis", "zp_i4"], ["q_i4"], axis=0),
             helper.make_node("DequantizeLinear", ["q_i4", "s_axis", "zp_i4"], ["d_i4"], axis=0),
             helper.make_node("QuantizeLinear", ["x", "s_t"], ["q_e4"], output_dtype=TP.FLOAT8E4M3FN),
             helper.make_node("DequantizeLinear", ["q_e4", "s_t"], ["d_e4"]),
             helper.make_node("QuantizeLinear", ["x", "s_blk", "zp_f4"], ["q_f4"], axis=1, block_size=3),
             helper.make_node("DequantizeLinear", ["q_f4", "s_blk", "zp_f4"], ["d_f4"], axis=1, block_size=3),
             helper.make_node("QuantizeLinear", ["x", "s_u8"], ["q_u8"])]
    outs = [("q_i4", TP.INT4, [4, 6]), ("d_i4", TP.FLOAT, [4, 6]), ("q_e4", TP.FLOAT8E4M3FN, [4, 6]),
            ("d_e4", TP.FLOAT, [4, 6]), ("q_f4", TP.FLOAT4E2M1, [4, 6]), ("d_f4", TP.FLOAT, [4, 6]),
            ("q_u8", TP.UINT8, [4, 6])]
    proto = _model(nodes, [("x", TP.FLOAT, [4, 6])], outs, inits)
    model = ONNXModel(proto)
    assert model.implementation_table["QuantizeLinear"] == "pure"
    with np.errstate(all="ignore"):
        want = ReferenceEvaluator(proto).run(None, {"x": x})
        got = model(x)
    # +inf to integers saturates (onnx's reference casts inf to int32 first, which gives INT_MIN)
    assert got[0][0, 0] == 7 and got[1][0, 0] == (7 - 1) * 1.0 and got[6][0, 0] == 255
    for k in (0, 1, 6):
        want[k][0, 0] = got[k][0, 0]
    for (name, _, _), g, w in zip(outs, got, want):
        if w.dtype.kind == "f":
            np.testing.assert_array_equal(g, w, name)
        else:
            _same_bits(g, w, name)
