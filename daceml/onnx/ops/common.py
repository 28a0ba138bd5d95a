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


def row_major(shape: Sequence) -> List:
    """The element strides of a contiguous row-major array of ``shape``."""
    strides, acc = [], 1
    for size in reversed(list(shape)):
        strides.append(acc)
        acc = acc * size
    return list(reversed(strides))


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


# --- C++ tasklets in maps (used by conv_pool.py, normalization.py) ------------------------------

def cpp(expr) -> str:
    """C++ text of a size expression (an int or a DaCe symbolic expression)."""
    if symbolic.issymbolic(expr):
        return "(" + symbolic.symstr(expr, cpp_mode=True) + ")"
    return str(int(expr))


def add_cpp_map(state: dace.SDFGState, name: str, ranges: Dict[str, str], inputs: Dict[str, dace.Memlet],
                outputs: Dict[str, dace.Memlet], code: str, **kwargs):
    """A map over ``ranges`` (parallel over all its dims, OpenMP ``collapse``) around one C++
    tasklet. Memlets of more than one element give pointer connectors to the subset's first
    element. ``kwargs`` go to ``add_mapped_tasklet`` (e.g. ``input_nodes``/``output_nodes`` to
    share an access node between maps). Returns (tasklet, map_entry, map_exit)."""
    tasklet, entry, exit_ = state.add_mapped_tasklet(name, ranges, inputs=inputs, code=code, outputs=outputs,
                                                     language=dace.Language.CPP, external_edges=True, **kwargs)
    entry.map.collapse = max(1, len(ranges))
    # A memlet that happens to cover one element (a depthwise conv's bias block, a 1x1 plane)
    # would reach the tasklet by value; keep it a pointer where the code uses it as one.
    sdfg = state.sdfg if hasattr(state, "sdfg") else state.parent
    for conns, memlets in ((tasklet.in_connectors, inputs), (tasklet.out_connectors, outputs)):
        for conn, memlet in memlets.items():
            if memlet.is_empty() or not _used_as_pointer(code, conn):
                continue
            try:
                single = memlet.subset.num_elements() == 1
            except TypeError:
                single = False
            if single:
                conns[conn] = dace.pointer(sdfg.arrays[memlet.data].dtype)
    return tasklet, entry, exit_


def _used_as_pointer(code: str, name: str) -> bool:
    """Whether C++ ``code`` indexes ``name`` or copies through it (memcpy)."""
    n = re.escape(name)
    return bool(re.search(rf"\b{n}\s*\[|memcpy\s*\([^;]*\b{n}\b", code))


def add_cpp_array_kernel(state: dace.SDFGState, name: str, ranges: Dict[str, str], descs: Dict[str, dt.Data],
                         inputs: Dict[str, str], outputs: Dict[str, str], code: str, code_global: str = ""):
    """Like :func:`add_cpp_map`, but every connector (``{connector: array}``) gets the whole
    array as a pointer, also for arrays of one element; the C++ code indexes it with
    ``desc.strides`` and may use the map parameters. ``code_global`` (e.g. a kernel
    function behind an include guard) is emitted once at file scope."""
    ins = {c: dace.Memlet.from_array(a, descs[a]) for c, a in inputs.items()}
    outs = {c: dace.Memlet.from_array(a, descs[a]) for c, a in outputs.items()}
    tasklet, entry, exit_ = add_cpp_map(state, name, ranges, ins, outs, code)
    for c, a in inputs.items():
        tasklet.in_connectors[c] = dace.pointer(descs[a].dtype)
    for c, a in outputs.items():
        tasklet.out_connectors[c] = dace.pointer(descs[a].dtype)
    if code_global:
        tasklet.code_global = dace.properties.CodeBlock(code_global, dace.Language.CPP)
    return tasklet, entry, exit_


# --- C++ helper code shared by generated tasklets ------------------------------------------------

def add_helper_code(sdfg: dace.SDFG, name: str, code: str) -> None:
    """Adds C++ ``code`` to the global code of ``sdfg`` once, inside an include guard named
    after ``name`` (so copies that inlining moves into a parent SDFG do not clash)."""
    guard = f"DACEML_HELPER_{name.upper()}"
    existing = sdfg.global_code.get("frame")
    if existing is not None and guard in existing.as_string:
        return
    sdfg.append_global_code(f"\n#ifndef {guard}\n#define {guard}\n{code.strip()}\n#endif  // {guard}\n")


#: ``daceml_h2f(dace::float16) -> float`` and ``daceml_f2h(float) -> dace::float16``.
#: DaCe 1.0.2's CPU ``half`` struct converts wrongly (its ``operator float`` returns the
#: bit pattern as an integer value and its constructor truncates), so generated code
#: converts through these (exact widening; narrowing rounds to nearest even, with
#: subnormals, infinities and NaN).
HALF_HELPERS = r"""
#include <cstring>
#include <cstdint>
#ifdef __CUDACC__
static inline __host__ __device__ float daceml_h2f(dace::float16 h) { return __half2float(h); }
static inline __host__ __device__ dace::float16 daceml_f2h(float f) { return __float2half(f); }
#else
static inline float daceml_h2f(dace::float16 h) {
    uint32_t sign = (uint32_t)(h.h & 0x8000u) << 16;
    uint32_t exp = (h.h >> 10) & 0x1fu, mant = h.h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        uint32_t e = 113;
        while ((mant & 0x400u) == 0) { mant <<= 1; --e; }
        bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
static inline dace::float16 daceml_f2h(float f) {
    uint32_t x;
    std::memcpy(&x, &f, sizeof x);
    uint32_t sign = x & 0x80000000u;
    x ^= sign;
    uint16_t o;
    if (x >= 0x47800000u) {
        o = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (x < 0x38800000u) {
        const uint32_t magic_bits = 0x3f000000u;
        float magic, v;
        std::memcpy(&magic, &magic_bits, sizeof magic);
        std::memcpy(&v, &x, sizeof v);
        v += magic;
        uint32_t r;
        std::memcpy(&r, &v, sizeof r);
        o = (uint16_t)(r - magic_bits);
    } else {
        uint32_t odd = (x >> 13) & 1u;
        x += 0xc8000fffu + odd;
        o = (uint16_t)(x >> 13);
    }
    dace::float16 h(0.0f);
    h.h = (uint16_t)(o | (sign >> 16));
    return h;
}
#endif
"""


def use_half_helpers(sdfg: dace.SDFG) -> None:
    """Makes ``daceml_h2f`` / ``daceml_f2h`` (see :data:`HALF_HELPERS`) available to ``sdfg``'s code."""
    add_helper_code(sdfg, "half", HALF_HELPERS)


def pointer_connectors(node, state: dace.SDFGState, sdfg: dace.SDFG) -> None:
    """Makes every connector of ``node`` a pointer, so that arrays of one element reach the
    expansion's nested SDFG as arrays (DaCe passes one-element memlets by value otherwise);
    for expansions whose C++ tasklets index ``x[0]`` or pass ``x`` on as a pointer."""
    for conns, getter in ((node.in_connectors, node.in_desc), (node.out_connectors, node.out_desc)):
        for conn in list(conns):
            conns[conn] = dace.pointer(getter(state, sdfg, conn).dtype)
