"""Level 1: elimination and merging of layout and type ops.

- ``Transpose(Transpose(x, p), q)`` -> one ``Transpose(x, p[q])``; a Transpose whose
  permutation is the identity disappears;
- ``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze`` of a reshape -> one ``Reshape`` of the
  first one's input to the last one's (static) shape; a reshape to the same shape disappears;
- ``Cast`` / ``CastLike`` to the type its input already has disappears (the exporter's
  ``Clip`` bounds for ReLU6 go through one ``CastLike`` each, which reads the whole tensor).

Only transients read by nothing else are removed, so every other reader still sees them.
"""
from typing import List, Optional

import numpy as np

from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp, node_class
from daceml.transformation.base import Pass, _onnx_nodes, add_constant

RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _data_conn(node) -> str:
    """The connector of a layout/type op's data input."""
    return {"Flatten": "input", "Cast": "input", "CastLike": "input"}.get(node.schema.name, "data")


def _only_input(state, node, conn: str = None):
    edges = [e for e in state.in_edges(node) if conn is None or e.dst_conn == conn]
    return edges[0] if len(edges) == 1 else None


def _private_producer(sdfg, state, edge) -> Optional[ONNXOp]:
    """The ONNX node writing ``edge``'s source, if that source is a transient nobody else reads."""
    src = edge.src
    if not isinstance(src, sdnodes.AccessNode) or not sdfg.arrays[src.data].transient:
        return None
    if state.out_degree(src) != 1 or state.in_degree(src) != 1:
        return None
    if any(n.data == src.data and n is not src for s in sdfg.all_states() for n in s.data_nodes()):
        return None
    producer = state.in_edges(src)[0].src
    return producer if isinstance(producer, ONNXOp) else None


def _bypass(sdfg, state, node, in_edge) -> None:
    """Removes single-input ``node``: its readers read ``in_edge``'s data instead."""
    (out_edge, ) = state.out_edges(node)
    dst = out_edge.dst
    for e in list(state.out_edges(dst)):
        state.add_edge(in_edge.src, in_edge.src_conn, e.dst, e.dst_conn, sdfg.make_array_memlet(in_edge.data.data))
        state.remove_edge(e)
    others = [e.src for e in state.in_edges(node) if e is not in_edge]
    state.remove_node(node)
    state.remove_node(dst)
    for src in others:
        if state.degree(src) == 0:
            state.remove_node(src)
    if not any(n.data == dst.data for s in sdfg.all_states() for n in s.data_nodes()):
        sdfg.remove_data(dst.data, validate=False)


def _remove_producer(sdfg, state, producer, edge) -> None:
    """Removes ``producer`` and its output (the source of ``edge``), wiring its data input to ``edge``'s node."""
    first = _only_input(state, producer, _data_conn(producer))
    state.add_edge(first.src, first.src_conn, edge.dst, edge.dst_conn, first.data)
    mid = edge.src
    state.remove_edge(edge)
    others = [e.src for e in state.in_edges(producer)]
    state.remove_node(producer)
    state.remove_node(mid)
    sdfg.remove_data(mid.data, validate=False)
    for src in others:
        if state.degree(src) == 0:
            state.remove_node(src)


@properties.make_properties
class EliminateLayoutOps(Pass):
    """Merges chains of Transposes and of reshapes, removes identity Transposes, reshapes and Casts."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        merged = removed = 0
        changed = True
        while changed:
            changed = False
            for node, state in list(_onnx_nodes(sdfg)):
                if node not in state.nodes():
                    continue
                name = node.schema.name
                if name == "Transpose" and self._transpose(sdfg, state, node):
                    merged, changed = merged + 1, True
                elif name in RESHAPES and model is not None and self._reshape(sdfg, state, node, model):
                    merged, changed = merged + 1, True
                elif self._identity(sdfg, state, node):
                    removed, changed = removed + 1, True
        self._detail = f"{merged} chain(s) merged, {removed} identity op(s) removed"
        return merged + removed

    @staticmethod
    def _perm(node, rank: int) -> List[int]:
        return [int(p) for p in node.perm] if node.perm else list(reversed(range(rank)))

    def _transpose(self, sdfg, state, node) -> bool:
        edge = _only_input(state, node, "data")
        first = _private_producer(sdfg, state, edge) if edge is not None else None
        if first is None or first.schema.name != "Transpose":
            return False
        rank = len(sdfg.arrays[edge.data.data].shape)
        p, q = self._perm(first, rank), self._perm(node, rank)
        node.perm = [p[i] for i in q]  # y[i] = x'[q[i]] = x[p[q[i]]]
        _remove_producer(sdfg, state, first, edge)
        return True

    def _reshape(self, sdfg, state, node, model) -> bool:
        edge = _only_input(state, node, _data_conn(node))
        first = _private_producer(sdfg, state, edge) if edge is not None else None
        if first is None or first.schema.name not in RESHAPES:
            return False
        (out_edge, ) = state.out_edges(node)
        try:
            shape = [int(d) for d in sdfg.arrays[out_edge.data.data].shape]
        except TypeError:
            return False  # symbolic: no constant shape
        const = add_constant(model, f"{node.label}_merged_shape", np.array(shape, np.int64))
        new = node_class("Reshape", 14)(f"{node.label}_merged", inputs=["data", "shape"], outputs=["reshaped"])
        state.add_node(new)
        state.add_edge(edge.src, edge.src_conn, new, "data", edge.data)
        state.add_edge(state.add_read(const), None, new, "shape", sdfg.make_array_memlet(const))
        state.add_edge(new, "reshaped", out_edge.dst, out_edge.dst_conn, out_edge.data)
        for src in [e.src for e in state.in_edges(node) if e is not edge]:
            state.remove_edge(state.edges_between(src, node)[0])
            if state.degree(src) == 0:
                state.remove_node(src)
        state.remove_node(node)
        (new_edge, ) = state.in_edges_by_connector(new, "data")
        _remove_producer(sdfg, state, first, new_edge)
        return True

    @staticmethod
    def _identity(sdfg, state, node) -> bool:
        name = node.schema.name
        if name not in ("Transpose", "Cast", "CastLike") + RESHAPES or len(state.out_edges(node)) != 1:
            return False
        edge = _only_input(state, node, _data_conn(node))
        out = state.out_edges(node)[0].dst
        if edge is None or not isinstance(out, sdnodes.AccessNode):
            return False
        src_desc, out_desc = sdfg.arrays[edge.data.data], sdfg.arrays[out.data]
        if not out_desc.transient or state.in_degree(out) != 1:
            return False
        if any(n.data == out.data and n is not out for s in sdfg.all_states() for n in s.data_nodes()):
            return False
        if src_desc.dtype != out_desc.dtype or tuple(src_desc.shape) != tuple(out_desc.shape):
            return False
        if name == "Transpose" and EliminateLayoutOps._perm(node, len(src_desc.shape)) != list(
                range(len(src_desc.shape))):
            return False
        _bypass(sdfg, state, node, edge)
        return True
