"""Level-1 horizontal fusion: sibling GEMMs that read the same input become one GEMM.

An attention layer projects its input three times, ``Q = x Wq^T + bq``, ``K = x Wk^T + bk``,
``V = x Wv^T + bv``: three BLAS calls, each packing ``x`` again and each too narrow to keep
both cores busy as long as one wide product does. :class:`FuseSiblingGemms` rewrites every
such group into

- ``Concat`` of the weights (and of the biases) along the output dimension: nodes that read
  weights alone, so level 2 hoists them into the weight-prep program (run once per parameter
  version, not per call; see :mod:`daceml.transformation.hoist`);
- one ``Gemm`` producing the outputs side by side, ``[M, N1 + N2 + ...]``;
- ``Split`` of its result back into the original outputs (their arrays and consumers are
  unchanged).

Siblings are ``Gemm`` nodes whose A is the same array, or the same array reshaped to the
same shape (how :class:`~daceml.transformation.linear.MatMulAddToGemm` flattens an N-D
input), with the same ``transA``/``transB``/``alpha``/``beta``, element type and K, and with
B (and C, a bias vector, present in all of them or in none) read from arrays no node of the
state writes. Training programs differentiate the fused graph (Concat and Split have
gradient rules): the weight gradients of a group come from one GEMM too.
"""
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp, node_class, variadic_connector
from daceml.transformation.base import Pass, add_constant, private_transient, remove_matched, single_output


def _source(state: dace.SDFGState, node: ONNXOp, conn: str) -> Optional[Tuple[sdnodes.AccessNode, dace.Memlet]]:
    """(access node, memlet) feeding ``conn`` of ``node`` when it is a whole array no node of the
    state writes (a weight, a bias, a graph input), else None."""
    edges = list(state.in_edges_by_connector(node, conn))
    if len(edges) != 1 or not isinstance(edges[0].src, sdnodes.AccessNode):
        return None
    access = edges[0].src
    if any(state.in_degree(n) > 0 for n in state.data_nodes() if n.data == access.data):
        return None
    return access, edges[0].data


def _input_key(sdfg: dace.SDFG, state: dace.SDFGState, gemm: ONNXOp) -> Optional[Tuple]:
    """What A of ``gemm`` is, so that siblings compare equal: the array itself, or (array
    reshaped, target shape) for a Reshape read by this Gemm alone."""
    (edge, ) = state.in_edges_by_connector(gemm, "A")
    access = edge.src
    if not isinstance(access, sdnodes.AccessNode) or edge.data.data != access.data:
        return None
    if not edge.data.subset.covers(dace.subsets.Range.from_array(sdfg.arrays[access.data])):
        return None
    writers = state.in_edges(access)
    if len(writers) == 1 and isinstance(writers[0].src, ONNXOp) and writers[0].src.schema.name == "Reshape" \
            and state.out_degree(access) == 1 and sdfg.arrays[access.data].transient:
        reshape = writers[0].src
        (data_edge, ) = state.in_edges_by_connector(reshape, "data")
        if isinstance(data_edge.src, sdnodes.AccessNode):
            return ("reshaped", data_edge.src.data, tuple(sdfg.arrays[access.data].shape))
    return ("array", access.data)


@properties.make_properties
class FuseSiblingGemms(Pass):
    """Gemm nodes reading the same A (Q/K/V projections) -> Concat of their weights and biases
    (hoisted at level 2), one Gemm, and a Split into the original outputs."""
    LEVEL = 1
    min_group = properties.Property(dtype=int, default=2, desc="fuse groups of at least this many GEMMs")

    def apply(self, sdfg, model=None) -> int:
        fused = groups = 0
        for state in sdfg.states():
            for group in self._groups(sdfg, state):
                self._fuse(sdfg, state, group, model)
                fused += len(group)
                groups += 1
        self._detail = f"{fused} GEMM(s) in {groups} group(s) -> one GEMM each"
        return fused

    def _groups(self, sdfg: dace.SDFG, state: dace.SDFGState) -> List[List[ONNXOp]]:
        by_key: Dict[Tuple, List[ONNXOp]] = defaultdict(list)
        for gemm in state.nodes():
            if not isinstance(gemm, ONNXOp) or gemm.schema.name != "Gemm":
                continue
            key = self._key(sdfg, state, gemm)
            if key is not None:
                by_key[key].append(gemm)
        return [g for g in by_key.values() if len(g) >= self.min_group]

    @staticmethod
    def _key(sdfg: dace.SDFG, state: dace.SDFGState, gemm: ONNXOp) -> Optional[Tuple]:
        if (gemm.transA or 0) != 0 or single_output(state, gemm) is None:
            return None
        a_key = _input_key(sdfg, state, gemm)
        b = _source(state, gemm, "B")
        if a_key is None or b is None:
            return None
        a_desc = sdfg.arrays[next(iter(state.in_edges_by_connector(gemm, "A"))).data.data]
        b_desc = sdfg.arrays[b[0].data]
        if len(a_desc.shape) != 2 or len(b_desc.shape) != 2 or b_desc.dtype != a_desc.dtype:
            return None
        k = b_desc.shape[1] if gemm.transB else b_desc.shape[0]
        has_bias = "C" in gemm.in_connectors
        if has_bias:
            c = _source(state, gemm, "C")
            n = b_desc.shape[0] if gemm.transB else b_desc.shape[1]
            if c is None or tuple(sdfg.arrays[c[0].data].shape) != (n, ) or sdfg.arrays[c[0].data].dtype != a_desc.dtype:
                return None  # a broadcast C other than a bias vector: not concatenated
        return (a_key, int(gemm.transB or 0), float(gemm.alpha), float(gemm.beta), str(a_desc.dtype), str(k), has_bias)

    def _fuse(self, sdfg: dace.SDFG, state: dace.SDFGState, group: List[ONNXOp], model) -> None:
        first = group[0]
        trans_b = int(first.transB or 0)
        dtype = sdfg.arrays[next(iter(state.in_edges_by_connector(first, "A"))).data.data].dtype
        outs = [single_output(state, g) for g in group]
        widths = [sdfg.arrays[o.data].shape[1] for o in outs]
        rows = sdfg.arrays[outs[0].data].shape[0]
        total = sum(widths)
        name = "_".join(g.label for g in group[:3]) + ("_etc" if len(group) > 3 else "")

        gemm = node_class("Gemm", 13)(f"{name}_fused", inputs=["A", "B", "C"] if "C" in first.in_connectors else ["A", "B"],
                                      outputs=["Y"])
        gemm.transA, gemm.transB, gemm.alpha, gemm.beta = 0, trans_b, first.alpha, first.beta
        state.add_node(gemm)
        # A: the first member's (its Reshape, if any, stays; the others' Reshapes go)
        (a_edge, ) = state.in_edges_by_connector(first, "A")
        state.add_edge(a_edge.src, a_edge.src_conn, gemm, "A", dace.Memlet.from_memlet(a_edge.data))
        # B and C: concatenated along N (B's rows when transposed)
        self._concat(sdfg, state, group, "B", 0 if trans_b else 1, gemm, f"{name}_weights", dtype)
        if "C" in first.in_connectors:
            self._concat(sdfg, state, group, "C", 0, gemm, f"{name}_biases", dtype)
        y = sdfg.add_transient(f"{name}_fused_out", [rows, total], dtype, find_new_name=True)[0]
        y_access = state.add_access(y)
        state.add_edge(gemm, "Y", y_access, None, sdfg.make_array_memlet(y))
        # Split back into the original outputs (sizes as an input, so the node is valid ONNX)
        split_inputs = ["input", "split"] if model is not None else ["input"]
        split = node_class("Split", 13)(f"{name}_split", inputs=split_inputs,
                                        outputs=[variadic_connector("outputs", i) for i in range(len(group))])
        split.axis = 1
        state.add_node(split)
        state.add_edge(y_access, None, split, "input", sdfg.make_array_memlet(y))
        if model is not None:
            sizes = add_constant(model, f"{name}_split_sizes", np.array([int(w) for w in widths], dtype=np.int64))
            state.add_edge(state.add_read(sizes), None, split, "split", sdfg.make_array_memlet(sizes))
        for i, (g, out) in enumerate(zip(group, outs)):
            (oe, ) = state.out_edges(g)
            state.add_edge(split, variadic_connector("outputs", i), out, oe.dst_conn, dace.Memlet.from_memlet(oe.data))
        # the old GEMMs, the other members' private Reshapes of A, and inputs read by nothing now
        reshaped = [e.src for g in group[1:] for e in state.in_edges_by_connector(g, "A")
                    if state.out_degree(e.src) == 1 and private_transient(sdfg, state, e.src)]
        remove_matched(state, group + [state.in_edges(a)[0].src for a in reshaped], reshaped)

    @staticmethod
    def _concat(sdfg, state, group, conn: str, axis: int, gemm, label: str, dtype) -> None:
        # the sources _key accepted (whole arrays, read-only)
        parts = [(e.src, e.data) for g in group for e in state.in_edges_by_connector(g, conn)]
        descs = [sdfg.arrays[a.data] for a, _ in parts]
        shape = list(descs[0].shape)
        shape[axis] = sum(d.shape[axis] for d in descs)
        concat = node_class("Concat", 13)(f"{label}_concat", inputs=[variadic_connector("inputs", i)
                                                                     for i in range(len(parts))], outputs=["concat_result"])
        concat.axis = axis
        state.add_node(concat)
        for i, (access, memlet) in enumerate(parts):
            state.add_edge(access, None, concat, variadic_connector("inputs", i), dace.Memlet.from_memlet(memlet))
        out = sdfg.add_transient(label, shape, dtype, find_new_name=True)[0]
        out_access = state.add_access(out)
        state.add_edge(concat, "concat_result", out_access, None, sdfg.make_array_memlet(out))
        state.add_edge(out_access, None, gemm, conn, sdfg.make_array_memlet(out))
