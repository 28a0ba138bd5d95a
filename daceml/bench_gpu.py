"""The GPU benchmark: ``python examples/gpu_benchmark.py`` / ``daceml bench --device cuda`` /
``python -m daceml.bench_gpu``.

On one NVIDIA GPU, each workload runs through PyTorch eager, torch.compile (inductor) and
daceml (``DaceModule(..., device="cuda")``), in interleaved rounds (A B C A B C ...); every
call is timed with CUDA events on the current stream, and the table has the median of
``--runs`` calls (default 50) of each, daceml's speedups, its max error against eager, and
the compile times. Workloads:

- ``bert_layer``: BERT-base encoder layer (B=8, S=128, H=768), inference;
- ``bert_layer_train``: the same layer, one training step (forward, MSE loss, backward,
  SGD step; torch's optimizer on the device for every variant);
- ``mbconv_block``: an EfficientNet-B0 MBConv block (24 channels, expand 6, 3x3 depthwise,
  squeeze-excitation; B=32, 56x56), inference;
- ``resnet50_bottleneck``: a ResNet-50 bottleneck block (256 -> 64 -> 256; B=32, 56x56),
  inference.

fp32 throughout, TF32 off (``--allow-tf32`` switches it on for PyTorch's matmuls and
convolutions; daceml computes in fp32 either way). daceml's programs are compiled in
parallel worker processes first (the content-hashed build cache hands them to the timing
process) while eager and torch.compile warm up. Every workload is time-boxed: a variant
that fails or runs out of time is left out of the table with the reason in its notes.
Output: ``gpu_bench.md`` and ``gpu_bench.json`` in ``--out`` (default reports/), naming
the GPU.

``--dry-run`` needs no GPU: it builds every workload, compiles daceml's CUDA programs with
nvcc (without loading them) and writes the report with no timings (default --out
reports/tmp), i.e. it runs everything up to the point where GPU code would be loaded.

    python -m daceml.bench_gpu [--only REGEX] [--runs 50] [--out reports] [--budget 480] [--dry-run]
"""
import argparse
import concurrent.futures as futures
import copy
import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from daceml.bench import _quiet  # output of torch.compile / the exporter kept off the table

log = logging.getLogger("daceml.bench_gpu")

VARIANTS = ("eager", "torch.compile", "daceml")


@dataclasses.dataclass
class Workload:
    name: str
    description: str
    make: Callable[[], Tuple[torch.nn.Module, Tuple[torch.Tensor, ...]]]
    training: bool = False
    flops: Optional[float] = None


def _bert():
    from daceml.testing import bench_models as bm
    torch.manual_seed(0)
    return bm.BertEncoderLayer(), (torch.randn(8, 128, 768), )


def _mbconv():
    from daceml.testing import bench_models as bm
    torch.manual_seed(0)
    return bm.randomize_batchnorm(bm.MBConvBlock(24, 24, 6, 3, 1)), (torch.randn(32, 24, 56, 56), )


def _bottleneck():
    from daceml.testing import bench_models as bm
    torch.manual_seed(0)
    return bm.randomize_batchnorm(bm.Bottleneck(256, 64, 1)), (torch.randn(32, 256, 56, 56), )


_B, _S, _H = 8, 128, 768
_BERT_FLOPS = 2 * _B * _S * (4 * _H * _H + 2 * _H * 3072) + 4 * _B * _S * _S * _H

WORKLOADS = [
    Workload("bert_layer", "BERT-base encoder layer, B=8 S=128 H=768, inference", _bert, flops=_BERT_FLOPS),
    Workload("bert_layer_train", "BERT-base encoder layer, B=8 S=128 H=768, training step (fwd+bwd+SGD)", _bert,
             training=True, flops=3 * _BERT_FLOPS),
    Workload("mbconv_block", "EfficientNet-B0 MBConv (24ch, x6, 3x3, SE), B=32 56x56, inference", _mbconv),
    Workload("resnet50_bottleneck", "ResNet-50 bottleneck (256-64-256), B=32 56x56, inference", _bottleneck),
]


def _error_line(ex: BaseException) -> str:
    text = str(ex).strip().splitlines()
    return f"{type(ex).__name__}: {text[0][:300] if text else ''}"


# --- daceml builds (in worker processes) -----------------------------------------------------------

def _dace_module(w: Workload, module: torch.nn.Module):
    from daceml.torch import DaceModule
    return DaceModule(module, device="cuda", name=f"gpubench_{w.name}")


def _place(w: Workload, device: str):
    module, inputs = w.make()
    module = module.train(w.training).to(device)
    return module, tuple(t.to(device) for t in inputs)


def prebuild(name: str, device: str) -> Dict[str, Any]:
    """Builds daceml's program(s) of workload ``name`` into the build cache (run in a worker
    process; on a machine without a GPU the CUDA code is compiled, not loaded)."""
    logging.basicConfig(level=logging.WARNING)
    w = {w.name: w for w in WORKLOADS}[name]
    t0 = time.perf_counter()
    with _quiet():
        module, inputs = _place(w, device)
        dm = _dace_module(w, module)
        if w.training:
            program = dm.prepare(*inputs, backward=True)
            builds = [program.forward_program, program.backward_program]
        else:
            with torch.no_grad():
                builds = [dm.prepare(*inputs)]
    from daceml.targets import cuda
    sdfgs = list(program._device_sdfgs.values()) if w.training else [dm._last.device_sdfg]
    copies = [str(c) for s in sdfgs for c in cuda.host_device_copies(s)]
    return {"seconds": time.perf_counter() - t0, "programs": len(builds), "host_device_copies": copies}


def start_prebuilds(names: List[str], device: str, workers: int):
    """Starts :func:`prebuild` of every workload in parallel processes: (pool, name -> future)."""
    ctx = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(max_workers=max(1, min(workers, len(names))), mp_context=ctx)
    return pool, {n: pool.submit(prebuild, n, device) for n in names}


def wait_prebuilds(pool, jobs: Dict[str, Any], deadline: float) -> Dict[str, Dict[str, Any]]:
    """name -> what :func:`prebuild` returned, or {"error": ...}; builds still running at
    ``deadline`` (a time.perf_counter() value) are abandoned and their processes ended."""
    results: Dict[str, Dict[str, Any]] = {}
    try:
        for job in futures.as_completed(jobs.values(), timeout=max(0.0, deadline - time.perf_counter())):
            name = next(n for n, j in jobs.items() if j is job)
            try:
                results[name] = job.result()
                log.info("daceml %s: built in %.0f s", name, results[name]["seconds"])
            except Exception as ex:  # reported per workload
                results[name] = {"error": f"build failed: {_error_line(ex)}"}
                log.warning("daceml %s: %s", name, results[name]["error"])
    except futures.TimeoutError:
        for name, job in jobs.items():
            if name not in results:
                results[name] = {"error": "build not finished within the compile budget"}
                job.cancel()
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    return results


# --- timing ------------------------------------------------------------------------------------------

class TrainStep:
    """One training step of ``module``: forward, MSE loss against ``target``, backward, SGD step."""

    def __init__(self, module, inputs, target, lr: float = 1e-4):
        self.module, self.inputs, self.target = module, inputs, target
        self.opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr)

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.module(*self.inputs), self.target)
        loss.backward()
        self.opt.step()
        return loss


def _grads(module) -> List[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else None for p in module.parameters()]


def _max_error(got, want) -> float:
    errors = [float((g - w).abs().max()) for g, w in zip(got, want) if g is not None and w is not None]
    return max(errors) if errors else float("nan")


def time_variants(variants: Dict[str, Callable[[], Any]], runs: int, budget_s: float) -> Dict[str, List[float]]:
    """Interleaved rounds; each call timed with CUDA events; stops early (with fewer runs) when
    the budget is spent."""
    times: Dict[str, List[Tuple[Any, Any]]] = {k: [] for k in variants}
    for f in variants.values():  # warm-up
        f()
    torch.cuda.synchronize()
    deadline = time.perf_counter() + budget_s
    for _ in range(runs):
        for k, f in variants.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            f()
            end.record()
            times[k].append((start, end))
        if time.perf_counter() > deadline:
            break
    torch.cuda.synchronize()
    return {k: [s.elapsed_time(e) for s, e in v] for k, v in times.items()}


def _new_row(w: Workload) -> Dict[str, Any]:
    return {"workload": w.name, "description": w.description, "training": w.training,
            "compile_s": {}, "median_ms": {}, "runs": {}, "notes": []}


class Bench:
    """One workload on the GPU: :meth:`setup` (eager reference, torch.compile warmed up), then
    :meth:`add_daceml` (once its program is built), then :meth:`time`."""

    def __init__(self, w: Workload):
        self.w = w
        self.row = _new_row(w)
        self.variants: Dict[str, Callable[[], Any]] = {}

    def _grad(self):
        return torch.enable_grad() if self.w.training else torch.no_grad()

    def setup(self, compile_torch: Optional[str]) -> None:
        """``compile_torch``: None to compile with torch.compile, else why not."""
        w, row = self.w, self.row
        self.module, self.inputs = module, inputs = _place(w, "cuda")
        if w.training:
            with torch.no_grad():
                self.target = torch.randn_like(module(*inputs))
            self.copies = {k: copy.deepcopy(module) for k in VARIANTS}
            probe = TrainStep(copy.deepcopy(module), inputs, self.target)
            probe()
            self.reference = _grads(probe.module)  # the gradients of the first step, eager
            self.variants["eager"] = TrainStep(self.copies["eager"], inputs, self.target)
        else:
            self.variants["eager"] = lambda: module(*inputs)
            with torch.no_grad():
                self.reference = module(*inputs)
        if compile_torch is not None:
            row["notes"].append(f"torch.compile skipped: {compile_torch}")
            return
        t0 = time.perf_counter()
        try:
            with self._grad(), _quiet():
                compiled = torch.compile(self.copies["torch.compile"] if w.training else module)
                step = TrainStep(compiled, inputs, self.target) if w.training else (lambda: compiled(*inputs))
                step()
                torch.cuda.synchronize()
            self.variants["torch.compile"] = step
            row["compile_s"]["torch.compile"] = time.perf_counter() - t0
        except Exception as ex:
            row["notes"].append(f"torch.compile skipped: {_error_line(ex)}")
            log.warning("%s: torch.compile failed: %s", w.name, _error_line(ex))

    def add_daceml(self, built: Dict[str, Any]) -> None:
        w, row = self.w, self.row
        if "error" in built:
            row["notes"].append(f"daceml skipped: {built['error']}")
            return
        t0 = time.perf_counter()
        try:
            with self._grad():
                if w.training:
                    module = self.copies["daceml"]
                    dm = _dace_module(w, module)
                    step = TrainStep(dm, self.inputs, self.target)
                    saved = copy.deepcopy(module.state_dict())
                    step()
                    row["max_abs_error"] = _max_error(_grads(module), self.reference)
                    row["error_of"] = "parameter gradients of the first step"
                    module.load_state_dict(saved)
                    self.variants["daceml"] = step
                else:
                    dm = _dace_module(w, self.module)
                    out = dm(*self.inputs)
                    row["max_abs_error"] = float((out - self.reference).abs().max())
                    row["error_of"] = "output"
                    self.variants["daceml"] = lambda: dm(*self.inputs)
                torch.cuda.synchronize()
            row["compile_s"]["daceml"] = built.get("seconds", 0.0) + time.perf_counter() - t0
            row["daceml_host_device_copies"] = len(built.get("host_device_copies", []))
            from daceml import _dispatch
            row["daceml_dispatch"] = _dispatch.implementation_name()
        except Exception as ex:
            row["notes"].append(f"daceml failed: {_error_line(ex)}")
            log.warning("%s: daceml failed:\n%s", w.name, traceback.format_exc())

    def time(self, runs: int, budget_s: float) -> Dict[str, Any]:
        row = self.row
        with self._grad():
            timings = time_variants(self.variants, runs, budget_s)
        for k, v in timings.items():
            row["median_ms"][k] = statistics.median(v)
            row["runs"][k] = len(v)
            if len(v) < runs:
                row["notes"].append(f"{k}: {len(v)} runs (time budget)")
        med = row["median_ms"]
        if "daceml" in med:
            row["speedup_vs_eager"] = med["eager"] / med["daceml"]
            if "torch.compile" in med:
                row["speedup_vs_torch_compile"] = med["torch.compile"] / med["daceml"]
            if self.w.flops:
                row["daceml_tflops"] = self.w.flops / (med["daceml"] / 1000) / 1e12
        if self.w.flops:
            row["eager_tflops"] = self.w.flops / (med["eager"] / 1000) / 1e12
        return row


# --- report ------------------------------------------------------------------------------------------

def machine_info(dry_run: bool) -> Dict[str, Any]:
    import dace
    info: Dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "dace": dace.__version__, "host": platform.node()}
    try:
        from importlib.metadata import version
        info["daceml"] = version("daceml")
    except Exception:
        info["daceml"] = "source tree"
    from daceml import _dispatch
    from daceml.targets import cuda
    info["daceml_dispatch"] = _dispatch.implementation_name()
    info["cuda_arch"] = cuda.arch()
    if dry_run or not torch.cuda.is_available():
        info["gpu"] = "none (dry run: compiled, not run)"
    else:
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["gpu_sms"] = p.multi_processor_count
        info["cuda_runtime"] = torch.version.cuda
        info["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _secs(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.0f}"


def write_reports(rows: List[Dict[str, Any]], machine: Dict[str, Any], out: str, runs: int) -> Tuple[str, str]:
    os.makedirs(out, exist_ok=True)
    lines = [f"# daceml GPU benchmark: {machine['gpu']}", "",
             f"{machine['date']}; torch {machine['torch']}, dace {machine['dace']}, daceml {machine['daceml']} "
             f"({machine['daceml_dispatch']} dispatch), Python {machine['python']}, CUDA arch sm_{machine['cuda_arch']}"
             + (f", CUDA runtime {machine['cuda_runtime']}, TF32 {'on' if machine['tf32'] else 'off'}"
                if "cuda_runtime" in machine else "") + ".", "",
             (f"Median of {runs} calls per variant (CUDA events, interleaved rounds), fp32. Speedup > 1: daceml "
              "is faster." if runs else "Dry run: compiled, nothing loaded or timed."), "",
             "| workload | eager (ms) | torch.compile (ms) | daceml (ms) | vs eager | vs torch.compile | daceml max err "
             "| compile s (torch.compile / daceml) | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        med, cs = r["median_ms"], r["compile_s"]
        lines.append(
            f"| {r['workload']} | {_fmt(med.get('eager'))} | {_fmt(med.get('torch.compile'))} | "
            f"{_fmt(med.get('daceml'))} | {_fmt(r.get('speedup_vs_eager'), 2)} | "
            f"{_fmt(r.get('speedup_vs_torch_compile'), 2)} | {_fmt(r.get('max_abs_error'), 2)} | "
            f"{_secs(cs.get('torch.compile'))} / {_secs(cs.get('daceml'))} | {'; '.join(r['notes'])} |")
    lines += ["", "Workloads:", ""] + [f"- `{r['workload']}`: {r['description']}" for r in rows]
    md_path, json_path = os.path.join(out, "gpu_bench.md"), os.path.join(out, "gpu_bench.json")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(json_path, "w") as f:
        json.dump({"machine": machine, "runs": runs, "rows": rows}, f, indent=1)
    return md_path, json_path


# --- main --------------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="daceml bench --device cuda", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda"], help=argparse.SUPPRESS)
    parser.add_argument("--only", help="regular expression over workload names")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--out", default=None, help="report folder (default reports/, reports/tmp for --dry-run)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run, compiles included")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes compiling daceml's programs in parallel")
    parser.add_argument("--no-torch-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--allow-tf32", action="store_true", help="let PyTorch use TF32 for matmuls and convolutions")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: build and compile everything, load and time nothing")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    selected = [w for w in WORKLOADS if not args.only or re.search(args.only, w.name)]
    if args.list:
        for w in selected:
            print(f"{w.name:22s} {w.description}")
        return 0
    if not selected:
        print(f"no workload matches {args.only!r}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("reports", "tmp" if args.dry_run else "")
    start = time.perf_counter()
    if not args.dry_run:
        from daceml.targets import cuda
        cuda.require_gpu("the GPU benchmark (use --dry-run to compile without a GPU)")
        if not torch.cuda.is_available():
            raise SystemExit("torch sees no CUDA device (a CPU build of torch?); the GPU benchmark needs one")
        torch.backends.cuda.matmul.allow_tf32 = args.allow_tf32
        torch.backends.cudnn.allow_tf32 = args.allow_tf32
    machine = machine_info(args.dry_run)
    log.info("GPU benchmark on %s: %s", machine["gpu"], ", ".join(w.name for w in selected))
    # daceml's programs compile in worker processes while eager and torch.compile warm up here
    names = [w.name for w in selected]
    compile_budget = 0.6 * args.budget
    if args.dry_run:
        pool, jobs = start_prebuilds(names, "cpu", args.workers)
        built = wait_prebuilds(pool, jobs, start + compile_budget)
        rows = []
        for w in selected:
            b = built[w.name]
            notes = [f"daceml compile failed: {b['error']}"] if "error" in b else \
                [f"dry run: {b['programs']} CUDA program(s) compiled in {b['seconds']:.0f} s, "
                 f"{len(b['host_device_copies'])} host<->device copies"]
            rows.append({"workload": w.name, "description": w.description, "training": w.training,
                         "compile_s": {"daceml": b.get("seconds")}, "median_ms": {}, "runs": {}, "notes": notes,
                         "daceml_host_device_copies": len(b.get("host_device_copies", []))})
        md, js = write_reports(rows, machine, out, 0)
        log.info("dry run finished in %.0f s: %s, %s", time.perf_counter() - start, md, js)
        return 1 if any("error" in b or b["host_device_copies"] for b in built.values()) else 0
    # compile phase: daceml's programs build in worker processes while eager and torch.compile warm up here
    pool, jobs = start_prebuilds(names, "cuda", args.workers)
    benches = []
    for w in selected:
        why_not = "--no-torch-compile" if args.no_torch_compile else None
        if why_not is None and time.perf_counter() - start > compile_budget:
            why_not = f"the compile budget ({compile_budget:.0f} s) was spent"
        bench = Bench(w)
        try:
            bench.setup(why_not)
        except Exception as ex:
            log.warning("%s failed:\n%s", w.name, traceback.format_exc())
            bench.row["notes"].append(f"failed: {_error_line(ex)}")
            bench.variants.clear()
        benches.append(bench)
    if not all(j.done() for j in jobs.values()):
        log.info("waiting for daceml's builds")
    built = wait_prebuilds(pool, jobs, start + compile_budget)
    # timing phase: nothing else runs; each workload gets an equal share of the time left
    rows = []
    for i, bench in enumerate(benches):
        if bench.variants:
            bench.add_daceml(built[bench.w.name])
            left = args.budget - (time.perf_counter() - start)
            share = left / (len(benches) - i)
            log.info("%s: timing (%.0f s budget)", bench.w.name, share)
            try:
                bench.time(args.runs, share)
            except Exception as ex:
                log.warning("%s failed:\n%s", bench.w.name, traceback.format_exc())
                bench.row["notes"].append(f"timing failed: {_error_line(ex)}")
        rows.append(bench.row)
        bench.variants.clear()
        torch.cuda.empty_cache()
    md, js = write_reports(rows, machine, out, args.runs)
    log.info("finished in %.0f s: %s, %s", time.perf_counter() - start, md, js)
    print(open(md).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
