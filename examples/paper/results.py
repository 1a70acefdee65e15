"""What every experiment does with its curves and its summary: read a curve out of a run's
history, read a crossing step off it, compare and print crossing steps (never = infinitely
late; printed "not reached", not "nan"), and write strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` over the history rows (``{"step": ..., key: ...}``, as
    ``meter.history`` holds them) at a positive step with a finite number for it: a curve
    for a log-x axis."""
    steps, values = [], []
    for r in rows:
        v = r.get(key)
        if is_finite(v) and r.get("step", 0) > 0:
            steps.append(r["step"])
            values.append(v)
    return steps, values


def first_step_at_or_above(
    steps: Sequence[float], values: Sequence[float], level: float, *, strict: bool = False
) -> float:
    """The first ``steps[i]`` with ``values[i] >= level`` (``> level`` when ``strict``);
    None and NaN values are skipped; NaN if it never happens."""
    for s, v in zip(steps, values, strict=True):
        if v is not None and math.isfinite(v) and (v > level if strict else v >= level):
            return float(s)
    return math.nan


def is_finite(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (not None, NaN or +-Inf)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def never_is_inf(v: Any) -> float:
    """A crossing step with "never" (NaN, or None once through JSON) as infinitely late."""
    return float(v) if is_finite(v) else math.inf


def comes_later(steps: Sequence[Any]) -> bool:
    """Whether crossing steps (never = infinitely late) never decrease along ``steps`` and
    the last comes strictly after the first: "the delay grows"."""
    t = [never_is_inf(v) for v in steps]
    return len(t) > 1 and all(a <= b for a, b in zip(t[:-1], t[1:], strict=True)) and t[0] < t[-1]


#: What a crossing step, a delay or a ratio that does not exist (NaN, None, +-Inf) prints as.
NOT_REACHED = "not reached"


def reached(
    v: Any, spec: str = "g", unit: str = "", *, prefix: str = "", missing: str = NOT_REACHED
) -> str:
    """A crossing step, a delay or a ratio for people: ``prefix + format(v, spec) + unit``
    (``reached(3.5, ".1f", "x")`` is ``3.5x``), or ``not reached`` (``missing``) when there
    is none (None, NaN, +-Inf), never ``nan``."""
    return f"{prefix}{format(v, spec)}{unit}" if is_finite(v) else missing


def at_epoch(v: Any) -> str:
    """Where a curve crossed: ``at epoch 340``, or ``not reached``."""
    return reached(v, prefix="at epoch ")


def step_text(v: Any) -> str:
    """A step for people: ``340``, ``12.1k``, or ``never`` (None, NaN)."""
    if not is_finite(v):
        return "never"
    return f"{v / 1000:.3g}k" if abs(v) >= 1000 else f"{v:.3g}"


def finite_or_none(v: Any) -> Any:
    """``v`` with every non-finite float (NaN, +-Inf) replaced by None, through dicts,
    lists and tuples: what strict JSON can hold."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_or_none(x) for x in v]
    return v


def write_json(path: str, obj: Any, indent: int | None = 2) -> None:
    """``obj`` as strict JSON (no bare NaN or Infinity: they become null) at ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(finite_or_none(obj), f, indent=indent, allow_nan=False)
