"""GEMM rate of each CPU implementation daceml has (pure tiled kernel, OpenBLAS, oneMKL) and of
PyTorch (its own MKL), on the GEMM shapes of the benchmarks, at the same number of threads:
BERT's projections and feed-forward, the MLP, ResNet-50's convs as GEMMs (64 x 3136 x 576 at
56x56, 512 x 49 x 4608 and 2048 x 49 x 512 at 7x7) and a product with few rows.

usage: python examples/gemm_libraries.py [--threads 2] [--repeat 15]

Each implementation runs inside a compiled daceml program (one MatMul node), so the figures
include how the library's threads get along with the program's OpenMP threads. This is the
measurement behind the CPU default (FAST_IMPLEMENTATIONS in daceml/transformation/passes.py).
"""
import argparse
import os
import statistics
import time

import numpy as np
import onnx
import torch
from onnx import helper

from daceml.onnx import ONNXModel
from daceml.onnx.nodes import ONNXOp

SHAPES = [(1024, 768, 768), (1024, 3072, 768), (1024, 768, 3072), (256, 1024, 1024),  # M, N, K
          (64, 3136, 576), (512, 49, 4608), (2048, 49, 512), (8, 1024, 1024)]


def median_s(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def daceml_matmul(m, n, k, implementation):
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], f"mm_{implementation}",
                              [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [m, k]),
                               helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [k, n])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [m, n])])
    model = ONNXModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    for node, _ in model.sdfg.all_nodes_recursive():
        if isinstance(node, ONNXOp):
            node.implementation = implementation
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15)
    ns = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(ns.threads)
    torch.set_num_threads(ns.threads)
    print(f"GFLOP/s at {ns.threads} threads (median of {ns.repeat})")
    print(f"{'M x N x K':>18} {'pure':>8} {'blas':>8} {'mkl':>8} {'torch':>8}")
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        flops = 2 * m * n * k
        row = []
        for impl in ("pure", "blas", "mkl"):
            model = daceml_matmul(m, n, k, impl)
            np.testing.assert_allclose(model(a=a, b=b), a @ b, rtol=1e-3, atol=1e-2)
            row.append(flops / median_s(lambda model=model, a=a, b=b: model(a=a, b=b), ns.repeat) / 1e9)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        row.append(flops / median_s(lambda ta=ta, tb=tb: ta @ tb, ns.repeat) / 1e9)
        print(f"{f'{m} x {n} x {k}':>18} " + " ".join(f"{r:8.1f}" for r in row))


if __name__ == "__main__":
    main()
