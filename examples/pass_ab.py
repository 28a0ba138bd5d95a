"""A/B of one pass on a benchmark workload: the default pipeline against the pipeline with the
pass toggled (removed if the default has it, else appended to its level's list), both built in
one process and called in interleaved rounds with eager as a control, so that both see the
same state of the (shared) machine.

usage: python examples/pass_ab.py WORKLOAD PASS [--seconds 90] [--threads 2]

e.g. ``python examples/pass_ab.py bert_layer FuseSiblingGemms`` (an opt-in pass: B adds it) or
``python examples/pass_ab.py mobilenetv2 PlanMemory`` (B runs without it). Training workloads
(``bert_layer_train``) time a forward and backward step.
"""
import argparse
import importlib
import statistics
import time

import torch

from daceml import bench
from daceml.torch import DaceModule
from daceml.transformation import passes, pipeline

#: the module whose level_passes DaceModule's pipeline calls
_PIPELINE = importlib.import_module("daceml.transformation.pipeline")


def _toggled(name: str):
    """A level_passes replacement with pass ``name`` removed or appended to its level."""
    original = _PIPELINE.level_passes
    cls = passes.PASSES[name]

    def level_passes(level, device="cpu"):
        listed = original(level, device)
        if any(isinstance(p, cls) for p in listed):
            return [p for p in listed if not isinstance(p, cls)]
        return listed + [cls()] if cls.LEVEL == level else listed
    return original, level_passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload")
    ap.add_argument("pass_name", metavar="PASS", choices=sorted(passes.PASSES))
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench.steady_allocator()
    workloads = {w.name: w for w in bench._workloads()}
    w = workloads[args.workload]
    module, inputs = w.make()
    default_has = any(isinstance(p, passes.PASSES[args.pass_name]) for lv in pipeline(4) for p in lv)

    def build(name):
        dm = DaceModule(module, name=f"ab_{w.name}_{name}")
        if w.training:
            step = bench._train_step(dm, inputs)
        else:
            step = lambda: dm(*inputs)  # noqa: E731
        step()
        return step

    grad = torch.enable_grad() if w.training else torch.no_grad()
    with grad:
        a = build("default")
        original, toggled = _toggled(args.pass_name)
        _PIPELINE.level_passes = toggled
        try:
            b = build("toggled")
        finally:
            _PIPELINE.level_passes = original
        eager = bench._train_step(module, inputs) if w.training else (lambda: module(*inputs))
        times = {"A": [], "B": [], "eager": []}
        t_end = time.time() + args.seconds
        while time.time() < t_end:
            for key, f in (("A", a), ("B", b), ("eager", eager)):
                t0 = time.perf_counter()
                f()
                times[key].append(time.perf_counter() - t0)
    b_is = f"without {args.pass_name}" if default_has else f"with {args.pass_name} added"
    print(f"{w.name}, {len(times['A'])} interleaved rounds, median ms: A (default) "
          f"{1000 * statistics.median(times['A']):.2f}, B ({b_is}) {1000 * statistics.median(times['B']):.2f}, "
          f"eager {1000 * statistics.median(times['eager']):.2f}")


if __name__ == "__main__":
    main()
