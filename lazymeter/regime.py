"""Reading the regime off the measured curves: lazy, transitioning or rich, and the
grokking onset. Pure functions of history rows (dicts as written by LazyMeter).

The read-out uses only quantities whose expectation does not depend on the probe size, so
two users measuring the same network on 64 or on 1000 points read the same regime (up to
noise, which the standard errors decide):

* ``param_movement = ||theta - theta0|| / ||theta0||`` (no probe at all);
* the kernel change ``1 - ntk_cka``, with the unbiased CKA of ``K_t`` to ``K_0``;
* the alignment rise ``alignment_train - alignment0_train`` (unbiased kernel-target
  alignment; about 0 at initialisation for a kernel unrelated to the labels).

``ntk_drift`` is not used: the kernel's diagonal takes a share ``~1/P`` of its Frobenius
norm, so the same network drifts by different amounts on different probe sizes.

A change counts only beyond ``z`` standard errors (``<key>_se`` in the row; a row without
them, e.g. from a biased meter, is taken at face value). Thresholds and where they come
from: docs/numbers.md ("Reading the regime").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LAZY, TRANSITIONING, RICH = "lazy", "transitioning", "rich"


@dataclass(frozen=True)
class RegimeThresholds:
    """Lazy when the kernel kept its shape (``1 - ntk_cka < lazy_kernel``), the alignment
    rose by less than ``lazy_alignment`` and ``param_movement < lazy_movement``. Rich when
    ``1 - ntk_cka >= rich_kernel`` or the alignment rose by ``>= rich_alignment`` or
    ``param_movement >= rich_movement``. Otherwise transitioning. A kernel change or an
    alignment rise within ``z`` standard errors of 0 counts as 0."""

    lazy_kernel: float = 0.01
    lazy_alignment: float = 0.02
    lazy_movement: float = 0.5
    rich_kernel: float = 0.05
    rich_alignment: float = 0.1
    rich_movement: float = 2.0
    z: float = 2.0


def _get(row: Mapping[str, float], key: str) -> float:
    v = row.get(key, math.nan)
    return float(v) if isinstance(v, (int, float)) else math.nan


def _se(row: Mapping[str, float], key: str) -> float:
    se = _get(row, key + "_se")
    return se if math.isfinite(se) else 0.0


def _resolved(x: float, se: float, z: float) -> float:
    """``x``, or 0 when it is within ``z`` standard errors of 0 (NaN stays NaN)."""
    return x if not math.isfinite(x) or abs(x) > z * se else 0.0


def kernel_change(row: Mapping[str, float]) -> tuple[float, float]:
    """``(1 - ntk_cka, its standard error)``: 0 while the kernel keeps its shape."""
    return 1.0 - _get(row, "ntk_cka"), _se(row, "ntk_cka")


def alignment_rise(row: Mapping[str, float], which: str = "train") -> tuple[float, float]:
    """``(A_t - A_0, its standard error)`` of the kernel-target alignment on the ``which``
    probe: the meter's ``alignment_rise_<which>`` with its paired error when the row has
    it, else the difference with ``sqrt(se_t^2 + se_0^2)`` (an upper bound: both are
    measured on the same points)."""
    key = f"alignment_rise_{which}"
    if math.isfinite(_get(row, key)):
        return _get(row, key), _se(row, key)
    a, a0 = _get(row, f"alignment_{which}"), _get(row, f"alignment0_{which}")
    return a - a0, math.hypot(_se(row, f"alignment_{which}"), _se(row, f"alignment0_{which}"))


_rise_of = alignment_rise  # grokking_onset's keyword of the same name hides the function


def classify(row: Mapping[str, float], thresholds: RegimeThresholds | None = None) -> str:
    """``"lazy"``, ``"transitioning"`` or ``"rich"`` for one measurement (see
    :class:`RegimeThresholds`); missing metrics are ignored, all missing gives lazy."""
    t = thresholds or RegimeThresholds()
    kernel = _resolved(*kernel_change(row), t.z)
    rise = _resolved(*alignment_rise(row), t.z)
    move = _get(row, "param_movement")

    def ge(x: float, lim: float) -> bool:
        return math.isfinite(x) and x >= lim

    if ge(kernel, t.rich_kernel) or ge(rise, t.rich_alignment) or ge(move, t.rich_movement):
        return RICH
    if ge(kernel, t.lazy_kernel) or ge(abs(rise), t.lazy_alignment) or ge(move, t.lazy_movement):
        return TRANSITIONING
    return LAZY


def grokking_onset(
    rows: Sequence[Mapping[str, float]],
    *,
    alignment_rise: float = 0.0,
    test_drop: float = 0.1,
    z: float = 2.0,
) -> float:
    """Step at which the test loss starts to fall after the features started to align.

    The first measured step ``s`` such that (1) at or before ``s`` the train-probe
    alignment rose above K0's by more than ``z`` standard errors (and by at least
    ``alignment_rise``), and (2) the test loss at ``s`` is at least ``test_drop``
    (relative) below its running maximum up to ``s``. NaN when it never happens (or the
    rows lack ``test_loss``).

    The rise is measured with the unbiased alignment, whose expected value does not depend
    on the probe size; a larger probe has a smaller error and sees a small rise sooner. On
    the paper's Figure-1 task the rise is small in absolute terms (about 0.003 at the end),
    so the default asks only that it be significant.
    """
    peak, risen = -math.inf, False
    for r in rows:
        test = _get(r, "test_loss")
        rise = _resolved(*_rise_of(r), z)
        risen = risen or (math.isfinite(rise) and rise > 0 and rise >= alignment_rise)
        if not math.isfinite(test):
            continue
        peak = max(peak, test)
        if risen and test <= (1 - test_drop) * peak:
            return float(r["step"])
    return math.nan


def regimes(
    rows: Sequence[Mapping[str, float]], thresholds: RegimeThresholds | None = None
) -> list[str]:
    """:func:`classify` of every row."""
    return [classify(r, thresholds) for r in rows]


def describe(row: Mapping[str, float], thresholds: RegimeThresholds | None = None) -> str:
    """One line for TensorBoard's text tab: the regime of a measurement row and the numbers
    it was read from, e.g. ``step 100: **rich** (kernel change 0.3 ± 0.02, movement 1.2,
    alignment rise 0.15 ± 0.03)``."""
    k, kse = kernel_change(row)
    a, ase = alignment_rise(row)
    return (
        f"step {int(row.get('step', -1))}: **{classify(row, thresholds)}** (kernel change "
        f"{k:.3g} ± {kse:.2g}, movement {_get(row, 'param_movement'):.3g}, alignment rise "
        f"{a:.3g} ± {ase:.2g})"
    )
