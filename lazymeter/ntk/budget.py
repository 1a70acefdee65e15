"""How much memory one kernel's blocks may use: a budget from the device, or the user's.

``memory_budget=None`` (every NTK call's default) means: ``$LAZYMETER_MEMORY_BUDGET`` when
set, else a fraction of what the model's device has free right now

* CUDA: :data:`CUDA_FRACTION` of the free device memory (``torch.cuda.mem_get_info``) plus
  what PyTorch's caching allocator holds reserved but unused (free to this process);
* CPU: :data:`CPU_FRACTION` of the available RAM (``MemAvailable``, or what a cgroup
  memory limit leaves, whichever is smaller), at most :data:`CPU_CAP`: on a CPU larger
  blocks stop paying (``benchmarks/ntk_budget.py``: at 5.7 GiB the transformer cases ran
  1.3-1.5x slower than at 1 GiB, memory-bound), while a small machine gets less;

never below :data:`MIN_BUDGET`, and :data:`DEFAULT_MEMORY_BUDGET` where the free memory
cannot be read. A fixed constant tuned on one CPU was ~100x too small on a 141 GB GPU,
where the kernels then ran in many small blocks.
:func:`resolve_budget` also says where the number came from.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

#: The budget where the device's free memory cannot be read (512 MiB).
DEFAULT_MEMORY_BUDGET = 512 * 2**20

#: A device-derived budget is never smaller than this (a nearly full device: the blocks
#: stay usable, and an allocation that does not fit fails loudly instead).
MIN_BUDGET = 256 * 2**20

#: Fraction of the free GPU memory (plus the allocator's unused reserve) a kernel may use.
CUDA_FRACTION = 0.5

#: Fraction of the available RAM a kernel may use on the CPU (the training process, the
#: data loader and other processes share the rest), up to :data:`CPU_CAP`.
CPU_FRACTION = 0.25

#: The most a CPU kernel's blocks get by default (1 GiB): beyond it blocks were slower.
CPU_CAP = 2**30

#: Environment variable holding the default memory budget, e.g. ``2GiB``, ``512MiB``,
#: ``1.5e9`` (bytes); read at each call, so it can be set after import.
MEMORY_BUDGET_ENV = "LAZYMETER_MEMORY_BUDGET"

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6}
_UNITS.update({"mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tib": 2**40})


def parse_bytes(text: str) -> int:
    """``"2GiB" -> 2147483648``; accepts a plain number of bytes or a B/KiB/MiB/GiB/TiB
    (or kB/MB/GB) suffix, case-insensitive."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"memory budget: cannot read {text!r}; write bytes or a size like '512MiB' or '2GiB'"
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory budget: must be positive, got {text!r}")
    return value


def _gib(n: float) -> str:
    """``n`` bytes for a person: ``"5.4 GiB"``, ``"64 KiB"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_ram() -> int | None:
    """Bytes of RAM this process could still use: ``MemAvailable`` of ``/proc/meminfo``
    (else ``sysconf``), capped by a cgroup (v2 or v1) memory limit minus its usage; None
    where neither can be read."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            avail = None
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes"),
    ):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 2**60:  # "max" / unlimited: None
            left = max(cap - used, 0)
            avail = left if avail is None else min(avail, left)
    return avail


def device_budget(device: torch.device | str | None = None) -> tuple[int, str]:
    """``(bytes, why)``: the budget a kernel on ``device`` gets by default (see the module
    docstring), ignoring the environment variable."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        except (RuntimeError, AssertionError):
            free = None
        if free is not None:
            budget = max(int(CUDA_FRACTION * (free + unused)), MIN_BUDGET)
            return budget, (
                f"{CUDA_FRACTION:.0%} of {_gib(free + unused)} free on {device} "
                "(free memory plus the allocator's unused reserve)"
            )
    elif device.type == "cpu":
        avail = available_ram()
        if avail is not None:
            share = int(CPU_FRACTION * avail)
            if share > CPU_CAP:
                return CPU_CAP, f"the CPU cap ({_gib(CPU_CAP)}; {_gib(avail)} RAM available)"
            budget = max(share, MIN_BUDGET)
            return budget, f"{CPU_FRACTION:.0%} of {_gib(avail)} available RAM"
    return DEFAULT_MEMORY_BUDGET, f"the fixed default (free memory on {device} not readable)"


def resolve_budget(memory_budget: Any, device: torch.device | str | None) -> tuple[int, str]:
    """``(bytes, why)`` of a call's ``memory_budget`` (bytes, a size string such as
    ``"2GiB"``, or None: ``$LAZYMETER_MEMORY_BUDGET``, else :func:`device_budget`)."""
    if memory_budget is None:
        env = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
        if not env:
            return device_budget(device)
        try:
            return parse_bytes(env), f"${MEMORY_BUDGET_ENV}={env}"
        except ValueError as e:
            raise ValueError(f"{MEMORY_BUDGET_ENV}: {e}") from None
    if isinstance(memory_budget, str):
        return parse_bytes(memory_budget), f"memory_budget={memory_budget!r}"
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float)):
        raise TypeError(f"memory_budget: expected bytes or a size string, got {memory_budget!r}")
    if memory_budget <= 0:
        raise ValueError(f"memory_budget: expected a positive number of bytes, got {memory_budget}")
    return int(memory_budget), f"memory_budget={_gib(memory_budget)}"


def default_memory_budget(device: torch.device | str | None = None) -> int:
    """The budget used when ``memory_budget=None`` on ``device`` (default: the CPU):
    ``$LAZYMETER_MEMORY_BUDGET`` if set, else :func:`device_budget`."""
    return resolve_budget(None, device)[0]
