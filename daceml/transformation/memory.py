"""Buffer reuse by lifetime: transients whose lifetimes do not overlap share memory.

:class:`PlanMemory` (level 4) gives every planned transient of the top-level SDFG an
offset in one persistent arena per element type, allocated once per program. Two
transients may overlap in the arena only if every node that touches one of them runs
before any node that writes the other:

- within a state, "runs before" is a path in the dataflow graph (DaCe's CPU code
  generator runs a state's nodes one after the other in an order that respects the
  edges; with OpenMP sections on, independent components could run together, and the
  planner does nothing);
- across states, the order of the (acyclic) state machine.

A planned array becomes a view of its arena range: every access node that writes it
views the arena through an edge into a fresh arena access node, every access node that
reads it views the arena through an edge out of one (an access node that does both is
split in two, the arena node between them orders the write before the reads). Views of
the array (reshapes made views at level 4, views left by inlining) keep viewing it, and
count as its accesses.

Offsets are chosen greedily, largest array first, at the lowest aligned offset where the
array overlaps no array it interferes with. :func:`memory_plan` computes the plan without
changing anything; the pass's detail gives the arena size against the bytes the planned
transients had before, and ``daceml report`` the transient memory at each level
(:func:`daceml.analysis.dataflow.transient_memory`: after this pass, the arenas).
"""
import dataclasses
import functools
from typing import Dict, List, Optional, Set, Tuple

import networkx as nx

import dace
from dace import data as dt
from dace import properties
from dace.sdfg import nodes as sdnodes
from dace.sdfg import utils as sdutil

from daceml.transformation.base import ARENA_PREFIX, Pass


@dataclasses.dataclass
class MemoryPlan:
    """Where each planned transient lives: arena name -> (array -> element offset), arena sizes."""
    offsets: Dict[str, Dict[str, int]]
    arena_elements: Dict[str, int]
    dtypes: Dict[str, dace.typeclass]
    #: bytes the planned transients take when each has its own memory
    separate_bytes: int
    #: bytes of the transients the plan leaves alone (symbolic sizes, views of arguments, ...)
    unplanned_bytes: int
    skipped: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def arena_bytes(self) -> int:
        return sum(n * self.dtypes[a].bytes for a, n in self.arena_elements.items())

    @property
    def peak_bytes(self) -> int:
        """Transient memory of the program after planning: the arenas plus the unplanned transients."""
        return self.arena_bytes + self.unplanned_bytes

    def summary(self) -> str:
        n = sum(len(v) for v in self.offsets.values())
        return (f"{n} transient(s), {self.separate_bytes / 2**20:.2f} MiB separately, share "
                f"{self.arena_bytes / 2**20:.2f} MiB in {len(self.arena_elements)} arena(s); transient peak "
                f"{self.peak_bytes / 2**20:.2f} MiB")


def _state_order(sdfg: dace.SDFG) -> Optional[Dict[dace.SDFGState, int]]:
    """Position of each state in a topological order of an acyclic state machine, else None."""
    if not all(isinstance(n, dace.SDFGState) for n in sdfg.nodes()):
        return None  # loop or conditional regions
    if not nx.is_directed_acyclic_graph(sdfg.nx):
        return None
    return {s: i for i, s in enumerate(nx.topological_sort(sdfg.nx))}


def _root(state: dace.SDFGState, node: sdnodes.AccessNode, sdfg: dace.SDFG) -> Optional[sdnodes.AccessNode]:
    """The access node of the memory ``node`` stands for: itself, or the end of its view chain."""
    seen = set()
    while isinstance(sdfg.arrays[node.data], dt.View):
        if node in seen:
            return None
        seen.add(node)
        edge = sdutil.get_view_edge(state, node)
        if edge is None:
            return None
        other = edge.src if edge.dst is node else edge.dst
        if not isinstance(other, sdnodes.AccessNode):
            return None
        node = other
    return node


class _Uses:
    """For each array: the nodes that write it and all the nodes that touch it, per state. A
    node inside a map (or any scope) stands for its outermost scope: the whole map runs before
    or after another node, never in between."""

    def __init__(self, sdfg: dace.SDFG):
        self.writers: Dict[str, Dict[dace.SDFGState, Set]] = {}
        self.touchers: Dict[str, Dict[dace.SDFGState, Set]] = {}
        self.unresolved: Dict[str, str] = {}
        for state in sdfg.states():
            scopes = state.scope_dict()
            top = functools.partial(_outermost, state, scopes)
            for node in state.data_nodes():
                root = _root(state, node, sdfg)
                if root is None:
                    self.unresolved[node.data] = "a view of it cannot be followed"
                    continue
                name = root.data
                if scopes[node] is not None or scopes[root] is not None:
                    self.unresolved[name] = "accessed inside a map"
                chain = {node, root}
                writes = self.writers.setdefault(name, {}).setdefault(state, set())
                touches = self.touchers.setdefault(name, {}).setdefault(state, set())
                for e in state.in_edges(node):
                    if e.src not in chain and not _is_view_edge_of(state, e, sdfg):
                        writes.add(top(e.src))
                        touches.add(top(e.src))
                for e in state.out_edges(node):
                    if e.dst not in chain and not _is_view_edge_of(state, e, sdfg):
                        touches.add(top(e.dst))
                touches.add(top(node))
                if state.in_degree(node) > 0 and not isinstance(sdfg.arrays[node.data], dt.View):
                    writes.add(top(node))


def _outermost(state: dace.SDFGState, scopes: Dict, node):
    """The entry of the outermost scope ``node`` is in (``node`` itself at the top level)."""
    if isinstance(node, sdnodes.ExitNode):
        node = state.entry_node(node)
    while scopes[node] is not None:
        node = scopes[node]
    return node


def _is_view_edge_of(state, edge, sdfg) -> bool:
    """Whether ``edge`` is the edge by which a view at one of its ends views the other end."""
    for end in (edge.src, edge.dst):
        if isinstance(end, sdnodes.AccessNode) and isinstance(sdfg.arrays[end.data], dt.View):
            if sdutil.get_view_edge(state, end) is edge:
                return True
    return False


class _Order:
    """Happens-before between nodes: a path within a state, the state order across states."""

    def __init__(self, sdfg: dace.SDFG, state_pos: Dict[dace.SDFGState, int]):
        self.state_pos = state_pos
        self.ancestors: Dict[dace.SDFGState, Dict] = {}
        for state in sdfg.states():
            index = {n: i for i, n in enumerate(state.nodes())}
            anc: Dict = {}
            for n in nx.topological_sort(state.nx):
                bits = 0
                for p in state.predecessors(n):
                    bits |= anc[p] | (1 << index[p])
                anc[n] = bits
            self.ancestors[state] = (index, anc)

    def all_before(self, first: Dict[dace.SDFGState, Set], then: Dict[dace.SDFGState, Set]) -> bool:
        """Whether every node of ``first`` runs before every node of ``then``."""
        last_first = max((self.state_pos[s] for s, ns in first.items() if ns), default=-1)
        first_then = min((self.state_pos[s] for s, ns in then.items() if ns), default=1 << 30)
        if last_first < first_then:
            return True
        if last_first > first_then:
            return False
        # the last state of ``first`` is the first of ``then``: paths within it
        pos = last_first
        for state, later in then.items():
            if self.state_pos[state] != pos:
                continue
            index, anc = self.ancestors[state]
            earlier = first.get(state, ())
            mask = 0
            for n in earlier:
                mask |= 1 << index[n]
            for n in later:
                if anc[n] & mask != mask:
                    return False
        # ``first`` nodes in earlier states than pos already precede; ``then`` nodes in later states follow
        return True


def _size(desc: dt.Data) -> Optional[int]:
    size = desc.total_size
    if dace.symbolic.issymbolic(size):
        return None
    return int(size)


def _candidates(sdfg: dace.SDFG, uses: _Uses) -> Tuple[List[str], Dict[str, str], int]:
    """Planned arrays, reasons for the others, and bytes of the unplanned transients."""
    planned, skipped, unplanned = [], {}, 0
    for name, desc in sdfg.arrays.items():
        if not desc.transient or isinstance(desc, dt.View) or name.startswith(ARENA_PREFIX):
            continue
        size = _size(desc)
        reason = None
        if size is None:
            reason = "symbolic size"
        elif type(desc) is not dt.Array:
            reason = f"a {type(desc).__name__}"
        elif desc.storage not in (dace.StorageType.Default, dace.StorageType.CPU_Heap):
            reason = f"storage {desc.storage.name}"
        elif desc.lifetime == dace.AllocationLifetime.External:
            reason = "allocated by the caller"
        elif desc.start_offset != 0 or any(o != 0 for o in desc.offset):
            reason = "offset layout"
        elif name in uses.unresolved:
            reason = uses.unresolved[name]
        elif name not in uses.touchers or not any(uses.touchers[name].values()):
            continue  # never used: nothing to plan, no memory either
        elif not any(uses.writers.get(name, {}).values()):
            reason = "read but never written in the program (its content would come from a previous call)"
        if reason:
            skipped[name] = reason
            if size is not None:
                unplanned += size * desc.dtype.bytes
        else:
            planned.append(name)
    return planned, skipped, unplanned


def memory_plan(sdfg: dace.SDFG, alignment: int = 64) -> Optional[MemoryPlan]:
    """The plan for ``sdfg``'s top-level transients, or None where the program's order is not
    known (loops or conditionals at the top level, OpenMP sections)."""
    if dace.Config.get_bool("compiler", "cpu", "openmp_sections"):
        return None
    state_pos = _state_order(sdfg)
    if state_pos is None:
        return None
    uses = _Uses(sdfg)
    planned, skipped, unplanned = _candidates(sdfg, uses)
    order = _Order(sdfg, state_pos)
    by_type: Dict[dace.typeclass, List[str]] = {}
    for name in planned:
        by_type.setdefault(sdfg.arrays[name].dtype, []).append(name)
    offsets: Dict[str, Dict[str, int]] = {}
    arena_elements: Dict[str, int] = {}
    dtypes: Dict[str, dace.typeclass] = {}
    separate = 0
    for dtype, names in sorted(by_type.items(), key=lambda kv: kv[0].to_string()):
        align = max(1, alignment // dtype.bytes)
        sizes = {n: _size(sdfg.arrays[n]) for n in names}
        separate += sum(sizes.values()) * dtype.bytes
        placed: List[Tuple[int, int, str]] = []  # (start, end, name)
        result: Dict[str, int] = {}
        for name in sorted(names, key=lambda n: (-sizes[n], n)):
            conflicts = sorted((s, e) for s, e, other in placed if _interfere(name, other, uses, order))
            offset = 0
            for s, e in conflicts:
                if offset + sizes[name] <= s:
                    break
                offset = max(offset, -(-e // align) * align)
            result[name] = offset
            placed.append((offset, offset + sizes[name], name))
        arena = f"{ARENA_PREFIX}_{dtype.to_string()}"
        offsets[arena] = result
        arena_elements[arena] = max((e for _, e, _ in placed), default=0)
        dtypes[arena] = dtype
    return MemoryPlan(offsets, arena_elements, dtypes, separate, unplanned, skipped)


def _interfere(a: str, b: str, uses: _Uses, order: _Order) -> bool:
    return not (order.all_before(uses.touchers[a], uses.writers[b])
                or order.all_before(uses.touchers[b], uses.writers[a]))


def apply_plan(sdfg: dace.SDFG, plan: MemoryPlan) -> None:
    """Makes every planned array a view of its arena range (see the module's docstring)."""
    for arena, offsets in plan.offsets.items():
        if not offsets:
            continue
        sdfg.add_array(arena, (plan.arena_elements[arena], ), plan.dtypes[arena], transient=True,
                       lifetime=dace.AllocationLifetime.Persistent)
        for name, offset in offsets.items():
            desc = sdfg.arrays[name]
            view = dt.ArrayView(desc.dtype, desc.shape, strides=desc.strides, total_size=desc.total_size,
                                storage=desc.storage, transient=True)
            sdfg.arrays[name] = view
            rng = dace.Memlet(f"{arena}[{offset}:{offset + _size(desc)}]")
            for state in sdfg.states():
                for node in [n for n in state.data_nodes() if n.data == name]:
                    _view_arena(state, node, arena, rng)


def _view_arena(state: dace.SDFGState, node: sdnodes.AccessNode, arena: str, rng: dace.Memlet) -> None:
    ins, outs = state.in_edges(node), state.out_edges(node)
    if ins:
        write_end = state.add_access(arena)
        node.add_out_connector("views")
        state.add_edge(node, "views", write_end, None, dace.Memlet.from_memlet(rng))
    if outs:
        reader = node
        if ins:  # split: the writes go to the arena through ``node``, the reads come from ``reader``
            reader = state.add_access(node.data)
            for e in outs:
                state.remove_edge(e)
                state.add_edge(reader, e.src_conn, e.dst, e.dst_conn, e.data)
                if e.src_conn:
                    reader.add_out_connector(e.src_conn)
            read_end = write_end
        else:
            read_end = state.add_access(arena)
        reader.add_in_connector("views")
        state.add_edge(read_end, None, reader, "views", dace.Memlet.from_memlet(rng))


@properties.make_properties
class PlanMemory(Pass):
    """Transients whose lifetimes do not overlap share memory: one persistent arena per element
    type, offsets chosen by lifetime (largest first)."""
    LEVEL = 4
    alignment = properties.Property(dtype=int, default=64, desc="byte alignment of each array in the arena")

    def apply(self, sdfg, model=None) -> int:
        plan = memory_plan(sdfg, self.alignment)
        if plan is None:
            self._detail = "program order unknown (loops, conditionals or OpenMP sections): nothing planned"
            return 0
        n = sum(len(v) for v in plan.offsets.values())
        if n < 2:
            self._detail = f"{n} plannable transient(s): nothing to share"
            return 0
        apply_plan(sdfg, plan)
        self._detail = plan.summary()
        return n
