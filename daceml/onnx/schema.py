"""ONNX operator schemas as plain Python descriptions.

``onnx.defs`` describes each operator version with a C++-backed ``OpSchema``;
this module turns those into small dataclasses (:class:`ONNXSchema`) that the
node classes of :mod:`daceml.onnx.nodes` are generated from and that error
messages, the GUI and the conformance report read.
"""
import dataclasses
import enum
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

import onnx
from onnx import defs


class ParamKind(enum.Enum):
    SINGLE = "single"
    OPTIONAL = "optional"
    VARIADIC = "variadic"


class AttrType(enum.Enum):
    FLOAT = "FLOAT"
    INT = "INT"
    STRING = "STRING"
    TENSOR = "TENSOR"
    GRAPH = "GRAPH"
    SPARSE_TENSOR = "SPARSE_TENSOR"
    TYPE_PROTO = "TYPE_PROTO"
    FLOATS = "FLOATS"
    INTS = "INTS"
    STRINGS = "STRINGS"
    TENSORS = "TENSORS"
    GRAPHS = "GRAPHS"
    SPARSE_TENSORS = "SPARSE_TENSORS"
    TYPE_PROTOS = "TYPE_PROTOS"


@dataclasses.dataclass(frozen=True)
class ONNXParameter:
    """An input or output of an op."""
    name: str
    kind: ParamKind
    type_str: str
    description: str = ""
    min_arity: int = 1
    homogeneous: bool = True


@dataclasses.dataclass(frozen=True)
class ONNXAttribute:
    name: str
    type: AttrType
    required: bool
    default: Any
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ONNXSchema:
    """One version of one ONNX operator."""
    name: str
    domain: str
    since_version: int
    doc: str
    inputs: Tuple[ONNXParameter, ...]
    outputs: Tuple[ONNXParameter, ...]
    attributes: Dict[str, ONNXAttribute]
    type_constraints: Dict[str, Tuple[str, ...]]
    deprecated: bool = False
    is_function: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.domain or 'ai.onnx'}::{self.name}-{self.since_version}"

    def input(self, name: str) -> ONNXParameter:
        return next(p for p in self.inputs if p.name == name)

    def allowed_types(self, param: ONNXParameter) -> Optional[Tuple[str, ...]]:
        """The tensor types a parameter accepts (e.g. ``('tensor(float)', ...)``), or None if any."""
        return self.type_constraints.get(param.type_str)


def _attribute_default(attr: "defs.OpSchema.Attribute") -> Any:
    value = attr.default_value
    if value is None or value.type == onnx.AttributeProto.UNDEFINED:
        return None
    return onnx.helper.get_attribute_value(value)


_PARAM_KINDS = {
    defs.OpSchema.FormalParameterOption.Single: ParamKind.SINGLE,
    defs.OpSchema.FormalParameterOption.Optional: ParamKind.OPTIONAL,
    defs.OpSchema.FormalParameterOption.Variadic: ParamKind.VARIADIC,
}


def _param(p: "defs.OpSchema.FormalParameter") -> ONNXParameter:
    return ONNXParameter(name=p.name, kind=_PARAM_KINDS[p.option], type_str=p.type_str,
                         description=p.description, min_arity=getattr(p, "min_arity", 1),
                         homogeneous=p.is_homogeneous)


def from_onnx(s: "defs.OpSchema") -> ONNXSchema:
    attributes = {
        name: ONNXAttribute(name=name, type=AttrType(a.type.name), required=a.required,
                            default=_attribute_default(a), description=a.description)
        for name, a in s.attributes.items()
    }
    return ONNXSchema(
        name=s.name,
        domain=s.domain,
        since_version=s.since_version,
        doc=s.doc or "",
        inputs=tuple(_param(p) for p in s.inputs),
        outputs=tuple(_param(p) for p in s.outputs),
        attributes=attributes,
        type_constraints={tc.type_param_str: tuple(tc.allowed_type_strs) for tc in s.type_constraints},
        deprecated=s.deprecated,
        is_function=s.has_function or s.has_context_dependent_function,
    )


@lru_cache(maxsize=None)
def all_schemas(domain: str = "") -> Tuple[ONNXSchema, ...]:
    """Every version of every op in ``domain`` ('' is the default ONNX domain)."""
    return tuple(from_onnx(s) for s in defs.get_all_schemas_with_history() if s.domain == domain)


@lru_cache(maxsize=None)
def get_schema(op_type: str, opset: int, domain: str = "") -> Optional[ONNXSchema]:
    """The schema version of ``op_type`` in force at ``opset``, or None if there is none."""
    try:
        return from_onnx(defs.get_schema(op_type, opset, domain))
    except defs.SchemaError:
        return None


def known_domains() -> List[str]:
    return sorted({s.domain for s in defs.get_all_schemas_with_history()})
