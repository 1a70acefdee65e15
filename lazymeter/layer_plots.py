"""Per-layer curves over training: one panel per metric, one line per parameter group.

Reads the ``layer/<group>/<metric>`` keys that :class:`~lazymeter.quantities.LayerKernels`
writes, from any list of measurement rows (``meter.history``, the rows of a run's JSONL
file). Draws on a ``matplotlib.figure.Figure`` of its own: no pyplot, no backend switch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Row keys of per-layer metrics start with this prefix: ``layer/<group>/<metric>``.
PREFIX = "layer/"

#: Axis labels of the metrics :class:`~lazymeter.quantities.LayerKernels` records.
LABELS = {
    "ntk_drift": "drift ‖K_l − K_l0‖ / ‖K_l0‖",
    "ntk_cka": "CKA(K_l, K_l0)",
    "alignment": "alignment(K_l, Y)",
    "ntk_share": "share tr K_l / tr K",
}


def layer_keys(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{metric: [group, ...]}`` of the per-layer keys in ``rows``, groups in order of first
    appearance; the metric is the part after the last ``/``:
    ``layer/blocks.0.attn/ntk_drift -> ("blocks.0.attn", "ntk_drift")``."""
    out: dict[str, list[str]] = {}
    for row in rows:
        for key in row:
            if not key.startswith(PREFIX):
                continue
            group, _, metric = key[len(PREFIX) :].rpartition("/")
            if group and group not in out.setdefault(metric, []):
                out[metric].append(group)
    return out


def plot_layer_curves(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("ntk_drift", "ntk_cka"),
    layers: Sequence[str] | None = None,
    x: str = "step",
) -> Figure:
    """A figure of per-layer metrics against ``x`` (``step``): one panel per metric of
    ``metrics`` found in ``rows``, one line per group (all groups, or ``layers``).

    Args:
        rows: measurement rows (dicts with ``x`` and ``layer/<group>/<metric>`` keys),
            e.g. ``meter.history``.
        metrics: the metric suffixes to draw (``ntk_drift``, ``ntk_cka``, ``alignment``,
            ``ntk_share``).
        layers: the groups to draw; None: every group that has the metric.
        x: the row key of the horizontal axis.

    Returns:
        a ``matplotlib.figure.Figure`` (needs matplotlib); non-finite values are gaps.
    """
    from matplotlib.figure import Figure

    found = layer_keys(rows)
    shown = [m for m in metrics if m in found]
    if not shown:
        raise ValueError(
            f"rows: no per-layer keys for metrics {list(metrics)} (keys like "
            "'layer/<group>/ntk_drift'); add lazymeter.quantities.LayerKernels() to the "
            "meter's quantities"
        )
    fig = Figure(figsize=(4.2 * len(shown), 3.4))
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, metric in zip(axes, shown, strict=True):
        groups = [g for g in found[metric] if layers is None or g in layers]
        for group in groups:
            key = f"{PREFIX}{group}/{metric}"
            pts = [(r.get(x), r.get(key)) for r in rows if key in r and x in r]
            xs = [float(a) for a, _ in pts]
            ys = [float(b) if _finite(b) else math.nan for _, b in pts]
            ax.plot(xs, ys, marker="o", markersize=2.5, label=group)
        ax.set_xlabel(x)
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small", title="layer")
    fig.tight_layout()
    return fig


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
