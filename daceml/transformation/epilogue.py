"""Level 2: residual additions, activations and scales after a Conv, Gemm or MatMul computed by its implementation.

``Relu(Add(Conv(X), R))`` reads and writes the conv's output twice more after the conv wrote
it (once per node, each a parallel region of its own). When the conv's implementation lists
the activation in its ``epilogues`` (see :mod:`daceml.onnx.ops.epilogue`), the nodes after it
become part of the Conv: ``R`` an extra input added to each output, the activation applied to
each output right after it is computed (in registers or L1), and the Conv writes where the
last fused node wrote. Fused, in this order, when the conv's output is a transient read by
nothing else:

- a residual ``Add`` of a tensor of the output's shape and type (computed before the Conv: it
  must not depend on the Conv's output);
- one activation: Relu, Clip (constant bounds), LeakyRelu, HardSigmoid, HardSwish, Sigmoid,
  Tanh, Gelu, or SiLU (``Mul(Y, Sigmoid(Y))``, how the exporters write ``x * sigmoid(x)``).

The same after a Gemm, also through the Reshape that follows a linear layer on 3-D input (the
reshape then writes what the last fused node wrote; elementwise nodes commute with it).

After a MatMul whose implementation is a BLAS call, a ``Mul`` or ``Div`` by a constant scalar
(attention's ``scores / sqrt(d)``) becomes the call's alpha (``ONNXOp.output_scale``).

A ``ReduceMean`` over the spatial dims (or a ``GlobalAveragePool``) of a depthwise conv's
output, the pooling of a squeeze-excitation, becomes an extra output of the conv: the mean of
each plane, taken right after the plane is computed (another pass over the tensor saved).

And before a 1x1 Conv, a squeeze-excitation's ``Mul(X, S)`` with ``S`` of shape
``[N or 1, C, 1, 1]``: the conv reads ``X`` and scales its weights per image instead (an
``M x C`` product per image instead of a pass over the ``C x H x W`` activation).

Runs after ChooseImplementations: it asks the registry which implementation would expand
the node and fuses only what that implementation computes (on CUDA nothing, for now). A
training program's forward pass keeps what its backward pass reads (those are not transients
read only by the next node), so gradients are unchanged.
"""
import networkx as nx

from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp
from daceml.onnx.ops.epilogue import ACTIVATIONS, INPUT_SCALE, POOLED_MEAN, RESIDUAL
from daceml.transformation.base import Pass, _onnx_nodes
from daceml.transformation.base import private_transient as _private
from daceml.transformation.base import readers as _consumers
from daceml.transformation.base import single_output as _output

#: ONNX ops fused as activations; SiLU is matched as a pattern of Sigmoid and Mul
_ACTIVATION_OPS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Gelu")


def _same(sdfg, a: str, b: str) -> bool:
    da, db = sdfg.arrays[a], sdfg.arrays[b]
    return tuple(da.shape) == tuple(db.shape) and da.dtype == db.dtype


@properties.make_properties
class FuseEpilogues(Pass):
    """A residual Add and an activation after a Conv or Gemm become its epilogue, and a
    squeeze-excitation scale before a 1x1 Conv its input scale, where the node's implementation
    computes them (see the module docstring)."""
    LEVEL = 2

    #: the ops whose implementations may compute epilogues
    OPS = ("Conv", "Gemm", "MatMul")

    def apply(self, sdfg, model=None) -> int:
        from daceml.onnx.ops import registry
        fused = 0
        hosts = 0
        for node, state in list(_onnx_nodes(sdfg)):
            if node.schema.name not in self.OPS:
                continue
            impl = registry.would_select(node, state, sdfg)
            supported = getattr(impl, "epilogues", ())
            if not supported:
                continue
            n = 0
            if "output_scale" in supported:
                n += self._fuse_output_scale(sdfg, state, node)
            if "input_scale" in supported:
                n += self._fuse_input_scale(sdfg, state, node)
            if "residual" in supported:
                n += self._fuse_residual(sdfg, state, node)
            n += self._fuse_activation(sdfg, state, node, supported)
            if "pooled_mean" in supported and impl.pools_planes(node, state, sdfg):
                n += self._fuse_pooled_mean(sdfg, state, node)
            if n:
                node.implementation = impl.name  # the epilogue is that implementation's
                fused += n
                hosts += 1
        self._detail = f"{fused} node(s) fused into {hosts} Conv/Gemm/MatMul node(s)"
        return fused

    # --- the patterns ----------------------------------------------------------------------

    @staticmethod
    def _result(sdfg, state, node):
        """(access node whose consumers are matched, the node writing it) for ``node``'s output:
        its own output, or for a Gemm the output of a Reshape that is its only consumer (a
        linear layer on 3-D input: the elementwise nodes after it see the unflattened tensor).
        None if the output is not a private transient."""
        y = _output(state, node)
        if y is None or not _private(sdfg, state, y):
            return None
        cons = _consumers(state, y)
        if node.schema.name == "Gemm" and len(cons) == 1 and isinstance(cons[0][0], ONNXOp) and \
                cons[0][0].schema.name == "Reshape" and cons[0][1] == "data":
            r = _output(state, cons[0][0])
            if r is not None and _private(sdfg, state, r):
                return r, cons[0][0]
            return None
        return y, node

    def _fuse_residual(self, sdfg, state, node) -> int:
        found = self._result(sdfg, state, node)
        if found is None or RESIDUAL in node.in_connectors or node.epilogue:
            return 0
        y, writer = found
        cons = _consumers(state, y)
        if len(cons) != 1 or not isinstance(cons[0][0], ONNXOp) or cons[0][0].schema.name != "Add":
            return 0
        add, conn = cons[0]
        other = next(iter(state.in_edges_by_connector(add, "B" if conn == "A" else "A")), None)
        out = _output(state, add)
        if other is None or out is None or not isinstance(other.src, sdnodes.AccessNode) or other.src is y:
            return 0
        if not (_same(sdfg, other.src.data, y.data) and _same(sdfg, out.data, y.data)):
            return 0
        if other.data.subset.num_elements() != sdfg.arrays[other.src.data].total_size:
            return 0
        # the residual must be ready before the node runs: no path from the node to it
        if nx.has_path(state.nx, node, other.src):
            return 0
        node.add_in_connector(RESIDUAL)
        state.add_edge(other.src, other.src_conn, node, RESIDUAL, sdfg.make_array_memlet(other.src.data))
        self._replace_output(sdfg, state, writer, y, [add], out)
        return 1

    def _fuse_output_scale(self, sdfg, state, node) -> int:
        """``Mul(Y, c)`` or ``Div(Y, c)`` of a constant scalar ``c`` (attention's ``1 / sqrt(d)``)
        becomes the factor the implementation multiplies its product by (the BLAS call's alpha)."""
        from daceml.onnx.ops.common import constant_input
        found = self._result(sdfg, state, node)
        if found is None or node.output_scale != 1.0:
            return 0
        y, writer = found
        cons = _consumers(state, y)
        if len(cons) != 1 or not isinstance(cons[0][0], ONNXOp) or cons[0][0].schema.name not in ("Mul", "Div"):
            return 0
        op, conn = cons[0]
        if op.schema.name == "Div" and conn != "A":
            return 0  # c / Y is no scale
        value = constant_input(op, state, sdfg, "B" if conn == "A" else "A")
        out = _output(state, op)
        if value is None or value.size != 1 or out is None or not _same(sdfg, out.data, y.data):
            return 0
        if value.dtype != sdfg.arrays[y.data].dtype.as_numpy_dtype():
            return 0
        c = float(value.reshape(-1)[0])
        if op.schema.name == "Div" and c == 0.0:
            return 0
        node.output_scale = c if op.schema.name == "Mul" else 1.0 / c
        self._replace_output(sdfg, state, writer, y, [op], out)
        return 1

    def _fuse_input_scale(self, sdfg, state, conv) -> int:
        edge = next(iter(state.in_edges_by_connector(conv, "X")), None)
        w = next(iter(state.in_edges_by_connector(conv, "W")), None)
        if edge is None or w is None or INPUT_SCALE in conv.in_connectors or not isinstance(edge.src, sdnodes.AccessNode):
            return 0
        a = edge.src
        if not _private(sdfg, state, a) or state.out_degree(a) != 1:
            return 0
        (prod, ) = [e.src for e in state.in_edges(a)]
        if not isinstance(prod, ONNXOp) or prod.schema.name != "Mul":
            return 0
        kernel = list(sdfg.arrays[w.data.data].shape[2:])
        pads = [int(p) for p in (conv.pads or [])]
        strides = [int(s) for s in (conv.strides or [1] * len(kernel))]
        dilations = [int(d) for d in (conv.dilations or [1] * len(kernel))]
        if (kernel != [1, 1] or any(pads) or strides != [1, 1] or dilations != [1, 1] or (conv.group or 1) != 1
                or (conv.auto_pad or "NOTSET") not in ("NOTSET", "VALID")):
            return 0
        x_shape = list(sdfg.arrays[a.data].shape)
        ins = {c: next(iter(state.in_edges_by_connector(prod, c))) for c in ("A", "B")}
        for conn, other in (("A", "B"), ("B", "A")):
            full, scale = ins[conn], ins[other]
            if not (isinstance(full.src, sdnodes.AccessNode) and isinstance(scale.src, sdnodes.AccessNode)):
                continue
            fd, sd = sdfg.arrays[full.src.data], sdfg.arrays[scale.src.data]
            s_shape = list(sd.shape)
            if (list(fd.shape) == x_shape and fd.dtype == sd.dtype == sdfg.arrays[a.data].dtype and
                    len(s_shape) == 4 and s_shape[0] in (x_shape[0], 1) and s_shape[1] == x_shape[1] and
                    s_shape[2:] == [1, 1]):
                break
        else:
            return 0
        conv.add_in_connector(INPUT_SCALE)
        state.add_edge(scale.src, scale.src_conn, conv, INPUT_SCALE, sdfg.make_array_memlet(scale.src.data))
        state.add_edge(full.src, full.src_conn, conv, "X", sdfg.make_array_memlet(full.src.data))
        state.remove_edge(edge)
        state.remove_node(prod)
        state.remove_node(a)
        sdfg.remove_data(a.data, validate=False)
        return 1

    def _fuse_activation(self, sdfg, state, node, supported) -> int:
        from daceml.onnx.ops.common import constant_input
        found = self._result(sdfg, state, node)
        if found is None or node.epilogue:
            return 0
        y, writer = found
        cons = _consumers(state, y)
        if not all(isinstance(c, ONNXOp) for c, _ in cons):
            return 0
        if len(cons) == 1:
            act, conn = cons[0]
            op = act.schema.name
            if op not in _ACTIVATION_OPS or op not in supported or conn != act.input_connectors()[0]:
                return 0
            if len(act.in_connectors) > 1 and op != "Clip":
                return 0
            names, defaults = ACTIVATIONS[op]
            params = []
            for name, default in zip(names, defaults):
                if op == "Clip":
                    if name in act.in_connectors:
                        value = constant_input(act, state, sdfg, name)
                        if value is None or value.size != 1:
                            return 0  # bounds computed at run time
                        params.append(float(value.reshape(-1)[0]))
                    else:
                        params.append(default)
                elif op == "Gelu":
                    params.append(1.0 if (act.approximate or "none") == "tanh" else 0.0)
                else:
                    value = getattr(act, name, None)
                    params.append(default if value is None else float(value))
            removed, last = [act], _output(state, act)
        elif len(cons) == 2 and "SiLU" in supported:
            kinds = {c.schema.name: (c, conn) for c, conn in cons}
            if set(kinds) != {"Sigmoid", "Mul"}:
                return 0
            sig, mul = kinds["Sigmoid"][0], kinds["Mul"][0]
            s = _output(state, sig)
            if s is None or not _private(sdfg, state, s) or [c for c, _ in _consumers(state, s)] != [mul]:
                return 0
            op, params, removed, last = "SiLU", [], [sig, mul], _output(state, mul)
        else:
            return 0
        if last is None or not _same(sdfg, last.data, y.data):
            return 0
        node.epilogue = op
        node.epilogue_params = params
        self._replace_output(sdfg, state, writer, y, removed, last)
        return len(removed)

    def _fuse_pooled_mean(self, sdfg, state, conv) -> int:
        """A ``ReduceMean`` over the spatial dims (or a ``GlobalAveragePool``) reading the conv's
        output: the conv writes those means too, from the planes it has just computed."""
        from daceml.onnx.ops.common import constant_input
        y = _output(state, conv)
        if y is None or POOLED_MEAN in conv.out_connectors:
            return 0
        rank = len(sdfg.arrays[y.data].shape)
        for reader, conn in _consumers(state, y):
            if not isinstance(reader, ONNXOp) or conn != reader.input_connectors()[0]:
                continue
            if reader.schema.name == "ReduceMean":
                if "axes" in reader.in_connectors:
                    axes = constant_input(reader, state, sdfg, "axes")
                    axes = None if axes is None else [int(a) for a in axes.reshape(-1)]
                else:
                    axes = [int(a) for a in reader.axes] if reader.axes else None
                if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
                    continue
            elif reader.schema.name != "GlobalAveragePool":
                continue
            p = _output(state, reader)
            if p is None or sdfg.arrays[p.data].dtype != sdfg.arrays[y.data].dtype:
                continue
            (edge, ) = state.in_edges(p)
            sources = [e.src for e in state.in_edges(reader) if e.src is not y]
            conv.add_out_connector(POOLED_MEAN)
            state.add_edge(conv, POOLED_MEAN, p, edge.dst_conn, sdfg.make_array_memlet(p.data))
            state.remove_node(reader)
            for src in sources:  # the axes constant
                if state.degree(src) == 0:
                    state.remove_node(src)
            return 1
        return 0

    @staticmethod
    def _replace_output(sdfg, state, writer, y, removed, out) -> None:
        """``writer`` (the conv or gemm, or the reshape after a gemm) writes ``out`` (what the
        last of ``removed`` wrote); ``removed``, ``y`` and the accesses only they used go."""
        (old, ) = state.out_edges(writer)
        (last, ) = state.in_edges(out)
        sources = [e.src for n in removed for e in state.in_edges(n) if e.src is not y]
        state.add_edge(writer, old.src_conn, out, last.dst_conn, sdfg.make_array_memlet(out.data))
        for n in removed:
            state.remove_node(n)
        state.remove_node(y)
        sdfg.remove_data(y.data, validate=False)
        for src in sources:  # constants only these nodes read, intermediates (the Sigmoid's output)
            if src in state.nodes() and state.degree(src) == 0:
                state.remove_node(src)
                if sdfg.arrays[src.data].transient and not any(n.data == src.data for n in state.data_nodes()):
                    sdfg.remove_data(src.data, validate=False)
