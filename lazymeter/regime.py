"""Reading the regime off the measured curves: lazy, transitioning or rich, and the
grokking onset. Pure functions of history rows (dicts as written by LazyMeter).

The classification is deliberately conservative: one number never decides "rich" alone
unless it is far past its lazy range, because on the paper's polynomial task the NTK
barely moves in Frobenius norm (drift ~0.02) while the weights move several times their
norm and the alignment rises (DESIGN.md section 1). Defaults, from this repository's runs:

* Figure 1 (alpha=1, eps=0.02): before the train loss falls (epochs < 3k) drift 0.007-0.013,
  alignment within 1% of K0's, movement 0.2-0.4: **lazy**; at the end drift 0.026, alignment
  +8%, movement 7: **rich** (by movement).
* Figure 4 (N=2): drift rises to 0.4 with alignment +75%: **rich**.
* A lazy run (alpha=1000 in tests/test_meter.py): drift < 0.01, movement < 0.01: **lazy**.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LAZY, TRANSITIONING, RICH = "lazy", "transitioning", "rich"


@dataclass(frozen=True)
class RegimeThresholds:
    """Lazy when the kernel barely moved: ``ntk_drift < lazy_drift`` and the kernel-target
    alignment changed by less than ``lazy_alignment`` (relative to K0's) and
    ``param_movement < lazy_movement``. Rich when ``ntk_drift >= rich_drift`` or the
    alignment gained ``>= rich_alignment`` or ``param_movement >= rich_movement``.
    Otherwise transitioning."""

    lazy_drift: float = 0.05
    lazy_alignment: float = 0.02
    lazy_movement: float = 0.5
    rich_drift: float = 0.3
    rich_alignment: float = 0.2
    rich_movement: float = 2.0


def _get(row: Mapping[str, float], key: str) -> float:
    v = row.get(key, math.nan)
    return float(v) if isinstance(v, (int, float)) else math.nan


def alignment_gain(row: Mapping[str, float], which: str = "train") -> float:
    """Relative change of kernel-target alignment from K0's: ``A_t / A_0 - 1``."""
    a, a0 = _get(row, f"alignment_{which}"), _get(row, f"alignment0_{which}")
    return a / a0 - 1 if a0 and math.isfinite(a0) and a0 != 0 else math.nan


def classify(row: Mapping[str, float], thresholds: RegimeThresholds | None = None) -> str:
    """``"lazy"``, ``"transitioning"`` or ``"rich"`` for one measurement (see
    :class:`RegimeThresholds`); missing metrics are ignored, all missing gives lazy."""
    t = thresholds or RegimeThresholds()
    drift, move, gain = _get(row, "ntk_drift"), _get(row, "param_movement"), alignment_gain(row)

    def ge(x: float, lim: float) -> bool:
        return math.isfinite(x) and x >= lim

    if ge(drift, t.rich_drift) or ge(gain, t.rich_alignment) or ge(move, t.rich_movement):
        return RICH
    if ge(drift, t.lazy_drift) or ge(abs(gain), t.lazy_alignment) or ge(move, t.lazy_movement):
        return TRANSITIONING
    return LAZY


def grokking_onset(
    rows: Sequence[Mapping[str, float]],
    *,
    alignment_rise: float = 0.02,
    test_drop: float = 0.1,
) -> float:
    """Step at which the test loss starts to fall after the alignment has risen.

    The first measured step ``s`` such that (1) the train-probe alignment has gained at
    least ``alignment_rise`` (relative to K0's) at or before ``s``, and (2) the test loss
    at ``s`` is at least ``test_drop`` (relative) below its running maximum up to ``s``.
    NaN when it never happens (or the rows lack ``test_loss``).
    """
    peak, risen = -math.inf, False
    for r in rows:
        test = _get(r, "test_loss")
        gain = alignment_gain(r)
        risen = risen or (math.isfinite(gain) and gain >= alignment_rise)
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
    it was read from, e.g. ``step 100: **rich** (drift 0.3, movement 1.2, alignment gain 2)``."""
    return (
        f"step {int(row.get('step', -1))}: **{classify(row, thresholds)}** (drift "
        f"{row.get('ntk_drift', math.nan):.3g}, movement "
        f"{row.get('param_movement', math.nan):.3g}, alignment gain "
        f"{alignment_gain(row):.3g})"
    )
