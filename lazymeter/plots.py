"""Figures in the paper's style from a run's history (needs matplotlib: lazymeter[examples])."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .history import series


def plot_run(hist: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: str) -> None:
    """Figure 1 of the paper: log-x losses (network, linearised model, K0 regression line),
    kernel-target alignment on a twin axis, and a second panel with NTK drift, CKA to init
    and parameter movement. Threshold crossings (time to grok) are marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for key, style, label in (
        ("train_loss", dict(color="C0"), "train"),
        ("test_loss", dict(color="C3"), "test"),
        ("lin_train_loss", dict(color="k", ls="-", lw=1), "linearised train"),
        ("lin_test_loss", dict(color="k", ls="--", lw=1), "linearised test"),
    ):
        xs, ys = series(hist, key)
        if xs:
            ax.plot(xs, ys, label=label, **style)
    k0 = summary.get("k0_test_mse")
    if k0 is not None and math.isfinite(k0):
        ax.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    grok = summary.get("time_to_grok") or {}
    for key, color in (("train_step", "C0"), ("test_step", "C3")):
        v = grok.get(key)
        if v is not None and math.isfinite(v) and v > 0:
            ax.axvline(v, color=color, alpha=0.3, lw=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(summary.get("epochs_label", "epochs (lr-equivalent)"))
    ax.set_ylabel("MSE")
    twin = ax.twinx()
    for key, color, label in (
        ("alignment_train", "C2", "alignment (train)"),
        ("alignment_test", "C1", "alignment (test)"),
    ):
        xs, ys = series(hist, key)
        if xs:
            twin.plot(xs, ys, color=color, alpha=0.7, lw=1.2, label=label)
    twin.set_ylabel("centred kernel-target alignment")
    lines = ax.get_legend_handles_labels()
    tl = twin.get_legend_handles_labels()
    ax.legend(lines[0] + tl[0], lines[1] + tl[1], fontsize=8, loc="lower left")
    cfg = summary.get("config", {})
    ax.set_title(
        f"alpha={cfg.get('alpha', '?')}, eps={cfg.get('eps', '?')}: grokking delay "
        f"{grok.get('ratio', float('nan')):.1f}x"
    )

    for key, label in (
        ("ntk_drift", "NTK drift ||K-K0||/||K0||"),
        ("ntk_cka", "CKA(K, K0)"),
        ("param_movement", "||W-W0||/||W0||"),
    ):
        xs, ys = series(hist, key)
        if xs:
            ax2.plot(xs, ys, label=label)
    for key in ("decomp_variance", "decomp_misalignment", "decomp_linear"):
        xs, ys = series(hist, key)
        if xs:
            ax2.plot(xs, ys, ls="--", label=key.removeprefix("decomp_"))
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel(summary.get("epochs_label", "epochs (lr-equivalent)"))
    ax2.legend(fontsize=8)
    ax2.set_title("lazy vs rich diagnostics")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
