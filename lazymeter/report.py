"""Run reports: one or more run directories -> an overlay figure and a self-contained HTML page.

A run directory is what :class:`~lazymeter.LazyMeter` (with ``log_dir``) and the bundled
tasks write: ``history.jsonl`` (required) and, when present, ``summary.json``. The losses
come from every row of ``history.jsonl`` that has them (its scalar rows too: the final test
loss is the run's last logged one); the regimes from its measurements.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .grokking import time_to_grok
from .history import last_value, measurements, series
from .plots import axis_label, loss_kind, run_info
from .regime import LAZY, RICH, TRANSITIONING, RegimeThresholds, grokking_onset, regimes
from .sinks import read_jsonl


@dataclass
class Run:
    path: str
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return os.path.basename(os.path.normpath(self.path)) or self.path


def load_run(path: str) -> Run:
    """Read a run directory; errors name the path and what to do."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"report: {path!r} is not a directory; pass run directories written by "
            "LazyMeter(log_dir=DIR) or by `python -m examples.paper run ... --out DIR`"
        )
    hist = os.path.join(path, "history.jsonl")
    if not os.path.isfile(hist):
        raise FileNotFoundError(
            f"report: {path!r} has no history.jsonl; is it a run directory? LazyMeter writes "
            "one when constructed with log_dir=... and a probe"
        )
    rows = read_jsonl(hist)
    if not rows:
        raise ValueError(f"report: {hist!r} is empty; the run made no measurement yet")
    summary: dict[str, Any] = {}
    spath = os.path.join(path, "summary.json")
    if os.path.isfile(spath):
        with open(spath, encoding="utf-8") as f:
            summary = json.load(f)
    return Run(path, rows, summary)


def run_table(run: Run, thresholds: RegimeThresholds | None = None) -> dict[str, Any]:
    """Numbers for the report's table: time to grok, regime boundaries, onset, finals."""
    every = run.history
    rows = measurements(every)  # the regimes' rows; the losses are in scalar rows too
    out: dict[str, Any] = {"run": run.label}
    # One row a step (a step's scalar row, then its measurement by close(): the latter).
    both = list({r["step"]: r for r in every if "train_loss" in r and "test_loss" in r}.values())
    if both:
        g = time_to_grok(
            [r["step"] for r in both],
            [r["train_loss"] for r in both],
            [r["test_loss"] for r in both],
        )
        out.update(train_step=g.train_step, test_step=g.test_step, ratio=g.ratio)
        out["final_test_loss"] = last_value(every, "test_loss")
    out["k0_test_mse"] = last_value(rows, "k0_test_mse")
    labels = regimes(rows, thresholds)
    for name in (LAZY, TRANSITIONING, RICH):
        steps = [r["step"] for r, lab in zip(rows, labels, strict=True) if lab == name]
        out[f"first_{name}"] = steps[0] if steps else math.nan
    out["regime_final"] = labels[-1] if labels else math.nan
    out["grokking_onset"] = grokking_onset(rows)
    return out


_PANELS = [
    ("losses", ["train_loss", "test_loss", "lin_train_loss", "lin_test_loss"], True),
    ("NTK drift ||K-K0||/||K0||", ["ntk_drift"], True),
    ("kernel-target alignment", ["alignment_train", "alignment_test"], False),
    ("CKA(K, K0)", ["ntk_cka"], False),
    ("parameter movement ||θ-θ0||/||θ0||", ["param_movement"], True),
    ("test-loss decomposition", ["decomp_variance", "decomp_misalignment", "decomp_linear"], True),
]
_STYLES = {
    "train_loss": "-",
    "test_loss": "--",
    "lin_train_loss": ":",
    "lin_test_loss": "-.",
    "alignment_test": "--",
    "decomp_misalignment": "--",
    "decomp_linear": ":",
}


def plot_runs(runs: Sequence[Run], path: str) -> None:
    """Overlay figure of several runs (one colour per run), saved to ``path`` (PNG)."""
    from matplotlib.figure import Figure

    panels = [p for p in _PANELS if any(series(r.history, k)[0] for r in runs for k in p[1])]
    infos = [run_info(r.path) for r in runs]
    units = {axis_label(info) for info in infos}
    xlabel = units.pop() if len(units) == 1 else "step (each run's own unit)"
    cols = 3
    rows_n = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (title, keys, logy) in zip(axes.flat, panels, strict=False):
        for i, run in enumerate(runs):
            color = f"C{i % 10}"
            for k in keys:
                xs, ys = series(run.history, k)
                if xs:
                    ax.plot(
                        xs,
                        ys,
                        _STYLES.get(k, "-"),
                        color=color,
                        lw=1.3,
                        label=f"{run.label}: {k}" if len(runs) > 1 else k,
                    )
            # K0 regression's test MSE shares the axes only with an MSE loss (a classifier's
            # cross-entropy is another quantity: the table lists the baseline instead).
            if title == "losses" and loss_kind(run.history, infos[i]) == "mse":
                k0 = last_value(run.history, "k0_test_mse")
                if isinstance(k0, (int, float)) and math.isfinite(k0):
                    ax.axhline(k0, color=color, ls=(0, (1, 3)), lw=1, label=f"{run.label}: K0")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return html.escape(str(v))


def write_report(
    dirs: Sequence[str], out: str, thresholds: RegimeThresholds | None = None
) -> tuple[str, str]:
    """Write ``out.png`` and ``out.html`` (figure embedded: readable offline).

    Returns the two paths. ``out`` is a path prefix (``report`` -> ``report.png``).
    """
    runs = [load_run(d) for d in dirs]
    base = out[:-5] if out.endswith(".html") else out
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    png = base + ".png"
    plot_runs(runs, png)
    with open(png, "rb") as f:
        img = base64.b64encode(f.read()).decode()
    tables = [run_table(r, thresholds) for r in runs]
    cols = sorted(
        {k for t in tables for k in t},
        key=lambda k: list(tables[0]).index(k) if k in tables[0] else 99,
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(t.get(c, ''))}</td>" for c in cols) + "</tr>" for t in tables
    )
    configs = "".join(
        f"<h3>{html.escape(r.label)}</h3>"
        f"<pre>{html.escape(json.dumps(r.summary['config'], indent=1))}</pre>"
        for r in runs
        if r.summary.get("config")
    )
    th = thresholds or RegimeThresholds()
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lazymeter report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
img{{max-width:100%}}</style></head><body>
<h1>lazymeter report: {len(runs)} run(s)</h1>
<p>{", ".join(html.escape(r.path) for r in runs)}</p>
<img alt="overlay of the runs' curves" src="data:image/png;base64,{img}">
<h2>Time to grok and regimes</h2>
<p>train_step/test_step: first step where the loss is below 10% of its start; ratio =
test_step/train_step. Regimes per measurement (lazy / transitioning / rich) with thresholds
{html.escape(str(th))} (on the kernel change 1 - CKA to K0, the unbiased alignment's rise and the
parameter movement; changes within z standard errors count as 0); grokking onset: first step
where the test loss is 10% below its running maximum after the alignment rose by more than 2
standard errors.</p>
<table><tr>{head}</tr>{body}</table>
<h2>Configurations</h2>{configs or "<p>(no summary.json)</p>"}
</body></html>
"""
    path = base + ".html"
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return png, path
