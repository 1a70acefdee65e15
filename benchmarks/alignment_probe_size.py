"""Kernel-target alignment against the probe size: biased (paper) vs unbiased estimator.

Trains the paper's Figure-1 network (``examples/paper/polynomial.py``: D=100, P=550 train
points, N=500, alpha=1, eps=0.02, centred output, full-batch GD at ``lr = 20 N / alpha^2``
for 5000 steps = the paper's 100k epochs at ``lr = N / alpha^2``; seed 0, float32), keeps
the network at initialisation and at the end (after grokking), then draws fresh probe sets
of P points from the task's distribution (``x ~ N(0, I/D)``, same ``beta``) and measures on
the empirical NTK ``K = lm.empirical_ntk(model, x)`` (cast to float64; the NTK of the centred
model ``alpha (f - f0)`` is the same kernel up to ``alpha^2``, which alignment ignores):

* the biased alignment, paper definition (``centering="rows"``);
* the biased centred alignment (``centering="double"``);
* the unbiased alignment (U-statistic HSIC ratio) with its jackknife standard error
  (``lm.alignment_estimate``),

at init and at the end, for P in (32, 64, 128, 256, 550, 1000, 2000, 4000), on several
independent probe draws per size. Prints a markdown table (means over draws), writes a
figure (alignment against P, log x axis), then prints a calibration table: the mean
jackknife SE of the unbiased alignment against its standard deviation over 20-40 fresh
probes (P = 64, 256, 1000). The numbers are quoted in ``docs/numbers.md``.

    python benchmarks/alignment_probe_size.py            # ~1 min 45 s on 2 CPU cores
    python benchmarks/alignment_probe_size.py --quick    # ~55 s: fewer sizes and draws
    python benchmarks/alignment_probe_size.py --out /tmp/a.png

Runtime measured on 2 shared CPU cores with 1 torch thread (``--threads``; with 2 threads
a step took 5-50 ms under load, 3 min in all): training ~40 s (5000 steps, 7-8 ms each),
probe sweep and calibration ~1 min.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time

import torch

import lazymeter as lm

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper.polynomial import PolynomialConfig, QuadraticNet, make_data  # noqa: E402

SIZES = (32, 64, 128, 256, 550, 1000, 2000, 4000)
QUICK_SIZES = (32, 128, 550, 2000)
DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")
DEFAULT_OUT = os.path.join(DOCS, "figures", "alignment_vs_probe.png")


CALIBRATION = {64: 40, 256: 40, 1000: 20}
QUICK_CALIBRATION = {64: 20, 256: 20}


def draws_for(P: int, quick: bool) -> int:
    """Independent probe draws at size P (fewer for the large, slow ones)."""
    if quick:
        return 3 if P <= 550 else 2
    return 5 if P <= 1000 else (3 if P <= 2000 else 2)


def train_net(cfg: PolynomialConfig) -> tuple[QuadraticNet, QuadraticNet, torch.Tensor, dict]:
    """Full-batch GD on the centred MSE of ``alpha (f - f0)``, as ``paper.polynomial.train``.

    Returns ``(model0, model, beta, info)``: the net at init, the net at the end, the target's
    ``beta`` and the step at which train and test loss first fell below ``cfg.threshold``
    (relative to their initial values).
    """
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    data = make_data(cfg.D, cfg.P, cfg.P_test, generator=g, dtype=dtype)
    model = QuadraticNet(cfg.D, cfg.N, cfg.eps, readouts=cfg.readouts, generator=g, dtype=dtype)
    model0 = copy.deepcopy(model)  # not trained: its parameters are not in the optimiser
    with torch.no_grad():
        f0, f0_test = model0(data.x), model0(data.x_test)
    lr = cfg.lr_scale * cfg.N / cfg.alpha**2
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mse = lambda out, target: ((out - target) ** 2).mean()  # noqa: E731
    first: dict[str, int | None] = {"train": None, "test": None}
    start: dict[str, float] = {}
    for epoch in range(cfg.epochs + 1):
        loss = mse(cfg.alpha * (model(data.x) - f0), data.y)
        losses = [("train", loss.item())]
        if epoch % 10 == 0 or epoch == cfg.epochs:
            with torch.no_grad():
                test = mse(cfg.alpha * (model(data.x_test) - f0_test), data.y_test).item()
            losses.append(("test", test))
        for name, v in losses:
            start.setdefault(name, v)
            if first[name] is None and v < cfg.threshold * start[name]:
                first[name] = round(epoch * cfg.lr_scale)
        if epoch == cfg.epochs:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    info = {
        "train_loss": (start["train"], loss.item()),
        "test_loss": (start["test"], test),
        "train_fit_epoch": first["train"],
        "test_fit_epoch": first["test"],
    }
    return model0.double(), model.double(), data.beta.double(), info


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    K = lm.empirical_ntk(model, x)  # float64: the nets are cast to float64 after training
    est = lm.alignment_estimate(K, y, centering="double", estimator="unbiased")
    return {
        "rows": lm.kernel_alignment(K, y, centering="rows", estimator="biased"),
        "double": lm.kernel_alignment(K, y, centering="double", estimator="biased"),
        "unbiased": est.value,
        "se": est.stderr,
    }


def sweep(model0, model, beta, cfg, draws: dict[int, int], seed: int) -> dict:
    """``{P: {"init"|"end": {quantity: [one value per draw]}}}`` on fresh probe draws."""
    g = torch.Generator().manual_seed(seed)
    out: dict[int, dict[str, dict[str, list[float]]]] = {}
    for P, n in draws.items():
        res: dict[str, dict[str, list[float]]] = {"init": {}, "end": {}}
        for _ in range(n):
            x = torch.randn(P, cfg.D, generator=g, dtype=torch.float64) / cfg.D**0.5
            y = (x @ beta) ** 2 / 2
            for when, net in (("init", model0), ("end", model)):
                for k, v in measure(net, x, y).items():
                    res[when].setdefault(k, []).append(v)
        out[P] = res
        print(f"  P={P}: {n} draws done", flush=True)
    return out


def mean(v: list[float]) -> float:
    return statistics.fmean(v)


def sd(v: list[float]) -> float:
    return statistics.stdev(v) if len(v) > 1 else math.nan


def table(results) -> str:
    lines = [
        "| P | draws | biased 'rows' (paper) init | end | end/init "
        "| biased 'double' init | end "
        "| unbiased init ± SE | unbiased end ± SE | unbiased end − init (sd over draws) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for P, r in results.items():
        i, e = r["init"], r["end"]
        ri, re_ = mean(i["rows"]), mean(e["rows"])
        diff = [b - a for a, b in zip(i["unbiased"], e["unbiased"], strict=True)]
        lines.append(
            f"| {P} | {len(diff)} | {ri:.4f} | {re_:.4f} | {re_ / ri:.2f} "
            f"| {mean(i['double']):.4f} | {mean(e['double']):.4f} "
            f"| {mean(i['unbiased']):.4f} ± {mean(i['se']):.4f} "
            f"| {mean(e['unbiased']):.4f} ± {mean(e['se']):.4f} "
            f"| {mean(diff):.4f} ({sd(diff):.4f}) |"
        )
    return "\n".join(lines)


def calibration_table(results) -> str:
    """Mean jackknife SE against the spread of the unbiased alignment over fresh draws."""
    lines = [
        "| P | draws | init: sd over draws | init: mean jackknife SE "
        "| end: sd over draws | end: mean jackknife SE |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for P, r in results.items():
        cells = []
        for when in ("init", "end"):
            cells += [f"{sd(r[when]['unbiased']):.4f}", f"{mean(r[when]['se']):.4f}"]
        lines.append(f"| {P} | {len(r['init']['se'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results, path: str) -> None:
    """Two panels: every probe size, and a zoom on the large ones (same curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    Ps = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    styles = {"init": ("tab:blue", "at init"), "end": ("tab:red", "at the end (after grokking)")}
    for ax in axes:
        for when, (color, label) in styles.items():
            rows = [mean(results[P][when]["rows"]) for P in Ps]
            ub = [mean(results[P][when]["unbiased"]) for P in Ps]
            se = [mean(results[P][when]["se"]) for P in Ps]
            ax.plot(Ps, rows, "--o", color=color, ms=4, label=f"biased (paper, 'rows'), {label}")
            ax.plot(Ps, ub, "-s", color=color, ms=4, label=f"unbiased ± 1 SE, {label}")
            lo = [m - s for m, s in zip(ub, se, strict=True)]
            hi = [m + s for m, s in zip(ub, se, strict=True)]
            ax.fill_between(Ps, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(Ps, [str(P) for P in Ps], fontsize=8)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("probe size P (fresh test points)")
        ax.axvline(1000, color="grey", lw=0.8, ls=":")
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("kernel-target alignment of the NTK")
    axes[0].set_title("all probe sizes")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[1].set_xlim(200, 5000)
    axes[1].set_xticks([P for P in Ps if P >= 256], [str(P) for P in Ps if P >= 256], fontsize=8)
    axes[1].set_ylim(-0.006, 0.03)
    axes[1].set_title("zoom: P >= 256 (dotted: the paper's 1000 points)")
    fig.suptitle("Figure-1 task (D=100, N=500, eps=0.02): alignment against probe size")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer probe sizes and draws")
    ap.add_argument("--out", default=DEFAULT_OUT, help="figure path (PNG)")
    ap.add_argument("--epochs", type=int, default=5000, help="GD steps at lr_scale=20")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady timings on a shared box)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cfg = PolynomialConfig(epochs=args.epochs, seed=args.seed)  # trained in float32
    model0, model, beta, info = train_net(cfg)
    t_train = time.perf_counter() - t0
    print(
        f"trained in {t_train:.1f} s: train loss {info['train_loss'][0]:.3g} -> "
        f"{info['train_loss'][1]:.3g}, test loss {info['test_loss'][0]:.3g} -> "
        f"{info['test_loss'][1]:.3g}; below {cfg.threshold:g}x initial at epoch "
        f"{info['train_fit_epoch']} (train), {info['test_fit_epoch']} (test) "
        "(lr-equivalent epochs)",
        flush=True,
    )
    sizes = QUICK_SIZES if args.quick else SIZES
    results = sweep(model0, model, beta, cfg, {P: draws_for(P, args.quick) for P in sizes}, 1)
    print("\nAlignment of the NTK with the labels (means over probe draws; SE: jackknife)\n")
    print(table(results))
    figure(results, args.out)
    calib = sweep(model0, model, beta, cfg, QUICK_CALIBRATION if args.quick else CALIBRATION, 2)
    print("\nJackknife SE of the unbiased alignment against its spread over fresh draws\n")
    print(calibration_table(calib))
    print(f"\nfigure: {os.path.normpath(args.out)}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
