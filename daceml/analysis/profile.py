"""Where the time goes: median time per top-level node of a program (DaCe timer instrumentation).

    python -m daceml.analysis.profile WORKLOAD [--rounds 5] [--top 25]

profiles one workload of the benchmark suite (``daceml.bench``) after the whole pipeline (a
``*_train`` workload: its forward and backward programs, on random arguments);
:func:`node_times` does it for any SDFG and arguments (the GUI's per-node overlay uses it).
The instrumented build is a copy: the SDFG given is not changed.
"""
import argparse
import contextlib
import copy
import glob
import os
import statistics
import sys
import uuid
from typing import Any, Dict, List, Optional, Tuple

import dace
import numpy as np
from dace.sdfg import nodes as sdnodes

NodeKey = str  # "cfg_id/state_id/node_id" of the instrumented copy (same ids as the original)


def _timed_nodes(sdfg: dace.SDFG):
    for node, parent in sdfg.all_nodes_recursive():
        if isinstance(parent, dace.SDFGState) and parent.scope_dict()[node] is None and \
                isinstance(node, (sdnodes.MapEntry, sdnodes.LibraryNode, sdnodes.NestedSDFG, sdnodes.Tasklet)):
            yield node, parent


def node_times(sdfg: dace.SDFG, args: Dict[str, Any], rounds: int = 5, folder: Optional[str] = None,
               lock: Any = None) -> Dict[NodeKey, float]:
    """Median milliseconds per top-level node of each state (maps, library nodes, nested SDFGs,
    tasklets) of ``sdfg`` over ``rounds`` calls with ``args``, from an instrumented build in
    ``folder`` (default: a fresh folder in daceml's cache); the copy and the compile run while
    holding ``lock`` if one is given. Keys are ``cfg_id/state_id/node_id``."""
    from dace.codegen.instrumentation.report import InstrumentationReport
    from daceml import config
    with lock if lock is not None else contextlib.nullcontext():
        sdfg = copy.deepcopy(sdfg)
        for node, _ in _timed_nodes(sdfg):
            node.instrument = dace.InstrumentationType.Timer
        # DaCe writes reports into the build folder baked into the code: build in a folder of our own
        sdfg.build_folder = folder or os.path.join(config.settings.cache_dir, "instrumented",
                                                   f"{sdfg.name}-{uuid.uuid4().hex[:8]}")
        csdfg = sdfg.compile()
    try:
        for _ in range(rounds):
            csdfg(**args)
    finally:
        csdfg.finalize()
    samples: Dict[str, List[float]] = {}
    for path in sorted(glob.glob(os.path.join(sdfg.build_folder, "perf", "report-*.json"))):
        report = InstrumentationReport(path)
        for (cfg_id, state_id, node_id), by_name in report.durations.items():
            if node_id is None or node_id < 0:
                continue
            for per_thread in by_name.values():
                for times in per_thread.values():
                    samples.setdefault(f"{cfg_id}/{state_id}/{node_id}", []).extend(times)
    return {k: statistics.median(t) for k, t in samples.items() if t}


def describe(sdfg: dace.SDFG, key: NodeKey) -> str:
    """A readable name for a node key of :func:`node_times`."""
    cfg_id, state_id, node_id = (int(x) for x in key.split("/"))
    cfg = sdfg.cfg_list[cfg_id]
    state = cfg.node(state_id)
    node = state.node(node_id)
    kind = type(node).__name__
    if isinstance(node, sdnodes.MapEntry):
        label = f"map {node.map.label}[{', '.join(node.map.params)}] over {node.map.range}"
    else:
        label = getattr(node, "label", str(node))
    return f"{kind}: {label}"


def random_arguments(sdfg: dace.SDFG, symbols: Dict[str, int], seed: int = 0) -> Dict[str, Any]:
    """Arguments for every array of ``sdfg.arglist()``: floats uniform in [-1, 1), integers and
    booleans zero; sizes from ``symbols`` (which are added to the result)."""
    from daceml.onnx import dtypes as odt
    rng = np.random.default_rng(seed)
    args: Dict[str, Any] = dict(symbols)
    for name, desc in sdfg.arglist().items():
        if not isinstance(desc, dace.data.Array):
            continue
        shape = tuple(int(dace.symbolic.evaluate(s, symbols)) if dace.symbolic.issymbolic(s) else int(s)
                      for s in desc.shape)
        dtype = odt.to_numpy(desc.dtype)
        if np.issubdtype(dtype, np.floating):
            args[name] = rng.uniform(-1, 1, size=shape).astype(dtype)
        else:
            args[name] = np.zeros(shape, dtype=dtype)
    return args


def profile_workload(name: str, rounds: int = 5) -> Tuple[dace.SDFG, List[Tuple[str, float]]]:
    """(final SDFG, [(node description, median ms)] sorted by time) for a workload of daceml.bench."""
    import torch
    from daceml import bench
    from daceml.torch import DaceModule
    workloads = {w.name: w for w in bench._workloads()}
    if name not in workloads:
        raise SystemExit(f"unknown workload {name!r}; one of {sorted(workloads)}")
    w = workloads[name]
    if w.training:
        raise SystemExit(f"{name}: profiling shows forward programs only; use the inference workload")
    module, inputs = w.make()
    dm = DaceModule(module, name=f"profile_{name}")
    with torch.no_grad():
        dm(*inputs)
    sdfg = dm.sdfg
    args = random_arguments(sdfg, {})
    # the real inputs, weights and constants: random batch-norm variances would be negative, and
    # NaNs take the slow paths of vector math functions
    build, model = dm._last, dm.onnx_model
    state = dict(module.state_dict())
    for onnx_name, key in build.state_inputs.items():
        args[model._array(onnx_name)] = state[key].detach().numpy()
    for onnx_name, value in model.weights.items():
        if model._array(onnx_name) in args and onnx_name not in build.state_inputs:
            args[model._array(onnx_name)] = model._weight_array(onnx_name, value)
    for onnx_name, value in zip(model.inputs, inputs):
        args[model._array(onnx_name)] = value.detach().numpy()
    times = node_times(sdfg, args, rounds=rounds)
    rows = sorted(((describe(sdfg, k), t) for k, t in times.items()), key=lambda r: -r[1])
    return sdfg, rows


def profile_training(name: str, rounds: int = 3) -> Dict[str, List[Tuple[str, float]]]:
    """Per-node times of the forward and backward programs of a training workload (random
    arguments; weights and inputs real for the forward program)."""
    import torch
    from daceml import bench
    from daceml.torch import DaceModule
    workloads = {w.name: w for w in bench._workloads()}
    module, inputs = workloads[name].make()
    dm = DaceModule(module, name=f"profile_{name}")
    bench._train_step(dm, inputs)()
    programs = dm.onnx_model.__dict__["_daceml_training_programs"]
    program = next(iter(programs.values()))
    result: Dict[str, List[Tuple[str, float]]] = {}
    for sdfg in (program.result.forward_sdfg, program.result.backward_sdfg):
        args = random_arguments(sdfg, {})
        times = node_times(sdfg, args, rounds=rounds)
        result[sdfg.name] = sorted(((describe(sdfg, k), t) for k, t in times.items()), key=lambda r: -r[1])
    del torch
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daceml.analysis.profile", description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    ns = parser.parse_args(argv)
    if ns.workload.endswith("_train"):
        tables = profile_training(ns.workload, ns.rounds)
    else:
        tables = {ns.workload: profile_workload(ns.workload, ns.rounds)[1]}
    for title, rows in tables.items():
        total = sum(t for _, t in rows)
        print(f"{title}: {total:.2f} ms in {len(rows)} top-level nodes (sum of medians)")
        for label, t in rows[:ns.top]:
            print(f"{t:9.3f} ms {100 * t / total:5.1f}%  {label[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
