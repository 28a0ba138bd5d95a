"""The base class of daceml's passes and the graph helpers they share."""
from typing import Any, Dict, List, Optional, Tuple

import dace
from dace import properties, serialize
from dace.sdfg import nodes as sdnodes

from daceml.onnx.nodes import ONNXOp


@properties.make_properties
class Pass:
    """Base class of daceml's passes."""
    LEVEL: int = 0

    def __init__(self, **props: Any):
        for k, v in props.items():
            setattr(self, k, v)
        self._detail = ""

    @property
    def detail(self) -> str:
        """What the last ``apply`` did, in a few words."""
        return self._detail

    def apply(self, sdfg: dace.SDFG, model=None) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define apply()")

    def to_json(self) -> Dict[str, Any]:
        return {"pass": type(self).__name__, **serialize.all_properties_to_json(self)}

    @staticmethod
    def from_json(obj: Dict[str, Any]) -> "Pass":
        from daceml.transformation.passes import PASSES
        cls = PASSES[obj["pass"]]
        p = cls()
        serialize.set_properties_from_json(p, {k: v for k, v in obj.items() if k != "pass"})
        return p


def _onnx_nodes(sdfg: dace.SDFG, op: Optional[str] = None):
    for state in sdfg.states():
        for node in list(state.nodes()):
            if isinstance(node, ONNXOp) and (op is None or node.schema.name == op):
                yield node, state


def _single_consumer(state: dace.SDFGState, access: sdnodes.AccessNode) -> Optional[Any]:
    outs = state.out_edges(access)
    if len(outs) != 1 or state.in_degree(access) != 1:
        return None
    return outs[0]


def single_output(state: dace.SDFGState, node) -> Optional[sdnodes.AccessNode]:
    """The access node ``node`` writes, if it has exactly one output edge into one."""
    outs = state.out_edges(node)
    if len(outs) != 1 or not isinstance(outs[0].dst, sdnodes.AccessNode):
        return None
    return outs[0].dst


def private_transient(sdfg: dace.SDFG, state: dace.SDFGState, access: sdnodes.AccessNode) -> bool:
    """A transient written once here and read nowhere but through this access node."""
    if not sdfg.arrays[access.data].transient or state.in_degree(access) != 1:
        return False
    return not any(n.data == access.data and n is not access for s in sdfg.states() for n in s.data_nodes())


def readers(state: dace.SDFGState, access: sdnodes.AccessNode) -> List[Tuple[Any, str]]:
    """(node, connector) of every edge reading ``access``."""
    return [(e.dst, e.dst_conn) for e in state.out_edges(access)]


def remove_matched(state: dace.SDFGState, nodes, accesses) -> None:
    """Removes ``nodes``, the intermediate ``accesses`` (and their arrays), and every access node
    that fed ``nodes`` and is read by nothing else now (constants only they read)."""
    sdfg = state.sdfg
    sources = [e.src for n in nodes for e in state.in_edges(n)]
    for n in nodes:
        state.remove_node(n)
    for a in accesses:
        state.remove_node(a)
        sdfg.remove_data(a.data, validate=False)
    for src in sources:
        if src in state.nodes() and state.degree(src) == 0:
            state.remove_node(src)


def add_constant(model, base: str, value) -> str:
    """Adds ``value`` to ``model`` as a new weight named ``base`` (or ``base_1``, ... if taken);
    returns its array name."""
    name, i = base, 1
    while name in model.weights:
        name, i = f"{base}_{i}", i + 1
    return model.add_weight(name, value)


#: name prefix of the arenas PlanMemory (level 4) allocates: arrays of which the planned
#: transients are views, each range ordered by the planner, not by the arena's access nodes
ARENA_PREFIX = "__daceml_arena"


class UnorderedAccessError(RuntimeError):
    """A state reads a transient through an access node that no path orders after its writer."""


def check_ordered_accesses(sdfg: dace.SDFG) -> None:
    """Raises :class:`UnorderedAccessError` naming the array and state where a transient written in
    a state is also read there through an access node with no path from the writer: within a state
    only edges order nodes, so such a read races with the write (or sees stale data)."""
    import networkx as nx
    from dace import data as dt
    from dace.sdfg import utils as sdutil
    for state in sdfg.states():
        writers: Dict[str, list] = {}
        readers: Dict[str, list] = {}
        for node in state.data_nodes():
            desc = sdfg.arrays[node.data]
            if not desc.transient or node.data.startswith(ARENA_PREFIX):
                continue
            # a view's own edge to the data it views is neither a write nor a read of the view
            view_edge = sdutil.get_view_edge(state, node) if isinstance(desc, dt.View) else None
            ins = [e for e in state.in_edges(node) if e is not view_edge]
            outs = [e for e in state.out_edges(node) if e is not view_edge]
            if ins:
                writers.setdefault(node.data, []).append((node, ins[0].src))
            elif outs:
                readers.setdefault(node.data, []).append((node, outs[0].dst))
        for data, reads in readers.items():
            for w, producer in writers.get(data, ()):
                for r, consumer in reads:
                    if not nx.has_path(state.nx, w, r):
                        raise UnorderedAccessError(
                            f"state {state.label!r}: transient {data!r} is written by {producer} and read by "
                            f"{consumer} with nothing ordering the read after the write")
