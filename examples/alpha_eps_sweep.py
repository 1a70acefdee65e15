"""Figure 3 of the paper: laziness (alpha) delays grokking, a larger eps makes it come sooner.

Every run is one :func:`lazymeter.tasks.polynomial.train` of the polynomial task (see
``examples/polynomial_regression.py``, centred loss, linearised shadow model off). The script
draws (a) train/test loss curves, each over its initial value, for several alpha at a fixed eps
(Figure 3a), (b) the same for several eps at a fixed alpha (Figure 3b), and (c) the phase diagram
(Figure 3e): the time to grok over an (alpha, eps) grid. Each loss "crosses" when it first falls
below 0.1 x its start (``lazymeter.time_to_grok``); the heat map shows, by default, the delay
``test_step - train_step`` in lr-equivalent epochs, the quantity of the paper's phase diagram
(``--metric test_step`` or ``ratio`` for the others). Grey hatched cells never grokked: the test
loss never fell that far within the budget (e.g. a lazy run that fits the train set but whose
test loss levels off above the threshold).

Defaults (about 2.5 minutes on 2 CPU cores): D=50, P=300, P_test=500, N=200; full-batch GD at
``lr = 10 N / alpha^2`` for 10k steps = 100k lr-equivalent epochs, the paper's ``lr * epochs``
(``lr_scale=10`` is 0.4 x the stability edge of about 25 here, and the run follows the gradient
flow: half the lr for twice the steps gives the same crossings to within 0.2%, while
``lr_scale=20`` moves the train crossing by 15%); grid alpha in {0.5, 1, 2, 4} x
eps in {0.02, 0.05, 0.1, 0.2}; the curves are the grid's row eps=0.02 (a) and column alpha=1 (b),
so they cost no extra runs. ``--full``: the paper's D=100, P=550, N=500 with
``PolynomialConfig.paper()`` (``lr = N / alpha^2``, 100k epochs), its 14 x 14 grid
alpha = 0.4..5.6, eps = 0.02..0.28, and its Figure 3a alphas 2^-5..2^4 (about 16 CPU-hours).
``--smoke``: a seconds-long 2 x 2 run for tests.

On the default grid (seed 0) the delay grows with alpha at every eps (eps=0.02: 4.4k, 9.1k, 24k,
52k lr-equivalent epochs for alpha = 0.5, 1, 2, 4) and shrinks as eps grows (alpha=1: 9.1k, 5.0k,
3.0k, 1.7k for eps = 0.02, 0.05, 0.1, 0.2); the test-loss crossing itself follows the same
pattern. The ratio ``test_step / train_step`` instead grows with eps, because a larger eps speeds
up the fit of the train set even more than the test drop. At alpha=4, eps=0.2 (the laziest
quadratic part, alpha * eps) the net fits the train set to 1e-10 but its test loss levels off at
0.156, above the threshold 0.112 (still so after 300k epochs): it never groks.

Runs go to ``--workers`` processes (spawned; one torch thread each). Writes OUT/sweep.json (the
heat-map matrix and every run's summary without its history: one entry per grid cell under
"cells", the curve-only runs under "curve_runs"), OUT/curves.json (the loss curves of panels a
and b) and OUT/figure.png; ``--save-runs`` also keeps each run's files in OUT/runs/.

    python examples/alpha_eps_sweep.py --out runs/alpha_eps_sweep
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace

import torch

from lazymeter.tasks.polynomial import PolynomialConfig, train

DEFAULT = dict(
    base=dict(D=50, P=300, P_test=500, N=200, epochs=10_000, lr_scale=10.0),
    alphas=[0.5, 1.0, 2.0, 4.0],
    eps=[0.02, 0.05, 0.1, 0.2],
    fixed_eps=0.02,
    fixed_alpha=1.0,
)
SMOKE = dict(
    base=dict(D=10, P=40, P_test=50, N=20, epochs=100, lr_scale=2.0, per_decade=4, max_probe=16),
    alphas=[0.5, 2.0],
    eps=[0.05, 0.2],
    fixed_eps=0.05,
    fixed_alpha=0.5,
)
FULL = dict(
    base=dict(D=100, P=550, P_test=1000, N=500),
    alphas=[round(0.4 * i, 10) for i in range(1, 15)],
    eps=[round(0.02 * i, 10) for i in range(1, 15)],
    fixed_eps=0.02,
    fixed_alpha=1.0,
    curve_alphas=[2.0**k for k in (-5, -2, -1, 0, 1, 2, 3, 4)],
    curve_eps=[0.02, 0.06, 0.1, 0.14, 0.2, 0.28],
)
METRICS = ("delay", "test_step", "ratio")


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "never"
    return f"{v / 1000:.3g}k" if abs(v) >= 1000 else f"{v:.3g}"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _key(alpha: float, eps: float) -> tuple[float, float]:
    return (round(float(alpha), 10), round(float(eps), 10))


def _run_dir(out: str, alpha: float, eps: float) -> str:
    return os.path.join(out, "runs", f"alpha{alpha:g}_eps{eps:g}")


def run_all(
    configs: list[PolynomialConfig], workers: int, out: str | None, progress: bool
) -> dict[tuple[float, float], dict]:
    """Train every config in ``workers`` processes (one torch thread each); key: (alpha, eps)."""
    from tqdm.auto import tqdm

    # spawn, not fork: the parent may already hold torch/OpenMP thread pools (e.g. under pytest).
    ctx = multiprocessing.get_context("spawn")
    results: dict[tuple[float, float], dict] = {}
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        futures = {
            pool.submit(
                train,
                cfg,
                None if out is None else _run_dir(out, cfg.alpha, cfg.eps),
                progress=False,
                figure=False,
            ): _key(cfg.alpha, cfg.eps)
            for cfg in configs
        }
        bar = tqdm(as_completed(futures), total=len(futures), desc="runs", disable=not progress)
        for fut in bar:
            key = futures[fut]
            results[key] = fut.result()
            g = results[key]["time_to_grok"]
            bar.set_postfix_str(f"alpha={key[0]:g} eps={key[1]:g} test_step={g['test_step']:g}")
    return results


def _curve(summary: dict) -> dict:
    hist = summary["history"]
    curve: dict = {k: [r[k] for r in hist] for k in ("step", "train_loss", "test_loss")}
    return {**curve, "time_to_grok": summary["time_to_grok"]}


def _plot_curves(ax, runs: list[tuple[str, dict]], threshold: float, title: str) -> None:
    for i, (label, c) in enumerate(runs):
        steps = c["step"]
        for key, style in (("train_loss", "--"), ("test_loss", "-")):
            v = c[key]
            start = next((x for x in v if math.isfinite(x)), float("nan"))
            pts = [
                (s, x / start) for s, x in zip(steps, v, strict=True) if s > 0 and math.isfinite(x)
            ]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    style,
                    color=f"C{i}",
                    label=label if key == "test_loss" else None,
                )
        t = c["time_to_grok"]["test_step"]
        if math.isfinite(t) and t > 0:
            ax.plot([t], [threshold], "o", color=f"C{i}", ms=5)  # where the test loss groks
    ax.axhline(threshold, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs (lr-equivalent)")
    ax.set_ylabel("loss / initial loss  (train --, test -)")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_sweep(sweep: dict, curves: dict, path: str) -> None:
    """Panels (a) alpha curves, (b) eps curves, (c) the (alpha, eps) heat map of the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(17, 4.8))
    thr = sweep["threshold"]
    a, b = curves["alpha_sweep"], curves["eps_sweep"]
    _plot_curves(
        ax_a, [(f"alpha={r['alpha']:g}", r) for r in a["runs"]], thr, f"(a) eps={a['eps']:g}"
    )
    _plot_curves(
        ax_b, [(f"eps={r['eps']:g}", r) for r in b["runs"]], thr, f"(b) alpha={b['alpha']:g}"
    )

    metric, alphas, epss = sweep["metric"], sweep["alphas"], sweep["eps"]
    m = np.array(sweep["matrix"], dtype=float)  # rows alpha, columns eps
    ok = np.isfinite(m)  # NaN: the test loss never crossed, i.e. never grokked
    pos = ok & (m > 0)
    floor = m[pos].min() if pos.any() else 1.0  # a delay <= 0 (no grokking delay) gets the floor
    shown = np.where(ok, np.maximum(np.nan_to_num(m, nan=floor), floor), np.nan)
    cmap = plt.get_cmap("OrRd").with_extremes(bad="lightgray")
    norm = LogNorm(floor, max(shown[ok].max(), floor * 1.01)) if ok.any() else None
    im = ax_c.imshow(
        np.ma.masked_invalid(shown), origin="lower", aspect="auto", cmap=cmap, norm=norm
    )
    for i in range(len(alphas)):
        for j in range(len(epss)):
            if ok[i, j]:
                dark = norm is not None and norm(shown[i, j]) > 0.6
                ax_c.text(
                    j,
                    i,
                    _fmt(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
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
    }[metric]
    ax_c.set_title("(c) time to grok (grey: never grokked)")
    if norm is not None:
        fig.colorbar(im, ax=ax_c, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/alpha_eps_sweep")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long 2x2 run (for tests)")
    ap.add_argument("--full", action="store_true", help="the paper's grid and schedule (hours)")
    ap.add_argument("--alphas", type=_floats, help="grid alphas, comma-separated")
    ap.add_argument("--eps", type=_floats, help="grid eps values, comma-separated")
    ap.add_argument("--fixed-eps", type=float, help="eps of panel (a)")
    ap.add_argument("--fixed-alpha", type=float, help="alpha of panel (b)")
    ap.add_argument("--curve-alphas", type=_floats, help="alphas of panel (a); default the grid's")
    ap.add_argument("--curve-eps", type=_floats, help="eps values of panel (b); default the grid's")
    ap.add_argument("--epochs", type=int, help="GD steps per run (lr-equivalent: x lr_scale)")
    ap.add_argument("--metric", choices=METRICS, default="delay", help="heat-map quantity")
    ap.add_argument("--save-runs", action="store_true", help="each run's files in OUT/runs/")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke and a.full:
        ap.error("--smoke and --full exclude each other")
    preset = SMOKE if a.smoke else FULL if a.full else DEFAULT
    base = PolynomialConfig.paper() if a.full else PolynomialConfig()
    base = replace(
        base, **preset["base"], seed=a.seed, device=a.device, linearized=False, decompose=False
    )
    if a.epochs is not None:
        base = replace(base, epochs=a.epochs)
    alphas = a.alphas or preset["alphas"]
    epss = a.eps or preset["eps"]
    fixed_eps = preset["fixed_eps"] if a.fixed_eps is None else a.fixed_eps
    fixed_alpha = preset["fixed_alpha"] if a.fixed_alpha is None else a.fixed_alpha
    curve_alphas = a.curve_alphas or preset.get("curve_alphas", alphas)
    curve_eps = a.curve_eps or preset.get("curve_eps", epss)

    grid = [_key(x, e) for x in alphas for e in epss]
    curve_keys = [_key(x, fixed_eps) for x in curve_alphas] + [
        _key(fixed_alpha, e) for e in curve_eps
    ]
    keys = list(dict.fromkeys(grid + curve_keys))  # unique, in order
    configs = [replace(base, alpha=x, eps=e) for x, e in keys]
    print(
        f"{len(keys)} runs ({len(alphas)}x{len(epss)} grid + {len(keys) - len(grid)} curve-only),"
        f" {a.workers} workers; D={base.D} P={base.P} N={base.N}, {base.epochs} steps at "
        f"lr = {base.lr_scale:g} N/alpha^2 = {base.epochs * base.lr_scale:g} lr-equiv. epochs"
    )
    t0 = time.perf_counter()
    results = run_all(configs, a.workers, a.out if a.save_runs else None, not a.no_progress)
    wall = time.perf_counter() - t0

    def entry(k: tuple[float, float]) -> dict:
        s = results[k]
        return {"alpha": k[0], "eps": k[1], **{n: v for n, v in s.items() if n != "history"}}

    matrix = [[results[_key(x, e)]["time_to_grok"][a.metric] for e in epss] for x in alphas]
    sweep = {
        "metric": a.metric,
        "threshold": base.threshold,
        "alphas": [float(x) for x in alphas],
        "eps": [float(e) for e in epss],
        "matrix": matrix,  # rows alpha, columns eps
        "base_config": {**base.__dict__},
        "workers": a.workers,
        "wall_seconds": wall,
        "cells": [entry(k) for k in grid],
        "curve_runs": [entry(k) for k in keys if k not in set(grid)],
    }
    curves = {
        "alpha_sweep": {
            "eps": fixed_eps,
            "runs": [
                {"alpha": k[0], **_curve(results[k])} for k in curve_keys[: len(curve_alphas)]
            ],
        },
        "eps_sweep": {
            "alpha": fixed_alpha,
            "runs": [{"eps": k[1], **_curve(results[k])} for k in curve_keys[len(curve_alphas) :]],
        },
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sweep.json"), "w") as f:
        json.dump(sweep, f, indent=1)
    with open(os.path.join(a.out, "curves.json"), "w") as f:
        json.dump(curves, f)
    plot_sweep(sweep, curves, os.path.join(a.out, "figure.png"))

    width = max(9, *(len(f"{e:g}") + 2 for e in epss))
    print(f"\ntime to grok ({a.metric}); rows alpha, columns eps")
    print("alpha\\eps".ljust(10) + "".join(f"{e:g}".rjust(width) for e in epss))
    for x, row in zip(alphas, matrix, strict=True):
        print(f"{x:<10g}" + "".join(_fmt(v).rjust(width) for v in row))
    print(f"{len(keys)} runs in {wall:.0f} s.  Figure: {a.out}/figure.png")
    return {"sweep": sweep, "curves": curves, "results": results}


if __name__ == "__main__":
    main()
