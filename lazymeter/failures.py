"""The meter's failure policy: a diagnostic never stops training.

What fails mid-run is recorded as NaN by the meter; this object decides what the user is
told: one ``RuntimeWarning`` per kind of failure per run, and one per measurement that
names every quantity newly failing in it.
"""

from __future__ import annotations

import warnings


class Warner:
    """Remembers what was already reported (``warned``: keys and quantity families)."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

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
