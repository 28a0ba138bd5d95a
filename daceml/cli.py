"""The `daceml` command.

    daceml compile MODEL.onnx            import and compile (or load the cached build)
    daceml run MODEL.onnx [--dim N=4]    run on random inputs, compare with onnxruntime, time it
    daceml report MODEL.onnx             bytes moved per lowering level, lower bound, roofline position
    daceml bench [--only REGEX]          the CPU benchmark suite, report in reports/bench.md
    daceml bench --device cuda [--dry-run]   the GPU benchmark, report in reports/gpu_bench.md
    daceml ops                           which implementations each ONNX op has
    daceml gui MODEL [--port N] [--no-browser]   the browser GUI (MODEL: .onnx or file.py:ModuleClass)
    daceml conformance [--only REGEX]    the ONNX node conformance suite, report in reports/
"""
import argparse
import logging
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np


def _dims(pairs: List[str]) -> Dict[str, int]:
    out = {}
    for p in pairs:
        name, _, value = p.partition("=")
        if not value.isdigit():
            raise SystemExit(f"--dim {p!r}: expected NAME=INTEGER")
        out[name] = int(value)
    return out


def _random_inputs(model, dims: Dict[str, int]) -> Dict[str, np.ndarray]:
    from dace import symbolic
    from daceml.onnx import dtypes as odt
    rng = np.random.default_rng(0)
    inputs = {}
    for name in model.inputs:
        shape = []
        for d in model.table.shape(name) or ():
            if symbolic.issymbolic(d):
                if str(d) not in dims:
                    raise SystemExit(f"input {name!r} has a symbolic dim {d}; give its size with --dim {d}=SIZE")
                shape.append(dims[str(d)])
            else:
                shape.append(int(d))
        dtype = odt.to_numpy(model.sdfg.arrays[model._array(name)].dtype)
        if np.issubdtype(dtype, np.floating):
            inputs[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            inputs[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            inputs[name] = rng.integers(0, 10, shape).astype(dtype)
    return inputs


def cmd_compile(args) -> int:
    from daceml.onnx import ONNXModel
    model = ONNXModel(args.model)
    program = model.compile()
    print(f"{'compiled' if program.built else 'loaded'} {model.name} in {program.seconds:.2f} s: {program.folder}")
    return 0


def cmd_run(args) -> int:
    from daceml.onnx import ONNXModel
    from daceml.testing.onnx_compare import run_onnxruntime
    model = ONNXModel(args.model)
    inputs = _random_inputs(model, _dims(args.dim))
    got = model(**inputs)
    got = list(got) if isinstance(got, tuple) else [got]
    expected = run_onnxruntime(model.model, inputs)
    worst = 0.0
    for name, g, e in zip(model.outputs, got, expected):
        err = float(np.abs(np.asarray(g, dtype=np.float64) - e).max()) if e.size else 0.0
        worst = max(worst, err)
        print(f"output {name!r} {tuple(e.shape)} {e.dtype}: max abs error vs onnxruntime {err:.3e}")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - t0)
    print(f"median {1000 * statistics.median(times):.3f} ms over {args.repeat} runs")
    return 0 if worst <= args.atol else 1


def cmd_report(args) -> int:
    from daceml.analysis import movement_report
    from daceml.onnx import ONNXModel
    model = ONNXModel(args.model)
    dims = _dims(args.dim)
    inputs = _random_inputs(model, dims)
    report = movement_report(model, symbols=dims, measure=not args.no_run,
                             inputs=[inputs[n] for n in model.inputs])
    print(report.table())
    return 0


def cmd_ops(args) -> int:
    from daceml.onnx.ops import registry
    for op in registry.registered_ops():
        impls = registry.implementations(op)
        print(f"{op:28s} {', '.join(impls)}")
    return 0


def _bench_module(rest: List[str]) -> str:
    """daceml.bench (CPU) or, with ``--device cuda``, daceml.bench_gpu."""
    for i, arg in enumerate(rest):
        value = arg.split("=", 1)[1] if arg.startswith("--device=") else \
            rest[i + 1] if arg == "--device" and i + 1 < len(rest) else None
        if value is not None:
            if value.startswith("cuda"):
                return "daceml.bench_gpu"
            if value != "cpu":
                raise SystemExit(f"daceml bench: --device {value!r}: expected cpu or cuda")
            rest.pop(i)
            if arg == "--device":
                rest.pop(i)
            return "daceml.bench"
    return "daceml.bench"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="daceml", description="data-centric DNN compiler")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what daceml does")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="import and compile an ONNX model")
    p.add_argument("model")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("run", help="run an ONNX model on random inputs against onnxruntime")
    p.add_argument("model")
    p.add_argument("--dim", action="append", default=[], help="size of a symbolic dim, NAME=SIZE")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--atol", type=float, default=1e-4)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("conformance", help="run the ONNX node conformance suite (pure implementations)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: __import__("daceml.onnx.conformance", fromlist=["main"]).main(a.rest))
    p = sub.add_parser("bench", help="the CPU benchmark suite against eager, torch.compile and onnxruntime "
                       "(--device cuda: the GPU benchmark)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: __import__(_bench_module(a.rest), fromlist=["main"]).main(a.rest))
    p = sub.add_parser("report", help="bytes moved per lowering level, lower bound, roofline position")
    p.add_argument("model")
    p.add_argument("--dim", action="append", default=[], help="size of a symbolic dim, NAME=SIZE")
    p.add_argument("--no-run", action="store_true", help="do not compile and time the program")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("ops", help="list the ops and their implementations")
    p.set_defaults(func=cmd_ops)
    p = sub.add_parser("gui", help="open a model in the browser GUI (served on 127.0.0.1)")
    p.add_argument("model", help="an .onnx file or path/to/file.py:ModuleClass")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.add_argument("--dim", action="append", default=[], help="size of a symbolic dim, NAME=SIZE")
    p.set_defaults(func=lambda a: __import__("daceml.gui", fromlist=["main"]).main(
        a.model, port=a.port, open_browser=not a.no_browser, dims=_dims(a.dim)))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    from daceml.errors import DacemlError
    try:
        return args.func(args)
    except DacemlError as ex:
        print(f"daceml: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
