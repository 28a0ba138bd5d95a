"""The importer on hand-built graphs, and every kind of bad input."""
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from daceml.errors import (InputError, InputTypeError, InvalidNodeError, ModelLoadError, UnsupportedOpsError)
from daceml.onnx import ONNXModel


def graph_model(nodes, inputs, outputs, inits=(), opset=20, name="g"):
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


@pytest.fixture(scope="module")
def two_output_model():
    """Symbolic dims, an initializer, a Constant node, names needing sanitising, two outputs."""
    w = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "weight.0")
    const = helper.make_node("Constant", [], ["c:1"], value=onnx.numpy_helper.from_array(np.float32(2.0), "c"))
    nodes = [
        const,
        helper.make_node("Add", ["input/x", "weight.0"], ["sum-1"], name="add/1"),
        helper.make_node("Mul", ["sum-1", "c:1"], ["out.a"], name="mul"),
        helper.make_node("Neg", ["input/x"], ["out.b"], name="neg"),
    ]
    return graph_model(nodes, [vi("input/x", ["batch", 4])], [vi("out.a", ["batch", 4]), vi("out.b", ["batch", 4])],
                       [w])


def test_symbols_weights_constants_and_outputs(two_output_model):
    m = ONNXModel(two_output_model)
    assert m.inputs == ["input/x"] and m.outputs == ["out.a", "out.b"]
    assert "batch" in m.sdfg.symbols
    assert set(m.weights) == {"weight.0", "c:1"}
    for b in (1, 5):
        x = np.random.randn(b, 4).astype(np.float32)
        a, nb = m(x)
        np.testing.assert_allclose(a, (x + np.arange(4)) * 2, rtol=1e-6)
        np.testing.assert_array_equal(nb, -x)


def test_torch_in_torch_out_and_weights_by_pointer(two_output_model):
    m = ONNXModel(two_output_model)
    x = torch.randn(3, 4)
    a, b = m(x)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32
    torch.testing.assert_close(a, (x + torch.arange(4.0)) * 2)
    # weights are passed on every call, not baked in
    m.weights["weight.0"][:] = 10
    a, _ = m(x)
    torch.testing.assert_close(a, (x + 10) * 2)


def test_input_that_is_also_output_and_keyword_call():
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2]), vi("x", [2])])
    m = ONNXModel(model)
    y, x_out = m(x=np.array([-1, 2], np.float32))
    np.testing.assert_array_equal(y, [0, 2])
    np.testing.assert_array_equal(x_out, [-1, 2])


def test_scalar_tensors():
    model = graph_model([helper.make_node("Mul", ["a", "b"], ["c"])], [vi("a", []), vi("b", [3])], [vi("c", [3])])
    m = ONNXModel(model)
    c = m(np.float32(3), np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(c, [0, 3, 6])


def test_external_data_file(tmp_path):
    w = onnx.numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "W")
    model = graph_model([helper.make_node("Add", ["x", "W"], ["y"])], [vi("x", [64, 64])], [vi("y", [64, 64])], [w])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
                    size_threshold=0)
    assert os.path.exists(tmp_path / "ext.data")
    m = ONNXModel(str(path))
    x = np.ones((64, 64), np.float32)
    np.testing.assert_array_equal(m(x), x + np.arange(4096).reshape(64, 64))


# --- bad models --------------------------------------------------------------------------------


def test_truncated_and_garbage_files(tmp_path, two_output_model):
    data = two_output_model.SerializeToString()
    (tmp_path / "trunc.onnx").write_bytes(data[:len(data) // 2])
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\xffnot a model at all" * 10)
    for f in ("trunc.onnx", "garbage.onnx"):
        with pytest.raises(ModelLoadError, match=f):
            ONNXModel(str(tmp_path / f))
    with pytest.raises(ModelLoadError, match="does not exist"):
        ONNXModel(str(tmp_path / "missing.onnx"))


def test_all_unknown_ops_reported_at_once():
    nodes = [
        helper.make_node("FancyOp", ["x"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("OtherOp", ["b"], ["c"], name="second", domain="com.example"),
    ]
    model = graph_model(nodes, [vi("x", [2])], [vi("c", [2])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpsError) as info:
        ONNXModel(model)
    msg = str(info.value)
    assert "FancyOp" in msg and "'first'" in msg and "OtherOp" in msg and "'second'" in msg
    assert "com.example" in msg and len(info.value.unsupported) == 2


def test_unsupported_dtype():
    model = graph_model([helper.make_node("Identity", ["x"], ["y"], name="ident")], [vi("x", [2], TensorProto.STRING)],
                        [vi("y", [2], TensorProto.STRING)])
    with pytest.raises(InvalidNodeError, match="'x'.*string.*not support"):
        ONNXModel(model)


def test_missing_required_input_and_wrong_attribute_type():
    model = graph_model([helper.make_node("Add", ["x", ""], ["y"], name="half_add")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(InvalidNodeError, match="half_add"):
        ONNXModel(model)
    bad_attr = helper.make_node("LeakyRelu", ["x"], ["y"], name="lrelu")
    bad_attr.attribute.append(helper.make_attribute("alpha", "high"))
    model = graph_model([bad_attr], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(InvalidNodeError, match="lrelu|alpha"):
        ONNXModel(model)


def test_undefined_tensor():
    model = graph_model([helper.make_node("Relu", ["nowhere"], ["y"], name="r")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(InvalidNodeError):
        ONNXModel(model)


def test_wrong_inputs_at_call_time(two_output_model):
    m = ONNXModel(two_output_model)
    with pytest.raises(InputError, match="input 'input/x'.*rank 2"):
        m(np.ones(4, np.float32))
    with pytest.raises(InputError, match=r"dim 1 must be 4"):
        m(np.ones((2, 5), np.float32))
    with pytest.raises(InputTypeError, match="input 'input/x': expected dtype float32, got float64"):
        m(np.ones((2, 4)))
    with pytest.raises(InputTypeError, match="float32.*torch.int64"):
        m(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="takes 1 input"):
        m(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="missing input"):
        m()
    with pytest.raises(InputError, match="no input 'y'"):
        m(y=np.ones((2, 4), np.float32))
    with pytest.raises(InputTypeError, match="numpy array or torch tensor"):
        m(object())


def test_inconsistent_symbolic_dims():
    model = graph_model([helper.make_node("Add", ["a", "b"], ["c"])], [vi("a", ["n"]), vi("b", ["n"])], [vi("c", ["n"])])
    m = ONNXModel(model)
    with pytest.raises(InputError, match="'b'.*n = 3"):
        m(np.ones(3, np.float32), np.ones(4, np.float32))
