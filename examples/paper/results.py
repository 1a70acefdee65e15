"""What every experiment does with its curves and its summary: read a curve out of a run's
history, read a crossing step off it, compare crossing steps (a run that never fitted or never
generalised is said to be so, never counted as "later": :func:`delay_grows`), print them
("not reached", not "nan") and write strict JSON."""

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


def ran_for(run: Mapping[str, Any], default: str = "the run's budget") -> str:
    """How long a run ran, for people: its ``final_step`` (or its configured ``steps`` /
    ``epochs``) as ``"12.1k steps"``, or ``default`` when the summary does not say."""
    cfg = run.get("config") or {}
    for v in (run.get("final_step"), run.get("steps"), cfg.get("steps"), cfg.get("epochs")):
        if is_finite(v):
            return f"{step_text(v)} steps"
    return default


def delay_grows(
    labels: Sequence[str],
    train_steps: Sequence[Any],
    test_steps: Sequence[Any],
    budgets: Sequence[str] | None = None,
    *,
    never_tail: bool = False,
    shrinks: bool = False,
    of_test: bool = False,
) -> tuple[bool, str]:
    """Whether the fit-to-generalisation delay (test step - train step) grows along the runs
    (``shrinks``: falls), and why not.

    A run that never fitted its training set (no train step) is no late grokker: the claim
    fails. A run that fitted but never generalised is reported as "never generalised within
    its budget", never as a step: it fails the claim, except with ``never_tail`` where such
    runs may only come after every run that generalised (a never-grok phase) and count for
    nothing. The growth is read off the runs that generalised: at least two, never decreasing
    (``shrinks``: never increasing), last strictly past first. ``of_test``: the test steps
    themselves instead of the delays ("generalises later"), with the same rules."""
    budgets = list(budgets) if budgets is not None else ["its budget"] * len(labels)
    unfit = [
        f"{lab} never fitted its training set (ran {b})"
        for lab, tr, b in zip(labels, train_steps, budgets, strict=True)
        if not is_finite(tr)
    ]
    if unfit:
        return False, "; ".join(unfit)
    never = [i for i, te in enumerate(test_steps) if not is_finite(te)]
    said = "; ".join(f"{labels[i]} never generalised within {budgets[i]}" for i in never)
    done = [i for i in range(len(labels)) if i not in never]
    if never and not never_tail:
        return False, said
    if never and done and min(never) < max(done):
        return False, said + " (before a run that did)"
    d = [float(test_steps[i]) - (0.0 if of_test else float(train_steps[i])) for i in done]
    if shrinks:
        d = [-x for x in d]
    if len(d) < 2:
        return False, "fewer than two runs generalised" + (f" ({said})" if said else "")
    ok = all(a <= b for a, b in zip(d[:-1], d[1:], strict=True)) and d[0] < d[-1]
    what = "test crossings" if of_test else "delays"
    why = "" if ok else f"{what} {'do not shrink' if shrinks else 'do not grow'}"
    return ok, "; ".join(x for x in (why, said) if x)


class Verdict:
    """Whether a claim holds, part by part: ``parts`` maps each part, as the paper states it,
    to whether it holds. ``"yes"`` (every part), ``"partly"`` (some; ``str`` names the failed
    ones) or ``"no"``; true only for ``"yes"``."""

    def __init__(self, parts: Mapping[str, bool]) -> None:
        if not parts:
            raise ValueError("a verdict needs at least one part")
        self.parts = {k: bool(v) for k, v in parts.items()}

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.parts.items() if not v]

    @property
    def word(self) -> str:
        n = len(self.failed)
        return "yes" if n == 0 else "no" if n == len(self.parts) else "partly"

    def __bool__(self) -> bool:
        return self.word == "yes"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.word == other
        return isinstance(other, Verdict) and self.parts == other.parts

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        if self.word == "partly":
            return "partly (fails: " + "; ".join(self.failed) + ")"
        return self.word

    def __repr__(self) -> str:
        return f"Verdict({self.parts!r})"
