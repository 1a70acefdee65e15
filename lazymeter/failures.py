"""The meter's failure policy: a diagnostic never stops training.

What fails mid-run is recorded as NaN by the meter; this object decides what the user is
told: one ``RuntimeWarning`` per kind of failure per run, and one per measurement that
names every quantity newly failing in it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


class SlowWarning(RuntimeWarning):
    """A kernel predicted to run long (over ``$LAZYMETER_SLOW_SECONDS``, 30 s by default):
    the warning says how long and which options shorten it; filter it like any warning."""


#: Warnings torch raises inside measurements that say nothing about the user's model or
#: run, filtered by message (a regular expression matched at the start) and category:
HARMLESS: list[tuple[str, type[Warning]]] = [
    # torch.func.vmap has no batching rule for an op (scaled_dot_product_attention and its
    # backward, weight_norm's backward, ...) and falls back to a loop over the batch: the
    # kernel is exact, only slower, and torch says so at every vmapped call (twice per
    # measurement for an attention model).
    (
        r"There is a performance drop because we have not yet implemented the batching rule",
        UserWarning,
    ),
    # torch.func.jvp loads TorchScript decompositions internally (torch >= 2.10): torch's
    # own use of a deprecated API, nothing the user calls or can change.
    (r"`torch\.jit\.script` is deprecated", DeprecationWarning),
]


def quiet_harmless() -> None:
    """Ignore the :data:`HARMLESS` warnings (inside a ``warnings.catch_warnings()``)."""
    for message, category in HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)


class Warner:
    """Remembers what was already reported (``warned``: keys and quantity families;
    ``shown``: the other warnings raised inside measurements)."""

    def __init__(self) -> None:
        self.warned: set[str] = set()
        self.shown: set[tuple[type[Warning], str]] = set()

    @contextlib.contextmanager
    def collected(self) -> Iterator[None]:
        """Measure without repeating torch's warnings: inside the block the
        :data:`HARMLESS` ones are dropped and the others collected; after it each is shown
        once per run (by category and message), at the place it was raised, through the
        user's filters (``"error"`` filters raise inside the block, as before).

        Why: every ``warnings.catch_warnings`` (and filter change) resets Python's
        once-only registry, so without this the same warning reprints at every measurement.
        """
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                quiet_harmless()
                yield
        finally:
            self.replay(caught)

    def replay(self, caught: list[warnings.WarningMessage]) -> None:
        """Show each collected warning not shown before by this run."""
        shown = self.__dict__.setdefault("shown", set())  # a meter pickled before 'shown'
        for w in caught:
            key = (w.category, str(w.message))
            if key in shown:
                continue
            shown.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    def once(self, key: str, message: str, stacklevel: int = 3) -> None:
        """A ``RuntimeWarning`` at the user's call site, the first time ``key`` goes wrong."""
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(f"lazymeter: {message}", RuntimeWarning, stacklevel=stacklevel)

    def failures(self, failures: list[tuple[str, Exception]], stacklevel: int = 4) -> None:
        """One warning for a measurement's ``(quantity name, error)`` list, naming each newly
        failing quantity once per run; names ``family.part`` count as ``family`` (the
        ``ntk.*`` quantities fail together when the kernel does: one name, one warning)."""
        new: dict[str, Exception] = {}
        for name, e in failures:
            family = name.split(".")[0]
            if family not in self.warned:
                new.setdefault(family, e)
        if new:
            self.warned.update(new)
            what = "; ".join(f"{name} ({e})" for name, e in new.items())
            warnings.warn(
                f"lazymeter: could not measure {what}; recorded as NaN (warned once per metric)",
                RuntimeWarning,
                stacklevel=stacklevel,
            )
