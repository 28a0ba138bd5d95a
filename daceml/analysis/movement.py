"""Total data movement per lowering level, its lower bound, and the roofline position.

The model of data movement is the kernel's: every top-level computation of a
state (an ONNX node, a map, a tasklet, a nested SDFG) reads each array it
reads once and writes each array it writes once; a copy between two arrays
reads and writes once. So fusion, which removes intermediate arrays, lowers the
total, and the total can fall to the lower bound: every program input and
weight read once, every output written once.

FLOPs come from the ONNX nodes' shapes (:func:`daceml.analysis.dataflow.onnx_flops`)
and do not change with the level. The machine's bandwidth and GEMM rate are
measured once (numpy copy and OpenBLAS SGEMM) and cached in the build cache folder.
"""
import copy
import dataclasses
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np

import dace
from dace import symbolic
from dace.sdfg import nodes as sdnodes

from daceml.analysis.dataflow import onnx_flops, transient_memory

log = logging.getLogger(__name__)


def _size(desc, symbols: Dict[str, int]) -> float:
    total = desc.total_size
    if symbolic.issymbolic(total):
        total = symbolic.evaluate(total, symbols)
    return float(total) * desc.dtype.bytes


def _memlet_bytes(sdfg, memlet, symbols) -> float:
    desc = sdfg.arrays[memlet.data]
    try:
        n = memlet.subset.num_elements()
        n = float(symbolic.evaluate(n, symbols)) if symbolic.issymbolic(n) else float(n)
    except Exception:
        return _size(desc, symbols)
    return min(n * desc.dtype.bytes, _size(desc, symbols))


def kernel_traffic(sdfg: dace.SDFG, symbols: Optional[Dict[str, int]] = None) -> float:
    """Bytes moved by ``sdfg`` in the kernel model (see the module docstring)."""
    from daceml.transformation.views import can_be_view
    symbols = symbols or {}
    total = 0.0
    for state in sdfg.states():
        scope = state.scope_dict()
        for node in state.nodes():
            if scope.get(node) is not None or isinstance(node, (sdnodes.AccessNode, sdnodes.ExitNode)):
                continue
            if can_be_view(state, node):  # a reshape that level 4 makes a view: no bytes move
                continue
            if isinstance(node, sdnodes.MapEntry):
                ins, outs = state.in_edges(node), state.out_edges(state.exit_node(node))
            else:
                ins, outs = state.in_edges(node), state.out_edges(node)
            seen = {}
            for e in list(ins) + list(outs):
                if e.data.is_empty() or e.data.data not in sdfg.arrays:
                    continue
                key = (e.data.data, e in outs)
                seen[key] = max(seen.get(key, 0.0), _memlet_bytes(sdfg, e.data, symbols))
            total += sum(seen.values())
        for e in state.edges():
            if isinstance(e.src, sdnodes.AccessNode) and isinstance(e.dst, sdnodes.AccessNode) and \
                    not e.data.is_empty() and scope.get(e.src) is None and not any(
                        isinstance(sdfg.arrays[n.data], dace.data.View) for n in (e.src, e.dst)):
                total += 2 * _memlet_bytes(sdfg, e.data, symbols)
    return total


def lower_bound(sdfg: dace.SDFG, symbols: Optional[Dict[str, int]] = None) -> float:
    """Every non-transient array (inputs, weights, outputs) moved once."""
    symbols = symbols or {}
    return sum(_size(d, symbols) for d in sdfg.arrays.values() if not d.transient)


def total_flops(sdfg: dace.SDFG, symbols: Optional[Dict[str, int]] = None) -> float:
    """FLOPs of an SDFG of ONNX library nodes."""
    from daceml.onnx.nodes import ONNXOp
    symbols = symbols or {}
    return sum(onnx_flops(n, st, st.sdfg, symbols) for n, st in sdfg.all_nodes_recursive() if isinstance(n, ONNXOp))


@dataclasses.dataclass
class MachinePeaks:
    bandwidth_gbs: float
    gemm_gflops: float
    threads: int


def machine_peaks(refresh: bool = False) -> MachinePeaks:
    """This machine's memory bandwidth (numpy copy of 256 MiB) and SGEMM rate (2048^3, OpenBLAS),
    medians of 5 runs; cached per machine in the build cache folder."""
    from daceml import config
    path = os.path.join(config.settings.cache_dir, "machine_peaks.json")
    threads = os.cpu_count() or 1
    if not refresh and os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
        if data.get("threads") == threads:
            return MachinePeaks(**data)
    a = np.ones(64 << 20, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    bandwidth = 2 * a.nbytes / float(np.median(times)) / 1e9
    n = 2048
    x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    x @ x
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        x @ x
        times.append(time.perf_counter() - t0)
    gemm = 2 * n**3 / float(np.median(times)) / 1e9
    peaks = MachinePeaks(bandwidth, gemm, threads)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(peaks), f)
    return peaks


@dataclasses.dataclass
class LevelFigures:
    level: int
    stage: str
    bytes: float
    kernels: int
    #: bytes of the top-level transients the program holds (after level 4: the shared arenas)
    transient_bytes: int = 0


@dataclasses.dataclass
class MovementReport:
    name: str
    flops: float
    lower_bound: float
    levels: List[LevelFigures]
    seconds: Optional[float] = None
    peaks: Optional[MachinePeaks] = None

    def roofline(self) -> Optional[Dict[str, float]]:
        """Attainable and achieved GFLOP/s at the final level's arithmetic intensity."""
        if self.seconds is None or self.peaks is None:
            return None
        final = self.levels[-1].bytes
        intensity = self.flops / final if final else float("inf")
        attainable = min(self.peaks.gemm_gflops, intensity * self.peaks.bandwidth_gbs)
        achieved = self.flops / self.seconds / 1e9
        return {"intensity": intensity, "attainable_gflops": attainable, "achieved_gflops": achieved,
                "fraction_of_roofline": achieved / attainable if attainable else 0.0,
                "bound": "memory" if intensity * self.peaks.bandwidth_gbs < self.peaks.gemm_gflops else "compute"}

    def table(self) -> str:
        rows = [f"# data movement: {self.name}", "",
                f"FLOPs {self.flops / 1e6:.1f} M; lower bound {self.lower_bound / 1e6:.2f} MB "
                "(inputs, weights and outputs moved once)", "",
                "| level | stage | kernels | bytes moved (MB) | x lower bound | FLOP/byte | transients (MB) |",
                "|---|---|---|---|---|---|---|"]
        for lv in self.levels:
            rows.append(f"| {lv.level} | {lv.stage} | {lv.kernels} | {lv.bytes / 1e6:.2f} | "
                        f"{lv.bytes / self.lower_bound if self.lower_bound else 0:.2f} | "
                        f"{self.flops / lv.bytes if lv.bytes else 0:.2f} | {lv.transient_bytes / 1e6:.2f} |")
        roof = self.roofline()
        if roof:
            rows += ["", f"measured {1000 * self.seconds:.3f} ms: {roof['achieved_gflops']:.1f} GFLOP/s of an "
                     f"attainable {roof['attainable_gflops']:.1f} ({100 * roof['fraction_of_roofline']:.0f}%, "
                     f"{roof['bound']}-bound; machine: {self.peaks.bandwidth_gbs:.1f} GB/s, "
                     f"{self.peaks.gemm_gflops:.1f} GFLOP/s SGEMM)"]
        return "\n".join(rows)


def _kernels(sdfg: dace.SDFG) -> int:
    count = 0
    for state in sdfg.states():
        scope = state.scope_dict()
        count += sum(1 for n in state.nodes() if scope.get(n) is None
                     and not isinstance(n, (sdnodes.AccessNode, sdnodes.ExitNode)))
    return count


def movement_report(model, symbols: Optional[Dict[str, int]] = None, measure: bool = False,
                    inputs: Optional[List[Any]] = None) -> MovementReport:
    """Bytes moved by ``model`` (an ONNXModel, not yet optimized) at levels 0..4 of the pipeline.
    With ``measure``, the level-4 program is also run on ``inputs`` for the roofline position."""
    from daceml.transformation import optimize
    from daceml.transformation.pipeline import LEVEL_NAMES
    symbols = dict(symbols or {})
    work = copy.copy(model)
    work.sdfg = copy.deepcopy(model.sdfg)
    work.weights = dict(model.weights)
    work._array_names = dict(model._array_names)
    work._program = None
    flops = total_flops(work.sdfg, symbols)
    bound = lower_bound(work.sdfg, symbols)
    levels = [LevelFigures(0, "imported", kernel_traffic(work.sdfg, symbols), _kernels(work.sdfg),
                           transient_memory(work.sdfg, symbols))]
    from daceml.transformation.pipeline import pipeline
    for lv, passes in enumerate(pipeline(4), start=1):
        optimize(work, passes=[passes])
        levels.append(LevelFigures(lv, LEVEL_NAMES[lv], kernel_traffic(work.sdfg, symbols), _kernels(work.sdfg),
                                   transient_memory(work.sdfg, symbols)))
    report = MovementReport(model.name, flops, bound, levels)
    if measure:
        work(*inputs)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            work(*inputs)
            times.append(time.perf_counter() - t0)
        report.seconds = float(np.median(times))
        report.peaks = machine_peaks()
    return report
