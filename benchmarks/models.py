"""The meter on the models users bring (tests/models/zoo.py): which NTK engine measures
each, its structured coverage, and the time of one ``meter.measure()`` (train probe of 12
points, median of ``--repeats`` after one warm-up; float32, default threads).

    python benchmarks/models.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))

from zoo import ZOO  # noqa: E402

import lazymeter as lm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | parameters | engine (auto) | structured coverage | one measure() |")
    print("|---|---|---|---|---|")
    for name, make in ZOO.items():
        model, x, y, output_fn = make()
        meter = lm.LazyMeter(model, probe=(x, y), output_fn=output_fn)
        info = meter.ntk_engine
        meter.measure()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            meter.measure()
            times.append(time.perf_counter() - t0)
        n = sum(p.numel() for p in model.parameters())
        cov = info.get("coverage")
        print(
            f"| {name} | {n} | {info['engine']} | {'' if cov is None else f'{cov:.2f}'} "
            f"| {statistics.median(times) * 1e3:.1f} ms |"
        )


if __name__ == "__main__":
    main()
