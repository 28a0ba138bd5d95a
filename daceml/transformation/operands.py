"""Level 2: transposes around a batched MatMul folded into how the GEMM reads and writes.

Attention transposes its operands and its result between (batch, sequence, heads, head dim)
and (batch, heads, sequence, head dim): ``q.reshape(b, s, h, d).transpose(1, 2) @ ...``. Each
Transpose is a pass over the tensor. A BLAS GEMM takes any operand whose matrix dims have one
unit stride (a leading dimension and a transpose flag) and batches with any stride, so where
the MatMul's implementation accepts it (oneMKL: ``operand_perms`` in its ``epilogues``), the
MatMul reads the Transpose's input, or writes the Transpose's output, directly; the node
records the permutation per connector (``ONNXOp.operand_perms``).

Folded when the transposed tensor is a transient only that MatMul reads (or, for the result,
the MatMul's output is a transient only that Transpose reads), and the implementation accepts
the strides that result (``strided_operands``).
"""
from typing import Dict, List

import dace
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp
from daceml.transformation.base import Pass, _onnx_nodes
from daceml.transformation.epilogue import _consumers, _output, _private


def _perm(node: ONNXOp, rank: int) -> List[int]:
    return [int(p) for p in node.perm] if node.perm else list(reversed(range(rank)))


@properties.make_properties
class FoldTransposesIntoMatMul(Pass):
    """Transposes of a MatMul's inputs and output become strides of its GEMM, where the MatMul's
    implementation takes them (see the module docstring)."""
    LEVEL = 2

    def apply(self, sdfg, model=None) -> int:
        from daceml.onnx.ops import registry
        folded = 0
        for node, state in list(_onnx_nodes(sdfg, "MatMul")):
            impl = registry.would_select(node, state, sdfg)
            check = getattr(impl, "operand_strides_reason", None)
            if check is None or "operand_perms" not in getattr(impl, "epilogues", ()):
                continue
            n = 0
            for conn in ("A", "B", "Y"):
                n += self._fold(sdfg, state, node, conn, check)
            if n:
                node.implementation = impl.name
                folded += n
        self._detail = f"{folded} Transpose(s) folded into MatMul operands"
        return folded

    @staticmethod
    def _descs(sdfg, state, node) -> Dict[str, dace.data.Data]:
        return {"A": node.in_desc(state, sdfg, "A"), "B": node.in_desc(state, sdfg, "B"),
                "Y": node.out_desc(state, sdfg, "Y")}

    def _fold(self, sdfg, state, node, conn, check) -> int:
        if conn in node.operand_perms:
            return 0
        if conn == "Y":
            y = _output(state, node)
            if y is None or not _private(sdfg, state, y):
                return 0
            cons = _consumers(state, y)
            if len(cons) != 1 or not isinstance(cons[0][0], ONNXOp) or cons[0][0].schema.name != "Transpose":
                return 0
            transpose = cons[0][0]
            target = _output(state, transpose)
            if target is None:
                return 0
            array = target.data
        else:
            edge = next(iter(state.in_edges_by_connector(node, conn)), None)
            if edge is None or not isinstance(edge.src, sdnodes.AccessNode) or not _private(sdfg, state, edge.src):
                return 0
            if state.out_degree(edge.src) != 1:
                return 0
            (writer, ) = [e.src for e in state.in_edges(edge.src)]
            if not isinstance(writer, ONNXOp) or writer.schema.name != "Transpose":
                return 0
            transpose = writer
            source = next(iter(state.in_edges(transpose)))
            if not isinstance(source.src, sdnodes.AccessNode):
                return 0
            array = source.src.data
        descs = self._descs(sdfg, state, node)
        descs[conn] = sdfg.arrays[array]
        perms = dict(node.operand_perms)
        perms[conn] = _perm(transpose, len(sdfg.arrays[array].shape))
        if check(descs, perms) is not None:
            return 0
        node.operand_perms = perms
        if conn == "Y":
            (old, ) = state.out_edges(node)
            state.add_edge(node, old.src_conn, target, None, sdfg.make_array_memlet(array))
            state.remove_node(transpose)
            state.remove_node(old.dst)
            sdfg.remove_data(old.dst.data, validate=False)
        else:
            state.add_edge(source.src, source.src_conn, node, conn, sdfg.make_array_memlet(array))
            state.remove_node(edge.src)
            sdfg.remove_data(edge.src.data, validate=False)
            state.remove_node(transpose)
        return 1
