"""Memory per rank of a LazyMeter on a ``fully_shard``-ed model against DDP (unsharded).

Two CPU processes (gloo, one thread each). Model: an MLP ``D-H-H-H-10`` in float32
(``--width H``, default 2048: 8.9M parameters, 34 MiB), trained with SGD on a batch of
64 per rank; the meter measures on probes of ``--probe`` points (train and test).
For each layout, every rank reports (in MiB of resident memory, ``/proc/self/status``):

* ``held``: resident memory added by building the model, its wrapper and the meter
  and taking one training step (parameters, snapshot, gradients, buffers);
* ``train peak``: the peak above the state before one more training step;
* ``measure peak``: the peak above the state before one ``meter.measure()``;
* ``total``: the highest resident memory during that measurement above the level
  before the model was built (``held`` plus what training and measuring left allocated
  plus ``measure peak``): what a rank must have free;
* the wall time of that measurement (rank 0's, between barriers).

``ddp`` keeps the whole model (and the meter's snapshot) on every rank. ``fsdp`` shards
the parameters, gradients and the snapshot (``fully_shard`` on each layer and the root):
the ``rank0`` strategy then gathers the full model (current and initial parameters) on
rank 0 for the measurement only; rank 1 holds one full parameter at a time. ``fsdp
shard`` gathers it on both ranks, which split the kernel rows.

glibc is asked to return freed blocks above 64 KiB to the system at once
(``MALLOC_MMAP_THRESHOLD_``), so that resident memory follows what is allocated.

Run: ``python benchmarks/fsdp_memory.py [--width 2048] [--probe 64]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from memory import reset_peak, status_kib
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

import lazymeter as lm

LAYOUTS = (("ddp", "rank0"), ("fsdp", "rank0"), ("fsdp", "shard"))
MIB = 1024


def make_mlp(d: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10),
    )  # fmt: skip


def rss() -> float:
    return status_kib("VmRSS") / MIB


def peak_above(fn) -> float:
    """MiB of resident memory above the current level at the peak of ``fn()``."""
    gc.collect()
    before = rss()
    if not reset_peak():
        raise SystemExit("cannot reset the peak RSS here (/proc/self/clear_refs)")
    fn()
    return status_kib("VmHWM") / MIB - before


def one_layout(layout: str, strategy: str, args, rank: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(1)
    d = 256
    x = torch.randn(64, d, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    probe = (torch.randn(args.probe, d, generator=g), torch.randint(0, 10, (args.probe,)))
    test = (torch.randn(args.probe, d, generator=g), torch.randint(0, 10, (args.probe,)))
    gc.collect()
    start = rss()
    model = make_mlp(d, args.width)
    if layout == "ddp":
        model = DDP(model)
    else:
        for m in model:
            if isinstance(m, nn.Linear):
                fully_shard(m)
        fully_shard(model)
    meter = lm.LazyMeter(
        model, probe=lm.ProbeSet(probe, test=test, max_points=args.probe),
        quantities=lm.quantities.default(max_baseline=args.probe),
        schedule=10**9, distributed=strategy, ntk=lm.NTKOptions(method="structured"),
    )  # fmt: skip
    opt = torch.optim.SGD(meter.parameters(), lr=0.01)

    def train_step() -> None:
        loss = nn.functional.cross_entropy(meter(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_step()
    held = rss() - start
    train_peak = peak_above(train_step)
    meter.measure()  # warm-up: routes and plans
    dist.barrier()
    t0 = time.perf_counter()
    level = rss() - start
    measure_peak = peak_above(meter.measure)
    dist.barrier()
    seconds = time.perf_counter() - t0
    out = {"held": held, "train": train_peak, "measure": measure_peak, "seconds": seconds}
    return {**out, "total": level + measure_peak}


def worker(rank: int, root: str, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    out = {
        f"{layout} {strategy}": one_layout(layout, strategy, args, rank)
        for layout, strategy in LAYOUTS
    }
    found: list = [None, None]
    dist.all_gather_object(found, out)
    if rank == 0:
        report(found, args)
    dist.barrier()  # no collective left in flight: gloo can deadlock tearing one down
    dist.destroy_process_group()


def report(found: list[dict], args) -> None:
    n = sum(p.numel() for p in make_mlp(256, args.width).parameters())
    w = args.width
    print(f"MLP 256-{w}-{w}-{w}-10, float32: {n / 1e6:.1f}M parameters = "
          f"{4 * n / 2**20:.0f} MiB; probe {args.probe} + test {args.probe}")  # fmt: skip
    print("| layout | rank | held | train peak | measure peak | total | measure (s) |")
    print("|---|---|---|---|---|---|---|")
    for name in found[0]:
        for rank, per in enumerate(found):
            r = per[name]
            print(f"| {name} | {rank} | {r['held']:.0f} | {r['train']:.0f} | "
                  f"{r['measure']:.0f} | {r['total']:.0f} | {r['seconds']:.2f} |")  # fmt: skip
    ddp0 = found[0]["ddp rank0"]
    for rank in (0, 1):
        f = found[rank]["fsdp rank0"]
        print(f"rank {rank}, fsdp rank0 / ddp: held x{f['held'] / ddp0['held']:.2f}, "
              f"total x{f['total'] / ddp0['total']:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--probe", type=int, default=64)
    args = parser.parse_args()
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # read by the spawned processes' glibc
    with tempfile.TemporaryDirectory() as root:
        mp.spawn(worker, args=(root, args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
