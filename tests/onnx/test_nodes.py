"""Node classes generated from the ONNX schemas (unit level, no compiler)."""
import json

import onnx
import pytest
from onnx import helper

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx import nodes, schema
from daceml.onnx.schema import AttrType, ParamKind


def test_every_schema_version_has_a_node_class():
    schemas = schema.all_schemas("")
    classes = nodes.all_node_classes()
    assert len(classes) == len(schemas) > 600
    for s, cls in zip(schemas, classes):
        assert cls.schema == s
        assert cls.__name__ == f"ONNX{s.name}_{s.since_version}"
        assert s.name in cls.__doc__
        props = {p.attr_name for p in cls.__properties__.values()}
        assert set(s.attributes) <= props, s.name


@pytest.mark.parametrize("op,opset,version", [("ReduceSum", 11, 11), ("ReduceSum", 13, 13), ("ReduceMean", 17, 13),
                                              ("ReduceMean", 18, 18), ("Split", 12, 11), ("Squeeze", 20, 13),
                                              ("Conv", 20, 11)])
def test_version_in_force_at_an_opset(op, opset, version):
    cls = nodes.node_class(op, opset)
    assert cls.schema.since_version == version
    assert getattr(nodes, f"ONNX{op}_{version}") is cls


def test_latest_alias_and_unknown():
    assert nodes.ONNXConv.schema.since_version == max(s.since_version for s in schema.all_schemas()
                                                      if s.name == "Conv")
    assert nodes.node_class("NoSuchOp", 20) is None
    assert nodes.node_class("Conv", 20, domain="com.microsoft") is None
    with pytest.raises(AttributeError):
        nodes.ONNXNoSuchOp


def test_typed_attribute_properties():
    conv = nodes.ONNXConv("c", strides=[2, 2], auto_pad="VALID", group=3)
    assert conv.strides == [2, 2] and conv.auto_pad == "VALID" and conv.group == 3
    assert conv.dilations is None
    assert conv.in_connectors.keys() == {"X", "W"}
    with pytest.raises(InvalidNodeError, match="'c'.*unknown attribute.*'stride'"):
        nodes.ONNXConv("c", stride=[1])
    wrong = helper.make_attribute("group", 1.5)
    with pytest.raises(InvalidNodeError, match="attribute 'group' must be of type INT, got FLOAT"):
        nodes.ONNXConv("c", group=wrong)


def test_string_and_tensor_attributes_round_trip_through_json():
    t = onnx.numpy_helper.from_array(__import__("numpy").arange(3, dtype="int64"), "v")
    sdfg = dace.SDFG("rt")
    st = sdfg.add_state()
    cos = nodes.ONNXConstantOfShape("cos", value=helper.make_attribute("value", t))
    st.add_node(cos)
    js = json.loads(json.dumps(sdfg.to_json()))
    back = dace.SDFG.from_json(js)
    (n, ) = [x for x in back.nodes()[0].nodes() if isinstance(x, nodes.ONNXOp)]
    assert isinstance(n.value, onnx.TensorProto)
    assert list(onnx.numpy_helper.to_array(n.value)) == [0, 1, 2]


def test_variadic_connectors_in_order():
    cat = nodes.ONNXConcat("cat", inputs=["inputs__2", "inputs__0", "inputs__1"], axis=0)
    assert cat.input_connectors() == ["inputs__0", "inputs__1", "inputs__2"]
    assert nodes.parse_variadic_connector("inputs__12") == ("inputs", 12)


def test_validation_names_node_and_problem():
    sdfg = dace.SDFG("v")
    sdfg.add_array("X", (2, 3), dace.float32)
    st = sdfg.add_state()
    gemm = nodes.ONNXGemm("my_gemm", inputs=["A"])
    st.add_node(gemm)
    st.add_edge(st.add_read("X"), None, gemm, "A", dace.Memlet("X"))
    problems = gemm.problems(sdfg, st)
    assert any("'B' is missing" in p for p in problems)
    with pytest.raises(InvalidNodeError, match="my_gemm"):
        gemm.validate(sdfg, st)


def test_schema_descriptions():
    s = schema.get_schema("Clip", 13)
    assert [p.kind for p in s.inputs] == [ParamKind.SINGLE, ParamKind.OPTIONAL, ParamKind.OPTIONAL]
    s = schema.get_schema("LeakyRelu", 16)
    assert s.attributes["alpha"].type is AttrType.FLOAT and s.attributes["alpha"].default == pytest.approx(0.01)
    assert "tensor(float)" in s.type_constraints["T"]
