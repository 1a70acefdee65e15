"""Running a test body in a spawned gloo process and tearing the group down safely.

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
import os
import traceback
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist


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
