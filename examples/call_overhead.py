"""Per-call overhead of a DaceModule around one nn.Linear, against eager PyTorch.

usage: python examples/call_overhead.py [--features 16] [--repeat 20000]

Both run the same tiny Linear (batch 1), so the kernel time is negligible and
nearly the same; the difference of the medians is the wrapper's overhead per call.
"""
import argparse
import statistics
import time

import torch
from torch import nn


def median_us(fn, repeat: int) -> float:
    for _ in range(100):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    from daceml.torch import DaceModule
    torch.set_num_threads(1)
    lin = nn.Linear(args.features, args.features).eval()
    x = torch.randn(1, args.features)
    dm = DaceModule(lin)
    with torch.no_grad():
        torch.testing.assert_close(dm(x), lin(x))
        eager, dace_, eager2 = [], [], []
        for _ in range(5):  # interleaved rounds
            eager.append(median_us(lambda: lin(x), args.repeat // 5))
            dace_.append(median_us(lambda: dm(x), args.repeat // 5))
            eager2.append(median_us(lambda: lin(x), args.repeat // 5))
    e, d, c = statistics.median(eager), statistics.median(dace_), statistics.median(eager2)
    print(f"nn.Linear({args.features}, {args.features}), batch 1, 1 thread, median per call:")
    print(f"  eager PyTorch      {e:7.2f} us")
    print(f"  eager (control)    {c:7.2f} us")
    print(f"  DaceModule         {d:7.2f} us")
    print(f"  overhead vs eager  {d - e:+7.2f} us")


if __name__ == "__main__":
    main()
