"""Time to grok: when the train loss and, later, the test loss fall below a threshold."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch


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


def _curve(x: object, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; ``TypeError`` naming ``name`` for non-numbers."""
    if x is None or isinstance(x, (str, bytes, Mapping)):
        raise TypeError(f"{name}: expected a 1-D sequence of numbers, got {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name}: complex values are not supported; pass {name}.real")
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except TypeError as e:
        raise TypeError(f"{name}: expected a 1-D sequence of real numbers ({e})") from None
    except ValueError as e:
        raise ValueError(f"{name}: expected a 1-D sequence of real numbers ({e})") from None


def time_to_grok(
    steps: Sequence[float],
    train_loss: Sequence[float],
    test_loss: Sequence[float],
    threshold: float = 0.1,
) -> GrokTime:
    """Delay between the train loss and the test loss falling below ``threshold`` x their start.

    ``steps``, ``train_loss``, ``test_loss``: equal-length curves (sequences, numpy arrays or
    tensors) sampled at strictly increasing finite steps (e.g. ``meter.history`` columns;
    NaN/Inf loss entries are ignored). Each loss is compared with ``threshold`` times its own
    first finite value: a test loss that first rises (as in grokking) must still come down to
    a small fraction of where it started. ``threshold`` is a number in (0, 1).

    Returns a :class:`GrokTime` whose fields are finite except for these documented NaNs: a
    loss that never crosses (or has no finite entry) gives NaN for its step, the delay and
    the ratio; the ratio is also NaN when ``train_step <= 0``, and the delay or ratio when it
    would overflow a float. Bad input raises ``TypeError`` (not numbers) or ``ValueError``
    (shapes, empty curves, non-finite or non-increasing steps, threshold outside (0, 1)).
    """
    s = _curve(steps, "steps")
    tr = _curve(train_loss, "train_loss")
    te = _curve(test_loss, "test_loss")
    if s.ndim != 1 or tr.shape != s.shape or te.shape != s.shape:
        raise ValueError(
            f"steps, train_loss, test_loss: expected 1-D curves of equal length, got shapes "
            f"{s.shape}, {tr.shape}, {te.shape}"
        )
    if s.size == 0:
        raise ValueError("steps: the curves are empty")
    if not np.isfinite(s).all():
        raise ValueError("steps: contains NaN or Inf; pass the finite step numbers")
    if np.any(np.diff(s) <= 0):
        raise ValueError("steps: must be strictly increasing")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold: expected a fraction in (0, 1), got {type(threshold).__name__}")
    threshold = float(threshold)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a fraction in (0, 1), got {threshold}")

    def crossing(loss: np.ndarray) -> float:
        ok = np.isfinite(loss)
        if not ok.any():
            return math.nan
        return _first_crossing(s[ok], loss[ok], threshold * loss[ok][0])

    def finite_or_nan(v: float) -> float:
        return v if math.isfinite(v) else math.nan

    t_train, t_test = crossing(tr), crossing(te)
    delay = finite_or_nan(t_test - t_train)
    ratio = finite_or_nan(t_test / t_train) if t_train > 0 else math.nan
    return GrokTime(t_train, t_test, delay, ratio, threshold)
