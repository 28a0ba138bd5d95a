"""A representative slice of the ONNX node conformance suite (the whole suite: make conformance)."""
import pytest

from daceml.onnx import conformance

#: ops the demo and the model zoo rely on; every one of their cases must pass
SLICE = r"^test_(relu|add|matmul_2d|gemm_default|conv_with_strides|maxpool_2d_default|averagepool_2d_default|" \
        r"globalaveragepool|batchnorm_example|softmax_axis_1|reshape_reduced_dims|transpose_default|concat_2d|" \
        r"flatten_axis1|layer_normalization_2d_axis0|gelu_default_1|argmax_default_axis_example|" \
        r"sigmoid|tanh|where_example|gather_0|slice|unsqueeze_axis_0|cast_FLOAT_to_DOUBLE)$"


def test_slice_passes(tmp_path):
    summary = conformance.run(only=SLICE, jobs=2, batch=32, out_dir=str(tmp_path))
    assert summary["cases"] >= 20
    bad = {n: r for n, r in summary["results"].items() if r["status"] != "pass"}
    assert not bad, bad
    assert (tmp_path / "conformance.md").exists() and (tmp_path / "conformance.json").exists()


def test_bad_models_name_the_node():
    import onnx
    from onnx import helper
    from daceml.errors import InvalidNodeError, UnsupportedOpsError
    from daceml.onnx import ONNXModel
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])

    def model(node, opsets=(("", 20), )):
        return helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                 opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])

    with pytest.raises(InvalidNodeError, match="my_add"):
        ONNXModel(model(helper.make_node("Add", ["x"], ["y"], name="my_add")))
    with pytest.raises(InvalidNodeError, match="my_relu|alpha"):
        ONNXModel(model(helper.make_node("LeakyRelu", ["x"], ["y"], name="my_relu", alpha="strong")))
    with pytest.raises(UnsupportedOpsError, match="'custom_node'.*com.acme"):
        ONNXModel(model(helper.make_node("Frob", ["x"], ["y"], name="custom_node", domain="com.acme"),
                        (("", 20), ("com.acme", 1))))
