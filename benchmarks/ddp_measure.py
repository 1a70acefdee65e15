"""Wall time of one ``LazyMeter.measure()`` under DDP: rank0 vs shard vs one process.

Two CPU processes (gloo, one thread each: what one device per rank gives) against
a single process with one thread (the same per-rank resources) and with all threads.
Cases: the paper's polynomial net (D=100, N=500; structured engine) and the MNIST
MLP (784-200-200-10; structured and jacobian engines), probes of ``--probes``
(``ProbeSet(max_points=)``) points, train and test. Each cell: median over ``--repeats``
calls after a warm-up; under DDP, rank 0's time between two barriers (the measurement is
a collective, so every rank leaves it together).

Also times the meter's construction (K0 and the lazy baseline on ``--baseline``
points), where sharding has more work to split.

Run: ``python benchmarks/ddp_measure.py [--repeats 5] [--probes 64,256]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import lazymeter as lm

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper import mnist, polynomial  # noqa: E402


def case(name: str, n: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    g = torch.Generator().manual_seed(seed)
    if name == "polynomial":
        d = polynomial.make_data(100, n, 1, generator=g)
        return polynomial.QuadraticNet(100, 500, 0.02, generator=g), d.x, d.y, "structured"
    x = torch.randn(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    method = "jacobian" if name.endswith("jacobian") else "structured"
    return mnist.make_mlp(784, seed=seed), x, y, method


def build(model: nn.Module, x, y, method: str, P: int, baseline: int, **kw) -> lm.LazyMeter:
    half = x.shape[0] // 2
    return lm.LazyMeter(
        model,
        probe=lm.ProbeSet((x[:half], y[:half]), test=(x[half:], y[half:]), max_points=P),
        quantities=lm.quantities.default(max_baseline=baseline),
        ntk=lm.NTKOptions(method=method),
        schedule=10**9,
        **kw,
    )


def timed(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up (plans, caches)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(rank: int, root: str, cells: list, repeats: int, baseline: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    results = {}
    for name, P in cells:
        for strategy in ("rank0", "shard"):
            model, x, y, method = case(name, 2 * max(P, baseline))
            ddp = DDP(model)
            build(ddp, x, y, method, P, baseline, distributed=strategy)  # warm-up
            dist.barrier()
            t0 = time.perf_counter()
            meter = build(ddp, x, y, method, P, baseline, distributed=strategy)
            dist.barrier()
            t_init = time.perf_counter() - t0
            t = timed(meter.measure, repeats, dist.barrier)
            results[(name, P, strategy)] = (t, t_init)
    if rank == 0:
        torch.save(results, os.path.join(root, "ddp.pt"))
    dist.barrier()  # no collective left in flight: gloo can deadlock tearing one down
    dist.destroy_process_group()


def single(cells: list, repeats: int, baseline: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    out = {}
    for name, P in cells:
        model, x, y, method = case(name, 2 * max(P, baseline))
        build(model, x, y, method, P, baseline)  # warm-up: first-call costs are not the meter's
        t0 = time.perf_counter()
        meter = build(model, x, y, method, P, baseline)
        t_init = time.perf_counter() - t0
        out[(name, P)] = (timed(meter.measure, repeats), t_init)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--probes", default="64,256", help="ProbeSet max_points values")
    ap.add_argument(
        "--baseline", type=int, default=256, help="the lazy baseline's max_points (construction)"
    )
    ap.add_argument(
        "--cases", default="polynomial,mnist_mlp", help="also: mnist_mlp_jacobian (slow)"
    )
    args = ap.parse_args()
    cells = [(c, int(p)) for c in args.cases.split(",") for p in args.probes.split(",")]
    all_threads = torch.get_num_threads()
    one = single(cells, args.repeats, args.baseline, 1)
    full = single(cells, args.repeats, args.baseline, all_threads)
    with tempfile.TemporaryDirectory() as root:
        mp.spawn(worker, args=(root, cells, args.repeats, args.baseline), nprocs=2, join=True)
        ddp = torch.load(os.path.join(root, "ddp.pt"))
    print(
        f"measure() wall time, ms (median of {args.repeats}); construction incl. lazy baseline "
        f"on {args.baseline} points, s. 1 process: 1 and {all_threads} threads; DDP: 2 x 1 thread"
    )
    head = f"{'case':20s} {'P':>4s} | {'1p/1t':>8s} {f'1p/{all_threads}t':>8s} {'rank0':>8s}"
    head += f" {'shard':>8s} | {'init 1p/1t':>10s} {'rank0':>7s} {'shard':>7s}"
    print(head)
    for name, P in cells:
        (t1, i1), (tf, _) = one[(name, P)], full[(name, P)]
        (tr, ir), (ts, is_) = ddp[(name, P, "rank0")], ddp[(name, P, "shard")]
        print(
            f"{name:20s} {P:4d} | {1e3 * t1:8.1f} {1e3 * tf:8.1f} {1e3 * tr:8.1f} {1e3 * ts:8.1f}"
            f" | {i1:10.2f} {ir:7.2f} {is_:7.2f}"
        )


if __name__ == "__main__":
    main()
