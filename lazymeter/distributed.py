"""``torch.distributed`` support for the meter: unwrap DDP, share rank 0's state, shard kernels.

Supported: ``LazyMeter(DistributedDataParallel(model))`` and ``LazyMeter(model)`` for a
model (or submodules) sharded with ``fully_shard`` (see :mod:`lazymeter.fsdp` for how a
sharded model is measured). Under DDP the meter trains
through the DDP wrapper (so gradients are all-reduced) and measures on the
wrapped module. Every rank must call ``meter.step`` at the same steps (the
schedule is a pure function of the step, so a shared loop does this), because a
measurement is a collective. Two strategies:

* ``"rank0"``: rank 0 computes the measurement, then broadcasts the row; the
  other ranks wait in the broadcast. Wall time = one process's measurement.
* ``"shard"``: each rank computes the kernel rows of its share of the probe
  (``K[rows_r, :]``), the blocks are all-gathered, every rank then computes the
  same scalars from the same kernel, and rank 0's row is broadcast.

This module knows nothing about the meter; it only moves tensors and objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils._pytree import tree_map

#: Strategies of :class:`Dist` (see the module docstring).
STRATEGIES = ("rank0", "shard")

WRONG_ORDER = (
    "torch.distributed is initialised with {world} processes but the model given to LazyMeter "
    "is neither wrapped in DistributedDataParallel nor sharded with fully_shard. Wrap the "
    "model first and the meter around it: "
    "meter = LazyMeter(DistributedDataParallel(model), ...), not "
    "DistributedDataParallel(LazyMeter(model)); pass distributed=None for independent "
    "single-process meters on each rank"
)


def is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def world_size() -> int:
    """Processes in the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@dataclass
class Dist:
    """The default process group as the meter needs it: rank, size, and three collectives."""

    rank: int
    world: int
    strategy: str
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable; tensors travel via CPU and come back
        on ``self.device``, so NCCL ranks with different GPUs unpickle safely)."""
        cpu = tree_map(lambda t: t.cpu() if isinstance(t, Tensor) else t, obj)
        box = [cpu if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return tree_map(lambda t: t.to(self.device) if isinstance(t, Tensor) else t, box[0])

    def broadcast_(self, tensors: list[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's values (same shapes on every rank)."""
        for t in tensors:
            dist.broadcast(t, src=0)

    def differing(self, named: list[tuple[str, Tensor]]) -> str | None:
        """A collective: ``None`` when every rank holds the same ``named`` tensors as rank 0,
        else a sentence naming the first that differs and a rank that holds another value.

        Cheap: three float64 sums per tensor (of the values, of their squares, of a
        position-weighted copy) are all-gathered and compared exactly (NaN equal to NaN);
        identical replicas give identical sums, so a difference is never a rounding
        artefact."""
        if not named:
            return None
        sums = []
        for _, t in named:
            v = t.detach().double().reshape(-1)
            w = torch.linspace(1.0, 2.0, v.numel(), dtype=v.dtype, device=v.device)
            sums.append(torch.stack([v.sum(), (v * v).sum(), (v * w).sum()]))
        mine = torch.stack(sums).to(self.device)
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine)
        for r, other in enumerate(parts[1:], start=1):
            same = ((other == parts[0]) | (other.isnan() & parts[0].isnan())).all(1)
            if not bool(same.all()):
                name = named[int((~same).nonzero()[0])][0]
                return f"{name!r} on rank {r} is not rank 0's"
        return None

    def rows(self, n: int) -> tuple[int, int]:
        """This rank's share ``[start, stop)`` of ``n`` rows (balanced, possibly empty)."""
        per = math.ceil(n / self.world)
        return min(self.rank * per, n), min((self.rank + 1) * per, n)

    def sharded_kernel(
        self, block: Callable[[int, int], Tensor], n_rows: int, n_cols: int, like: Tensor
    ) -> Tensor:
        """Assemble ``K [n_rows, n_cols]`` from per-rank row blocks ``block(start, stop)``.

        A rank whose block fails contributes NaN (so no rank is left waiting in the
        all-gather) and re-raises after it; the others see NaN and record NaN metrics.
        """
        per = math.ceil(n_rows / self.world)
        start, stop = self.rows(n_rows)
        mine = torch.full((per, n_cols), math.nan, dtype=like.dtype, device=like.device)
        error: Exception | None = None
        if stop > start:
            try:
                mine[: stop - start] = block(start, stop)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the collective
                error = e
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine)
        if error is not None:
            raise error
        return torch.cat(parts)[:n_rows]


def sharded_ntk(d: Dist, ntk: Callable[..., Tensor], x: Tensor, x2: Tensor | None, like: Tensor):
    """``ntk(x, x2)`` with each rank computing its rows (``x2 is None``: the symmetric
    kernel of ``x``, symmetrised after the gather); ``like`` gives dtype and device."""
    cols = x if x2 is None else x2
    K = d.sharded_kernel(lambda a, b: ntk(x[a:b], cols), len(x), len(cols), like)
    return (K + K.T) / 2 if x2 is None else K


def share_probes(d: Dist, probes: tuple, full: tuple, subset: Callable[[Any, int], Any]):
    """Rank 0's probes (and class count) on every rank: ``probes = (probe, test,
    num_classes)``. Under ``"shard"`` every rank also runs the quantities' setup, so the
    whole probes ``full = (full, full_test)`` travel too, cut by ``subset(p, seed_offset)``
    to what setup uses (the lazy baseline's ``max_points``); under ``"rank0"``
    rank 0 alone uses them and they stay where they are."""
    if d.strategy != "shard":
        return (*d.share(probes), *full)
    full = tuple(None if p is None else subset(p, i) for i, p in enumerate(full))
    return d.share((*probes, *full))


def make_dist(
    model: nn.Module, distributed: str | None, device: torch.device, sharded: bool = False
) -> Dist | None:
    """The :class:`Dist` for a meter around ``model``, or None for a single-process meter.

    ``distributed``: ``"auto"`` (a DDP-wrapped or ``sharded`` (``fully_shard``) model in a
    group of >1 processes gets the ``"rank0"`` strategy; a plain model there is an error,
    the usual symptom of ``DDP(LazyMeter(model))``), ``"rank0"``, ``"shard"``, or None (no
    collectives; not for a sharded model, whose every forward is a collective).
    """
    if distributed is None and sharded and world_size() > 1:
        raise ValueError(
            "distributed=None: a model sharded with fully_shard is one model across the "
            "ranks and every forward is a collective; use 'auto', 'rank0' or 'shard'"
        )
    if distributed is None:
        return None
    if distributed != "auto" and distributed not in STRATEGIES:
        raise ValueError(
            f"distributed: expected 'auto', {', '.join(map(repr, STRATEGIES))} or None, "
            f"got {distributed!r}"
        )
    world = world_size()
    if world == 1:
        return None
    if not (is_ddp(model) or sharded):
        raise TypeError(WRONG_ORDER.format(world=world))
    strategy = "rank0" if distributed == "auto" else distributed
    return Dist(dist.get_rank(), world, strategy, device)
