"""The main job of `make run`: a PyTorch CNN through daceml, checked and timed.

1. builds a small CNN (conv/bn/relu/maxpool blocks, a grouped conv, global
   average pooling, linear layers, softmax) with random weights, eval mode;
2. exports it to ONNX with torch.onnx.export (dynamo exporter);
3. imports it with daceml.onnx.ONNXModel, runs the four-level optimization
   pipeline and compiles it to C++ (or loads the cached build of an earlier run:
   see the "compiled / loaded cached build" line);
4. runs the same input through daceml, onnxruntime and eager PyTorch and
   prints the max abs errors and the median times (interleaved rounds).

usage: python examples/cnn_demo.py [--batch 8] [--repeat 30]
"""
import argparse
import io
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from models import SmallCNN, randomize_batchnorm  # noqa: E402


def export(module, x):
    import onnx
    with warnings.catch_warnings(), io.StringIO() as sink:
        warnings.simplefilter("ignore")
        stdout, sys.stdout = sys.stdout, sink
        try:
            program = torch.onnx.export(module, (x, ), dynamo=True, external_data=False, verbose=False)
        finally:
            sys.stdout = stdout
    model = program.model_proto
    onnx.checker.check_model(model)
    return model


def onnxruntime_session(model, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def median_ms(times):
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    module = SmallCNN().eval()
    randomize_batchnorm(module)
    x = torch.randn(args.batch, 3, 32, 32)

    t0 = time.perf_counter()
    model = export(module, x)
    t_export = time.perf_counter() - t0
    print(f"exported SmallCNN to ONNX (opset {model.opset_import[0].version}, {len(model.graph.node)} nodes: "
          f"{', '.join(sorted({n.op_type for n in model.graph.node}))}) in {t_export:.2f} s")

    import daceml
    from daceml.onnx import ONNXModel
    t0 = time.perf_counter()
    dm = ONNXModel(model, name="small_cnn")
    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = daceml.optimize(dm, level=4)
    t_opt = time.perf_counter() - t0
    changed = ", ".join(f"{p.name} ({p.detail})" for p in report.passes if p.changes)
    print(f"optimized (levels 1-4) in {t_opt:.2f} s: {changed}")
    program = dm.compile()
    print(f"imported into an SDFG in {t_import:.2f} s; "
          f"{'compiled' if program.built else 'loaded cached build'} in {program.seconds:.2f} s "
          f"({program.folder})")

    sess = onnxruntime_session(model, threads)
    xn = x.numpy()
    with torch.no_grad():
        y_eager = module(x).numpy()
    y_dace = dm(xn)
    y_ort = sess.run(None, {sess.get_inputs()[0].name: xn})[0]
    err_eager = float(np.abs(y_dace - y_eager).max())
    err_ort = float(np.abs(y_dace - y_ort).max())
    print(f"max abs error: daceml vs eager PyTorch {err_eager:.2e}, daceml vs onnxruntime {err_ort:.2e}")

    runs = {"daceml": lambda: dm(xn), "onnxruntime": lambda: sess.run(None, {sess.get_inputs()[0].name: xn}),
            "eager": lambda: module(x), "eager (control)": lambda: module(x)}
    times = {k: [] for k in runs}
    with torch.no_grad():
        for f in runs.values():
            f()
        for _ in range(args.repeat):
            for k, f in runs.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    print(f"median time per call, batch {args.batch}, {threads} threads, {args.repeat} interleaved rounds:")
    eager = median_ms(times["eager"])
    for k, ts in times.items():
        print(f"  {k:16s} {median_ms(ts):8.3f} ms   ({eager / median_ms(ts):.2f}x eager)")
    ok = err_eager < 1e-4 and err_ort < 1e-4
    print("RESULT:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
