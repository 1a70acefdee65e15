"""LazyMeter in a multi-process run: DDP or FSDP2 (``fully_shard``), launched by torchrun.

A transformer-style regression (a pre-norm block on sequences of 8 tokens, mean-pooled)
on a generated teacher task, trained with full-batch GD on ``alpha * (f - f0)``; every
rank trains its share of the batch and calls ``meter.step`` at the same steps. Rank 0
writes ``history.jsonl``, TensorBoard events and ``summary.json`` under ``--out``.

One machine, 2 processes on CPU (gloo) or one per GPU (nccl)::

    torchrun --standalone --nproc_per_node 2 examples/distributed.py --shard fsdp

Several machines (run on each node, with node 0's address)::

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank $NODE \\
        --rdzv_backend c10d --rdzv_endpoint $HOST0:29500 examples/distributed.py --shard fsdp
"""

from __future__ import annotations

import argparse
import gc
import json
import os

import torch
import torch.distributed as dist
from torch import nn

import lazymeter as lm


class Block(nn.Module):
    """Embedding, one pre-norm attention + MLP block, mean-pooling, a linear head."""

    def __init__(self, d_in: int, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        a = self.norm1(h)
        h = h + self.attn(a, a, a, need_weights=False)[0]
        h = h + self.mlp(self.norm2(h))
        return self.head(h.mean(1)).squeeze(-1)


def teacher_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences ``[n, 8, 4]`` and a nonlinear target of their mean token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, 4, generator=g)
    m = x.mean(1)
    return x, torch.tanh(2 * m[:, 0] * m[:, 1]) + 0.5 * m[:, 2]


def wrap(model: nn.Module, how: str, device: torch.device) -> nn.Module:
    if how == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for child in model.children():  # one all-gather unit per parameter-owning layer
        if any(True for _ in child.parameters()):
            fully_shard(child)
    return fully_shard(model)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", choices=["ddp", "fsdp"], default="fsdp", help="wrapper")
    parser.add_argument("--strategy", choices=["rank0", "shard"], default="rank0",
                        help="who computes a measurement (docs: Distributed)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="measure every this many steps")
    parser.add_argument("--lr", type=float, default=0.05, help="before the 1/alpha^2 scaling")
    parser.add_argument("--out", default="runs/distributed")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")  # torchrun sets rank and world
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
    device = device or torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    summary = train(args, device)  # an error ends this process; torchrun stops the others
    # The model (whose DDP reducer holds the group) is freed and every rank is here before
    # the group goes: gloo can deadlock if its last reference dies while it cleans up.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    return summary


def train(args: argparse.Namespace, device: torch.device) -> dict:
    """The run on this rank; returns the last measurement row with the run's settings."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial model on every rank
    model = wrap(Block(4).to(device), args.shard, device)
    x, y = teacher_data(512, seed=1)
    xt, yt = teacher_data(256, seed=2)
    meter = lm.LazyMeter(
        model, alpha=args.alpha, probe=lm.ProbeSet((x, y), test=(xt, yt)),
        schedule=args.every, log_dir=args.out, distributed=args.strategy,
    )  # fmt: skip
    mine = slice(rank, None, world)  # this rank's share of the batch
    xb, yb, xt, yt = x[mine].to(device), y[mine].to(device), xt.to(device), yt.to(device)
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(args.lr))
    for step in range(args.steps + 1):
        loss = ((meter(xb) - yb) ** 2).mean()
        if meter.will_measure(step):  # the test loss only when it will be recorded
            with torch.no_grad():
                test = ((meter(xt) - yt) ** 2).mean().item()
            meter.step(step, train_loss=loss.item(), test_loss=test)
        else:
            meter.step(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    meter.close()
    last = meter.history[-1]
    summary = {"shard": args.shard, "strategy": args.strategy, "world": world, **last}
    if rank == 0:
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print(
            f"{args.shard} x{world} ({args.strategy}): step {last['step']:.0f}  "
            f"train {last['train_loss']:.4f}  test {last['test_loss']:.4f}  "
            f"NTK drift {last['ntk_drift']:.3f}  movement {last['param_movement']:.3f}",
            flush=True,
        )
    return summary


if __name__ == "__main__":
    main()
