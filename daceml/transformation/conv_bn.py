"""Level 1: inference BatchNormalization folded into the Conv before it.

``BatchNormalization(Conv(X, W, B))`` with running statistics is an affine map per output
channel, so it folds into the convolution's weights and bias::

    s  = scale / sqrt(var + epsilon)            (per output channel)
    W' = W * s[:, None, None, ...]
    B' = (B - mean) * s + bias

The folded weights are computed by small ONNX nodes from the live parameters on every call
(O(weights) work, no pass over the activations), so optimizer steps and ``load_state_dict``
are still seen; the batch-norm pass over the conv's output disappears.
"""
from typing import Dict, Optional

import numpy as np

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp, node_class
from daceml.transformation.base import Pass, _onnx_nodes, _single_consumer, add_constant, remove_matched

OPSET = 14


def add_node(state: dace.SDFGState, op: str, inputs: Dict[str, sdnodes.AccessNode], shape, dtype, label: str,
             **attrs) -> sdnodes.AccessNode:
    """Adds ONNX ``op`` reading ``inputs`` ({connector: access node}) and writing a new transient
    of ``shape``; returns the output's access node."""
    sdfg = state.sdfg
    cls = node_class(op, OPSET)
    out_conn = cls.schema.outputs[0].name
    node = cls(label, inputs=list(inputs), outputs=[out_conn])
    for k, v in attrs.items():
        setattr(node, k, v)
    state.add_node(node)
    for conn, access in inputs.items():
        state.add_edge(access, None, node, conn, sdfg.make_array_memlet(access.data))
    name = sdfg.add_transient(f"{label}_out", shape, dtype, find_new_name=True)[0]
    out = state.add_access(name)
    state.add_edge(node, out_conn, out, None, sdfg.make_array_memlet(name))
    return out


@properties.make_properties
class FoldBatchNormIntoConv(Pass):
    """Conv followed by an inference BatchNormalization (its only consumer) -> one Conv with
    folded weights and bias (computed from the live parameters each call). Needs the ONNXModel."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        if model is None:
            self._detail = "needs an ONNXModel"
            return 0
        folded = 0
        for conv, state in list(_onnx_nodes(sdfg, "Conv")):
            if self._fold(sdfg, state, conv, model):
                folded += 1
        self._detail = f"{folded} BatchNormalization(s) folded into Conv"
        return folded

    @staticmethod
    def _input(state, node, conn) -> Optional[dace.sdfg.graph.MultiConnectorEdge]:
        edges = list(state.in_edges_by_connector(node, conn))
        return edges[0] if edges else None

    def _fold(self, sdfg, state, conv, model) -> bool:
        outs = state.out_edges(conv)
        if len(outs) != 1 or not sdfg.arrays[outs[0].dst.data].transient:
            return False
        y = outs[0].dst
        consumer = _single_consumer(state, y)
        if consumer is None or not isinstance(consumer.dst, ONNXOp) or consumer.dst.schema.name != "BatchNormalization":
            return False
        bn = consumer.dst
        if consumer.dst_conn != "X" or len(bn.out_connectors) != 1 or getattr(bn, "training_mode", 0):
            return False
        w_edge = self._input(state, conv, "W")
        edges = {c: self._input(state, bn, c) for c in ("scale", "B", "input_mean", "input_var")}
        if w_edge is None or any(e is None for e in edges.values()):
            return False
        w = sdfg.arrays[w_edge.data.data]
        dtype = w.dtype
        if dtype not in (dace.float32, dace.float64):
            return False
        m = w.shape[0]
        if any(tuple(sdfg.arrays[e.data.data].shape) != (m, ) or sdfg.arrays[e.data.data].dtype != dtype
               for e in edges.values()):
            return False
        np_dtype = dtype.as_numpy_dtype()
        eps = 1e-5 if bn.epsilon is None else float(bn.epsilon)
        label = conv.label

        def read(edge):
            # the access node the input comes from: a new read node of a transient written in this
            # state would have no edge ordering it after its writer (a race once inlined into one state)
            if isinstance(edge.src, sdnodes.AccessNode):
                return edge.src
            return state.add_read(edge.data.data)

        eps_w = state.add_read(add_constant(model, f"{label}_bn_epsilon", np.array([eps], np_dtype)))
        var_eps = add_node(state, "Add", {"A": read(edges["input_var"]), "B": eps_w}, [m], dtype, f"{label}_bn_var_eps")
        std = add_node(state, "Sqrt", {"X": var_eps}, [m], dtype, f"{label}_bn_std")
        s = add_node(state, "Div", {"A": read(edges["scale"]), "B": std}, [m], dtype, f"{label}_bn_factor")
        shape4 = [m] + [1] * (len(w.shape) - 1)
        shape_w = state.add_read(add_constant(model, f"{label}_bn_factor_shape", np.array(shape4, np.int64)))
        s4 = add_node(state, "Reshape", {"data": s, "shape": shape_w}, shape4, dtype, f"{label}_bn_factor_4d")
        w_new = add_node(state, "Mul", {"A": read(w_edge), "B": s4}, list(w.shape), dtype, f"{label}_bn_weight")
        b_edge = self._input(state, conv, "B")
        centered_in = {"A": read(b_edge), "B": read(edges["input_mean"])} if b_edge is not None else None
        if centered_in is not None:
            centered = add_node(state, "Sub", centered_in, [m], dtype, f"{label}_bn_centered")
        else:
            centered = add_node(state, "Neg", {"X": read(edges["input_mean"])}, [m], dtype, f"{label}_bn_centered")
        scaled = add_node(state, "Mul", {"A": centered, "B": s}, [m], dtype, f"{label}_bn_scaled")
        b_new = add_node(state, "Add", {"A": scaled, "B": read(edges["B"])}, [m], dtype, f"{label}_bn_bias")
        # the new conv writes where the batch norm wrote
        x_edge = self._input(state, conv, "X")
        new = node_class("Conv", OPSET)(f"{label}_bn", inputs=["X", "W", "B"], outputs=["Y"])
        for attr in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"):
            setattr(new, attr, getattr(conv, attr))
        state.add_node(new)
        state.add_edge(x_edge.src, x_edge.src_conn, new, "X", x_edge.data)
        state.add_edge(w_new, None, new, "W", sdfg.make_array_memlet(w_new.data))
        state.add_edge(b_new, None, new, "B", sdfg.make_array_memlet(b_new.data))
        (bn_out, ) = state.out_edges(bn)
        state.add_edge(new, "Y", bn_out.dst, bn_out.dst_conn, bn_out.data)
        remove_matched(state, [conv, bn], [y])  # and the accesses only they read
        return True
