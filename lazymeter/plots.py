"""Figures of a run's history (need matplotlib: ``lazymeter[experiments]``).

:func:`plot_run` (also ``meter.plot()``) draws any run so far, from a run directory or the
meter's rows, as a matplotlib ``Figure`` (never through pyplot: no global figure state, no
backend switch). The paper's figures are drawn by its tasks (``examples/paper`` in a checkout).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .history import measurements, series
from .regime import LAZY, RICH, TRANSITIONING, RegimeThresholds, regimes
from .sinks import read_jsonl


def _band(ax: Any, hist: Sequence[Mapping[str, Any]], key: str, color: str, label: str) -> None:
    """``key`` against the step with a band of one standard error (``key + "_se"``)."""
    xs, ys = series(hist, key)
    if not xs:
        return
    se = {r["step"]: r.get(key + "_se") for r in hist if _finite(r.get(key))}
    err = [float(se[x]) if isinstance(se[x], (int, float)) else 0.0 for x in xs]
    err = [e if math.isfinite(e) else 0.0 for e in err]
    ax.plot(xs, ys, color=color, lw=1.3, label=label)
    lo = [y - e for y, e in zip(ys, err, strict=True)]
    hi = [y + e for y, e in zip(ys, err, strict=True)]
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


# ------------------------------------------------------------------------------ plot_run
#: Losses the K0 baseline (a mean squared error of kernel regression) can share axes with.
MSE_LOSSES = frozenset({"mse", "mean_squared_error"})
_REGIME_COLORS = {LAZY: "#4c72b0", TRANSITIONING: "#dd8452", RICH: "#c44e52"}
_REGIME_KEYS = ("ntk_cka", "alignment_rise_train", "alignment_train", "param_movement")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _last(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The last finite value of ``key`` in ``rows`` (None when it has none)."""
    for r in reversed(rows):
        if _finite(r.get(key)):
            return float(r[key])
    return None


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        found = json.load(f)
    return found if isinstance(found, dict) else {}


def run_info(folder: str | os.PathLike[str] | None) -> dict[str, Any]:
    """What a run directory says about its numbers: ``summary.json`` updated by
    ``meta.json`` (each when present; ``{}`` for None)."""
    if folder is None:
        return {}
    info = _read_json(os.path.join(folder, "summary.json"))
    info.update(_read_json(os.path.join(folder, "meta.json")))
    return info


def load_rows(
    run: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(rows, info)`` of a run: a run directory (``history.jsonl``; ``meta.json`` and
    ``summary.json`` when present, merged into ``info``, meta winning), a
    ``history.jsonl`` file, or the rows themselves (``info`` empty)."""
    if isinstance(run, (str, os.PathLike)):
        path = os.fspath(run)
        folder, hist = (path, os.path.join(path, "history.jsonl"))
        if os.path.isfile(path):
            folder, hist = os.path.dirname(path), path
        if not os.path.isfile(hist):
            raise FileNotFoundError(
                f"plot_run: {path!r} is not a run directory (no history.jsonl); pass the "
                "log_dir of a LazyMeter (or an --out of the paper's examples), or a list of rows"
            )
        return read_jsonl(hist), run_info(folder)
    if isinstance(run, Mapping) or not all(isinstance(r, Mapping) for r in run):
        raise TypeError(
            "plot_run: expected a run directory or a sequence of rows ({'step': ..., key: "
            f"value}} dicts, e.g. meter.history), got {type(run).__name__}"
        )
    return [dict(r) for r in run], {}


def axis_label(info: Mapping[str, Any]) -> str:
    """The x axis: the run's own step unit when it names one, else "step"."""
    for key in ("step_label", "step_unit", "epochs_label", "epochs_unit", "steps_unit"):
        v = info.get(key)
        if isinstance(v, str) and v.strip():
            return v
    return "step"


def loss_kind(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> str | None:
    """The loss the ``*_loss`` scalars are (lower case), as declared (``meta.json``'s
    ``loss``), else "mse" for a regression run (the baseline has no ``k0_test_acc``) and
    None (unknown) for class labels, which are as often trained with cross-entropy."""
    declared = info.get("loss")
    if isinstance(declared, str) and declared.strip():
        return declared.strip().lower()
    return None if _last(rows, "k0_test_acc") is not None else "mse"


def _keys(rows: Sequence[Mapping[str, Any]], keep: Any) -> list[str]:
    """Keys of ``rows`` (first-seen order) for which ``keep(key)`` holds and which have at
    least one finite value at a positive step."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in seen and keep(k):
                seen[k] = None
    return [k for k in seen if series(rows, k)[0]]


def _positive_log(ax: Any) -> None:
    """Log y when the drawn data are positive (a log axis would drop the rest)."""
    ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    if ys and min(ys) > 0:
        ax.set_yscale("log")


Rows = Sequence[Mapping[str, Any]]


def _loss_panel(ax: Any, rows: Rows, keys: list[str], kind: str | None) -> None:
    for i, key in enumerate(keys):
        lin = key.startswith("lin_")
        style = {"color": "k", "lw": 1.0, "ls": "--" if "test" in key else "-"} if lin else {}
        if not lin:
            style = {"color": {"train_loss": "C0", "test_loss": "C3"}.get(key, f"C{i + 4}")}
        ax.plot(*series(rows, key), label=key.removesuffix("_loss").replace("_", " "), **style)
    k0 = _last(rows, "k0_test_mse")
    if k0 is not None and kind in MSE_LOSSES:
        ax.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    elif k0 is not None:
        # The baseline is a mean squared error (on one-hot targets for class labels): a
        # different number from this loss, so it is named rather than drawn on its axes.
        what = "MSE on one-hot targets" if _last(rows, "k0_test_acc") is not None else "MSE"
        ax.text(
            0.02, 0.03, f"K0 regression: test {what} {k0:.3g}\n(not this loss: not drawn)",
            transform=ax.transAxes, fontsize=7, color="gray",
        )  # fmt: skip
    _positive_log(ax)
    names = {"mse": "MSE", "cross_entropy": "cross-entropy", "ce": "cross-entropy"}
    ax.set_ylabel("loss" if kind is None else names.get(kind, kind))
    ax.set_title("loss")


def _accuracy_panel(ax: Any, rows: Rows, keys: list[str], kind: str | None) -> None:
    for i, key in enumerate(keys):
        ax.plot(*series(rows, key), color=f"C{i}", label=key.replace("_", " "))
    k0 = _last(rows, "k0_test_acc")
    if k0 is not None:
        ax.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy")


def _kernel_panel(ax: Any, rows: Rows, keys: list[str], kind: str | None) -> None:
    """NTK drift and the kernel change ``1 - CKA(K, K0)`` with its band of one SE."""
    for key, color in (("ntk_drift", "C0"), ("test_ntk_drift", "C3")):
        if key in keys:
            ax.plot(*series(rows, key), color=color, label=key.replace("_", " "))
    flipped = [
        {"step": r["step"], "change": 1.0 - r["ntk_cka"], "change_se": r.get("ntk_cka_se")}
        for r in rows
        if _finite(r.get("ntk_cka"))
    ]
    if flipped:
        _band(ax, flipped, "change", "C2", "1 − CKA(K, K0) ± 1 SE")
    _positive_log(ax)
    ax.set_ylabel("change from K0")
    ax.set_title("NTK: drift and CKA to init")


def _alignments(ax: Any, rows: Rows, keys: list[str], kind: str | None) -> None:
    """Every measured alignment ``alignment_<split>`` (and named variants) with its band of
    one SE; the reference at initialisation ``alignment0_<split>`` as a dotted level."""
    for i, key in enumerate(keys):
        color = {"alignment_train": "C0", "alignment_test": "C3"}.get(key, f"C{i + 4}")
        _band(ax, rows, key, color, key.removeprefix("alignment_") + " ± 1 SE")
        a0 = _last(rows, key.replace("alignment", "alignment0", 1))
        if a0 is not None:
            ax.axhline(a0, color=color, ls=":", lw=1)
    ax.set_ylabel("kernel-target alignment (dotted: K0)")
    ax.set_title("alignment")


def _movement_panel(ax: Any, rows: Rows, keys: list[str], kind: str | None) -> None:
    ax.plot(*series(rows, "param_movement"), color="C4", label="||θ − θ0|| / ||θ0||")
    _positive_log(ax)
    ax.set_ylabel("relative movement")
    ax.set_title("parameter movement")


def _is_alignment(key: str) -> bool:
    """``alignment_<split>`` and named variants (``alignment_paper_test``), not their errors
    or rises."""
    return key.startswith("alignment_") and not key.endswith("_se") and "rise" not in key


#: ``(which keys, how to draw them)`` per panel, in the figure's order.
_PANELS = (
    (lambda k: k.endswith("_loss"), _loss_panel),
    (lambda k: k.endswith(("_acc", "_accuracy")) and not k.startswith("k0_"), _accuracy_panel),
    (lambda k: k in ("ntk_drift", "test_ntk_drift", "ntk_cka"), _kernel_panel),
    (_is_alignment, _alignments),
    (lambda k: k == "param_movement", _movement_panel),
)


def _shade_regimes(axes: Sequence[Any], rows: Rows, labels: list[str]) -> None:
    """Each measurement's regime as a background span, from the geometric midpoint with the
    previous measured step to that with the next (the x axis is logarithmic)."""
    steps = [float(r["step"]) for r in rows]
    edges = [steps[0]]
    edges += [math.sqrt(a * b) for a, b in zip(steps, steps[1:], strict=False)]
    edges += [steps[-1]]
    for ax in axes:
        for lo, hi, label in zip(edges[:-1], edges[1:], labels, strict=True):
            if hi > lo:
                ax.axvspan(lo, hi, color=_REGIME_COLORS[label], alpha=0.12, lw=0, zorder=0)


def plot_run(
    run: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    loss: str | None = None,
    step_label: str | None = None,
    thresholds: RegimeThresholds | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Any:
    """A matplotlib ``Figure`` of a run so far: one panel per group of measured keys.

    Panels (each only when the run has its keys, at positive steps, log-x):

    * **loss**: every ``*_loss`` scalar (``lin_*``: the linearised model, black). The lazy
      baseline ``k0_test_mse`` (test MSE of kernel regression with ``K_0``) is drawn as a
      level only when the loss is an MSE (``loss="mse"``); otherwise its value is written
      in the panel, not drawn: an MSE on one-hot targets is not on a cross-entropy's scale.
    * **accuracy**: ``*_acc`` / ``*_accuracy`` scalars with ``k0_test_acc`` as a level.
    * **NTK**: ``ntk_drift = ||K - K0||_F / ||K0||_F`` (and ``test_ntk_drift``) and the
      kernel change ``1 - ntk_cka`` with a band of one standard error (``ntk_cka_se``).
    * **alignment**: each ``alignment_<split>`` with its band ``± alignment_<split>_se``
      and its value at initialisation (``alignment0_<split>``) dotted.
    * **movement**: ``param_movement = ||θ - θ0|| / ||θ0||``.

    Every panel's background is shaded by the regime read at each measurement
    (:func:`lazymeter.regime.classify`: blue lazy, orange transitioning, red rich), and the
    title says the regime at the last one. The scalar rows of ``history.jsonl`` (``"kind":
    "scalars"``: the scalars of steps without a measurement) add to the loss and accuracy
    curves only, so these reach the run's last logged step.

    Args:
        run: a run directory (``history.jsonl``, with ``meta.json`` / ``summary.json`` when
            present; ``LazyMeter(log_dir=...)`` writes them, as do the paper's examples), a
            ``history.jsonl`` path, or rows (``meter.history``).
        loss: what the ``*_loss`` scalars are: ``"mse"`` (the baseline shares their axes),
            ``"cross_entropy"`` or any other name (it does not). None: ``meta.json``'s
            ``loss`` when set, else ``"mse"`` for a regression run and unknown (baseline not
            drawn) when the probe has class labels.
        step_label: the x axis label; None: the run's ``step_label`` / ``step_unit`` (a
            name such as ``"epochs (lr-equivalent)"``) or ``epochs_label`` when recorded,
            else ``"step"``.
        thresholds: of the regime read-out (default :class:`~lazymeter.regime.RegimeThresholds`).
        meta: extra run information (the keys above), over what the directory holds.

    Returns:
        a ``matplotlib.figure.Figure`` (not registered with pyplot: display it in a notebook
        as the cell's value, or ``fig.savefig(path)``).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows, info = load_rows(run)
    info.update(meta or {})
    kind = loss.strip().lower() if isinstance(loss, str) else loss_kind(rows, info)
    xlabel = step_label or axis_label(info)
    drawn = [r for r in rows if _finite(r.get("step")) and r["step"] > 0]
    measured = measurements(drawn)
    panels = [(draw, keys) for keep, draw in _PANELS if (keys := _keys(drawn, keep))]
    cols = 2 if len(panels) == 4 else min(3, max(1, len(panels)))
    nrows = max(1, math.ceil(len(panels) / cols))
    fig = Figure(figsize=(4.6 * cols, 3.4 * nrows + 0.5), layout="constrained")
    if not panels:
        fig.text(0.5, 0.5, "no measurement at a positive step yet", ha="center", va="center")
        return fig
    grid = fig.subplots(nrows, cols, squeeze=False)
    axes = list(grid.flat[: len(panels)])
    for ax in grid.flat[len(panels) :]:
        fig.delaxes(ax)
    for ax, (draw, keys) in zip(axes, panels, strict=True):
        draw(ax, drawn, keys, kind)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    n = len(measurements(rows))
    title = f"{n} measurement{'s' if n != 1 else ''}"
    if any(_finite(r.get(k)) for r in measured for k in _REGIME_KEYS):
        labels = regimes(measured, thresholds)
        _shade_regimes(axes, measured, labels)
        last = measured[-1]["step"]
        title = f"regime at {xlabel} {last:g}: {labels[-1]} ({title})"
        shown = [lab for lab in (LAZY, TRANSITIONING, RICH) if lab in labels]
        handles = [
            Patch(color=_REGIME_COLORS[lab], alpha=0.3, label=f"{lab} (background)")
            for lab in shown
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(title, fontsize=11)
    return fig
