"""Shapes of every tensor of an ONNX graph, with symbolic dims kept as DaCe symbols.

onnx's own shape inference (with data propagation, so shapes computed by Shape /
Gather / Concat subgraphs become concrete) fills ``value_info``. Named dims
(``dim_param``, e.g. ``batch``) become DaCe symbols; an input dim with neither
value nor name gets the symbol ``<input>_d<k>``.
"""
import logging
from typing import Dict, List, Optional, Tuple, Union

import onnx

import dace

from daceml.errors import InvalidNodeError
from daceml.onnx.ops.common import safe_name

log = logging.getLogger(__name__)

Dim = Union[int, dace.symbol]


#: ops whose first output has the type and shape of their first input, where onnx's own
#: inference leaves it unknown (GroupNormalization in onnx 1.23)
SAME_AS_INPUT = {"GroupNormalization"}


def _run(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as ex:
        raise InvalidNodeError(f"ONNX shape inference failed: {ex}") from None


def _typed(graph: onnx.GraphProto):
    return {vi.name: vi for vi in list(graph.input) + list(graph.value_info) + list(graph.output)
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}


def infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Runs onnx shape inference (strict, with data propagation); errors name the node.
    Fills in what onnx leaves unknown for the ops of :data:`SAME_AS_INPUT`."""
    model = _run(model)
    for _ in range(len(model.graph.node)):
        typed = _typed(model.graph)
        added = False
        for node in model.graph.node:
            if node.op_type in SAME_AS_INPUT and node.output[0] not in typed and node.input[0] in typed:
                vi = onnx.ValueInfoProto()
                vi.CopyFrom(typed[node.input[0]])
                vi.name = node.output[0]
                outputs = {o.name: o for o in model.graph.output}
                if vi.name in outputs:
                    outputs[vi.name].type.CopyFrom(vi.type)
                else:
                    model.graph.value_info.append(vi)
                added = True
        if not added:
            break
        model = _run(model)
    return model


class ShapeTable:
    """Element type and shape of every tensor name in a graph (after :func:`infer`)."""

    def __init__(self, graph: onnx.GraphProto):
        self.types: Dict[str, int] = {}
        self.shapes: Dict[str, Optional[Tuple[Dim, ...]]] = {}
        self.symbols: Dict[str, dace.symbol] = {}
        graph_inputs = {i.name for i in graph.input}
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            self._add(vi, is_input=vi.name in graph_inputs)
        for init in graph.initializer:
            self.types[init.name] = init.data_type
            self.shapes[init.name] = tuple(int(d) for d in init.dims)

    def symbol(self, name: str) -> dace.symbol:
        sname = safe_name(name)
        if sname not in self.symbols:
            self.symbols[sname] = dace.symbol(sname, dace.int64)
        return self.symbols[sname]

    def _add(self, vi: onnx.ValueInfoProto, is_input: bool) -> None:
        t = vi.type
        if not t.HasField("tensor_type"):
            self.types[vi.name] = -1
            self.shapes[vi.name] = None
            return
        self.types[vi.name] = t.tensor_type.elem_type
        if not t.tensor_type.HasField("shape"):
            self.shapes.setdefault(vi.name, None)
            return
        dims: List[Optional[Dim]] = []
        for k, d in enumerate(t.tensor_type.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(self.symbol(d.dim_param))
            elif is_input:
                dims.append(self.symbol(f"{vi.name}_d{k}"))
            else:
                dims.append(None)
        if any(d is None for d in dims):
            self.shapes.setdefault(vi.name, None)
        else:
            self.shapes[vi.name] = tuple(dims)

    def shape(self, name: str) -> Optional[Tuple[Dim, ...]]:
        return self.shapes.get(name)

    def elem_type(self, name: str) -> Optional[int]:
        return self.types.get(name)
