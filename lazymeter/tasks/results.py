"""What every experiment does with its curves and its summary: read a crossing step off a
curve, and write strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


def first_step_at_or_above(
    steps: Sequence[float], values: Sequence[float], level: float, *, strict: bool = False
) -> float:
    """The first ``steps[i]`` with ``values[i] >= level`` (``> level`` when ``strict``);
    None and NaN values are skipped; NaN if it never happens."""
    for s, v in zip(steps, values, strict=True):
        if v is not None and math.isfinite(v) and (v > level if strict else v >= level):
            return float(s)
    return math.nan


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
