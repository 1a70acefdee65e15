"""The multi-process tests' shared parts: running a body in a spawned gloo process and
tearing the group down safely, and the protocol both the DDP and the FSDP runs follow
(full-batch GD split over the ranks, per-rank probes, a metric that fails on rank 0,
the single-process reference run).

torch's gloo process group can deadlock at tear-down: when the last reference to it goes
away while the interpreter holds the GIL (e.g. with the frame that held a DDP model, whose
reducer owns the group), its destructor joins gloo's worker thread, and that thread may
be freeing a finished collective whose tensors need the GIL to be released. Seen once in
a CI run (a spawned rank hung in ``~ProcessGroupGloo`` forever). So the body runs in its
own frame, its objects are freed while the group is alive, the ranks meet in a barrier
(their worker threads then hold no tensors) and only then is the group destroyed.
"""

from __future__ import annotations

import gc
import math
import os
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

import lazymeter as lm

STEPS, EVERY, ALPHA, LR = 12, 4, 2.0, 0.5
Data = tuple[Tensor, Tensor, Tensor, Tensor]  # X, Y, XT, YT


def run_rank(body: Callable[[dict], None], rank: int, world: int, root: str) -> None:
    """Join the gloo group at ``root``, run ``body(out)``, save ``out`` (with the traceback
    under ``"error"`` if the body failed) to ``root/rank{rank}.pt``, and leave the group."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=world)
    out: dict = {"pid": os.getpid()}
    try:
        body(out)
    except Exception:  # noqa: BLE001 - reported to the test through the result file
        out["error"] = traceback.format_exc()
    finally:
        torch.save(out, os.path.join(root, f"rank{rank}.pt"))
        leave_group()


def leave_group() -> None:
    """Destroy the default group after this rank's objects are freed and every rank has
    reached this point (a rank that never comes is given up after a minute)."""
    gc.collect()
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=60))
    except RuntimeError:  # another rank failed before reaching here: leave anyway
        pass
    dist.destroy_process_group()


def spawn(run: Callable[[int, int, str], None], root: str, world: int = 2) -> list[dict]:
    """``run(rank, world, root)`` in ``world`` spawned processes; each rank's saved ``out``
    (a rank whose body failed fails the test with its traceback)."""
    mp.spawn(run, args=(world, root), nprocs=world, join=True)
    results = [torch.load(os.path.join(root, f"rank{r}.pt")) for r in range(world)]
    for r, res in enumerate(results):
        assert "error" not in res, f"rank {r} failed:\n{res['error']}"
    return results


def rank_probes(data: Data, rank: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Rank 0's probes are the data; every other rank is given its own, different view,
    which the meter must ignore."""
    X, Y, XT, YT = data
    if rank:
        return (X[1:] * 1.5, Y[1:]), (XT.flip(0), YT.flip(0))
    return (X, Y), (XT, YT)


def flaky(rank: int) -> Callable[[nn.Module], dict[str, float]]:
    """A user metric that fails on rank 0 at step 4 only (after its first call)."""
    calls = []

    def fn(model: nn.Module) -> dict[str, float]:
        calls.append(1)
        if rank == 0 and len(calls) == 2:
            raise RuntimeError("flaky metric")
        return {"flaky": float(len(calls))}

    return fn


def train(model: nn.Module, data: Data, share: slice, meter: lm.LazyMeter | None) -> None:
    """GD on this rank's ``share`` of the batch (the wrapper averages the gradients, so the
    parameters follow full-batch GD); ``meter.step`` with the share's loss and the test
    loss, when a meter is given."""
    X, Y, XT, YT = data
    opt = torch.optim.SGD(model.parameters(), lr=LR / ALPHA**2)
    for _ in range(STEPS):
        loss = ((model(X[share]) - Y[share]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test = float(((model(XT) - YT) ** 2).mean())
        if meter is not None:
            meter.step(train_loss=loss.item(), test_loss=test)


def reference(model: nn.Module, data: Data, features: Sequence[str] = ()) -> lm.LazyMeter:
    """The same run in one process, unwrapped: rank 0's probes, full-batch GD, and rank 0's
    share of the loss as ``train_loss`` (the scalar the distributed history keeps);
    ``features``: layers whose feature CKA is measured too."""
    X, Y, XT, YT = data
    probe, test_probe = rank_probes(data, 0)
    quantities = lm.quantities.default(features=features, metrics={"flaky": flaky(0)})
    meter = lm.LazyMeter(
        model, alpha=ALPHA, probe=lm.ProbeSet(probe, test=test_probe), schedule=EVERY,
        quantities=quantities,
    )  # fmt: skip
    opt = torch.optim.SGD(meter.parameters(), lr=LR / ALPHA**2)
    for _ in range(STEPS):
        out = meter(X)
        loss = ((out - Y) ** 2).mean()
        rank0_loss = ((out[0::2] - Y[0::2]) ** 2).mean().item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test = float(((meter(XT) - YT) ** 2).mean())
        meter.step(train_loss=rank0_loss, test_loss=test)
    return meter


def same(a: float, b: float, rtol: float) -> bool:
    """Equal within ``rtol`` (1e-12 absolute), NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)
