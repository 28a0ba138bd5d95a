"""The base class of daceml's passes and the graph helpers they share."""
from typing import Any, Dict, Optional

import dace
from dace import properties, serialize
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp


@properties.make_properties
class Pass:
    """Base class of daceml's passes."""
    LEVEL: int = 0

    def __init__(self, **props: Any):
        for k, v in props.items():
            setattr(self, k, v)
        self._detail = ""

    @property
    def detail(self) -> str:
        """What the last ``apply`` did, in a few words."""
        return self._detail

    def apply(self, sdfg: dace.SDFG, model=None) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define apply()")

    def to_json(self) -> Dict[str, Any]:
        return {"pass": type(self).__name__, **serialize.all_properties_to_json(self)}

    @staticmethod
    def from_json(obj: Dict[str, Any]) -> "Pass":
        from daceml.transformation.passes import PASSES
        cls = PASSES[obj["pass"]]
        p = cls()
        serialize.set_properties_from_json(p, {k: v for k, v in obj.items() if k != "pass"})
        return p


def _onnx_nodes(sdfg: dace.SDFG, op: Optional[str] = None):
    for state in sdfg.states():
        for node in list(state.nodes()):
            if isinstance(node, ONNXOp) and (op is None or node.schema.name == op):
                yield node, state


def _single_consumer(state: dace.SDFGState, access: sdnodes.AccessNode) -> Optional[Any]:
    outs = state.out_edges(access)
    if len(outs) != 1 or state.in_degree(access) != 1:
        return None
    return outs[0]


def add_constant(model, base: str, value) -> str:
    """Adds ``value`` to ``model`` as a new weight named ``base`` (or ``base_1``, ... if taken);
    returns its array name."""
    name, i = base, 1
    while name in model.weights:
        name, i = f"{base}_{i}", i + 1
    return model.add_weight(name, value)
