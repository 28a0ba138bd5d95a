"""Level-1 rewrites of linear layers into one Gemm.

PyTorch exports ``nn.Linear`` on an N-D input as ``Transpose(W)``, ``MatMul(x, W^T)`` and
``Add(bias)``: a copy of the weight every call, a GEMM, and a second pass over the output.
:class:`MatMulAddToGemm` turns that into one ``Gemm(transB=1)`` reading W in place with the
bias as C (added by the GEMM call's beta), with ``Reshape`` nodes flattening the leading dims
of x (they become views at level 2, see :mod:`daceml.transformation.views`).
"""
from typing import List, Optional, Tuple

import numpy as np

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp, node_class
from daceml.transformation.base import Pass, _onnx_nodes, _single_consumer, add_constant

_GEMM_TYPES = (dace.float32, dace.float64)


def _producer(state: dace.SDFGState, access) -> Optional[Tuple[ONNXOp, dace.sdfg.graph.MultiConnectorEdge]]:
    """The ONNX node that alone writes ``access`` (and the edge), or None."""
    ins = state.in_edges(access)
    if len(ins) != 1 or not isinstance(ins[0].src, ONNXOp):
        return None
    return ins[0].src, ins[0]


def _transposed_weight(sdfg, state, b_edge):
    """If MatMul's B is ``Transpose(W, perm=[1, 0])`` of a 2-D W read by nothing else: (the
    Transpose node, its input edge); else None."""
    b_access = b_edge.src
    if not isinstance(b_access, sdnodes.AccessNode) or not sdfg.arrays[b_access.data].transient:
        return None
    if state.out_degree(b_access) != 1 or any(n.data == b_access.data for s in sdfg.states()
                                              for n in s.data_nodes() if n is not b_access):
        return None
    found = _producer(state, b_access)
    if found is None or found[0].schema.name != "Transpose":
        return None
    tr = found[0]
    (w_edge, ) = state.in_edges(tr)
    w = sdfg.arrays[w_edge.data.data]
    if len(w.shape) != 2 or list(tr.perm or [1, 0]) != [1, 0]:
        return None
    return tr, w_edge


@properties.make_properties
class MatMulAddToGemm(Pass):
    """MatMul(A[..., K], B) [+ Add(bias[N])] -> one Gemm: B given as Transpose(W) is read in place
    (transB=1), the bias becomes C, and the leading dims of an N-D A are flattened by Reshapes
    (static shapes; needs the ONNXModel for their shape constants)."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        fused = 0
        for mm, state in list(_onnx_nodes(sdfg, "MatMul")):
            if self._rewrite(sdfg, state, mm, model):
                fused += 1
        self._detail = f"{fused} MatMul(s) [+ bias, transposed weight] -> Gemm"
        return fused

    def _rewrite(self, sdfg, state, mm, model) -> bool:
        (a_edge, ) = state.in_edges_by_connector(mm, "A")
        (b_edge, ) = state.in_edges_by_connector(mm, "B")
        out_edges = state.out_edges(mm)
        if len(out_edges) != 1:
            return False
        a, b = sdfg.arrays[a_edge.data.data], sdfg.arrays[b_edge.data.data]
        if len(a.shape) < 2 or len(b.shape) != 2 or a.dtype != b.dtype or a.dtype not in _GEMM_TYPES:
            return False
        transposed = _transposed_weight(sdfg, state, b_edge)
        w_edge = transposed[1] if transposed else b_edge
        n = b.shape[1]
        k = a.shape[-1]
        # the bias: the only consumer of MatMul's output is an Add with a [N] vector
        tmp = out_edges[0].dst
        bias_edge, add = None, None
        if sdfg.arrays[tmp.data].transient:
            consumer = _single_consumer(state, tmp)
            if consumer is not None and isinstance(consumer.dst, ONNXOp) and consumer.dst.schema.name == "Add":
                other = next(iter(state.in_edges_by_connector(consumer.dst, "B" if consumer.dst_conn == "A" else "A")))
                c = sdfg.arrays[other.data.data]
                if len(c.shape) == 1 and c.shape[0] == n and c.dtype == a.dtype and other.data.data != tmp.data:
                    bias_edge, add = other, consumer.dst
        if transposed is None and bias_edge is None:
            return False  # a plain MatMul is as good as a Gemm
        leading = list(a.shape[:-1])
        if len(a.shape) > 2:
            if model is None:
                return False
            try:
                rows = int(np.prod([int(d) for d in leading]))
            except TypeError:
                return False  # symbolic leading dims: the reshape constants are not static
        else:
            rows = a.shape[0]
        final = state.out_edges(add)[0] if add is not None else out_edges[0]
        if len(state.out_edges(add) if add is not None else out_edges) != 1:
            return False

        gemm = node_class("Gemm", 13)(f"{mm.label}_gemm", inputs=["A", "B", "C"] if bias_edge else ["A", "B"],
                                      outputs=["Y"])
        gemm.transB = 1 if transposed else 0
        state.add_node(gemm)
        # A (flattened to 2-D when needed)
        if len(a.shape) > 2:
            a2 = self._reshape(sdfg, state, model, a_edge.src, a_edge.src_conn, a_edge.data, [rows, k], a.dtype,
                               f"{mm.label}_flatten")
            state.add_edge(a2, None, gemm, "A", sdfg.make_array_memlet(a2.data))
        else:
            state.add_edge(a_edge.src, a_edge.src_conn, gemm, "A", a_edge.data)
        state.add_edge(w_edge.src, w_edge.src_conn, gemm, "B", w_edge.data)
        if bias_edge is not None:
            state.add_edge(bias_edge.src, bias_edge.src_conn, gemm, "C", bias_edge.data)
        # Y (unflattened when needed)
        if len(a.shape) > 2:
            y2 = sdfg.add_transient(f"{mm.label}_gemm_out", [rows, n], a.dtype, find_new_name=True)[0]
            y2_access = state.add_access(y2)
            state.add_edge(gemm, "Y", y2_access, None, sdfg.make_array_memlet(y2))
            shape = add_constant(model, f"{mm.label}_unflatten_shape", np.array(leading + [n], dtype=np.int64))
            reshape = node_class("Reshape", 14)(f"{mm.label}_unflatten", inputs=["data", "shape"], outputs=["reshaped"])
            state.add_node(reshape)
            state.add_edge(y2_access, None, reshape, "data", sdfg.make_array_memlet(y2))
            state.add_edge(state.add_read(shape), None, reshape, "shape", sdfg.make_array_memlet(shape))
            state.add_edge(reshape, "reshaped", final.dst, final.dst_conn, final.data)
        else:
            state.add_edge(gemm, "Y", final.dst, final.dst_conn, final.data)
        # remove what was replaced
        removed: List = [mm]
        if add is not None:
            removed += [add, tmp]
        for node in removed:
            state.remove_node(node)
        if add is not None:
            sdfg.remove_data(tmp.data, validate=False)
        if transposed is not None:
            tr, _ = transposed
            b_access = b_edge.src
            state.remove_node(tr)
            if state.degree(b_access) == 0:
                state.remove_node(b_access)
                sdfg.remove_data(b_access.data, validate=False)
        for e in (a_edge, w_edge, bias_edge):
            if e is not None and isinstance(e.src, sdnodes.AccessNode) and state.degree(e.src) == 0:
                state.remove_node(e.src)
        return True

    def _reshape(self, sdfg, state, model, src, src_conn, memlet, shape, dtype, label):
        """A Reshape of ``src`` to ``shape``; returns the access node of its output."""
        out = sdfg.add_transient(f"{label}_out", shape, dtype, find_new_name=True)[0]
        const = add_constant(model, f"{label}_shape", np.array(shape, dtype=np.int64))
        reshape = node_class("Reshape", 14)(label, inputs=["data", "shape"], outputs=["reshaped"])
        state.add_node(reshape)
        state.add_edge(src, src_conn, reshape, "data", memlet)
        state.add_edge(state.add_read(const), None, reshape, "shape", sdfg.make_array_memlet(const))
        out_access = state.add_access(out)
        state.add_edge(reshape, "reshaped", out_access, None, sdfg.make_array_memlet(out))
        return out_access
