"""Reading curves out of a run's history (the rows a meter logs: ``{"step": ..., key: ...}``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` over the rows at a positive step with a finite number
    for it (rows without the key, with NaN, or at step 0 are left out: a log-x axis)."""
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and r.get("step", 0) > 0:
            xs.append(r["step"])
            ys.append(v)
    return xs, ys
