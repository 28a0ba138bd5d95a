"""Conv kernels side by side: daceml's pure direct kernel, daceml's GEMM conv (im2col + GEMM, 1x1
straight as a GEMM) through OpenBLAS and oneMKL, and PyTorch (oneDNN), on ResNet-50 and
EfficientNet shapes, one thread (or OMP_NUM_THREADS). With ``--winograd``: the 3x3 stride-1
shapes only, with daceml's Winograd F(2x2, 3x3) beside them (its weight transform hoisted,
as the level-2 pipeline does).

usage: [OMP_NUM_THREADS=2] python examples/conv_kernels.py [--winograd]

The measurements behind ``_BlasConv.profitable`` (daceml/onnx/ops/blas.py) and
``daceml.transformation.winograd.profitable``.
"""
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from onnx import helper  # noqa: E402

from daceml.onnx import ONNXModel  # noqa: E402
from daceml.onnx.nodes import ONNXOp  # noqa: E402
from daceml.testing.onnx_compare import make_model  # noqa: E402
from daceml.transformation import optimize, pipeline  # noqa: E402
from daceml.transformation.winograd import WinogradConvs  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
#: (input shape, weight shape, stride, padding)
CASES = [((1, 64, 56, 56), (64, 64, 3, 3), 1, 1), ((1, 64, 56, 56), (256, 64, 1, 1), 1, 0),
         ((1, 3, 224, 224), (64, 3, 7, 7), 2, 3), ((1, 256, 14, 14), (256, 256, 3, 3), 1, 1),
         ((1, 128, 28, 28), (128, 128, 3, 3), 1, 1), ((1, 512, 7, 7), (512, 512, 3, 3), 1, 1),
         ((8, 24, 56, 56), (144, 24, 1, 1), 1, 0), ((8, 144, 56, 56), (24, 144, 1, 1), 1, 0),
         # EfficientNet-B0 / MobileNetV2 at batch 1: expansions with few input channels, projections
         ((1, 16, 112, 112), (96, 16, 1, 1), 1, 0), ((1, 24, 56, 56), (144, 24, 1, 1), 1, 0),
         ((1, 40, 28, 28), (240, 40, 1, 1), 1, 0), ((1, 144, 56, 56), (24, 144, 1, 1), 1, 0),
         ((1, 32, 112, 112), (16, 32, 1, 1), 1, 0),
         # 3x3 stride 1 with fewer channels (the Winograd threshold)
         ((1, 32, 56, 56), (32, 32, 3, 3), 1, 1), ((1, 16, 56, 56), (16, 16, 3, 3), 1, 1)]


def median_ms(fn, repeat=15, calls=5):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return 1000 * statistics.median(times)


def main():
    winograd = "--winograd" in sys.argv
    rng = np.random.default_rng(0)
    for xs, ws, s, p in CASES:
        if winograd and (ws[2:] != (3, 3) or s != 1):
            continue
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        row = {}
        for impl in ("pure", "blas", "mkl") + (("winograd", ) if winograd else ()):
            model = ONNXModel(make_model([helper.make_node("Conv", ["x", "w"], ["y"], strides=[s, s], pads=[p] * 4)],
                                         {"x": x}, ["y"], {"w": w}))
            levels = pipeline(4)
            for n, _ in model.sdfg.all_nodes_recursive():
                if isinstance(n, ONNXOp) and impl != "winograd":
                    n.implementation = impl  # the Winograd pass leaves a chosen implementation alone
            for pass_ in levels[1]:
                if isinstance(pass_, WinogradConvs):  # every shape, profitable or not
                    pass_.min_channels = pass_.min_tiles = 1
            optimize(model, passes=levels)  # all four levels: persistent workspaces, hoisted weights
            row[impl] = median_ms(lambda model=model, x=x: model(x=x))
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        row["torch"] = median_ms(lambda tx=tx, tw=tw, s=s, p=p: torch.nn.functional.conv2d(tx, tw, stride=s, padding=p))
        print(f"x {xs} w {ws} stride {s} pad {p}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items()))


if __name__ == "__main__":
    main()
