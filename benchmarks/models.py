"""The meter on the models users bring (tests/models/zoo.py): which NTK engine measures
each, its structured coverage, and the time of one ``meter.measure()`` (train probe of 12
points, median of ``--repeats`` after one warm-up; float32, default threads). Also the
time of building the meter (its first kernels, routes and plans included).

The last rows: HuggingFace GPT-2 on a tiny config (skipped without ``transformers``) and
the raw-parameter transformer, at the zoo's 12 points and at the meter's default
probe size (``ProbeSet(max_points=64)``), 64 train and 64 test points.

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
sys.path.insert(0, os.path.join(HERE, "..", "examples"))  # the zoo's transformer: the paper's

from zoo import FULLY_RULED, ZOO  # noqa: E402

import lazymeter as lm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | parameters | engine (auto) | structured coverage | build | one measure() |")
    print("|---|---|---|---|---|---|")
    models = {**ZOO, **{n: FULLY_RULED[n] for n in ("hf_gpt2", "raw_transformer")}}
    for name, make in models.items():
        try:
            model, x, y, output_fn = make()
        except ImportError as e:
            print(f"| {name} | skipped: {e} | | | | |")
            continue
        probes = [(name, x, y, None)]
        if name in FULLY_RULED and name not in ZOO:
            g = torch.Generator().manual_seed(1)
            vocab = y.shape[1]
            x64 = torch.randint(0, vocab, (64, x.shape[1]), generator=g)
            y64 = torch.randn(64, vocab, generator=g)
            probes.append((f"{name}, 64 + 64 points", x64, y64, (x64, y64)))
        for label, px, py, test in probes:
            t0 = time.perf_counter()
            probe = lm.ProbeSet((px, py), test=test)
            meter = lm.LazyMeter(model, probe=probe, output_fn=output_fn)
            build = time.perf_counter() - t0
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
                f"| {label} | {n} | {info['engine']} | {'' if cov is None else f'{cov:.2f}'} "
                f"| {build:.2f} s | {statistics.median(times) * 1e3:.1f} ms |"
            )


if __name__ == "__main__":
    main()
