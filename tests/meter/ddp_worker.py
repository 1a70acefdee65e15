"""A 2-process DDP training run with a LazyMeter, started by tests/meter/test_distributed.py.

Every rank trains its half of a full batch (DDP averages the gradients, so the
parameters follow full-batch GD exactly) and is given a *different* initial model
and a *different* probe: the meter must measure rank 0's everywhere.
"""

from __future__ import annotations

import os
import warnings

import spawned as S
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import lazymeter as lm


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()


def data() -> S.Data:
    g = torch.Generator().manual_seed(7)
    X = torch.randn(24, 3, generator=g, dtype=torch.float64)
    XT = torch.randn(10, 3, generator=g, dtype=torch.float64)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(X @ W), XT, torch.sin(XT @ W)


def run(rank: int, world: int, root: str) -> None:
    S.run_rank(lambda out: body(rank, world, root, out), rank, world, root)


def body(rank: int, world: int, root: str, out: dict) -> None:
    import lazymeter.ntk.options as meter_module

    kernel_rows: list[int] = []  # rows of every kernel this rank computed
    ntk = meter_module.empirical_ntk

    def spy(model, x1, x2=None, **kw):
        kernel_rows.append(len(x1))
        return ntk(model, x1, x2, **kw)

    meter_module.empirical_ntk = spy
    for strategy in ("rank0", "shard"):
        model = make_model(seed=1 + rank)  # DDP and the meter must both use rank 0's
        probe, test_probe = S.rank_probes(data(), rank)
        meter = lm.LazyMeter(
            DDP(model),
            alpha=S.ALPHA,
            probe=lm.ProbeSet(probe, test=test_probe),
            schedule=S.EVERY,
            log_dir=os.path.join(root, strategy),
            distributed=strategy,
            quantities=lm.quantities.default(features=["1"], metrics={"flaky": S.flaky(rank)}),
        )
        kernel_rows.clear()
        S.train(meter, data(), slice(rank, None, world), meter)
        meter.close()
        out[strategy] = {
            "history": meter.history,
            "snapshot": {k: v.clone() for k, v in meter.snapshot.as_dict().items()},
            "probe_x": meter.probe_x.clone(),
            "params": {k: v.detach().clone() for k, v in meter.net.named_parameters()},
            "kernel_rows": list(kernel_rows),
        }
    try:
        lm.LazyMeter(make_model(0), probe=S.rank_probes(data(), 0)[0])
    except TypeError as e:
        out["wrong_order"] = str(e)
    # Independent per-rank meters stay possible, and make no collective calls.
    lm.LazyMeter(make_model(0), probe=S.rank_probes(data(), rank)[0], distributed=None).measure()
    replicas(rank, world, out)


def replicas(rank: int, world: int, out: dict) -> None:
    """Replicas that differ: BatchNorm statistics of DDP(broadcast_buffers=False) (each rank
    normalises its own half of the batch), or rank 1's weights perturbed after the meter
    was built. ``shard`` must not mix them silently; ``rank0`` measures rank 0's model."""
    X, Y = data()[:2]
    half = slice(rank, None, world)
    for case, strategy in (("buffers", "shard"), ("perturbed", "shard"), ("buffers", "rank0")):
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 2))
        model = model.double()
        ddp = DDP(model, broadcast_buffers=case != "buffers")
        probe = S.rank_probes(data(), rank)[0]
        meter = lm.LazyMeter(ddp, alpha=S.ALPHA, probe=probe, schedule=10**9, distributed=strategy)
        opt = torch.optim.SGD(ddp.parameters(), lr=meter.scaled_lr(0.1))
        ((meter(X[half]) - Y[half]) ** 2).mean().backward()
        opt.step()
        if case == "perturbed" and rank == 1:
            with torch.no_grad():
                model[0].weight.add_(0.01)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            row = meter.measure()
        out[f"replicas_{case}_{strategy}"] = {
            "row": row,
            "warnings": [str(w.message) for w in seen],
        }
