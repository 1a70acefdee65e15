"""Time to grok: when the train loss and, later, the test loss fall below a threshold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class GrokTime:
    """Threshold crossings of a pair of loss curves.

    ``train_step``/``test_step``: first step at which each loss is ``<= threshold * loss[0]``
    (NaN if never); ``delay = test_step - train_step``; ``ratio = test_step / train_step``
    (the curves span decades, so the ratio is often the telling number).
    """

    train_step: float
    test_step: float
    delay: float
    ratio: float
    threshold: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _first_crossing(steps: np.ndarray, loss: np.ndarray, level: float) -> float:
    below = np.nonzero(loss <= level)[0]
    return float(steps[below[0]]) if below.size else math.nan


def time_to_grok(
    steps: Sequence[float],
    train_loss: Sequence[float],
    test_loss: Sequence[float],
    threshold: float = 0.1,
) -> GrokTime:
    """Delay between the train loss and the test loss falling below ``threshold`` x their start.

    ``steps``, ``train_loss``, ``test_loss``: equal-length curves sampled at increasing
    steps (e.g. ``meter.history`` columns; NaN entries are ignored). Each loss is compared
    with ``threshold`` times its own first finite value: a test loss that first rises (as
    in grokking) must still come down to a small fraction of where it started.

    Returns a :class:`GrokTime`; a loss that never crosses gives NaN for its step, the
    delay and the ratio.
    """
    s = np.asarray(steps, dtype=float)
    tr = np.asarray(train_loss, dtype=float)
    te = np.asarray(test_loss, dtype=float)
    if s.ndim != 1 or tr.shape != s.shape or te.shape != s.shape:
        raise ValueError(
            f"steps, train_loss, test_loss: expected 1-D curves of equal length, got shapes "
            f"{s.shape}, {tr.shape}, {te.shape}"
        )
    if s.size == 0:
        raise ValueError("steps: the curves are empty")
    if np.any(np.diff(s) <= 0):
        raise ValueError("steps: must be strictly increasing")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a fraction in (0, 1), got {threshold}")

    def crossing(loss: np.ndarray) -> float:
        ok = np.isfinite(loss)
        if not ok.any():
            return math.nan
        return _first_crossing(s[ok], loss[ok], threshold * loss[ok][0])

    t_train, t_test = crossing(tr), crossing(te)
    delay = t_test - t_train
    ratio = t_test / t_train if t_train > 0 else math.nan
    return GrokTime(t_train, t_test, delay, ratio, threshold)
