"""Appendix: the weight-init scale ``sigma`` and the output scale ``alpha`` act alike.

Every run multiplies the network's initial weights by ``sigma`` and trains the centred,
alpha-scaled model ``alpha (f(x; theta) - f(x; theta0))`` by full-batch GD on the MSE; the
grid task runs a ``sigma x alpha`` grid and plots the final parameter movement
``||theta - theta0|| / ||theta0||`` and the final test loss against ``sigma^2 alpha``.

Why ``sigma^2 alpha``: write ``theta = sigma theta_hat``. For a net that is positively
homogeneous of degree 2 in its parameters (``net="relu"``: ``f(x) = w2 . relu(W1 x)``, no
biases) ``f(sigma theta_hat) = sigma^2 f(theta_hat)``, so the trained function
``alpha (f(theta) - f(theta0)) = (alpha sigma^2) (f(theta_hat) - f(theta_hat0))`` depends on
the two only through ``alpha sigma^2``, and the relative movement is that of ``theta_hat``:
the collapse is exact. The paper's polynomial net (``net="polynomial"``,
:class:`~paper.polynomial.QuadraticNet`, ``f = mean_i phi(w_i . x)``,
``phi(h) = h + eps/2 h^2``) is *not* homogeneous:
``alpha (f(sigma W_hat) - f0) = alpha sigma (lin) + alpha sigma^2 eps/2 (quad)``, where
``lin = mean_i (h_i - h0_i)`` and ``quad = mean_i (h_i^2 - h0_i^2)`` with ``h = W_hat x``; the
quadratic part, which alone can fit the (even, quadratic) target, carries ``alpha sigma^2``,
but the linear part carries ``alpha sigma``. So ``sigma^2 alpha`` collapses the curves only
approximately; the grid's summary measures how well (spread within groups of equal
``sigma^2 alpha``, the share of the variance of the log values those groups explain, and a
fit on ``log sigma^2 alpha`` against one on ``log alpha`` alone).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from .harness import Setup, Task, option
from .polynomial import QuadraticNet, make_data
from .student_teacher import MLP, make_teacher_data

NETS = ("polynomial", "relu")


@dataclass
class _Common:
    """Fields shared by one run and the grid."""

    net: str = option("polynomial", "polynomial (the paper's QuadraticNet) or relu (exact check)")
    D: int = option(20, "input dimension")
    P: int = option(90, "training points")
    P_test: int = option(500, "test points")
    N: int = option(100, "hidden width")
    eps: float = option(0.25, "polynomial net: phi(h) = h + eps/2 h^2")
    target_scale: float = option(
        2.0, "polynomial net: y = target_scale (beta . x)^2 / 2 (the appendix: 2)"
    )
    teacher_width: int = option(8, "relu net: hidden width of the ReLU teacher")
    steps: int = option(5000, "full-batch GD steps")
    lr_scale: float = option(
        1.0, "polynomial net: lr = lr_scale N / (sigma^2 alpha^2) (the appendix: 0.5)"
    )
    lr_frac: float = option(
        0.5, "relu net: lr = lr_frac x the GD stability edge P / (alpha^2 lambda_max(K0))"
    )
    per_decade: int = option(8, "measurements per decade of steps")
    max_probe: int = option(64, "points of the meter's train/test probes")
    seed: int = option(0, "seed of the data (the unit-scale init: seed + 1, for every sigma)")
    device: str = option("cpu", "torch device")
    dtype: str = option("float32", "float32 or float64")


_PAPER = dict(D=100, P=450, P_test=1000, N=500, steps=50_000, lr_scale=0.5)
_SMOKE = dict(D=8, P=36, P_test=60, N=24, steps=300, per_decade=4, max_probe=16)


@dataclass
class InitScaleRunConfig(_Common):
    """One cell of the grid: init scale ``sigma``, output scale ``alpha``.

    The polynomial net's learning rate follows the appendix, ``lr = lr_scale N /
    (sigma^2 alpha^2)`` (its notebook: ``0.5 N / sigma^2`` on the MSE over ``alpha^2``); the
    ReLU net's keeps every run at the same fraction of its GD stability edge, which for a
    homogeneous net makes equal-``sigma^2 alpha`` runs take identical steps in
    ``theta_hat = theta / sigma`` (with power-of-two ``sigma`` and ``alpha`` bit for bit).
    """

    sigma: float = option(1.0, "init scale: the initial weights times sigma")
    alpha: float = option(1.0, "output scale (laziness)")

    @classmethod
    def paper(cls, **overrides: Any) -> InitScaleRunConfig:
        return cls(**{**_PAPER, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> InitScaleRunConfig:
        return cls(**{**_SMOKE, **overrides})


@dataclass
class InitScaleConfig(_Common):
    """The ``sigma x alpha`` grid, each cell one :class:`InitScaleRunConfig` run.

    ``paper()`` is the appendix's setting (authors' notebook): the quadratic net
    ``D=100, N=500, eps=0.25``, ``P=450``, targets ``(beta . x)^2`` with ``x ~ N(0, I/D)``,
    full-batch GD at ``lr = 0.5 N / (sigma^2 alpha^2)`` for 50k steps, over sigma in
    {1/8 .. 2} and alpha in {1/32 .. 32} (the notebook varies sigma at alpha = 1, alpha at
    sigma = 1 and the two jointly; here the full grid). The CPU default keeps the net, the
    target and the learning-rate rule but shrinks the problem (D=20, P=90 (the same P/D),
    N=100, 500 test points), runs 5000 steps at twice the learning rate (``lr_scale=1``:
    20% of the paper's ``lr x steps``) and a 3 x 4 grid with 2-3 runs at each of
    ``sigma^2 alpha`` = 1, 4, 16, 64. (Its alphas start at 1: at ``sigma^2 alpha = 1/16``,
    ``sigma = 0.5``, ``alpha = 1/4``, this learning rate is 64x that of ``sigma = alpha = 1``
    and the run, its weights growing 12x, trains at the edge of GD stability.)
    """

    sigmas: tuple[float, ...] = option((0.5, 1.0, 2.0), "init scales sigma")
    alphas: tuple[float, ...] = option((1.0, 4.0, 16.0, 64.0), "output scales alpha")

    @classmethod
    def paper(cls, **overrides: Any) -> InitScaleConfig:
        grid = dict(
            sigmas=(0.125, 0.25, 0.5, 1.0, 2.0),
            alphas=(2.0**-5, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
        )
        return cls(**{**_PAPER, **grid, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> InitScaleConfig:
        return cls(**{**_SMOKE, "sigmas": (0.5, 1.0, 2.0), "alphas": (1.0, 4.0), **overrides})


# --------------------------------------------------------------------------- one run
def _net_and_data(
    cfg: InitScaleRunConfig,
) -> tuple[torch.nn.Module, Tensor, Tensor, Tensor, Tensor]:
    dtype = getattr(torch, cfg.dtype)
    g_data = torch.Generator().manual_seed(cfg.seed)
    g_init = torch.Generator().manual_seed(cfg.seed + 1)  # the same draws for every sigma
    if cfg.net == "polynomial":
        d = make_data(cfg.D, cfg.P, cfg.P_test, generator=g_data, dtype=dtype)
        model = QuadraticNet(cfg.D, cfg.N, cfg.eps, generator=g_init, dtype=dtype)
        with torch.no_grad():
            model.hidden.weight.mul_(cfg.sigma)
        ts = cfg.target_scale
        return model, d.x, ts * d.y, d.x_test, ts * d.y_test
    if cfg.net == "relu":
        arch = dict(activation="relu", bias=False, init="normal", squeeze=True, dtype=dtype)
        teacher = MLP(cfg.D, (cfg.teacher_width,), 1, generator=g_data, **arch)
        d = make_teacher_data(teacher, cfg.P, cfg.P_test, normalize=True, generator=g_data)
        model = MLP(cfg.D, (cfg.N,), 1, init_scale=cfg.sigma, generator=g_init, **arch)
        return model, d.x, d.y, d.x_test, d.y_test
    raise ValueError(f"net: expected one of {NETS}, got {cfg.net!r}")


def build_run(cfg: InitScaleRunConfig) -> Setup:
    """The net at init scale ``sigma`` on its data; GD at the net's learning-rate rule."""
    import lazymeter as lm

    if not (cfg.sigma > 0 and cfg.alpha > 0):
        raise ValueError(f"sigma, alpha: expected positive scales, got {cfg.sigma}, {cfg.alpha}")
    model, x, y, xt, yt = _net_and_data(cfg)
    model = model.to(cfg.device)
    x, y, xt, yt = (t.to(cfg.device) for t in (x, y, xt, yt))
    # GD on mean (alpha (f - f0) - y)^2 is stable while lr alpha^2 2 lambda_max(K0) / P < 2.
    lam = lm.kernel_spectrum(lm.empirical_ntk(model, x), k=1)["eig_1"]
    edge = cfg.P / (cfg.alpha**2 * lam)
    if cfg.net == "polynomial":
        lr = cfg.lr_scale * cfg.N / (cfg.sigma**2 * cfg.alpha**2)
        if lr >= edge:
            raise ValueError(
                f"lr_scale: {cfg.lr_scale:g} puts gradient descent past its stability edge at "
                f"sigma={cfg.sigma:g} (lr_scale must stay below "
                f"{edge * cfg.sigma**2 * cfg.alpha**2 / cfg.N:.3g}); lower it, raise steps"
            )
    else:
        lr = cfg.lr_frac * edge
    mse = lambda out, target: ((out - target) ** 2).mean()  # noqa: E731

    def loss(meter: Any, i: int) -> Tensor:
        return mse(meter(x), y)

    def measure(meter: Any) -> dict[str, float]:
        return {"train_loss": mse(meter(x), y).item(), "test_loss": mse(meter(xt), yt).item()}

    return Setup(
        model=model,
        meter=dict(
            alpha=cfg.alpha,
            center=True,
            probe=lm.ProbeSet((x, y), test=(xt, yt), max_points=cfg.max_probe),
            schedule=f"log:{cfg.per_decade}",
        ),
        steps=cfg.steps,
        loss=loss,
        # lr is already per alpha (the meter's scaled_lr rule would divide by alpha^2 again)
        optimizer=lambda meter: torch.optim.SGD(meter.parameters(), lr=lr),
        measure=measure,
        hparams=dict(net=cfg.net, sigma=cfg.sigma, alpha=cfg.alpha, seed=cfg.seed),
        desc=f"{cfg.net} sigma={cfg.sigma:g} alpha={cfg.alpha:g}",
        data={"lr": lr, "lambda_max_K0": lam},
    )


def summarize_run(cfg: InitScaleRunConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """``sigma``, ``alpha``, ``sigma2_alpha``, the learning rate, the final movement, losses
    and NTK drift (the last measurement, at the last step)."""
    h = meter.history[-1]
    return {
        "net": cfg.net,
        "sigma": cfg.sigma,
        "alpha": cfg.alpha,
        "sigma2_alpha": cfg.sigma**2 * cfg.alpha,
        "lr": setup.data["lr"],
        "lambda_max_K0": setup.data["lambda_max_K0"],
        "final_param_movement": h["param_movement"],
        "final_train_loss": h["train_loss"],
        "final_test_loss": h["test_loss"],
        "final_ntk_drift": h["ntk_drift"],
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
    }


RUN = Task(
    name="init_scale_run",
    description="one (sigma, alpha) cell of the init-scale-vs-alpha grid",
    config=InitScaleRunConfig,
    build=build_run,
    summarize=summarize_run,
)


# --------------------------------------------------------------------------- the grid
def runs(cfg: InitScaleConfig) -> list[tuple[str, Any, InitScaleRunConfig]]:
    """One :data:`RUN` (registered as ``init_scale_run``: several workers pass it by name)
    per ``(sigma, alpha)``, in ``out/<net>_sigma<s>_alpha<a>/``."""
    common = {f.name: getattr(cfg, f.name) for f in fields(_Common)}
    return [
        (
            f"{cfg.net}_sigma{s:g}_alpha{a:g}",
            RUN,
            InitScaleRunConfig(**common, sigma=s, alpha=a),
        )
        for s in cfg.sigmas
        for a in cfg.alphas
    ]


def _fit_r2(xs: Sequence[float], ys: Sequence[float], degree: int = 2) -> float:
    """R^2 of a least-squares polynomial of ``degree`` in ``xs`` fitted to ``ys`` (a lower
    degree when ``xs`` has too few distinct values; NaN with fewer than two)."""
    x = torch.tensor(xs, dtype=torch.float64)
    y = torch.tensor(ys, dtype=torch.float64)
    degree = min(degree, len(set(xs)) - 1)  # a line through two distinct x, ...
    if degree < 1 or float(y.var()) == 0:
        return math.nan
    A = torch.stack([x**k for k in range(degree + 1)], 1)
    coef = torch.linalg.lstsq(A, y[:, None]).solution[:, 0]
    res = float(((A @ coef - y) ** 2).sum())
    return 1 - res / float(((y - y.mean()) ** 2).sum())


def collapse_stats(rs: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """How well ``key`` (a positive final number) is a function of ``sigma^2 alpha``.

    Runs with equal ``sigma2_alpha`` (to 10 digits) form a group; its ``rel_spread`` is
    ``(max - min) / mean`` of ``key``; ``log_spread`` is ``max - min`` of ``log key``.
    ``r2_log`` is the share of the variance of ``log key`` over all runs explained by the
    group means (1: perfect collapse). ``r2_fit`` is the R^2 of a quadratic in
    ``log sigma^2 alpha`` fitted to ``log key``; ``r2_fit_alpha`` the same on ``log alpha``
    alone (the control: how much the collapse variable adds). ``slope``: the least-squares
    slope of ``log key`` against ``log sigma^2 alpha``; ``range``: max / min of ``key``.
    """
    rs = [r for r in rs if isinstance(r.get(key), (int, float)) and r[key] > 0]
    if len(rs) < 2:
        return {"groups": [], "max_rel_spread": math.nan, "max_log_spread": math.nan}
    groups: dict[float, list[Mapping[str, Any]]] = {}
    for r in rs:
        groups.setdefault(round(r["sigma2_alpha"], 10), []).append(r)
    logs = [math.log(r[key]) for r in rs]
    mean_all = sum(logs) / len(logs)
    total = sum((v - mean_all) ** 2 for v in logs)
    within, rows = 0.0, []
    for prod, g in sorted(groups.items()):
        vals = [r[key] for r in g]
        lg = [math.log(v) for v in vals]
        m = sum(lg) / len(lg)
        within += sum((v - m) ** 2 for v in lg)
        mean = sum(vals) / len(vals)
        many = len(vals) > 1
        rows.append(
            {
                "sigma2_alpha": prod,
                "members": [{"sigma": r["sigma"], "alpha": r["alpha"], key: r[key]} for r in g],
                "mean": mean,
                "rel_spread": (max(vals) - min(vals)) / mean if many else math.nan,
                "log_spread": max(lg) - min(lg) if many else math.nan,
            }
        )
    xs = [math.log(r["sigma2_alpha"]) for r in rs]
    mx = sum(xs) / len(xs)
    sxx = sum((v - mx) ** 2 for v in xs)
    slope = sum((a - mx) * (b - mean_all) for a, b in zip(xs, logs, strict=True)) / sxx
    spreads = [g["rel_spread"] for g in rows if math.isfinite(g["rel_spread"])]
    log_spreads = [g["log_spread"] for g in rows if math.isfinite(g["log_spread"])]
    values = [r[key] for r in rs]
    return {
        "groups": rows,
        "max_rel_spread": max(spreads, default=math.nan),
        "max_log_spread": max(log_spreads, default=math.nan),
        "range": max(values) / min(values),
        "r2_log": 1 - within / total if total > 0 else math.nan,
        "r2_fit": _fit_r2(xs, logs),
        "r2_fit_alpha": _fit_r2([math.log(r["alpha"]) for r in rs], logs),
        "slope": slope if sxx > 0 else math.nan,
    }


def trajectory_spread(
    rs: Sequence[Mapping[str, Any]], key: str = "param_movement", after: float = 0
) -> float:
    """Largest ``(max - min) / mean`` of ``key`` over the measured steps ``> after`` (and
    after step 0) within any group of equal ``sigma^2 alpha``: do whole histories collapse,
    not only their ends?"""
    groups: dict[float, list[Mapping[str, Any]]] = {}
    for r in rs:
        groups.setdefault(round(r["sigma2_alpha"], 10), []).append(r)
    worst = 0.0
    for g in groups.values():
        if len(g) < 2:
            continue
        cols = [
            {h["step"]: h.get(key) for h in r["history"] if h["step"] > max(after, 0)} for r in g
        ]
        for s in set.intersection(*(set(c) for c in cols)):
            vals = [c[s] for c in cols]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                mean = sum(vals) / len(vals)
                if mean > 0:
                    worst = max(worst, (max(vals) - min(vals)) / mean)
    return worst


def combine(cfg: InitScaleConfig, subs: list[dict[str, Any]]) -> dict[str, Any]:
    """The collapse of the final movement and of the final test loss onto ``sigma^2 alpha``;
    of the whole movement and test-loss histories, and of their part after the first 2% of
    the steps (the polynomial net's linear part, which carries ``alpha sigma``, runs on its
    own clock early on)."""
    late = cfg.steps / 50
    return {
        "net": cfg.net,
        "collapse_movement": collapse_stats(subs, "final_param_movement"),
        "collapse_test_loss": collapse_stats(subs, "final_test_loss"),
        "trajectory_spread": trajectory_spread(subs),
        "trajectory_spread_late": trajectory_spread(subs, after=late),
        "test_loss_trajectory_spread_late": trajectory_spread(subs, "test_loss", after=late),
        "late_from_step": late,
    }


def headline(summary: Mapping[str, Any]) -> str:
    """Per group of equal ``sigma^2 alpha``: its members' final movement; then the statistics."""
    cs, ct = summary["collapse_movement"], summary["collapse_test_loss"]
    lines = [f"{summary['net']} net, final ||theta-theta0||/||theta0||:"]
    for g in cs["groups"]:
        members = ", ".join(
            f"(sigma={m['sigma']:g}, alpha={m['alpha']:g}) {m['final_param_movement']:.4g}"
            for m in g["members"]
        )
        tail = f"  spread {g['rel_spread']:.2g}" if math.isfinite(g["rel_spread"]) else ""
        lines.append(f"  sigma^2 alpha = {g['sigma2_alpha']:<7g} {members}{tail}")
    for name, c in (("movement", cs), ("test loss", ct)):
        lines.append(
            f"{name}: spans {c['range']:.3g}x; largest spread at equal sigma^2 alpha "
            f"{c['max_rel_spread']:.2g}; R^2 of log explained by sigma^2 alpha groups "
            f"{c['r2_log']:.4f}, by a fit on log sigma^2 alpha {c['r2_fit']:.4f} (on log alpha "
            f"alone {c['r2_fit_alpha']:.4f}); log-log slope {c['slope']:.2f}"
        )
    lines.append(
        f"whole histories, largest spread at equal sigma^2 alpha: movement "
        f"{summary['trajectory_spread']:.2g}; after step {summary['late_from_step']:g}: "
        f"movement {summary['trajectory_spread_late']:.2g}, test loss "
        f"{summary['test_loss_trajectory_spread_late']:.2g}"
    )
    return "\n".join(lines)


def plot(cfg: InitScaleConfig, summary: Mapping[str, Any], path: str) -> None:
    """Final movement and final test loss against ``sigma^2 alpha`` (log-log, colour = sigma,
    line = group means); movement and test loss over training (colour = ``sigma^2 alpha``,
    line style = sigma)."""
    import matplotlib
    from matplotlib.figure import Figure

    rs = summary["runs"]
    sigmas = sorted({r["sigma"] for r in rs})
    prods = sorted({r["sigma2_alpha"] for r in rs})
    cmap = matplotlib.colormaps["viridis"]
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(18, 4.4))
    axes = fig.subplots(1, 4)
    for ax, key, which, ylabel in (
        (axes[0], "final_param_movement", "collapse_movement", "final ||theta-theta0||/||theta0||"),
        (axes[1], "final_test_loss", "collapse_test_loss", "final test MSE"),
    ):
        for i, s in enumerate(sigmas):
            pts = [(r["sigma2_alpha"], r[key]) for r in rs if r["sigma"] == s]
            ax.scatter(*zip(*pts, strict=True), s=60 - 12 * i, color=f"C{i}", zorder=3,
                       label=f"sigma={s:g}")  # fmt: skip
        st = summary[which]
        ax.plot([g["sigma2_alpha"] for g in st["groups"]], [g["mean"] for g in st["groups"]],
                color="k", lw=0.8)  # fmt: skip
        ax.text(0.03, 0.04, f"R^2(log) = {st['r2_log']:.4f}, max spread "
                f"{st['max_rel_spread']:.2g}", transform=ax.transAxes, fontsize=8)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="sigma^2 * alpha", ylabel=ylabel)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_title(f"{summary['net']} net: init scale and alpha act alike")
    axes[1].set_title("final test loss")
    for ax, key in ((axes[2], "param_movement"), (axes[3], "test_loss")):
        for r in rs:
            pts = [(h["step"], h[key]) for h in r["history"] if h["step"] > 0 and key in h]
            if not pts:
                continue
            c = cmap(prods.index(r["sigma2_alpha"]) / max(1, len(prods) - 1))
            i = sigmas.index(r["sigma"])
            ax.plot(*zip(*pts, strict=True), color=c, ls=styles[i % 4],
                    lw=max(0.8, 3.5 - 1.2 * i), alpha=0.8)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="GD step", ylabel=key)
    for p in prods:
        axes[2].plot([], [], color=cmap(prods.index(p) / max(1, len(prods) - 1)), label=f"{p:g}")
    for i, s in enumerate(sigmas):
        axes[2].plot([], [], color="gray", ls=styles[i % 4], label=f"sigma={s:g}")
    axes[2].legend(title="sigma^2 alpha", fontsize=7, title_fontsize=7, ncol=2)
    axes[2].set_title("movement over training (colour = sigma^2 alpha)")
    axes[3].set_title("test loss over training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


TASK = Task(
    name="init_scale",
    description="appendix: init scale sigma and output scale alpha act through sigma^2 alpha",
    config=InitScaleConfig,
    runs=runs,
    combine=combine,
    plot=plot,
    headline=headline,
)
