"""When to measure: every k steps, log-spaced steps, or a user predicate.

A schedule answers ``due(step) -> bool`` and remembers the next step it is
due, so a loop that skips step numbers (logging every epoch, resuming)
still measures at the first step at or after each planned point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

ScheduleSpec = Union[int, str, Callable[[int], bool], "Schedule"]


class Schedule:
    """Base class: ``due(step)`` and a state (the next planned step)."""

    next_step: int = 0

    def planned_after(self, step: int) -> int:
        raise NotImplementedError

    def peek(self, step: int) -> bool:
        """Whether ``due(step)`` would be True, without advancing."""
        return step >= self.next_step

    def due(self, step: int) -> bool:
        if step < self.next_step:
            return False
        self.next_step = self.planned_after(step)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_step = int(state["next_step"])


class Every(Schedule):
    """Steps ``0, k, 2k, ...``."""

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"schedule: expected a positive int (every k steps), got {k!r}")
        self.k = k

    def planned_after(self, step: int) -> int:
        return (step // self.k + 1) * self.k

    def __repr__(self) -> str:
        return f"Every({self.k})"


class LogSpaced(Schedule):
    """Steps ``0`` and ``round(10 ** (j / per_decade))`` for ``j = 0, 1, ...`` (deduplicated).

    With ``per_decade=8``: 0, 1, 2, 3, 4, 5, 7, 10, 13, 18, 24, 32, 42, 56, 75, 100, 133, ...
    Grokking spans decades of steps, so equal spacing in ``log(step)`` gives each
    phase (fit, plateau, generalisation) a similar number of measurements.
    """

    def __init__(self, per_decade: int = 8) -> None:
        if not isinstance(per_decade, int) or per_decade < 1:
            raise ValueError(f"schedule: log per_decade must be a positive int, got {per_decade!r}")
        self.per_decade = per_decade

    def planned_after(self, step: int) -> int:
        n = self.per_decade
        j = max(0, math.floor(n * math.log10(max(step, 1))) - 1)
        while round(10 ** (j / n)) <= step:
            j += 1
        return round(10 ** (j / n))

    def __repr__(self) -> str:
        return f"LogSpaced({self.per_decade})"


class Predicate(Schedule):
    """A user function ``step -> bool``, asked at every step."""

    def __init__(self, fn: Callable[[int], bool]) -> None:
        self.fn = fn

    def due(self, step: int) -> bool:
        return bool(self.fn(step))

    def peek(self, step: int) -> bool:
        return bool(self.fn(step))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_schedule(spec: ScheduleSpec) -> Schedule:
    """``int`` k -> :class:`Every`; ``"log"`` or ``"log:N"`` -> :class:`LogSpaced`;
    a callable -> :class:`Predicate`; a :class:`Schedule` as is."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        if name == "log":
            try:
                return LogSpaced(int(arg) if arg else 8)
            except ValueError:
                pass
        raise ValueError(
            f"schedule: unknown {spec!r}; use an int k (every k steps), 'log' "
            "(8 log-spaced steps per decade), 'log:N', or a callable step -> bool"
        )
    if callable(spec):
        return Predicate(spec)
    return Every(spec)  # type: ignore[arg-type]
