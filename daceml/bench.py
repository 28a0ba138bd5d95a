"""The CPU benchmark suite: ``make bench`` / ``daceml bench`` / ``python -m daceml.bench``.

Every workload runs, in one process and in interleaved rounds (A B C D A B C D ...),
through PyTorch eager, torch.compile (inductor), onnxruntime, OpenVINO (when the
``openvino`` wheel is installed; fp32 inference precision) and daceml (DaceModule, all
four optimization levels), with the same number of threads; the table has the
median of each, the ratios, a control (eager timed twice: ratios only count when
it is close to 1.0), daceml's max error against eager, and the compile times.
Softmax and LayerNorm also report their bandwidth against the machine's, and the
GEMM-bound workloads their FLOP rate against the BLAS SGEMM rate measured in the
same run. Output: reports/bench.md, reports/bench.json and reports/bench.png.

    python -m daceml.bench [--only REGEX] [--rounds 15] [--threads 2] [--out reports] [--runs 1]

With ``--runs K`` the whole suite runs K times in the process and each row is the median of
the K runs' medians (the machine's load changes over minutes, which one run's interleaved
rounds cannot average out).

glibc's malloc serves blocks above its mmap threshold (128 KiB at start, raised as mapped
blocks are freed) with fresh mappings, whose pages fault in on first touch: eager's MBConv
block (14 MB activations, allocated and freed every call) takes 41-63 ms in a fresh process
and 11-22 ms after other workloads have moved the thresholds. So the bench first sets them
for the whole process, every tool alike (``mallopt``: blocks up to 32 MiB from the heap, the
heap kept on free); ``--default-malloc`` leaves glibc's defaults.
"""
import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

log = logging.getLogger(__name__)

#: the tools daceml is compared with (OpenVINO only where its wheel is installed)
PEERS = ("torch.compile", "onnxruntime", "openvino")
#: the peers of issue 6's target ("the fastest of torch.compile and onnxruntime")
TARGET_PEERS = ("torch.compile", "onnxruntime")


@dataclasses.dataclass
class Workload:
    name: str
    make: Callable[[], Tuple[torch.nn.Module, Tuple[torch.Tensor, ...]]]
    flops: Optional[float] = None       # per call, for GEMM-bound workloads
    bytes: Optional[float] = None       # per call, for bandwidth-bound workloads
    training: bool = False


def _workloads() -> List[Workload]:
    from daceml.testing import bench_models as bm

    def model(factory, *shape, bn=False):
        def make():
            torch.manual_seed(0)
            m = factory().eval()
            if bn:
                bm.randomize_batchnorm(m)
            return m, (torch.randn(*shape), )
        return make

    b, s, h = 8, 128, 768
    bert_flops = 2 * b * s * (4 * h * h + 2 * h * 3072) + 4 * b * s * s * h
    mlp_flops = 2 * 256 * 1024 * 1024 * 3
    return [
        Workload("bert_layer", model(bm.BertEncoderLayer, b, s, h), flops=bert_flops),
        # forward + backward (twice the forward's products) less the input's gradient through the
        # Q, K and V projections, which nobody computes: the input does not require grad
        Workload("bert_layer_train", model(bm.BertEncoderLayer, b, s, h), flops=3 * bert_flops - 3 * 2 * b * s * h * h,
                 training=True),
        Workload("mbconv_block", model(lambda: bm.MBConvBlock(24, 24, 6, 3, 1), 8, 24, 56, 56, bn=True)),
        Workload("efficientnet_b0", model(bm.EfficientNetB0, 1, 3, 224, 224, bn=True)),
        Workload("resnet50", model(bm.ResNet50, 1, 3, 224, 224, bn=True)),
        Workload("mobilenetv2", model(bm.MobileNetV2, 1, 3, 224, 224, bn=True)),
        Workload("mlp3_1024", model(bm.MLP3, 256, 1024), flops=mlp_flops),
        Workload("softmax", model(bm.SoftmaxOnly, 8, 12, 128, 128), bytes=2 * 4 * 8 * 12 * 128 * 128),
        Workload("layernorm", model(bm.LayerNormOnly, 8 * 128, 768), bytes=2 * 4 * 8 * 128 * 768),
    ]


def _quiet():
    sink = io.StringIO()
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(sink))
    stack.enter_context(contextlib.redirect_stderr(sink))
    return stack


def _onnx_proto(module, inputs):
    with _quiet():
        return torch.onnx.export(module, inputs, dynamo=True, external_data=False).model_proto


def _ort_session(module, inputs, threads, proto=None):
    import onnxruntime as ort
    proto = proto or _onnx_proto(module, inputs)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feeds)


def _openvino_request(module, inputs, threads, proto=None):
    """OpenVINO's CPU plugin on the same ONNX export, at ``threads`` threads, latency mode and
    fp32 inference precision (it would pick bf16 on CPUs with AVX512_BF16)."""
    import openvino as ov
    proto = proto or _onnx_proto(module, inputs)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
        model = core.read_model(path)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    feeds = [t.numpy() for t in inputs]
    return lambda: request.infer(feeds, share_inputs=True)


def _train_step(module, inputs):
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        module(*inputs).float().square().mean().backward()
    return step


#: mallopt parameters (glibc's malloc.h) and what the bench sets them to
_MALLOPT = {"M_TRIM_THRESHOLD": (-1, 1 << 30), "M_TOP_PAD": (-2, 64 << 20), "M_MMAP_THRESHOLD": (-3, 32 << 20)}


def steady_allocator() -> str:
    """Sets glibc malloc's thresholds for the whole process (see the module docstring); returns
    what was set, for the report, or why nothing was."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return "default malloc (no glibc mallopt)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    failed = [k for k, (param, value) in _MALLOPT.items() if mallopt(param, value) != 1]
    if failed:
        return f"malloc thresholds partly set (mallopt refused {', '.join(failed)})"
    return "glibc malloc: " + ", ".join(f"{k} {v >> 20} MiB" for k, (_, v) in _MALLOPT.items()) + " (mallopt)"


def _median_rate(fn, flops: float) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def _sgemm_rate() -> Dict[str, float]:
    """SGEMM rates (GFLOP/s) on a 2048^3 product, median of 7 after warming up: PyTorch's (its
    MKL) and daceml's BLAS default (a compiled one-MatMul program, level-2 implementation
    choice), the reference for the GEMM-bound rows."""
    from daceml.onnx import ONNXModel
    from daceml.testing.onnx_compare import make_model
    from daceml.transformation import optimize
    from onnx import helper
    n = 2048
    a = torch.randn(n, n)
    rates = {"torch": _median_rate(lambda: a @ a, 2 * n**3)}
    x = a.numpy()
    model = ONNXModel(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": x, "b": x}, ["y"]),
                      name="bench_sgemm")
    optimize(model, level=2)
    rates["daceml"] = _median_rate(lambda: model(a=x, b=x), 2 * n**3)
    return rates


def _bandwidth(nbytes: int = 2 * 4 * (64 << 20), calls: int = 1) -> float:
    """Copy bandwidth (bytes read + written per second) of a ``nbytes / 2`` float copy:
    the default is far beyond the caches (the machine's memory bandwidth); a
    workload's own size gives the rate its data can move at from the caches it
    fits in."""
    a = torch.ones(nbytes // 8)
    b = torch.empty_like(a)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            b.copy_(a)
        times.append((time.perf_counter() - t0) / calls)
    return 2 * a.numel() * 4 / statistics.median(times) / 1e9


#: a sample of a sub-millisecond workload times back-to-back calls adding up to about this long
SAMPLE_S = 0.02


def _calls_per_sample(variants: Dict[str, Callable[[], Any]]) -> int:
    """How many calls one timed sample makes: enough that the fastest variant's sample
    lasts about ``SAMPLE_S``, so one call's timer and scheduling noise does not
    decide a 0.1 ms workload's median. Every variant gets the same count; each
    variant is also warmed up here."""
    fastest = math.inf
    for f in variants.values():
        f()
        t0 = time.perf_counter()
        f()
        fastest = min(fastest, time.perf_counter() - t0)
    return max(1, min(1000, int(SAMPLE_S / max(fastest, 1e-6))))


def run_workload(w: Workload, rounds: int, threads: int) -> Dict[str, Any]:
    from daceml.torch import DaceModule
    module, inputs = w.make()
    row: Dict[str, Any] = {"workload": w.name, "compile_s": {}, "median_ms": {}, "notes": []}
    variants: Dict[str, Callable[[], Any]] = {}
    grad = torch.enable_grad() if w.training else torch.no_grad()
    with grad:
        # eager
        variants["eager"] = _train_step(module, inputs) if w.training else (lambda: module(*inputs))
        # daceml
        t0 = time.perf_counter()
        dace_module = DaceModule(module, name=f"bench_{w.name}")
        if w.training:
            dace_step = _train_step(dace_module, inputs)
            dace_step()
        else:
            dace_out = dace_module(*inputs)
            with torch.no_grad():
                ref = module(*inputs)
            row["max_abs_error"] = float((dace_out - ref).abs().max())
            dace_step = lambda: dace_module(*inputs)  # noqa: E731
        row["compile_s"]["daceml"] = time.perf_counter() - t0
        variants["daceml"] = dace_step
        # torch.compile
        t0 = time.perf_counter()
        try:
            with _quiet():
                compiled = torch.compile(module)
                step = _train_step(compiled, inputs) if w.training else (lambda: compiled(*inputs))
                step()
            variants["torch.compile"] = step
            row["compile_s"]["torch.compile"] = time.perf_counter() - t0
        except Exception as ex:
            row["notes"].append(f"torch.compile failed: {type(ex).__name__}")
        # onnxruntime and OpenVINO (inference only, one ONNX export)
        if not w.training:
            proto = _onnx_proto(module, inputs)
            for name, make in (("onnxruntime", _ort_session), ("openvino", _openvino_request)):
                if name == "openvino" and importlib.util.find_spec("openvino") is None:
                    continue
                t0 = time.perf_counter()
                try:
                    variants[name] = make(module, inputs, threads, proto)
                    out = variants[name]()
                    row["compile_s"][name] = time.perf_counter() - t0
                    if name == "openvino":
                        got = torch.from_numpy(np.asarray(out[0]))
                        row["notes"].append(f"OpenVINO max err {float((got - ref).abs().max()):.1e}")
                except Exception as ex:
                    variants.pop(name, None)
                    row["notes"].append(f"{name} failed: {type(ex).__name__}: {str(ex)[:100]}")
        variants["eager (control)"] = variants["eager"]
        calls = _calls_per_sample(variants)
        if calls > 1:
            row["notes"].append(f"each sample is the mean of {calls} back-to-back calls")
        times: Dict[str, List[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for k, f in variants.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    f()
                times[k].append((time.perf_counter() - t0) / calls)
    row["median_ms"] = {k: 1000 * statistics.median(v) for k, v in times.items()}
    row["calls_per_sample"] = calls
    return _ratios(row, w)


def _ratios(row: Dict[str, Any], w: Workload) -> Dict[str, Any]:
    """The row's ratios and rates from its ``median_ms``."""
    med = row["median_ms"]
    row["control"] = med["eager (control)"] / med["eager"]
    row["speedup_vs_eager"] = med["eager"] / med["daceml"]
    peers = [med[k] for k in PEERS if k in med]
    row["speedup_vs_best_peer"] = min(peers) / med["daceml"] if peers else None
    target = [med[k] for k in TARGET_PEERS if k in med]
    row["speedup_vs_compile_ort"] = min(target) / med["daceml"] if target else None
    if w.flops:
        row["daceml_gflops"] = w.flops / (med["daceml"] / 1000) / 1e9
    if w.bytes:
        row["daceml_gbs"] = w.bytes / (med["daceml"] / 1000) / 1e9
        if "copy_gbs" not in row:
            row["copy_gbs"] = _bandwidth(int(w.bytes), row["calls_per_sample"])
    return row


def combine_runs(w: Workload, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row from the same workload's rows of several suite runs: per tool the median of the
    runs' medians, the ratios recomputed from those, each run's speedup over eager in the notes."""
    if len(runs) == 1 or any("calls_per_sample" not in r for r in runs):
        return runs[0]
    row = dict(runs[0])
    tools = [k for k in runs[0]["median_ms"] if all(k in r["median_ms"] for r in runs)]
    row["median_ms"] = {k: statistics.median(r["median_ms"][k] for r in runs) for k in tools}
    row["copy_gbs"] = statistics.median(r.get("copy_gbs", 0.0) for r in runs)
    row["runs_speedup_vs_eager"] = [r["speedup_vs_eager"] for r in runs]
    row["notes"] = [f"median of {len(runs)} suite runs (x eager per run: "
                    + ", ".join(f"{r['speedup_vs_eager']:.2f}" for r in runs) + ")"] + list(runs[0]["notes"])
    return _ratios(row, w)


def _geomean(values: List[float]) -> float:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def write_reports(rows: List[Dict[str, Any]], machine: Dict[str, Any], out: str) -> Dict[str, Any]:
    os.makedirs(out, exist_ok=True)
    inference = [r for r in rows if not r["workload"].endswith("_train")]
    training = [r for r in rows if r["workload"].endswith("_train")]
    summary = {
        "machine": machine,
        "geomean_speedup_vs_eager_inference": _geomean([r["speedup_vs_eager"] for r in inference]),
        "geomean_speedup_vs_eager_training": _geomean([r["speedup_vs_eager"] for r in training]),
        "geomean_speedup_vs_best_peer": _geomean([r["speedup_vs_best_peer"] for r in inference]),
        "geomean_speedup_vs_compile_ort": _geomean([r.get("speedup_vs_compile_ort") for r in inference]),
        "rows": rows,
    }
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(summary, f, indent=1)
    cols = ["eager", *PEERS, "daceml"]
    runs = machine.get("runs", 1)
    lines = [f"# CPU benchmark ({machine['threads']} threads, {machine['rounds']} interleaved rounds, medians"
             + (f"; each row the median of {runs} runs of the whole suite" if runs > 1 else "") + ")", "",
             f"Machine: {machine['cpu']}; measured in this run: bandwidth {machine['bandwidth_gbs']:.1f} GB/s, "
             f"SGEMM (2048^3) {machine['sgemm_gflops']:.1f} GFLOP/s with daceml's BLAS, "
             f"{machine['sgemm_torch_gflops']:.1f} with PyTorch's."
             + (f" Allocator: {machine['allocator']}." if machine.get("allocator") else ""), "",
             "| workload | " + " | ".join(f"{c} (ms)" for c in cols) + " | x eager | x compile/ORT | x best peer | control | "
             "max err | compile daceml / torch.compile (s) | notes |",
             "|---" * (len(cols) + 8) + "|"]
    for r in rows:
        med = r["median_ms"]
        extra = []
        if "daceml_gflops" in r:
            extra.append(f"{r['daceml_gflops']:.0f} GFLOP/s = {100 * r['daceml_gflops'] / machine['sgemm_gflops']:.0f}% "
                         "of SGEMM")
        if "daceml_gbs" in r:
            extra.append(f"{r['daceml_gbs']:.1f} GB/s = {100 * r['daceml_gbs'] / machine['bandwidth_gbs']:.0f}% of "
                         f"memory bandwidth, {100 * r['daceml_gbs'] / r['copy_gbs']:.0f}% of a same-size copy's "
                         f"{r['copy_gbs']:.1f}")
        lines.append(f"| {r['workload']} | " + " | ".join(f"{med[c]:.2f}" if c in med else "—" for c in cols) +
                     f" | {r['speedup_vs_eager']:.2f} | " +
                     (f"{r['speedup_vs_compile_ort']:.2f}" if r.get("speedup_vs_compile_ort") else "—") + " | " +
                     (f"{r['speedup_vs_best_peer']:.2f}" if r["speedup_vs_best_peer"] else "—") +
                     f" | {r['control']:.2f} | " + (f"{r['max_abs_error']:.1e}" if "max_abs_error" in r else "—") +
                     f" | {r['compile_s'].get('daceml', 0):.0f} / {r['compile_s'].get('torch.compile', 0):.0f} | "
                     + "; ".join(extra + r["notes"]) + " |")
    lines += ["", f"Geometric-mean speedup over eager: inference {summary['geomean_speedup_vs_eager_inference']:.2f}x, "
              f"training {summary['geomean_speedup_vs_eager_training']:.2f}x; inference over the fastest of "
              f"{' and '.join(TARGET_PEERS)} (x compile/ORT, the issue's target): "
              f"{summary['geomean_speedup_vs_compile_ort']:.2f}x; over the fastest of {', '.join(PEERS)} "
              f"(x best peer): {summary['geomean_speedup_vs_best_peer']:.2f}x.", "",
              "Generated by `make bench` (`python -m daceml.bench`)."]
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _chart(rows, os.path.join(out, "bench.png"))
    return summary


def _chart(rows: List[Dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = [*PEERS, "daceml"]
    names = [r["workload"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(names)), 4.5))
    for i, c in enumerate(cols):
        vals = [r["median_ms"]["eager"] / r["median_ms"][c] if c in r["median_ms"] else 0 for r in rows]
        width = 0.8 / len(cols)
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, vals, width, label=c)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("speedup over PyTorch eager")
    ax.set_title("CPU, medians of interleaved rounds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="daceml bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="regular expression over workload names")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="reports")
    parser.add_argument("--runs", type=int, default=1,
                        help="run the whole suite this many times; each row is the median of the runs' medians")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc's mmap / trim thresholds at their defaults")
    args = parser.parse_args(argv)
    allocator = "default malloc (--default-malloc)" if args.default_malloc else steady_allocator()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import platform
    machine = {"threads": args.threads, "rounds": args.rounds, "cpu": platform.processor() or platform.machine(),
               "bandwidth_gbs": _bandwidth()}
    sgemm = _sgemm_rate()
    machine.update(sgemm_gflops=sgemm["daceml"], sgemm_torch_gflops=sgemm["torch"])
    machine["runs"] = args.runs
    machine["allocator"] = allocator
    workloads = [w for w in _workloads() if not args.only or re.search(args.only, w.name)]
    per_run: List[List[Dict[str, Any]]] = []
    for run in range(args.runs):
        rows = []
        for w in workloads:
            print(f"{w.name} ..." + (f" (suite run {run + 1} of {args.runs})" if args.runs > 1 else ""), flush=True)
            try:
                rows.append(run_workload(w, args.rounds, args.threads))
                r = rows[-1]
                print("  " + ", ".join(f"{k} {v:.2f} ms" for k, v in r["median_ms"].items()) +
                      f"; x eager {r['speedup_vs_eager']:.2f}", flush=True)
            except Exception as ex:
                print(f"  failed: {type(ex).__name__}: {str(ex)[:300]}", flush=True)
                rows.append({"workload": w.name, "median_ms": {"eager": float("nan"), "daceml": float("nan")},
                             "speedup_vs_eager": 0.0, "speedup_vs_best_peer": None,
                             "speedup_vs_compile_ort": None, "control": float("nan"),
                             "compile_s": {}, "notes": [f"daceml failed: {type(ex).__name__}: {str(ex)[:120]}"]})
        per_run.append(rows)
    rows = [combine_runs(w, [run[i] for run in per_run]) for i, w in enumerate(workloads)]
    summary = write_reports(rows, machine, args.out)
    print(f"geomean x eager: inference {summary['geomean_speedup_vs_eager_inference']:.2f}, training "
          f"{summary['geomean_speedup_vs_eager_training']:.2f}; x compile/ORT "
          f"{summary['geomean_speedup_vs_compile_ort']:.2f}; x best peer {summary['geomean_speedup_vs_best_peer']:.2f}"
          f"; report in {args.out}/bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
