"""Rewrites of the ONNX graph itself, run by the importer before the SDFG is built.

They turn constructs that are not tensor dataflow into ones that are:

- ``sequence_split``: ``SplitToSequence`` whose result is only read by
  ``SequenceAt`` with constant positions (what the dynamo exporter emits for
  ``torch.split``/``chunk``) becomes one ``Split`` with an output per chunk.
- ``fold_shape_arithmetic``: ``Shape`` of a tensor whose shape is static, and
  nodes that compute small integer tensors (at most 64 elements: axes, shapes,
  indices) from constants only, become constants. Exporters build such values
  with Shape/Gather/Concat/Reshape chains; daceml needs them when it compiles
  (ReduceMean's axes, Expand's shape...). Evaluated with onnx's reference
  implementation, restricted to integer tensors of at most 64 elements; folding
  of float subgraphs is level 1 of the pipeline, with daceml's own implementations.

Each rewrite takes a shape-inferred ModelProto and returns a new one (or the
same object if nothing matched); every rewrite is logged.
"""
import logging
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)


def _constants(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    values[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name == "value_int":
                    values[n.output[0]] = np.array(a.i)
                elif a.name == "value_ints":
                    values[n.output[0]] = np.array(list(a.ints))
    return values


def _static_shape(graph: onnx.GraphProto, name: str) -> Optional[List[Optional[int]]]:
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.name == name and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    return None


def sequence_split(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    consts = _constants(graph)
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    replace: Dict[int, onnx.NodeProto] = {}
    drop = set()
    for index, n in enumerate(graph.node):
        if n.op_type != "SplitToSequence" or n.domain not in ("", "ai.onnx"):
            continue
        seq = n.output[0]
        readers = consumers.get(seq, [])
        if seq in graph_outputs or not readers or any(r.op_type != "SequenceAt" or r.input[1] not in consts
                                                     for r in readers):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        axis, keepdims = attrs.get("axis", 0), attrs.get("keepdims", 1)
        shape = _static_shape(graph, n.input[0])
        if shape is None or shape[axis] is None:
            continue
        length = shape[axis]
        if len(n.input) > 1 and n.input[1]:
            if n.input[1] not in consts:
                continue
            split = consts[n.input[1]]
            if split.ndim == 0:
                size = int(split)
                sizes = [size] * (length // size) + ([length % size] if length % size else [])
            else:
                sizes = [int(s) for s in split]
            squeeze = False
        else:
            sizes = [1] * length
            squeeze = not keepdims
        count = len(sizes)
        outputs = [f"{seq}__part{k}" for k in range(count)]
        split_name = f"{seq}__sizes"
        graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), split_name))
        new_nodes = [helper.make_node("Split", [n.input[0], split_name], outputs, name=f"{n.name or seq}_as_split",
                                      axis=axis)]
        for r in readers:
            pos = int(consts[r.input[1]]) % count
            if squeeze:
                axes_name = f"{r.output[0]}__axes"
                graph.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axes_name))
                new_nodes.append(helper.make_node("Squeeze", [outputs[pos], axes_name], [r.output[0]],
                                                  name=f"{r.name or r.output[0]}_as_squeeze"))
            else:
                new_nodes.append(helper.make_node("Identity", [outputs[pos]], [r.output[0]],
                                                  name=f"{r.name or r.output[0]}_as_identity"))
            drop.add(id(r))
        replace[index] = new_nodes
        log.info("rewrite sequence_split: %s (%d chunks along axis %d) -> Split", n.name or seq, count, axis)
    if not replace:
        return model
    new = []
    for index, n in enumerate(graph.node):
        if index in replace:
            new.extend(replace[index])
        elif id(n) not in drop:
            new.append(n)
    del graph.node[:]
    graph.node.extend(new)
    return model


_SHAPE_FOLD_LIMIT = 64


def _is_small_int(value: np.ndarray) -> bool:
    return value.size <= _SHAPE_FOLD_LIMIT and (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_)


def fold_shape_arithmetic(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx.reference import ReferenceEvaluator
    graph = model.graph
    consts = {k: v for k, v in _constants(graph).items()}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 20)
    graph_inputs = {i.name for i in graph.input}
    folded = 0
    new_nodes = []
    for n in graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type == "Constant":
            new_nodes.append(n)
            continue
        values = None
        if n.op_type == "Shape":
            shape = list(consts[n.input[0]].shape) if n.input[0] in consts else _static_shape(graph, n.input[0])
            if shape is not None and all(d is not None for d in shape):
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", None)
                values = [np.array(shape[start:end], dtype=np.int64)]
        elif n.input and all((not i) or i in consts for i in n.input) and not any(i in graph_inputs for i in n.input) \
                and all(_is_small_int(consts[i]) or consts[i].size <= 1 for i in n.input if i) \
                and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            try:
                single = helper.make_model(helper.make_graph(
                    [n], "fold", [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(consts[i].dtype),
                                                                consts[i].shape) for i in n.input if i],
                    [helper.make_empty_tensor_value_info(o) for o in n.output if o]),
                    opset_imports=[helper.make_opsetid("", opset)])
                out = ReferenceEvaluator(single).run(None, {i: consts[i] for i in n.input if i})
                if all(_is_small_int(np.asarray(v)) for v in out):
                    values = [np.asarray(v) for v in out]
            except Exception as ex:  # not foldable: keep the node
                log.debug("fold_shape_arithmetic: %s (%s) not folded: %s", n.name, n.op_type, ex)
        if values is None:
            new_nodes.append(n)
            continue
        for name, v in zip([o for o in n.output if o], values):
            consts[name] = v
            new_nodes.append(helper.make_node("Constant", [], [name], name=f"{n.name or name}_folded",
                                              value=numpy_helper.from_array(v, name)))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(new_nodes)
        log.info("rewrite fold_shape_arithmetic: %d node(s) became constants", folded)
    return model


#: the rewrites the importer runs, in order
REWRITES = (fold_shape_arithmetic, sequence_split)


def apply_all(model: onnx.ModelProto):
    """Runs every rewrite; returns (model, whether anything changed)."""
    before = model.graph.SerializeToString()
    for rewrite in REWRITES:
        model = rewrite(model)
    return model, model.graph.SerializeToString() != before
