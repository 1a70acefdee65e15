"""Figure 3: laziness (alpha) delays grokking; the (alpha, eps) phase diagram.

Every run is one :mod:`paper.polynomial` run (registered task ``"polynomial"``,
centred model, no linearised shadow model). Three sets of runs:

* panel (a), the authors' Figure 3a: train and test loss over their initial values for
  several alpha at ``curve_eps_a``, on the target ``y = (beta . x)^2`` with ``curve_P``
  training points at ``lr = curve_lr_scale * N / alpha^2`` for ``curve_epochs`` steps;
* panel (b): the same for several eps at ``curve_alpha_b`` (the notebook has no code for this
  panel; it uses panel (a)'s protocol);
* the phase diagram (Figure 3e): a grid ``alphas x eps`` on the Figure-1 data
  (``y = (beta . x)^2 / 2``, ``P`` points) at ``lr = lr_scale * N / alpha^2``, each run
  stopped once both losses have crossed ``threshold`` (absolute: ``loss < 0.1``, as the
  authors) or once it has converged without the test loss crossing (see
  :class:`~paper.polynomial.PolynomialConfig`, ``stop_early``); the heat map is the
  delay ``test_step - train_step`` in lr-equivalent epochs (the authors plot
  ``max(0, delay)`` in steps at ``lr = 20 N / alpha^2``, and a run whose test loss never
  crosses as 0; here such a cell is "never").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .harness import SubRun, Task, option
from .polynomial import PolynomialConfig
from .results import is_finite, step_text

METRICS = ("delay", "test_step", "ratio")


@dataclass
class PhaseDiagramConfig:
    """Figure 3 on a CPU budget. Defaults change from the paper (``paper()``):

    * sizes D=50, P=300 (grid) and 225 (curves), P_test=500, N=200 instead of the paper's
      100, 550 and 450, 1000, 500; the grid is 4 x 5 (alpha 0.5..4, eps 0.02..0.3) instead of
      14 x 14 (alpha 0.4..5.6, eps 0.02..0.28), the curves 3 alphas and 3 eps values;
    * the grid runs at ``lr = 10 N / alpha^2`` for at most 20k steps (200k lr-equivalent
      epochs) instead of ``20 N / alpha^2`` for at most 110k steps: 10 is 0.4 x the stability
      edge at D=50 as 20 is at D=100 (the edge is about D/2);
    * the curves run at ``lr = 2.5 N / alpha^2`` for 4k steps (10k lr-equivalent epochs)
      instead of ``0.5 N / alpha^2`` for 60k (30k): where gradient descent follows gradient
      flow the curves depend on ``lr x steps`` only, but the rich small-alpha runs leave the
      stable range at higher lr (at ``10 N / alpha^2``, alpha=0.25 sticks at train loss 0.4,
      test loss 5.4), and the large-alpha curves are still lazy at 30k epochs anyway.

    The mechanism is kept: the absolute threshold, the stop at the crossings or at
    convergence, the two targets and the lr scaling with 1/alpha^2.
    """

    alphas: tuple[float, ...] = option((0.5, 1.0, 2.0, 4.0), "grid alphas (heat-map rows)")
    eps: tuple[float, ...] = option((0.02, 0.05, 0.1, 0.2, 0.3), "grid eps values (columns)")
    D: int = option(50, "input dimension")
    P: int = option(300, "training points of the grid runs (Figure-1 data)")
    P_test: int = option(500, "test points")
    N: int = option(200, "hidden width")
    lr_scale: float = option(10.0, "grid runs: lr = lr_scale * N / alpha^2")
    epochs: int = option(20_000, "grid runs: at most this many GD steps (they stop earlier)")
    threshold: float = option(0.1, "grid runs: a loss crosses below threshold (absolute) ...")
    threshold_kind: str = option("absolute", "... or at threshold x its start (relative)")
    stop_early: bool = option(True, "grid runs: stop at both crossings or at convergence")
    metric: str = option("delay", "heat-map quantity: delay, test_step or ratio")
    curve_alphas: tuple[float, ...] = option((0.25, 1.0, 4.0), "panel (a): alphas")
    curve_eps_a: float = option(0.25, "panel (a): eps")
    curve_eps: tuple[float, ...] = option((0.05, 0.1, 0.25), "panel (b): eps values")
    curve_alpha_b: float = option(1.0, "panel (b): alpha")
    curve_P: int = option(225, "panels (a), (b): training points")
    curve_target: str = option("square", "panels (a), (b): target (square: (beta . x)^2)")
    curve_lr_scale: float = option(2.5, "panels (a), (b): lr = curve_lr_scale * N / alpha^2")
    curve_epochs: int = option(4000, "panels (a), (b): GD steps")
    per_decade: int = option(16, "measurements per decade of steps")
    seed: int = option(0, "seed of data and initialisation (the same for every run)")
    device: str = option("cpu", "torch device")

    @classmethod
    def paper(cls, **overrides: Any) -> PhaseDiagramConfig:
        """The authors' protocol: D=100, N=500; grid P=550, 14 x 14, lr 20 N/alpha^2 up to
        110k steps, loss < 0.1; panel (a) P=450, eps=0.25, target (beta . x)^2, lr
        0.5 N/alpha^2, 60k steps, alpha = 2^-5, 2^-2..2^4."""
        paper = dict(
            alphas=tuple(round(0.4 * i, 10) for i in range(1, 15)),
            eps=tuple(round(0.02 * i, 10) for i in range(1, 15)),
            D=100, P=550, P_test=1000, N=500, lr_scale=20.0, epochs=110_000,
            curve_alphas=(2.0**-5, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
            curve_eps=(0.02, 0.06, 0.1, 0.14, 0.2, 0.28), curve_P=450,
            curve_lr_scale=0.5, curve_epochs=60_000,
        )  # fmt: skip
        return cls(**{**paper, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> PhaseDiagramConfig:
        """A seconds-long 2 x 2 grid and 2 + 2 curves at D=10, P=40, N=20."""
        small = dict(
            alphas=(0.5, 2.0), eps=(0.05, 0.2), D=10, P=40, P_test=50, N=20, lr_scale=2.0,
            epochs=200, curve_alphas=(0.5, 2.0), curve_eps=(0.05, 0.25), curve_P=40,
            curve_lr_scale=2.0, curve_epochs=100, per_decade=4,
        )  # fmt: skip
        return cls(**{**small, **overrides})


def _common(cfg: PhaseDiagramConfig) -> dict[str, Any]:
    return dict(
        D=cfg.D, P_test=cfg.P_test, N=cfg.N, seed=cfg.seed, device=cfg.device, center=True,
        linearized=False, decompose=False, paper_points=0, per_decade=cfg.per_decade,
        max_probe=min(64, cfg.P),
    )  # fmt: skip


def grid_config(cfg: PhaseDiagramConfig, alpha: float, eps: float) -> PolynomialConfig:
    """The phase-diagram run at ``(alpha, eps)``."""
    return PolynomialConfig(
        **_common(cfg), P=cfg.P, alpha=alpha, eps=eps, epochs=cfg.epochs,
        lr_scale=cfg.lr_scale, threshold=cfg.threshold, threshold_kind=cfg.threshold_kind,
        stop_early=cfg.stop_early,
    )  # fmt: skip


def curve_config(cfg: PhaseDiagramConfig, alpha: float, eps: float) -> PolynomialConfig:
    """The run of a curve of panel (a) or (b); its crossings are relative (the panels show
    each loss over its start)."""
    return PolynomialConfig(
        **_common(cfg), P=cfg.curve_P, alpha=alpha, eps=eps, epochs=cfg.curve_epochs,
        lr_scale=cfg.curve_lr_scale, target=cfg.curve_target, threshold=0.1,
    )  # fmt: skip


def _grid_name(alpha: float, eps: float) -> str:
    return f"grid_alpha{alpha:g}_eps{eps:g}"


def _curve_name(alpha: float, eps: float) -> str:
    return f"curve_alpha{alpha:g}_eps{eps:g}"


def _curve_keys(cfg: PhaseDiagramConfig) -> tuple[list, list]:
    a = [(x, cfg.curve_eps_a) for x in cfg.curve_alphas]
    b = [(cfg.curve_alpha_b, e) for e in cfg.curve_eps]
    return a, b


def runs(cfg: PhaseDiagramConfig) -> list[SubRun]:
    """The grid runs (row by row), then the curve runs of panels (a) and (b), each once."""
    if cfg.metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {cfg.metric!r}")
    out: list[SubRun] = [
        (_grid_name(x, e), "polynomial", grid_config(cfg, x, e))
        for x in cfg.alphas
        for e in cfg.eps
    ]
    a, b = _curve_keys(cfg)
    for x, e in dict.fromkeys(a + b):
        out.append((_curve_name(x, e), "polynomial", curve_config(cfg, x, e)))
    return out


def _curve(s: Mapping[str, Any]) -> dict[str, Any]:
    hist = s["history"]
    curve = {k: [r[k] for r in hist] for k in ("step", "train_loss", "test_loss")}
    return {**curve, "time_to_grok": s["time_to_grok"]}


def combine(cfg: PhaseDiagramConfig, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The heat-map matrix (rows alpha, columns eps), the cells that never grokked, and the
    curves of panels (a) and (b)."""
    by_name = {s["name"]: s for s in summaries}
    cell = {(x, e): by_name[_grid_name(x, e)] for x in cfg.alphas for e in cfg.eps}

    def matrix(get: Any) -> list[list[Any]]:
        return [[get(cell[(x, e)]) for e in cfg.eps] for x in cfg.alphas]

    a, b = _curve_keys(cfg)
    return {
        "metric": cfg.metric,
        "alphas": list(cfg.alphas),
        "eps": list(cfg.eps),
        "matrix": matrix(lambda s: s["time_to_grok"][cfg.metric]),
        "train_step": matrix(lambda s: s["time_to_grok"]["train_step"]),
        "test_step": matrix(lambda s: s["time_to_grok"]["test_step"]),
        "final_test_loss": matrix(lambda s: s["final_test_loss"]),
        "final_step": matrix(lambda s: s["final_step"]),
        "stopped": matrix(lambda s: s["stopped"]),
        "never": [
            [x, e] for (x, e), s in cell.items() if not is_finite(s["time_to_grok"]["test_step"])
        ],
        "threshold": cfg.threshold,
        "threshold_kind": cfg.threshold_kind,
        "panel_a": {
            "eps": cfg.curve_eps_a,
            "runs": [{"alpha": x, **_curve(by_name[_curve_name(x, e)])} for x, e in a],
        },
        "panel_b": {
            "alpha": cfg.curve_alpha_b,
            "runs": [{"eps": e, **_curve(by_name[_curve_name(x, e)])} for x, e in b],
        },
        "epochs_unit": "lr-equivalent epochs at lr = N/alpha^2 (steps x lr_scale)",
    }


def headline(summary: Mapping[str, Any]) -> str:
    """The heat map as a table (rows alpha, columns eps) and the cells that never grokked."""
    eps, width = summary["eps"], 9
    kind = summary["threshold_kind"]
    lines = [
        f"{summary['metric']} (lr-equivalent epochs; loss "
        f"{'<' if kind == 'absolute' else '<='} {summary['threshold']:g}"
        f"{'' if kind == 'absolute' else ' x start'}); rows alpha, columns eps",
        "alpha\\eps".ljust(10) + "".join(f"{e:g}".rjust(width) for e in eps),
    ]
    for x, row in zip(summary["alphas"], summary["matrix"], strict=True):
        lines.append(f"{x:<10g}" + "".join(step_text(v).rjust(width) for v in row))
    never = ", ".join(f"(alpha={x:g}, eps={e:g})" for x, e in summary["never"]) or "none"
    lines.append(f"never grokked: {never}")
    return "\n".join(lines)


def _plot_curves(ax: Any, runs: list[tuple[str, Mapping]], threshold: float, title: str) -> None:
    for i, (label, c) in enumerate(runs):
        for key, style in (("train_loss", "--"), ("test_loss", "-")):
            v = c[key]
            start = next((x for x in v if x is not None and math.isfinite(x)), math.nan)
            pts = [
                (s, x / start)
                for s, x in zip(c["step"], v, strict=True)
                if s > 0 and x is not None and math.isfinite(x)
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, color=f"C{i}",
                        label=label if key == "test_loss" else None)  # fmt: skip
        t = c["time_to_grok"]["test_step"]
        if t is not None and math.isfinite(t) and t > 0:
            ax.plot([t], [threshold], "o", color=f"C{i}", ms=5)  # where the test loss crosses
    ax.axhline(threshold, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs (lr-equivalent)")
    ax.set_ylabel("loss / initial loss  (train --, test -)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot(cfg: PhaseDiagramConfig, summary: Mapping[str, Any], path: str) -> None:
    """Panels (a) alpha curves, (b) eps curves, (c) the (alpha, eps) heat map of the metric
    (hatched grey: never grokked)."""
    import matplotlib
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    # a Figure of its own, not pyplot: no global figure registry, the user's backend kept
    fig = Figure(figsize=(17, 4.8))
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    a, b = summary["panel_a"], summary["panel_b"]
    _plot_curves(ax_a, [(f"alpha={r['alpha']:g}", r) for r in a["runs"]], 0.1,
                 f"(a) eps={a['eps']:g}, y=({cfg.curve_target}) P={cfg.curve_P}")  # fmt: skip
    _plot_curves(ax_b, [(f"eps={r['eps']:g}", r) for r in b["runs"]], 0.1,
                 f"(b) alpha={b['alpha']:g}")  # fmt: skip

    alphas, epss = summary["alphas"], summary["eps"]
    if not alphas or not epss:  # curves only
        ax_c.set_axis_off()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    m = np.array([[math.nan if v is None else v for v in row] for row in summary["matrix"]])
    ok = np.isfinite(m)  # NaN: the test loss never crossed, i.e. never grokked
    pos = ok & (m > 0)
    floor = m[pos].min() if pos.any() else 1.0  # a delay <= 0 (no grokking delay) gets the floor
    shown = np.where(ok, np.maximum(np.nan_to_num(m, nan=floor), floor), np.nan)
    cmap = matplotlib.colormaps["OrRd"].with_extremes(bad="lightgray")
    norm = LogNorm(floor, max(shown[ok].max(), floor * 1.01)) if ok.any() else None
    im = ax_c.imshow(
        np.ma.masked_invalid(shown), origin="lower", aspect="auto", cmap=cmap, norm=norm
    )
    for i in range(len(alphas)):
        for j in range(len(epss)):
            if ok[i, j]:
                dark = norm is not None and norm(shown[i, j]) > 0.6
                ax_c.text(j, i, step_text(m[i, j]), ha="center", va="center", fontsize=7,
                          color="white" if dark else "black")  # fmt: skip
            else:
                ax_c.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", ec="dimgray", lw=0)
                )
                ax_c.text(j, i, "never", ha="center", va="center", fontsize=7, color="dimgray")
    ax_c.set_xticks(range(len(epss)), [f"{e:g}" for e in epss], rotation=45)
    ax_c.set_yticks(range(len(alphas)), [f"{x:g}" for x in alphas])
    ax_c.set_xlabel("eps (alignment of the initial kernel)")
    ax_c.set_ylabel("alpha (laziness)")
    label = {
        "ratio": "test_step / train_step",
        "test_step": "test-loss crossing (lr-equiv. epochs)",
        "delay": "test_step - train_step (lr-equiv. epochs)",
    }[summary["metric"]]
    kind = summary["threshold_kind"]
    level = f"loss < {summary['threshold']:g}" + ("" if kind == "absolute" else " x start")
    ax_c.set_title(f"(e) time to grok, {level} (grey: never)")
    if norm is not None:
        fig.colorbar(im, ax=ax_c, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


TASK = Task(
    name="alpha_eps",
    description="Figure 3: alpha and eps sweeps of the polynomial task and the phase diagram",
    config=PhaseDiagramConfig,
    runs=runs,
    combine=combine,
    plot=plot,
    headline=headline,
)
