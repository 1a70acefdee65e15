"""Overhead of LazyMeter in a training loop, and the cost of one measurement vs probe size.

The paper's polynomial net (D=100, N=500, P=550 train, 1000 test, float32), full-batch
GD on the centred MSE for ``--steps`` steps:

* bare: the loop a researcher would write (``f(x; W0)`` precomputed once);
* meter: the same loop through ``LazyMeter(schedule=--schedule)`` with train and test probes
  (``ProbeSet(max_points=--max-probe)``), scalars logged every step, TensorBoard + JSONL in
  a temp dir.

Prints both times and their ratio (measured in the same run, interleaved, best of
``--repeats``), then the time of one ``meter.measure()`` for several probe sizes (``max_points``).

Run: ``python benchmarks/meter_overhead.py [--steps 3000] [--method auto] [--schedule log]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import torch

import lazymeter as lm

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper import polynomial  # noqa: E402

D, N, P, P_TEST, EPS = 100, 500, 550, 1000, 0.02


def setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = polynomial.make_data(D, P, P_TEST, generator=g)
    model = polynomial.QuadraticNet(D, N, EPS, generator=g)
    return model, data


def bare(steps: int) -> float:
    model, d = setup()
    f0 = model(d.x).detach()
    opt = torch.optim.SGD(model.parameters(), lr=float(N))  # lr = N / alpha^2, alpha = 1
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = ((model(d.x) - f0 - d.y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
    return time.perf_counter() - t0


def metered(
    steps: int, method: str, max_probe: int, log_dir: str, schedule: int | str = 100
) -> tuple[float, lm.LazyMeter]:
    model, d = setup()
    meter = lm.LazyMeter(
        model,
        alpha=1.0,
        probe=lm.ProbeSet((d.x, d.y), test=(d.x_test, d.y_test), max_points=max_probe),
        schedule=schedule,
        log_dir=log_dir,
        ntk=lm.NTKOptions(method=method),
    )
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(float(N)))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = ((meter(d.x) - d.y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())
    elapsed = time.perf_counter() - t0
    meter.close()
    return elapsed, meter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--max-probe", type=int, default=64, help="ProbeSet max_points (default 64)")
    ap.add_argument("--schedule", default="log", help="an int k (every k steps) or 'log'")
    args = ap.parse_args()
    schedule = int(args.schedule) if args.schedule.isdigit() else args.schedule
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; paper net D={D} N={N} "
        f"P={P} (+{P_TEST} test), {args.steps} full-batch GD steps, schedule={schedule}, "
        f"max_points={args.max_probe}, ntk method={args.method}"
    )
    bare(50)
    t_bare, t_meter = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # This machine's speed drifts by tens of percent over seconds: interleave the two
        # loops and compare both the best times and the median of paired ratios.
        for r in range(args.repeats):
            t_bare.append(bare(args.steps))
            t, meter = metered(args.steps, args.method, args.max_probe, f"{tmp}/{r}", schedule)
            t_meter.append(t)
        n_meas = len(meter.history)
        tb, tm = min(t_bare), min(t_meter)
        paired = statistics.median(m / b for m, b in zip(t_meter, t_bare, strict=True))
        print(
            f"  bare loop          {tb:7.2f} s  ({tb / args.steps * 1e3:.2f} ms/step, best of "
            f"{args.repeats})"
        )
        print(f"  through LazyMeter  {tm:7.2f} s  ({n_meas} measurements)")
        print(f"  overhead ratio     {tm / tb:7.3f}  (best/best);  {paired:.3f} (median of pairs)")

        print("\n  one measure() (train + test probe NTKs, metrics, logging) vs max_points:")
        model, d = setup()
        for k in (32, 64, 128, 256, 550):
            meter = lm.LazyMeter(
                copy.deepcopy(model),
                probe=lm.ProbeSet((d.x, d.y), test=(d.x_test, d.y_test), max_points=k),
                ntk=lm.NTKOptions(method=args.method),
                log_dir=f"{tmp}/probe{k}",
            )
            meter.measure()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                meter.measure()
                times.append(time.perf_counter() - t0)
            meter.close()
            ms = sorted(times)[len(times) // 2] * 1e3
            per_step = tb / args.steps * 1e3
            print(f"    max_points={k:4d}  {ms:8.1f} ms  = {ms / per_step:6.1f} bare steps")


if __name__ == "__main__":
    main()
