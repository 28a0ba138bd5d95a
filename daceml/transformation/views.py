"""Reshapes as views: ``Reshape``/``Flatten``/``Squeeze``/``Unsqueeze`` copy nothing.

Each of these ops only renames the dims of a contiguous array. :class:`ReshapesAsViews`
(level 4, copy elimination) replaces such a node by a DaCe view: the output array becomes an
``ArrayView`` of the input (same memory, the new shape), connected access node to access
node. Consumers then read the input's memory directly, and no copy map runs.

The nodes that can become views stay unexpanded through levels 2 and 3 (ExpandLibraryNodes
leaves them, see :func:`can_be_view`): DaCe's InlineSDFGs (level 3) splits a view's access node
from its viewed array in some graphs, so views are made after inlining. Nodes that cannot be
views are expanded (copied) here; a program compiled before level 4 expands them when it is
compiled.
"""
import dace
from dace import data as dt
from dace import properties
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp
from daceml.transformation.base import Pass, _onnx_nodes

VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def _contiguous(desc: dt.Data) -> bool:
    if not isinstance(desc, dt.Array) or desc.offset and any(o != 0 for o in desc.offset):
        return False
    expected = 1
    for size, stride in reversed(list(zip(desc.shape, desc.strides))):
        if size != 1 and stride != expected:
            return False
        expected = expected * size
    return desc.start_offset == 0


@properties.make_properties
class ReshapesAsViews(Pass):
    """Reshape, Flatten, Squeeze and Unsqueeze of a contiguous array into a transient become views
    (no copy); the others are expanded (copies)."""
    LEVEL = 4

    def apply(self, sdfg, model=None) -> int:
        viewed = copied = 0
        for node, state in list(_onnx_nodes(sdfg)):
            if node.schema.name not in VIEW_OPS:
                continue
            if can_be_view(state, node):
                _to_view(state, node)
                viewed += 1
            else:
                node.expand(state.sdfg, state)
                copied += 1
        self._detail = f"{viewed} reshape(s) made views, {copied} copied"
        return viewed


def can_be_view(state: dace.SDFGState, node) -> bool:
    """Whether ``node`` (Reshape, Flatten, Squeeze, Unsqueeze) can become a view of its input:
    a contiguous input of the same type, an output that is a transient written only here."""
    if not isinstance(node, ONNXOp) or node.schema.name not in VIEW_OPS:
        return False
    data_edges = list(state.in_edges_by_connector(node, "data"))
    outs = state.out_edges(node)
    if len(data_edges) != 1 or len(outs) != 1:
        return False
    src, dst = data_edges[0].src, outs[0].dst
    if not (isinstance(src, sdnodes.AccessNode) and isinstance(dst, sdnodes.AccessNode)):
        return False
    sdfg = state.sdfg
    src_desc, dst_desc = sdfg.arrays[src.data], sdfg.arrays[dst.data]
    if not dst_desc.transient or isinstance(dst_desc, dt.View) or state.in_degree(dst) != 1:
        return False
    if src_desc.dtype != dst_desc.dtype or not _contiguous(src_desc) or not _contiguous(dst_desc):
        return False
    if src_desc.storage != dst_desc.storage or data_edges[0].data.subset.num_elements() != src_desc.total_size:
        return False
    # the output must be this access node's alone (SSA form of the imported graph)
    return not any(n.data == dst.data and n is not dst for s in sdfg.all_states() for n in s.data_nodes())


def _to_view(state: dace.SDFGState, node) -> None:
    sdfg = state.sdfg
    (data_edge, ) = state.in_edges_by_connector(node, "data")
    src, dst = data_edge.src, state.out_edges(node)[0].dst
    src_desc, dst_desc = sdfg.arrays[src.data], sdfg.arrays[dst.data]
    view = dt.ArrayView(dst_desc.dtype, dst_desc.shape, storage=dst_desc.storage, total_size=dst_desc.total_size)
    view.transient = True
    sdfg.arrays[dst.data] = view
    for e in list(state.in_edges(node)):
        state.remove_edge(e)
        if isinstance(e.src, sdnodes.AccessNode) and e.src is not src and state.degree(e.src) == 0:
            state.remove_node(e.src)  # the shape constant
    state.remove_node(node)
    state.add_edge(src, data_edge.src_conn, dst, None, dace.Memlet.from_array(src.data, src_desc))
