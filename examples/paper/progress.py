"""The tasks' progress bar: tqdm when it is installed and wanted, a silent stand-in otherwise."""

from __future__ import annotations

from typing import Any


class SilentBar:
    """What a disabled bar does: nothing (the calls the tasks make on a tqdm bar)."""

    def update(self, n: int) -> None: ...
    def set_postfix(self, *a: object, **k: object) -> None: ...
    def close(self) -> None: ...


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "step") -> Any:
    """A tqdm bar over ``total`` ``unit``s labelled ``desc``, or a :class:`SilentBar` when
    ``enabled`` is false or tqdm (the ``experiments`` extra) is missing."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        enabled = False
    if enabled:
        return tqdm(total=total, desc=desc, unit=unit, mininterval=1.0)
    return SilentBar()
