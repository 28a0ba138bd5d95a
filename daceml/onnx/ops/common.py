"""Helpers shared by the op implementations: nested SDFGs, broadcasting, attributes."""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import dace
from dace import data as dt
from dace import symbolic

from daceml.errors import InvalidNodeError


def safe_name(name: str) -> str:
    """A C identifier made from ``name``."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else "_" + s


def nested_sdfg(node, state: dace.SDFGState, sdfg: dace.SDFG, suffix: str = "expansion"
                ) -> Tuple[dace.SDFG, dace.SDFGState, Dict[str, dt.Data]]:
    """A new SDFG with one non-transient array per connector of ``node``, shaped like
    the outer arrays, and the symbols those shapes use. Returns (sdfg, state, descs)."""
    nsdfg = dace.SDFG(safe_name(f"{node.label}_{suffix}"))
    descs: Dict[str, dt.Data] = {}
    for conns, getter in ((node.in_connectors, node.in_desc), (node.out_connectors, node.out_desc)):
        for conn in conns:
            outer = getter(state, sdfg, conn)
            desc = outer.clone()
            desc.transient = False
            desc.lifetime = dace.AllocationLifetime.Scope
            nsdfg.add_datadesc(conn, desc)
            descs[conn] = desc
            for sym in map(str, desc.free_symbols):
                if sym not in nsdfg.symbols:
                    nsdfg.add_symbol(sym, sdfg.symbols.get(sym, dace.int64))
    return nsdfg, nsdfg.add_state(f"{safe_name(node.label)}_main"), descs


def shape_of(desc: dt.Data) -> Tuple:
    return tuple(desc.shape)


def is_one(size) -> bool:
    try:
        return bool(symbolic.simplify(size) == 1)
    except TypeError:
        return False


def broadcast_index(in_shape: Sequence, out_rank: int, params: Sequence[str]) -> str:
    """Subset string reading an input of ``in_shape`` broadcast to an output indexed by ``params``."""
    offset = out_rank - len(in_shape)
    if offset < 0:
        raise ValueError(f"cannot broadcast rank {len(in_shape)} to rank {out_rank}")
    idx = ["0" if is_one(size) else params[offset + i] for i, size in enumerate(in_shape)]
    return ", ".join(idx) if idx else "0"


def map_params(rank: int) -> List[str]:
    return [f"__i{k}" for k in range(rank)]


def map_ranges(shape: Sequence, params: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Map ranges over ``shape``; a rank-0 array gets one iteration ``__i0 = 0``."""
    if len(shape) == 0:
        return {"__i0": "0:1"}
    params = params or map_params(len(shape))
    return {p: f"0:{s}" for p, s in zip(params, shape)}


def full_index(shape: Sequence, params: Optional[Sequence[str]] = None) -> str:
    if len(shape) == 0:
        return "0"
    return ", ".join(params or map_params(len(shape)))


def normalize_axis(node, axis: int, rank: int, what: str = "axis") -> int:
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise InvalidNodeError(f"{node.describe()}: {what} {axis} is out of range for a tensor of rank {rank}")
    return axis % max(rank, 1)


def ints(values) -> List[int]:
    return [int(v) for v in values]


def const_value(desc_shape) -> Optional[List[int]]:
    try:
        return [int(s) for s in desc_shape]
    except TypeError:
        return None


#: constants smaller than this (elements) have their values recorded for implementations
_RECORD_LIMIT = 4096


def record_constant(sdfg: dace.SDFG, array: str, value: np.ndarray) -> None:
    """Remembers the value of a weight/constant array, so that implementations can read
    inputs such as Reshape's ``shape`` or ReduceSum's ``axes`` at expansion time."""
    if value.size <= _RECORD_LIMIT:
        if not hasattr(sdfg, "_daceml_constants"):
            sdfg._daceml_constants = {}
        sdfg._daceml_constants[array] = np.array(value)


def constant_input(node, state: dace.SDFGState, sdfg: dace.SDFG, connector: str) -> Optional[np.ndarray]:
    """The value of input ``connector`` if it is a known constant (initializer or Constant
    node of the model), else None. Also None if the connector is absent."""
    edges = list(state.in_edges_by_connector(node, connector))
    if not edges:
        return None
    return getattr(sdfg, "_daceml_constants", {}).get(edges[0].data.data)
