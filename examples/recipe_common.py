"""What the bert_recipe.py and mbconv_recipe.py examples share: export a module to ONNX, run
daceml's pipeline on it pass by pass (optionally verifying each pass), print what each pass
did, then compare with PyTorch eager on the same inputs (results and median time)."""
import argparse
import statistics
import time
from typing import Callable, Optional

import numpy as np
import torch

from daceml.onnx import ONNXModel
from daceml.transformation import optimize
from daceml.transformation.pipeline import LEVEL_NAMES, describe


def arguments(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="timed calls of each (medians)")
    parser.add_argument("--verify", action="store_true",
                        help="run the program before and after every pass (one build per pass)")
    return parser.parse_args()


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run_recipe(name: str, module: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace,
               hand_tuned: Optional[Callable[[ONNXModel], None]] = None) -> ONNXModel:
    """Exports ``module`` at input ``x``, runs ``hand_tuned`` (if any) on the imported model, then
    levels 1-4, printing each pass's effect; returns the optimized model."""
    torch.set_num_threads(args.threads)
    module = module.eval()
    proto = torch.onnx.export(module, (x, ), dynamo=True, external_data=False).model_proto
    model = ONNXModel(proto, name=name)
    print(f"# {name}\n\nThe default pipeline:\n{describe(4)}\n")
    if hand_tuned is not None:
        hand_tuned(model)
    report = optimize(model, level=4, verify=args.verify)
    print("| level | pass | changes | ms | what it did |\n|---|---|---|---|---|")
    for p in report.passes:
        print(f"| {p.level} {LEVEL_NAMES[p.level]} | {p.name} | {p.changes} | {1000 * p.seconds:.0f} | {p.detail} |")
    with torch.no_grad():
        expected = module(x).numpy()
        got = model(x.numpy())
        print(f"\nmax abs error against eager: {np.abs(got - expected).max():.2e}")
        eager = median_ms(lambda: module(x), args.rounds)
        ours = median_ms(lambda: model(x.numpy()), args.rounds)
    print(f"eager {eager:.2f} ms, daceml {ours:.2f} ms ({eager / ours:.2f}x), {args.threads} threads, "
          f"median of {args.rounds}")
    return model
