"""A 2-process DDP training run with a LazyMeter, started by tests/meter/test_distributed.py.

Every rank trains its half of a full batch (DDP averages the gradients, so the
parameters follow full-batch GD exactly) and is given a *different* initial model
and a *different* probe: the meter must measure rank 0's everywhere.
"""

from __future__ import annotations

import os

import torch
from spawned import run_rank
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import lazymeter as lm

STEPS, EVERY, ALPHA, LR = 12, 4, 2.0, 0.5


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(7)
    X = torch.randn(24, 3, generator=g, dtype=torch.float64)
    XT = torch.randn(10, 3, generator=g, dtype=torch.float64)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(X @ W), XT, torch.sin(XT @ W)


def probes(
    rank: int,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    X, Y, XT, YT = data()
    if rank:  # another rank's own view of the data: must be ignored
        return (X[1:] * 1.5, Y[1:]), (XT.flip(0), YT.flip(0))
    return (X, Y), (XT, YT)


def train(meter: lm.LazyMeter, shard: slice) -> None:
    X, Y, XT, YT = data()
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(LR))
    for _ in range(STEPS):
        loss = ((meter(X[shard]) - Y[shard]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test = float(((meter(XT) - YT) ** 2).mean())
        meter.step(train_loss=loss.item(), test_loss=test)


def flaky(rank: int):
    """A user metric that fails on rank 0 at step 4 only (after its first call)."""
    calls = []

    def fn(model: nn.Module) -> dict[str, float]:
        calls.append(1)
        if rank == 0 and len(calls) == 2:
            raise RuntimeError("flaky metric")
        return {"flaky": float(len(calls))}

    return fn


def run(rank: int, world: int, root: str) -> None:
    run_rank(lambda out: body(rank, world, root, out), rank, world, root)


def body(rank: int, world: int, root: str, out: dict) -> None:
    import lazymeter.meter as meter_module

    kernel_rows: list[int] = []  # rows of every kernel this rank computed
    ntk = meter_module.empirical_ntk

    def spy(model, x1, x2=None, **kw):
        kernel_rows.append(len(x1))
        return ntk(model, x1, x2, **kw)

    meter_module.empirical_ntk = spy
    for strategy in ("rank0", "shard"):
        model = make_model(seed=1 + rank)  # DDP and the meter must both use rank 0's
        probe, test_probe = probes(rank)
        meter = lm.LazyMeter(
            DDP(model),
            alpha=ALPHA,
            probe=probe,
            test_probe=test_probe,
            schedule=EVERY,
            log_dir=os.path.join(root, strategy),
            distributed=strategy,
            features=["1"],
            metrics={"flaky": flaky(rank)},
        )
        kernel_rows.clear()
        train(meter, slice(rank, None, world))
        meter.close()
        out[strategy] = {
            "history": meter.history,
            "snapshot": {k: v.clone() for k, v in meter.snapshot.as_dict().items()},
            "probe_x": meter.probe_x.clone(),
            "params": {k: v.detach().clone() for k, v in meter.net.named_parameters()},
            "kernel_rows": list(kernel_rows),
        }
    try:
        lm.LazyMeter(make_model(0), probe=probes(0)[0])
    except TypeError as e:
        out["wrong_order"] = str(e)
    # Independent per-rank meters stay possible, and make no collective calls.
    lm.LazyMeter(make_model(0), probe=probes(rank)[0], distributed=None).measure()
