"""The GPU benchmark: daceml vs PyTorch eager vs torch.compile on one NVIDIA GPU.

BERT-base encoder layer (B=8, S=128, H=768) inference and training step, an EfficientNet-B0
MBConv block and a ResNet-50 bottleneck block; the median of 50 calls of each, timed with
CUDA events; one table in reports/gpu_bench.md (+ .json) naming the GPU. See
daceml/bench_gpu.py for the options.

    python examples/gpu_benchmark.py                 # on a GPU machine (about 5-8 minutes on an H100)
    python examples/gpu_benchmark.py --dry-run       # without a GPU: compile everything, run nothing
    python examples/gpu_benchmark.py --out $OUT --budget 420
"""
import sys

from daceml.bench_gpu import main

if __name__ == "__main__":  # the daceml builds run in spawned worker processes: keep this guard
    sys.exit(main())
