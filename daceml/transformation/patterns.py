"""Level 1: decomposed LayerNorm, GELU and Softmax recognised as one node.

Exporters older than the ops (PyTorch's TorchScript exporter before opset 17/20, many
converted TensorFlow models) write these as chains of elementwise ops and reductions, each a
pass over the tensor. :class:`RecognizeDecomposedOps` replaces each chain by the one ONNX
node it computes, which daceml implements in one or two passes:

- LayerNormalization: ``d = X - ReduceMean(X)``, ``(d / Sqrt(ReduceMean(d^2) + eps))``, then
  optionally ``* gamma`` and ``+ beta`` (of the normalized shape), over trailing axes; the
  square as ``Pow(d, 2)`` or ``Mul(d, d)``;
- Gelu (erf form): ``X * (1 + Erf(X / sqrt(2))) * 0.5`` in any association of the products,
  the scaling as ``Div(X, sqrt 2)`` or ``Mul(X, 1/sqrt 2)``;
- Softmax: ``e = Exp(X - ReduceMax(X))``, ``e / ReduceSum(e)`` over one axis.

Every intermediate must be a transient nothing else reads, and every constant (eps, 2, 1,
0.5, sqrt 2) a recorded constant of the model (a module's parameters are not: they are read
live on every call).
"""
from typing import List, Tuple

import numpy as np

import dace
from dace import properties

from daceml.onnx.nodes import ONNXOp, node_class
from daceml.transformation.base import (Pass, _onnx_nodes, add_constant, private_transient, readers, remove_matched,
                                        single_output)


class _NoMatch(Exception):
    pass


class _Matcher:
    """Navigation over the ONNX nodes of one state, raising _NoMatch on anything unexpected.
    Collects the nodes and intermediate accesses a match consumes."""

    def __init__(self, sdfg: dace.SDFG, state: dace.SDFGState):
        self.sdfg, self.state = sdfg, state
        self.nodes: List = []
        self.accesses: List = []

    def out(self, node):
        """``node``'s output: a private transient (recorded for removal)."""
        acc = single_output(self.state, node)
        if acc is None or not private_transient(self.sdfg, self.state, acc):
            raise _NoMatch
        self.nodes.append(node)
        self.accesses.append(acc)
        return acc

    def sole_reader(self, acc, op: str, conns: Tuple[str, ...] = ()) -> Tuple[ONNXOp, str]:
        rs = readers(self.state, acc)
        if len(rs) != 1:
            raise _NoMatch
        return self.expect(rs[0], op, conns)

    @staticmethod
    def expect(reader, op: str, conns: Tuple[str, ...] = ()) -> Tuple[ONNXOp, str]:
        node, conn = reader
        if not isinstance(node, ONNXOp) or node.schema.name != op or (conns and conn not in conns):
            raise _NoMatch
        return node, conn

    def source(self, node, conn):
        """The access node read by ``node`` at ``conn``."""
        edges = list(self.state.in_edges_by_connector(node, conn))
        if len(edges) != 1 or not isinstance(edges[0].src, dace.sdfg.nodes.AccessNode):
            raise _NoMatch
        return edges[0].src

    def constant(self, node, conn) -> float:
        from daceml.onnx.ops.common import constant_input
        value = constant_input(node, self.state, self.sdfg, conn)
        if value is None or value.size != 1:
            raise _NoMatch
        return float(value.reshape(-1)[0])

    def other(self, node, conn) -> str:
        return {"A": "B", "B": "A"}[conn]

    def float_input(self, node, conn):
        """(access node, descriptor, rank) of ``node``'s float input ``conn`` of rank >= 1."""
        x = self.source(node, conn)
        desc = self.sdfg.arrays[x.data]
        if desc.dtype not in (dace.float32, dace.float64) or len(desc.shape) == 0:
            raise _NoMatch
        return x, desc, len(desc.shape)

    def reduce_axes(self, node, rank: int) -> List[int]:
        """The axes of a Reduce* node (attribute or constant input), keepdims required."""
        from daceml.onnx.ops.common import constant_input
        if getattr(node, "keepdims", 1) == 0:
            raise _NoMatch
        if "axes" in node.in_connectors:
            value = constant_input(node, self.state, self.sdfg, "axes")
            if value is None:
                raise _NoMatch
            axes = [int(a) for a in value.reshape(-1)]
        else:
            axes = [int(a) for a in (getattr(node, "axes", None) or [])]
        if not axes:
            raise _NoMatch  # all axes (or noop_with_empty_axes): not a per-row reduction
        return sorted(a % rank for a in axes)

    def same(self, a, b) -> bool:
        return a.data == b.data

    def replace(self, op: str, opset: int, inputs: dict, out, label: str, **attrs) -> ONNXOp:
        """Adds ONNX ``op`` reading ``inputs`` ({connector: access node}) and writing ``out``
        (what the last matched node wrote); removes the matched nodes, their intermediates and
        the constants only they read."""
        state, sdfg = self.state, self.sdfg
        new = node_class(op, opset)(label, inputs=list(inputs), outputs=[node_class(op, opset).schema.outputs[0].name])
        for k, v in attrs.items():
            setattr(new, k, v)
        state.add_node(new)
        for conn, acc in inputs.items():
            state.add_edge(acc, None, new, conn, sdfg.make_array_memlet(acc.data))
        state.add_edge(new, new.schema.outputs[0].name, out, None, sdfg.make_array_memlet(out.data))
        remove_matched(state, self.nodes, [a for a in self.accesses if a is not out])
        return new


def _close(value: float, want: float) -> bool:
    return abs(value - want) <= 1e-6 * abs(want)


@properties.make_properties
class RecognizeDecomposedOps(Pass):
    """Decomposed LayerNorm, Gelu (erf) and Softmax chains -> one LayerNormalization, Gelu or
    Softmax node (see the module docstring)."""
    LEVEL = 1

    def apply(self, sdfg, model=None) -> int:
        found = {"LayerNormalization": 0, "Gelu": 0, "Softmax": 0}
        for start, matcher in (("ReduceMean", self._layer_norm), ("Erf", self._gelu), ("ReduceMax", self._softmax)):
            for node, state in list(_onnx_nodes(sdfg, start)):
                if node not in state.nodes():
                    continue
                try:
                    op = matcher(_Matcher(sdfg, state), node, model)
                except _NoMatch:
                    continue
                found[op] += 1
        self._detail = ", ".join(f"{n} {op}" for op, n in found.items() if n) or "no decomposed op found"
        return sum(found.values())

    @staticmethod
    def _layer_norm(g: _Matcher, mean_node, model) -> str:
        x, desc, rank = g.float_input(mean_node, "data")
        axes = g.reduce_axes(mean_node, rank)
        if axes != list(range(rank - len(axes), rank)):
            raise _NoMatch  # LayerNormalization normalizes trailing axes
        sub, conn = g.sole_reader(g.out(mean_node), "Sub", ("B", ))
        if not g.same(g.source(sub, "A"), x):
            raise _NoMatch
        d = g.out(sub)
        rs = readers(g.state, d)
        square = [r for r in rs if isinstance(r[0], ONNXOp) and r[0].schema.name in ("Pow", "Mul")]
        divs = [r for r in rs if isinstance(r[0], ONNXOp) and r[0].schema.name == "Div"]
        if not square or len(divs) != 1 or divs[0][1] != "A":
            raise _NoMatch
        sq = square[0][0]
        if sq.schema.name == "Pow":
            if len(rs) != 2 or square[0][1] != "X" or g.constant(sq, "Y") != 2.0:
                raise _NoMatch
        elif len(rs) != 3 or sorted(c for n, c in rs if n is sq) != ["A", "B"]:
            raise _NoMatch
        var_node, _ = g.sole_reader(g.out(sq), "ReduceMean", ("data", ))
        if g.reduce_axes(var_node, rank) != axes:
            raise _NoMatch
        add, conn = g.sole_reader(g.out(var_node), "Add")
        eps = g.constant(add, g.other(add, conn))
        sqrt, _ = g.sole_reader(g.out(add), "Sqrt")
        div, conn = g.sole_reader(g.out(sqrt), "Div", ("B", ))
        if div is not divs[0][0]:
            raise _NoMatch
        normalized = list(desc.shape[rank - len(axes):])
        g.nodes.append(div)
        result = single_output(g.state, div)
        if result is None:
            raise _NoMatch
        inputs = {"X": x}
        for op, conn_name in (("Mul", "Scale"), ("Add", "B")):
            # then ``* gamma`` and ``+ beta`` of the normalized shape, if they follow
            rs = readers(g.state, result)
            if not private_transient(g.sdfg, g.state, result) or len(rs) != 1 or \
                    not isinstance(rs[0][0], ONNXOp) or rs[0][0].schema.name != op:
                break
            node, conn = rs[0]
            param = g.source(node, g.other(node, conn))
            pdesc = g.sdfg.arrays[param.data]
            nxt = single_output(g.state, node)
            if list(pdesc.shape) != normalized or pdesc.dtype != desc.dtype or nxt is None or \
                    list(g.sdfg.arrays[nxt.data].shape) != list(desc.shape):
                break
            g.accesses.append(result)
            g.nodes.append(node)
            inputs[conn_name] = param
            result = nxt
        if "Scale" not in inputs:
            if model is None:
                raise _NoMatch  # the ones for Scale are a new constant of the model
            ones = add_constant(model, f"{mean_node.label}_ln_scale", np.ones(normalized, desc.dtype.as_numpy_dtype()))
            inputs["Scale"] = g.state.add_read(ones)
        g.replace("LayerNormalization", 17, inputs, result, f"{mean_node.label}_layernorm",
                  axis=rank - len(axes), epsilon=eps)
        return "LayerNormalization"

    @staticmethod
    def _gelu(g: _Matcher, erf, model) -> str:
        scaled = g.source(erf, "input")
        producers = [e.src for e in g.state.in_edges(scaled)]
        scale_node = producers[0] if len(producers) == 1 else None
        if not isinstance(scale_node, ONNXOp) or scale_node.schema.name not in ("Div", "Mul"):
            raise _NoMatch
        if not private_transient(g.sdfg, g.state, scaled) or len(readers(g.state, scaled)) != 1:
            raise _NoMatch
        if scale_node.schema.name == "Div":
            x, c = g.source(scale_node, "A"), g.constant(scale_node, "B")
            ok = _close(c, np.sqrt(2.0))
        else:
            for conn in ("A", "B"):
                try:
                    c = g.constant(scale_node, g.other(scale_node, conn))
                except _NoMatch:
                    continue
                x = g.source(scale_node, conn)
                break
            else:
                raise _NoMatch
            ok = _close(c, 1 / np.sqrt(2.0))
        if not ok or g.sdfg.arrays[x.data].dtype not in (dace.float32, dace.float64):
            raise _NoMatch
        g.nodes.append(scale_node)
        g.accesses.append(scaled)
        add, conn = g.sole_reader(g.out(erf), "Add")
        if g.constant(add, g.other(add, conn)) != 1.0:
            raise _NoMatch
        one_plus = g.out(add)
        m1, conn = g.sole_reader(one_plus, "Mul")
        partner = g.source(m1, g.other(m1, conn))
        if g.same(partner, x):                         # (x * (1 + erf)) * 0.5
            m2, c2 = g.sole_reader(g.out(m1), "Mul")
            half = g.constant(m2, g.other(m2, c2))
        else:
            producers = [e.src for e in g.state.in_edges(partner)]
            if len(producers) == 1 and isinstance(producers[0], ONNXOp) and producers[0].schema.name == "Mul":
                hm = producers[0]                       # (x * 0.5) * (1 + erf)
                if not private_transient(g.sdfg, g.state, partner) or len(readers(g.state, partner)) != 1:
                    raise _NoMatch
                hx = [c for c in ("A", "B") if g.same(g.source(hm, c), x)]
                if len(hx) != 1:
                    raise _NoMatch
                half = g.constant(hm, g.other(hm, hx[0]))
                g.nodes.append(hm)
                g.accesses.append(partner)
                m2 = m1
            else:                                      # x * ((1 + erf) * 0.5)
                half = g.constant(m1, g.other(m1, conn))
                m2, c2 = g.sole_reader(g.out(m1), "Mul")
                if not g.same(g.source(m2, g.other(m2, c2)), x):
                    raise _NoMatch
        if half != 0.5:
            raise _NoMatch
        result = single_output(g.state, m2)
        if result is None or list(g.sdfg.arrays[result.data].shape) != list(g.sdfg.arrays[x.data].shape):
            raise _NoMatch
        g.nodes.append(m2)
        g.replace("Gelu", 20, {"X": x}, result, f"{erf.label}_gelu")
        return "Gelu"

    @staticmethod
    def _softmax(g: _Matcher, rmax, model) -> str:
        x, desc, rank = g.float_input(rmax, "data")
        axes = g.reduce_axes(rmax, rank)
        if len(axes) != 1:
            raise _NoMatch
        sub, _ = g.sole_reader(g.out(rmax), "Sub", ("B", ))
        if not g.same(g.source(sub, "A"), x):
            raise _NoMatch
        exp, _ = g.sole_reader(g.out(sub), "Exp")
        e = g.out(exp)
        rs = readers(g.state, e)
        sums = [r for r in rs if isinstance(r[0], ONNXOp) and r[0].schema.name == "ReduceSum"]
        divs = [r for r in rs if isinstance(r[0], ONNXOp) and r[0].schema.name == "Div" and r[1] == "A"]
        if len(rs) != 2 or len(sums) != 1 or len(divs) != 1:
            raise _NoMatch
        rsum, div = sums[0][0], divs[0][0]
        if g.reduce_axes(rsum, rank) != axes:
            raise _NoMatch
        total = g.out(rsum)
        if readers(g.state, total) != [(div, "B")]:
            raise _NoMatch
        result = single_output(g.state, div)
        if result is None:
            raise _NoMatch
        g.nodes.append(div)
        g.replace("Softmax", 13, {"input": x}, result, f"{rmax.label}_softmax", axis=axes[0])
        return "Softmax"

