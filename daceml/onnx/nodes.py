"""DaCe library nodes for ONNX operators, one class per op and opset version.

The classes are generated from the ONNX schema registry (:mod:`daceml.onnx.schema`)
on first use: ``ONNXConv_11`` is Conv as defined since opset 11, and ``ONNXConv``
is its newest version. ``node_class(op_type, opset)`` gives the version in force
at an opset. Each class has

- one typed DaCe property per ONNX attribute (ints, floats, strings, lists of
  those; tensors, graphs and type protos are kept as ONNX protobuf objects and
  serialised as base64 protobuf in JSON);
- input and output connectors named after the schema (a variadic parameter
  ``inputs`` gives connectors ``inputs__0``, ``inputs__1``, ...);
- the spec's documentation as its docstring;
- ``validate`` that reports a malformed node by name;
- expansion through the implementation registry (:mod:`daceml.onnx.ops.registry`),
  looked up when the node is expanded, so implementations registered at any time
  are found.
"""
import base64
import logging
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

import onnx

import dace
import dace.library
from dace import data as dt
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.errors import InvalidNodeError
from daceml.onnx.schema import AttrType, ONNXAttribute, ONNXSchema, ParamKind, all_schemas, get_schema

log = logging.getLogger(__name__)

VARIADIC_SEPARATOR = "__"

_PROTO_TYPES = {
    AttrType.TENSOR: onnx.TensorProto,
    AttrType.GRAPH: onnx.GraphProto,
    AttrType.SPARSE_TENSOR: onnx.SparseTensorProto,
    AttrType.TYPE_PROTO: onnx.TypeProto,
    AttrType.TENSORS: onnx.TensorProto,
    AttrType.GRAPHS: onnx.GraphProto,
    AttrType.SPARSE_TENSORS: onnx.SparseTensorProto,
    AttrType.TYPE_PROTOS: onnx.TypeProto,
}
_LIST_ELEMENT = {AttrType.INTS: int, AttrType.FLOATS: float, AttrType.STRINGS: str}
_SCALAR = {AttrType.INT: int, AttrType.FLOAT: float, AttrType.STRING: str}


def variadic_connector(param: str, index: int) -> str:
    return f"{param}{VARIADIC_SEPARATOR}{index}"


def parse_variadic_connector(connector: str) -> Tuple[str, Optional[int]]:
    m = re.fullmatch(r"(.*)" + VARIADIC_SEPARATOR + r"(\d+)", connector)
    return (m.group(1), int(m.group(2))) if m else (connector, None)


def _proto_property(attr: ONNXAttribute) -> properties.Property:
    proto_cls = _PROTO_TYPES[attr.type]
    is_list = attr.type.name.endswith("S") and attr.type not in (AttrType.TENSOR, )

    def encode(p):
        return base64.b64encode(p.SerializeToString()).decode("ascii")

    def decode(s):
        p = proto_cls()
        p.ParseFromString(base64.b64decode(s))
        return p

    def to_json(value):
        if value is None:
            return None
        return [encode(v) for v in value] if is_list else encode(value)

    def from_json(value, context=None):
        if value is None:
            return None
        return [decode(v) for v in value] if is_list else decode(value)

    return properties.Property(dtype=object, default=attr.default, allow_none=True, to_json=to_json,
                               from_json=from_json, desc=attr.description, category="ONNX attributes")


def _decode_default(attr: ONNXAttribute) -> Any:
    d = attr.default
    if isinstance(d, bytes):
        return d.decode("utf-8")
    if isinstance(d, list):
        return [x.decode("utf-8") if isinstance(x, bytes) else x for x in d]
    return d


def make_attribute_property(attr: ONNXAttribute) -> properties.Property:
    """A typed DaCe property for an ONNX attribute."""
    default = _decode_default(attr)
    if attr.type in _SCALAR:
        return properties.Property(dtype=_SCALAR[attr.type], default=default, allow_none=True,
                                   desc=attr.description, category="ONNX attributes")
    if attr.type in _LIST_ELEMENT:
        return properties.ListProperty(element_type=_LIST_ELEMENT[attr.type], default=default, allow_none=True,
                                       desc=attr.description, category="ONNX attributes")
    return _proto_property(attr)


def attribute_value(attr: onnx.AttributeProto) -> Any:
    """Python value of an ONNX AttributeProto as stored on a node (strings decoded)."""
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    return value


_ATTRIBUTE_PROTO_TYPES = {
    AttrType.FLOAT: onnx.AttributeProto.FLOAT, AttrType.INT: onnx.AttributeProto.INT,
    AttrType.STRING: onnx.AttributeProto.STRING, AttrType.TENSOR: onnx.AttributeProto.TENSOR,
    AttrType.GRAPH: onnx.AttributeProto.GRAPH, AttrType.SPARSE_TENSOR: onnx.AttributeProto.SPARSE_TENSOR,
    AttrType.TYPE_PROTO: onnx.AttributeProto.TYPE_PROTO, AttrType.FLOATS: onnx.AttributeProto.FLOATS,
    AttrType.INTS: onnx.AttributeProto.INTS, AttrType.STRINGS: onnx.AttributeProto.STRINGS,
    AttrType.TENSORS: onnx.AttributeProto.TENSORS, AttrType.GRAPHS: onnx.AttributeProto.GRAPHS,
    AttrType.SPARSE_TENSORS: onnx.AttributeProto.SPARSE_TENSORS,
    AttrType.TYPE_PROTOS: onnx.AttributeProto.TYPE_PROTOS,
}


@dace.library.node
class ONNXOp(sdnodes.LibraryNode):
    """Base class of all ONNX library nodes."""
    implementations: Dict[str, Any] = {}
    default_implementation = None
    #: the ONNX schema of this node class (set on generated subclasses)
    schema: ONNXSchema = None

    onnx_node_name = properties.Property(dtype=str, default="", desc="name of the node in the ONNX model")
    # set by the level-2 pass FuseEpilogues (daceml/onnx/ops/epilogue.py): computed by the implementation
    epilogue = properties.Property(dtype=str, default="",
                                   desc="activation (an ONNX op name, or SiLU) the implementation applies to the "
                                   "output; '' for none")
    epilogue_params = properties.ListProperty(element_type=float, default=[],
                                              desc="the epilogue activation's parameters (e.g. Clip's min, max)")
    output_scale = properties.Property(dtype=float, default=1.0,
                                       desc="constant the implementation multiplies the output by (a fused "
                                       "Mul or Div by a scalar after a MatMul); 1 for none")
    # set by the level-2 pass FoldTransposesIntoMatMul: connector -> permutation
    operand_perms = properties.DictProperty(key_type=str, value_type=list, default={},
                                            desc="inputs read through a transpose (the array connected is the "
                                            "transpose's input) and the output written through one")

    def __init__(self, name: str, *, inputs: Optional[List[str]] = None, outputs: Optional[List[str]] = None,
                 location: Optional[Dict[str, str]] = None, **attributes: Any):
        """Creates the node. ``inputs``/``outputs`` are connector names (default: every
        non-optional schema parameter; variadic ones need explicit names)."""
        if self.schema is None:
            raise TypeError("ONNXOp is abstract; use a generated class such as ONNXConv")
        if inputs is None:
            inputs = [p.name for p in self.schema.inputs if p.kind is ParamKind.SINGLE]
        if outputs is None:
            outputs = [p.name for p in self.schema.outputs if p.kind is ParamKind.SINGLE]
        super().__init__(name, location=location, inputs=set(inputs), outputs=set(outputs))
        self.onnx_node_name = name
        unknown = set(attributes) - set(self.schema.attributes)
        if unknown:
            raise InvalidNodeError(f"node {name!r} ({self.schema.name}, opset {self.schema.since_version}): "
                                   f"unknown attribute(s) {sorted(unknown)}; the op has "
                                   f"{sorted(self.schema.attributes) or 'no attributes'}")
        for key, value in attributes.items():
            self.set_attribute(key, value)

    @classmethod
    def op_type(cls) -> str:
        return cls.schema.name

    def set_attribute(self, name: str, value: Any) -> None:
        attr = self.schema.attributes[name]
        if isinstance(value, onnx.AttributeProto):
            if value.type != _ATTRIBUTE_PROTO_TYPES[attr.type]:
                raise InvalidNodeError(
                    f"node {self.name!r} ({self.schema.name}): attribute {name!r} must be of type "
                    f"{attr.type.value}, got {onnx.AttributeProto.AttributeType.Name(value.type)}")
            value = attribute_value(value)
        try:
            setattr(self, name, value)
        except (TypeError, ValueError) as ex:
            raise InvalidNodeError(f"node {self.name!r} ({self.schema.name}): attribute {name!r} must be "
                                   f"{attr.type.value}, got {value!r} ({ex})") from None

    # --- connectors -------------------------------------------------------------------------

    def iter_parameters(self, outputs: bool = False) -> Iterator[Tuple[str, str]]:
        """Yields (connector, schema parameter name) in ONNX order for the connectors present."""
        conns = self.out_connectors if outputs else self.in_connectors
        params = self.schema.outputs if outputs else self.schema.inputs
        for p in params:
            if p.kind is ParamKind.VARIADIC:
                indices = sorted(i for c in conns for base, i in [parse_variadic_connector(c)]
                                 if base == p.name and i is not None)
                for i in indices:
                    yield variadic_connector(p.name, i), p.name
            elif p.name in conns:
                yield p.name, p.name

    def input_connectors(self) -> List[str]:
        return [c for c, _ in self.iter_parameters()]

    def output_connectors(self) -> List[str]:
        return [c for c, _ in self.iter_parameters(outputs=True)]

    def in_desc(self, state: dace.SDFGState, sdfg: dace.SDFG, connector: str) -> dt.Data:
        edge = next(iter(state.in_edges_by_connector(self, connector)), None)
        if edge is None:
            raise InvalidNodeError(f"node {self.name!r} ({self.schema.name}): input {connector!r} is not connected")
        return sdfg.arrays[edge.data.data]

    def out_desc(self, state: dace.SDFGState, sdfg: dace.SDFG, connector: str) -> dt.Data:
        edge = next(iter(state.out_edges_by_connector(self, connector)), None)
        if edge is None:
            raise InvalidNodeError(f"node {self.name!r} ({self.schema.name}): output {connector!r} is not connected")
        return sdfg.arrays[edge.data.data]

    def describe(self) -> str:
        from daceml.onnx.ops import epilogue
        fused = epilogue.describe(self)
        return (f"node {self.name!r} ({self.schema.name}, opset version {self.schema.since_version}"
                + (f", fused epilogue: {fused})" if fused else ")"))

    # --- validation -------------------------------------------------------------------------

    def validate(self, sdfg: dace.SDFG, state: dace.SDFGState) -> None:
        problems = self.problems(sdfg, state)
        if problems:
            raise InvalidNodeError(f"{self.describe()} is invalid:\n  - " + "\n  - ".join(problems))

    def problems(self, sdfg: dace.SDFG, state: dace.SDFGState) -> List[str]:
        """Everything wrong with this node, as readable sentences (empty if valid)."""
        problems = []
        s = self.schema
        for p in s.inputs:
            present = [c for c, pname in self.iter_parameters() if pname == p.name]
            if p.kind is ParamKind.SINGLE and not present:
                problems.append(f"required input {p.name!r} is missing")
            if p.kind is ParamKind.VARIADIC and len(present) < p.min_arity:
                problems.append(f"variadic input {p.name!r} needs at least {p.min_arity} value(s), got {len(present)}")
        from daceml.onnx.ops.epilogue import FUSED_INPUTS, FUSED_OUTPUTS
        known_in = {c for c, _ in self.iter_parameters()} | {"__daceml_callback", *FUSED_INPUTS}
        for c in self.in_connectors:
            if c not in known_in:
                problems.append(f"unknown input connector {c!r}; inputs are {[p.name for p in s.inputs]}")
            elif not list(state.in_edges_by_connector(self, c)):
                problems.append(f"input {c!r} is not connected")
        known_out = {c for c, _ in self.iter_parameters(outputs=True)} | set(FUSED_OUTPUTS)
        for c in self.out_connectors:
            if c not in known_out:
                problems.append(f"unknown output connector {c!r}; outputs are {[p.name for p in s.outputs]}")
        for name, attr in s.attributes.items():
            if attr.required and getattr(self, name) is None:
                problems.append(f"required attribute {name!r} ({attr.type.value}) is missing")
        return problems

    # --- expansion --------------------------------------------------------------------------

    def expand(self, sdfg, state, *args, **kwargs) -> str:
        """Expands through the implementation registry: per-node choice, per-op and global
        preferences, explicit and logged fallback (see :mod:`daceml.onnx.ops.registry`)."""
        from daceml.onnx.ops import registry
        impl = registry.select(self, state, sdfg)
        transformation = impl.expansion_transformation(type(self))
        self.implementation = impl.name
        if impl.name not in type(self).implementations:
            type(self).register_implementation(impl.name, transformation)
        return super().expand(sdfg, state, *args, **kwargs)


_classes: Dict[Tuple[str, int], type] = {}
_latest: Dict[str, int] = {}


def _class_name(s: ONNXSchema, versioned: bool) -> str:
    return f"ONNX{s.name}_{s.since_version}" if versioned else f"ONNX{s.name}"


def _make_class(s: ONNXSchema) -> type:
    attrs: Dict[str, Any] = {
        "schema": s,
        "implementations": {},
        "default_implementation": None,
        "__module__": __name__,
        "__doc__": f"ONNX {s.name} (domain {s.domain or 'ai.onnx'}, since opset {s.since_version}).\n\n{s.doc.strip()}",
    }
    reserved = {p for p, _ in ONNXOp.__properties__.items()} | set(dir(sdnodes.LibraryNode))
    for name, attr in s.attributes.items():
        if name in reserved:
            raise RuntimeError(f"ONNX attribute {name!r} of {s.name} clashes with a LibraryNode member")
        attrs[name] = make_attribute_property(attr)
    cls = type(_class_name(s, True), (ONNXOp, ), attrs)
    return dace.library.node(cls)


def _index() -> Dict[str, int]:
    if not _latest:
        for s in all_schemas(""):
            _latest[s.name] = max(_latest.get(s.name, 0), s.since_version)
    return _latest


def node_class_for_schema(s: ONNXSchema) -> type:
    key = (s.name, s.since_version)
    if key not in _classes:
        _classes[key] = _make_class(s)
    return _classes[key]


def node_class(op_type: str, opset: Optional[int] = None, domain: str = "") -> Optional[type]:
    """The node class of ``op_type`` in force at ``opset`` (newest if None), or None if unknown."""
    if domain not in ("", "ai.onnx"):
        return None
    s = get_schema(op_type, opset if opset is not None else 10_000, "")
    return node_class_for_schema(s) if s is not None else None


def all_node_classes() -> List[type]:
    """Every generated class: every version of every op of the default domain."""
    return [node_class_for_schema(s) for s in all_schemas("")]


def __getattr__(name: str) -> type:
    m = re.fullmatch(r"ONNX(\w+?)(?:_(\d+))?", name)
    if m:
        op, version = m.group(1), m.group(2)
        if version is None:
            if op in _index():
                return node_class(op)
        else:
            s = get_schema(op, int(version), "")
            if s is not None and s.since_version == int(version):
                return node_class_for_schema(s)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def has_op(op_type: str) -> bool:
    return op_type in _index()

