"""Reading curves out of a run's history (the rows a meter logs: ``{"step": ..., key: ...}``).

``history.jsonl`` holds two kinds of rows: *measurements* (the rows of ``meter.history``:
the step, the scalars passed to ``meter.step`` and every measured quantity's keys) and
*scalar rows* (``{"step": ..., <scalars>..., "kind": "scalars"}``), the scalars of steps
without a measurement, written every ``meter.scalar_every`` steps (and at ``close()``), so
the losses in the file reach the run's real end. :func:`measurements` keeps the first kind;
:func:`last_value` reads a key's last value from whichever row has it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The key (and its value) that marks a scalar row of ``history.jsonl``.
KIND_KEY, SCALARS = "kind", "scalars"


def is_scalar_row(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` is a scalar row (``"kind": "scalars"``), not a measurement."""
    return row.get(KIND_KEY) == SCALARS


def measurements(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The measurement rows of ``rows`` (all of ``meter.history``; of ``history.jsonl``
    read with :func:`lazymeter.read_jsonl`, those without ``"kind": "scalars"``)."""
    return [r for r in rows if not is_scalar_row(r)]


def last_value(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The value of ``key`` in the last row that has a finite one (NaN when none has)."""
    for r in reversed(rows):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return math.nan


def series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` over the rows at a positive step with a finite number
    for it (rows without the key, with NaN, or at step 0 are left out: a log-x axis)."""
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and r.get("step", 0) > 0
        ):
            xs.append(r["step"])
            ys.append(v)
    return xs, ys
