"""2-process FSDP2 (``fully_shard``) training runs with a LazyMeter, started by
tests/meter/test_fsdp.py.

Every rank trains its half of a full batch (FSDP averages the gradients, so the
parameters follow full-batch GD exactly) and is given a *different* probe: the meter
must measure rank 0's everywhere. Each run is repeated without the meter's
measurements, to show that measuring leaves training bit-identical.
"""

from __future__ import annotations

import os

import spawned as S
import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import lazymeter as lm
from lazymeter.fsdp import reshard_all
from lazymeter.scaled import ScaledModel


class Block(nn.Module):
    """A pre-norm transformer block on embedded inputs, mean-pooled to 2 outputs."""

    def __init__(self, d_in: int = 3, d: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a = self.norm1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        h = h + self.mlp(self.norm2(h))
        return self.head(h.mean(1))


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x}


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "mlp":
        net = nn.Sequential(
            nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5), nn.Tanh(), nn.Linear(5, 2)
        )
    else:
        net = Block()
    return net.double()


def shard(net: nn.Module, kind: str) -> nn.Module:
    """``fully_shard`` each parameter-owning child, then the root (the usual recipe). The
    block keeps its layers gathered between forward and backward (ZeRO-2 style), so the
    meter cannot rely on FSDP freeing them after a forward."""
    for child in net.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, reshard_after_forward=kind == "mlp")
    fully_shard(net)
    return net


def data(kind: str) -> S.Data:
    g = torch.Generator().manual_seed(7)
    shape = (3,) if kind == "mlp" else (4, 3)  # the block reads sequences of 4 tokens
    X = torch.randn(24, *shape, generator=g, dtype=torch.float64)
    XT = torch.randn(10, *shape, generator=g, dtype=torch.float64)
    W = torch.randn(3, 2, generator=g, dtype=torch.float64)

    def target(x: torch.Tensor) -> torch.Tensor:
        return torch.sin((x if kind == "mlp" else x.mean(1)) @ W)

    return X, target(X), XT, target(XT)


def full_params(net: nn.Module) -> dict[str, torch.Tensor]:
    reshard_all(net)
    return {n: p.detach().full_tensor().clone() for n, p in net.named_parameters()}


def make_meter(kind: str, strategy: str, rank: int, log_dir: str | None) -> lm.LazyMeter:
    probe, test_probe = S.rank_probes(data(kind), rank)
    return lm.LazyMeter(
        shard(make_model(kind), kind),
        alpha=S.ALPHA,
        probe=lm.ProbeSet(probe, test=test_probe),
        schedule=S.EVERY,
        log_dir=log_dir,
        distributed=strategy,
        quantities=lm.quantities.default(metrics={"flaky": S.flaky(rank)}),
    )


def one_run(kind: str, strategy: str, rank: int, world: int, root: str) -> dict:
    meter = make_meter(
        kind, strategy, rank, os.path.join(root, f"{kind}-{strategy}", f"rank{rank}")
    )
    net = meter.net
    params = list(net.parameters())
    placements = [p.placements for p in params]
    X = data(kind)[0]
    kernels = (lm.empirical_ntk(net, X[:5]), lm.empirical_ntk(net, X[:5], X[5:8], per_layer=True))
    S.train(meter, data(kind), slice(rank, None, world), meter)
    meter.close()
    history = [dict(r) for r in meter.history]
    # Resume: a new sharded model and meter take the checkpoint and measure the same.
    again = make_meter(kind, strategy, rank, None)
    again.load_state_dict(meter.state_dict())
    resumed = (meter.measure(), again.measure(), again.history[: len(history)] == history)
    unmeasured = shard(make_model(kind), kind)
    S.train(ScaledModel(unmeasured, alpha=S.ALPHA), data(kind), slice(rank, None, world), None)
    reshard_all(net)  # at rest: FSDP's own DTensors in the modules' slots
    return {
        "history": history,
        "kernels": kernels,
        "resumed": resumed,
        "ntk_engine": meter.ntk_engine,
        "probe_x": meter.probe_x.clone(),
        "same_objects": all(a is b for a, b in zip(params, net.parameters(), strict=True)),
        "dtensors": all(isinstance(p, DTensor) for p in net.parameters())
        and all(isinstance(t, DTensor) for t in meter._params0().values()),
        "same_placements": [p.placements for p in net.parameters()] == placements,
        "params": full_params(net),
        "unmeasured_params": full_params(unmeasured),
    }


RUNS = (("mlp", "rank0"), ("mlp", "shard"), ("block", "rank0"))


def run(rank: int, world: int, root: str) -> None:
    S.run_rank(lambda out: body(rank, world, root, out), rank, world, root)


def body(rank: int, world: int, root: str, out: dict) -> None:
    for kind, strategy in RUNS:
        out[kind, strategy] = one_run(kind, strategy, rank, world, root)
    try:
        lm.LazyMeter(
            shard(make_model("mlp"), "mlp"),
            probe=S.rank_probes(data("mlp"), 0)[0],
            distributed=None,
        )
    except ValueError as e:
        out["independent"] = str(e)
    # Only rank 0 runs the model at construction; its error reaches every rank.
    bad = shard(nn.Sequential(nn.Linear(3, 2), DictOut()).double(), "mlp")
    try:
        lm.LazyMeter(bad, probe=S.rank_probes(data("mlp"), 0)[0])
    except TypeError as e:
        out["bad_output"] = str(e)
