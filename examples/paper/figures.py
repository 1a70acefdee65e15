"""The paper's Figure 1 (the polynomial task's ``figure.png``): losses, the kernel-target
alignment and the lazy-vs-rich diagnostics of one run's history. A ``matplotlib.figure.Figure``
of its own (no pyplot, no backend switch); matplotlib comes with ``lazymeter[experiments]``.
For any run, the library's own figure is :func:`lazymeter.plot_run`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .results import is_finite, reached, series


def band(ax: Any, hist: Sequence[Mapping[str, Any]], key: str, color: str, label: str) -> None:
    """``key`` against the step with a band of one standard error (``key + "_se"``)."""
    xs, ys = series(hist, key)
    if not xs:
        return
    se = {r["step"]: r.get(key + "_se") for r in hist}
    err = [float(se[x]) if is_finite(se[x]) else 0.0 for x in xs]
    ax.plot(xs, ys, color=color, lw=1.3, label=label)
    lo = [y - e for y, e in zip(ys, err, strict=True)]
    hi = [y + e for y, e in zip(ys, err, strict=True)]
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


def alignment_panel(ax: Any, hist: Sequence[Mapping[str, Any]], points: Any) -> None:
    """The paper's (biased) alignment on its points, and the unbiased one with a band of one
    standard error; without those, the meter's probe alignments."""
    n = f"{points} test points" if points else "test points"
    drawn = False
    xs, ys = series(hist, "alignment_paper_test")
    if xs:
        ax.plot(xs, ys, color="C1", lw=1.5, label=f"paper's definition (biased), {n}")
        drawn = True
    if series(hist, "alignment_full_test")[0]:
        band(ax, hist, "alignment_full_test", "C2", f"unbiased ± 1 SE, {n}")
        drawn = True
    if not drawn:
        band(ax, hist, "alignment_train", "C2", "train probe (± 1 SE)")
        band(ax, hist, "alignment_test", "C1", "test probe (± 1 SE)")
    ax.axhline(0.0, color="gray", lw=0.8, ls=":")
    notes = []
    for key, label in (("alignment_rise_full_test", "unbiased"), ("alignment_rise_train", "train")):
        xs, ys = series(hist, key)
        se = hist[-1].get(key + "_se") if hist else None
        if xs and isinstance(se, (int, float)) and math.isfinite(se):
            notes.append(f"{label} rise at the end: {ys[-1]:.2g} ± {se:.1g} (paired)")
            break
    if notes:
        ax.text(0.98, 0.03, "\n".join(notes), transform=ax.transAxes, ha="right", fontsize=8)
    ax.set_xscale("log")
    ax.set_ylabel("kernel-target alignment")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("NTK-target alignment")


def paper_figure(hist: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: str) -> None:
    """Figure 1 of the paper (the polynomial task's ``figure.png``, saved to ``path``): log-x
    losses (network, linearised model, K0 regression line), the kernel-target alignment (the
    paper's biased definition on its test points and the unbiased one with a band of one
    standard error, when measured), and a panel with NTK drift, CKA to init and parameter
    movement. Threshold crossings (time to grok) are marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.2))
    ax, axa, ax2 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 2, 2]})
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
    ax.legend(fontsize=8, loc="lower left")
    alignment_panel(axa, hist, (summary.get("config") or {}).get("paper_points"))
    axa.set_xlabel(summary.get("epochs_label", "epochs (lr-equivalent)"))
    cfg = summary.get("config", {})
    ax.set_title(
        f"alpha={cfg.get('alpha', '?')}, eps={cfg.get('eps', '?')}: grokking delay "
        f"{reached(grok.get('ratio'), '.1f', 'x')}"
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
