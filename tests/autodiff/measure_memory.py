"""Measures the peak memory of one forward + backward step of a BERT encoder layer:
eager PyTorch, and daceml storing every value the backward pass reads or recomputing
the cheap ones (``recompute=True``). Not a test; run it directly:

    MALLOC_MMAP_THRESHOLD_=65536 .venv/bin/python tests/autodiff/measure_memory.py

Each variant runs in its own process: after a warm-up step (compiles, first-touch), the
peak-RSS counter is reset (``/proc/self/clear_refs``), one step runs, and the growth of
the peak RSS over the RSS before the step is reported. The fixed mmap threshold makes
glibc return large freed blocks to the system, so the RSS follows the live memory.

daceml's programs are optimized as DaceModule does (level 1 before differentiating, levels
2-4 on the forward and backward programs): their transients are persistent (allocated at
the first call, shared by lifetime, see daceml.transformation.memory), so they are live
before the step and not part of its growth; the step's memory is the growth plus them.
"""
import json
import os
import subprocess
import sys


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def run_variant(variant: str, d: int, heads: int, ff: int, batch: int, seq: int) -> dict:
    import gc
    import torch
    from daceml.testing.zoo import BertLayer
    torch.manual_seed(0)
    module = BertLayer(d, heads, ff)
    x = torch.randn(batch, seq, d)
    info = {}
    if variant == "eager":
        def step():
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()
    else:
        from daceml.onnx import ONNXModel
        from daceml.torch import autograd
        from daceml.torch.module import _export
        from daceml.transformation import optimize, pipeline
        model = ONNXModel(_export(module, (x, ), False, 20), name=f"BertLayer_{variant}")
        optimize(model, passes=pipeline(1))  # as DaceModule does before differentiating
        state = module.state_dict(keep_vars=True)
        weights = {n: state[n] for n in model.weights if n in state}
        program = autograd.TrainingProgram(model, [], [n for n, t in weights.items() if t.requires_grad],
                                           recompute=variant == "recompute", optimize_level=4)
        model._daceml_training_programs = {((), tuple(program.grad_weights), 4): program}
        info["stored_bytes"] = program.result.stored_bytes()
        info["stored"] = len(program.result.stored)
        info["forward_transients"], info["backward_transients"] = program.result.transient_bytes()

        def step():
            module.zero_grad(set_to_none=True)
            autograd.forward_with_grad(model, [x], weights, optimize_level=4)[0].sum().backward()
    step()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss("VmRSS")
    step()
    info["peak_growth_bytes"] = _rss("VmHWM") - before
    return info


def main():
    config = dict(d=256, heads=4, ff=1024, batch=8, seq=128)
    if len(sys.argv) > 1 and sys.argv[1] == "--variant":
        print(json.dumps(run_variant(sys.argv[2], **config)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536"))
    print(f"BERT encoder layer {config}, fp32, one forward + backward step (gradients of all parameters)")
    for variant in ("eager", "store", "recompute"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant], env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        info = json.loads(out)
        extra = f", stored for backward {info['stored_bytes'] / 2**20:.2f} MiB in {info['stored']} arrays" \
            + f"; transients: forward {info['forward_transients'] / 2**20:.2f} MiB, backward " \
            f"{info['backward_transients'] / 2**20:.2f} MiB" if "stored_bytes" in info else ""
        held = info.get("forward_transients", 0) + info.get("backward_transients", 0)
        print(f"  {variant:10s} step memory {(info['peak_growth_bytes'] + held) / 2**20:7.2f} MiB (peak growth "
              f"{info['peak_growth_bytes'] / 2**20:.2f} MiB{extra})")


if __name__ == "__main__":
    main()
