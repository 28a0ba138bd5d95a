"""Data movement and FLOPs per node and edge of an SDFG (the GUI's overlays).

Estimated from the SDFG alone:

- bytes per edge: the memlet's volume times the element size, times the
  iterations of the maps around the edge (so an edge inside a map counts the
  data of all iterations);
- bytes per node: what flows over its edges from and to the outside of its
  scope (a map counts the edges entering its entry and leaving its exit);
- FLOPs: for tasklets, the arithmetic operations in their code times the
  iterations of the maps around them; for a map, the sum over the tasklets
  inside; for an ONNX library node, a per-op formula from its shapes
  (MatMul/Gemm 2·M·N·K, Conv 2·outputs·Cin/groups·kernel, elementwise one per
  output element, shape ops none);
- arithmetic intensity: FLOPs per byte.

Symbolic sizes are evaluated with the session's symbol values. Keys are
``"cfg/state/node"`` for nodes and ``"cfg/state/e<index>"`` for edges (the ids
the SDFG renderer uses).
"""
import ast
import math
import re
from typing import Any, Dict, Optional, Sequence

import dace
from dace import symbolic
from dace import data as dt
from dace.sdfg import nodes as sdnodes

_SHAPE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
              "Shape", "Expand", "Identity", "Cast", "Constant", "ConstantOfShape", "Tile", "Pad", "GatherND",
              "ScatterND", "Range", "Dropout", "Size", "DepthToSpace", "SpaceToDepth", "Resize", "Where"}
_FLOPS_PER_ELEMENT = {"Softmax": 4, "LogSoftmax": 5, "LayerNormalization": 8, "BatchNormalization": 2,
                      "InstanceNormalization": 8, "Gelu": 8, "Erf": 8, "Tanh": 6, "Sigmoid": 4, "Exp": 4,
                      "Log": 4, "Sqrt": 2, "HardSwish": 4, "Mish": 10, "Softplus": 4, "Silu": 5}


def _num(expr, symbols: Dict[str, int]) -> float:
    try:
        if symbolic.issymbolic(expr):
            return float(symbolic.evaluate(expr, {k: v for k, v in symbols.items()}))
        return float(expr)
    except Exception:
        return 0.0


def _prod(shape, symbols) -> float:
    return math.prod(_num(s, symbols) for s in shape) if len(shape) else 1.0


def _memlet_bytes(sdfg: dace.SDFG, memlet, symbols) -> float:
    if memlet is None or memlet.data is None or memlet.data not in sdfg.arrays:
        return 0.0
    desc = sdfg.arrays[memlet.data]
    volume = memlet.volume
    if memlet.dynamic or volume in (0, -1):
        try:
            volume = memlet.subset.num_elements()
        except Exception:
            volume = 0
    return _num(volume, symbols) * desc.dtype.bytes


def _count_ops(code: str, language) -> int:
    if language == dace.Language.Python:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return 1
        count = 0
        for n in ast.walk(tree):
            if isinstance(n, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.IfExp)):
                count += 1
            elif isinstance(n, ast.Call):
                count += 1
            elif isinstance(n, ast.AugAssign):
                count += 1
        return count
    # C++: count arithmetic operators and calls
    body = re.sub(r"//.*|/\*.*?\*/", "", code, flags=re.S)
    ops = len(re.findall(r"(?<![+\-*/<>=!&|])[+\-*/](?![+\-=>])|[<>]=?|\?", body))
    calls = len(re.findall(r"\b(?:exp|expf|log|logf|sqrt|sqrtf|tanh|tanhf|erf|erff|pow|powf|max|min|fmax|fmaxf|"
                           r"fmin|fminf|abs|fabs|fabsf)\s*\(", body))
    return ops + calls


def _map_iterations(entry: sdnodes.MapEntry, symbols) -> float:
    try:
        return _num(entry.map.range.num_elements(), symbols)
    except Exception:
        return 0.0


def onnx_flops(node, state: dace.SDFGState, sdfg: dace.SDFG, symbols) -> float:
    """FLOPs of one ONNX library node, from its shapes."""
    op = node.schema.name

    def shape_of(conn, out=False):
        edges = state.out_edges_by_connector(node, conn) if out else state.in_edges_by_connector(node, conn)
        e = next(iter(edges), None)
        if e is None or e.data.data is None:
            return None
        return sdfg.arrays[e.data.data].shape

    out_elems = sum(_prod(sdfg.arrays[e.data.data].shape, symbols) for e in state.out_edges(node)
                    if e.data.data is not None)
    in_elems = sum(_prod(sdfg.arrays[e.data.data].shape, symbols) for e in state.in_edges(node)
                   if e.data.data is not None)
    if op in _SHAPE_OPS:
        return 0.0
    if op in ("MatMul", "Gemm", "MatMulInteger"):
        a = shape_of("A")
        if a is None or not len(a):
            return 2 * out_elems
        k = _num(a[-1], symbols)
        if op == "Gemm" and getattr(node, "transA", 0):
            k = _num(a[0], symbols)
        return 2 * out_elems * k + (out_elems if op == "Gemm" and shape_of("C") is not None else 0)
    if op in ("Conv", "ConvTranspose"):
        w = shape_of("W")
        per = _prod(w[1:], symbols) if w is not None else 1
        if op == "ConvTranspose":
            x = shape_of("X")
            return 2 * (_prod(x, symbols) if x is not None else out_elems) * per
        return 2 * out_elems * per
    if op.startswith("Reduce") or op in ("GlobalAveragePool", "GlobalMaxPool", "ArgMax", "ArgMin"):
        return in_elems
    if op in ("MaxPool", "AveragePool"):
        ks = getattr(node, "kernel_shape", None) or []
        return out_elems * max(1, math.prod(int(k) for k in ks))
    return out_elems * _FLOPS_PER_ELEMENT.get(op, 1)


def _scope_iterations(state: dace.SDFGState, node, scope: Dict, symbols, cache: Dict) -> float:
    """Product of the iteration counts of the maps around ``node`` in ``state``."""
    parent = scope.get(node)
    total = 1.0
    while parent is not None:
        if id(parent) not in cache:
            cache[id(parent)] = _map_iterations(parent, symbols) if isinstance(parent, sdnodes.MapEntry) else 1.0
        total *= cache[id(parent)]
        parent = scope.get(parent)
    return total


def _sdfg_totals(sdfg: dace.SDFG, symbols, result: Optional[Dict] = None, multiplier: float = 1.0) -> Dict[str, float]:
    """Walks ``sdfg`` (recursively); fills ``result`` (if given) and returns the totals."""
    totals = {"bytes": 0.0, "flops": 0.0}
    for state in sdfg.states():
        cfg = state.parent_graph
        cfg_id = cfg.cfg_id
        state_id = cfg.node_id(state)
        scope = state.scope_dict()
        iter_cache: Dict[int, float] = {}
        flops_of: Dict[Any, float] = {}
        # FLOPs of tasklets, library nodes and nested SDFGs
        for node in state.nodes():
            its = _scope_iterations(state, node, scope, symbols, iter_cache) * multiplier
            if isinstance(node, sdnodes.Tasklet):
                flops_of[node] = _count_ops(node.code.as_string, node.code.language) * its
            elif isinstance(node, sdnodes.NestedSDFG):
                inner = _sdfg_totals(node.sdfg, symbols, result, its)
                flops_of[node] = inner["flops"]
            elif isinstance(node, sdnodes.LibraryNode):
                from daceml.onnx.nodes import ONNXOp
                if isinstance(node, ONNXOp):
                    flops_of[node] = onnx_flops(node, state, sdfg, symbols) * its
                else:
                    flops_of[node] = sum(_prod(sdfg.arrays[e.data.data].shape, symbols) for e in state.out_edges(node)
                                         if e.data.data is not None) * its
        # map entries collect the FLOPs of everything inside their scope
        map_flops: Dict[Any, float] = {}
        for node, fl in flops_of.items():
            parent = scope.get(node)
            while parent is not None:
                map_flops[parent] = map_flops.get(parent, 0.0) + fl
                parent = scope.get(parent)
        # edges
        for index, edge in enumerate(state.edges()):
            # a memlet inside a map is per iteration: count all iterations of the maps around it
            inner = edge.src if isinstance(edge.dst, sdnodes.ExitNode) else edge.dst
            its = _scope_iterations(state, inner, scope, symbols, iter_cache)
            b = _memlet_bytes(sdfg, edge.data, symbols) * its * multiplier
            if result is not None:
                result["edges"][f"{cfg_id}/{state_id}/e{index}"] = {"bytes": b}
        # nodes: bytes over their outer edges
        for node in state.nodes():
            if isinstance(node, sdnodes.AccessNode) or isinstance(node, sdnodes.ExitNode):
                continue
            if isinstance(node, sdnodes.MapEntry):
                exit_node = state.exit_node(node)
                ins = [e for e in state.in_edges(node)]
                outs = [e for e in state.out_edges(exit_node)]
            else:
                ins, outs = state.in_edges(node), state.out_edges(node)
            its = _scope_iterations(state, node, scope, symbols, iter_cache) * multiplier
            b = sum(_memlet_bytes(sdfg, e.data, symbols) for e in list(ins) + list(outs)) * its
            fl = map_flops.get(node, 0.0) if isinstance(node, sdnodes.EntryNode) else flops_of.get(node, 0.0)
            top = scope.get(node) is None
            if top:
                totals["bytes"] += b
                totals["flops"] += fl
            if result is not None:
                entry = {"bytes": b, "flops": fl, "intensity": (fl / b) if b else None, "label": node.label,
                         "type": type(node).__name__, "top_level": top}
                result["nodes"][f"{cfg_id}/{state_id}/{state.node_id(node)}"] = entry
                if isinstance(node, sdnodes.MapEntry):
                    exit_node = state.exit_node(node)
                    result["nodes"][f"{cfg_id}/{state_id}/{state.node_id(exit_node)}"] = dict(entry, top_level=False)
        # copies between access nodes count as data movement of the state
        for edge in state.edges():
            if isinstance(edge.src, sdnodes.AccessNode) and isinstance(edge.dst, sdnodes.AccessNode) \
                    and scope.get(edge.src) is None:
                totals["bytes"] += 2 * _memlet_bytes(sdfg, edge.data, symbols) * multiplier
    return totals


def analyze(sdfg: dace.SDFG, symbols: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """Per-node and per-edge estimates plus totals (see the module docstring)."""
    symbols = dict(symbols or {})
    result: Dict[str, Any] = {"nodes": {}, "edges": {}}
    totals = _sdfg_totals(sdfg, symbols, result)
    totals["intensity"] = totals["flops"] / totals["bytes"] if totals["bytes"] else None
    totals["transient_bytes"] = transient_memory(sdfg, symbols)
    result["total"] = totals
    result["source"] = "daceml.analysis.dataflow (estimate from memlet volumes)"
    return result


def array_bytes(sdfg: dace.SDFG, names: Sequence[str], symbols: Optional[Dict[str, int]] = None) -> int:
    """Bytes of the arrays ``names`` of ``sdfg`` (symbolic sizes evaluated with ``symbols``)."""
    total = 0
    for n in names:
        desc = sdfg.arrays[n]
        size = desc.total_size
        if symbolic.issymbolic(size):
            size = symbolic.evaluate(size, symbols or {})
        total += int(size) * desc.dtype.bytes
    return total


def transient_memory(sdfg: dace.SDFG, symbols: Optional[Dict[str, int]] = None) -> int:
    """Bytes of the top-level transients ``sdfg`` allocates: what the program holds beyond its
    arguments (views and arrays no state accesses excluded; after PlanMemory, its arenas)."""
    used = {n.data for st in sdfg.states() for n in st.data_nodes()}
    names = [n for n, d in sdfg.arrays.items() if d.transient and not isinstance(d, dt.View) and n in used]
    return array_bytes(sdfg, names, symbols)
