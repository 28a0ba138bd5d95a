"""Whole benchmark workloads with each CPU GEMM library as the level-2 choice for MatMul, Gemm
and Conv, in one process, interleaved with eager PyTorch: the measurement behind the library
order in ``FAST_IMPLEMENTATIONS`` (daceml/transformation/passes.py). With ``--winograd``: the
default pipeline with and without the level-2 pass ``WinogradConvs`` instead.

usage: python examples/blas_ab.py [--workloads resnet50,bert_layer] [--libraries mkl,blas] [--rounds 20]
       python examples/blas_ab.py --winograd --workloads resnet50

Each variant's program is a separate build (its own name); each round times every variant once.
"""
import argparse
import os
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="bert_layer,resnet50,mobilenetv2")
    parser.add_argument("--libraries", default="mkl,blas")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--winograd", action="store_true", help="compare the pipeline with and without WinogradConvs")
    ns = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(ns.threads))
    torch.set_num_threads(ns.threads)
    from daceml import bench
    from daceml.torch import DaceModule
    from daceml.transformation import passes, winograd

    wanted = ns.workloads.split(",")
    libraries = ["winograd", "no winograd"] if ns.winograd else ns.libraries.split(",")
    profitable = winograd.profitable
    for w in (w for w in bench._workloads() if w.name in wanted):
        module, inputs = w.make()
        variants = {}
        with torch.enable_grad() if w.training else torch.no_grad():
            reference = None if w.training else module(*inputs)
            for library in libraries:
                if ns.winograd:  # the pass asks winograd.profitable about every conv it could take
                    winograd.profitable = profitable if library == "winograd" else (lambda *a, **k: False)
                else:
                    passes.FAST_IMPLEMENTATIONS["cpu"] = {op: [library] for op in ("MatMul", "Gemm", "Conv")}
                dm = DaceModule(module, name=f"blas_ab_{w.name}_{library.replace(' ', '_')}")
                dm(*inputs)  # build now, while the variant's setting holds
                if w.training:
                    variants[library] = bench._train_step(dm, inputs)
                else:
                    error = float((dm(*inputs) - reference).abs().max())
                    print(f"{w.name} {library}: max abs error vs eager {error:.1e}", flush=True)
                    variants[library] = lambda dm=dm, inputs=inputs: dm(*inputs)
            winograd.profitable = profitable
            variants["eager"] = bench._train_step(module, inputs) if w.training else \
                (lambda module=module, inputs=inputs: module(*inputs))
            times = {k: [] for k in variants}
            for f in variants.values():
                f()
            for _ in range(ns.rounds):
                for k, f in variants.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
        print(f"{w.name}: " + ", ".join(f"{k} {1000 * statistics.median(v):.2f} ms" for k, v in times.items()),
              flush=True)


if __name__ == "__main__":
    main()
