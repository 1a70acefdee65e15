"""Student-teacher regression: the paper's student-teacher section and its appendix on init scale.

A fixed random *teacher* network labels Gaussian inputs, ``y = teacher(x)`` (normalised to
unit variance), and a wider *student* of the same two-layer form learns it from a modest
training set. Two experiments share the data and the model:

* :func:`train_student` (``examples/student_teacher.py``): a student with a *large*
  initialisation, trained with AdamW and weight decay, the setting in which Liu et al.
  (Omnigrok, 2023) reported grokking of a regression task through an "accuracy" = fraction of
  samples whose squared error is below a threshold. The paper's point: that
  accuracy is a threshold read off the loss, so *when* it jumps depends on the threshold,
  while the train/test loss curves (no threshold) are the reliable signal.
* :func:`train_scaled` / :func:`run_scale_grid` (``examples/init_scale_vs_alpha.py``): the
  appendix's observation that the weight-init scale ``sigma`` and the output scale ``alpha``
  act alike. For the two-layer homogeneous student ``f(x) = w2 . relu(W1 x)`` (degree 2 in
  its parameters), ``theta = sigma * theta_hat`` gives ``f(x; theta) = sigma^2 f(x; theta_hat)``,
  so ``alpha (f(theta) - f(theta0)) = (alpha sigma^2) (f(theta_hat) - f(theta_hat0))``:
  only ``alpha * sigma^2`` enters the function, and the relative movement
  ``||theta - theta0|| / ||theta0||`` equals that of ``theta_hat``.

Model: ``f(x) = w2 . act(W1 x)`` without biases (biases would break the homogeneity),
``W1 [N, D] ~ N(0, sigma^2 / D)``, ``w2 [N] ~ N(0, sigma^2 / N)``: ``sigma`` times the
LeCun-normal initialisation; the output is ``[B]``. The teacher is the same net with a
narrow hidden layer and ``sigma = 1``, so the task is realisable and the test loss can fall
decades below the target variance.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from .progress import progress_bar
from .results import first_step_at_or_above, write_json

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class TwoLayerNet(nn.Module):
    """``f(x) = w2 . act(W1 x)``, no biases, ``sigma`` times LeCun-normal init; output ``[B]``.

    Args:
        D: input dimension; N: hidden width.
        activation: ``"relu"`` (positively homogeneous: ``f(c theta) = c^2 f(theta)``)
            or ``"tanh"`` (not homogeneous).
        sigma: initialisation scale: ``W1 ~ N(0, sigma^2/D)``, ``w2 ~ N(0, sigma^2/N)``.
            With the same ``generator`` state the draws are the same for every ``sigma``,
            only multiplied by it (``theta0 = sigma * theta_hat0``).
    """

    def __init__(
        self,
        D: int,
        N: int,
        *,
        activation: str = "relu",
        sigma: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: expected a positive init scale, got {sigma}")
        self.activation = activation
        self.act = _ACTIVATIONS[activation]
        # nn.Linear layers (not raw Parameters) so that per-layer NTK rules apply.
        self.hidden = nn.Linear(D, N, bias=False, dtype=dtype, device=device)
        self.readout = nn.Linear(N, 1, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            w1 = torch.randn(N, D, generator=generator, dtype=dtype) * (sigma / D**0.5)
            w2 = torch.randn(1, N, generator=generator, dtype=dtype) * (sigma / N**0.5)
            self.hidden.weight.copy_(w1)
            self.readout.weight.copy_(w2)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.act(self.hidden(x))).squeeze(-1)


@dataclass
class TeacherData:
    """Train and test inputs ``x ~ N(0, I_D)`` and unit-variance teacher targets."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    teacher: TwoLayerNet
    scale: float  # the teacher's raw outputs were divided by this (their std)


def make_teacher_data(
    D: int,
    teacher_width: int,
    P: int,
    P_test: int,
    *,
    activation: str = "relu",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> TeacherData:
    """``P`` train and ``P_test`` test points of ``y = teacher(x) / s``, ``x ~ N(0, I_D)``.

    The teacher is a :class:`TwoLayerNet` of width ``teacher_width`` (``sigma = 1``), fixed;
    ``s`` is the std of its outputs over all ``P + P_test`` inputs, so the targets have
    variance ~1 and thresholds "relative to the target variance" are nearly absolute.
    """
    teacher = TwoLayerNet(D, teacher_width, activation=activation, generator=generator, dtype=dtype)
    x = torch.randn(P, D, generator=generator, dtype=dtype)
    xt = torch.randn(P_test, D, generator=generator, dtype=dtype)
    with torch.no_grad():
        y, yt = teacher(x), teacher(xt)
    s = float(torch.cat([y, yt]).std())
    to = lambda t: t.to(device)  # noqa: E731
    return TeacherData(to(x), to(y / s), to(xt), to(yt / s), teacher.to(device), s)


# --------------------------------------------------------------------------- accuracy
def threshold_accuracy(
    pred: Tensor, target: Tensor, thresholds: Iterable[float], scale: float = 1.0
) -> list[float]:
    """Fraction of samples with squared error ``(pred - target)^2 < tau * scale``, per ``tau``.

    The "accuracy" of a regression task used in grokking studies (Liu et al. 2023): a sample
    counts as correct when its error is below a threshold; ``scale`` is typically the
    target variance, so that ``tau`` is relative. ``pred`` and ``target``: ``[P]`` (or any
    equal shapes, one sample per element). Returns one float in ``[0, 1]`` per threshold.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred, target: expected equal shapes, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    err = (pred.detach() - target.detach()).double().reshape(-1) ** 2
    return [float((err < tau * scale).double().mean()) for tau in thresholds]


def acc_key(split: str, tau: float) -> str:
    """History column of the accuracy at threshold ``tau``: e.g. ``tau0.01_test_acc``."""
    return f"tau{tau:g}_{split}_acc"


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).mean()


# --------------------------------------------------------------------------- experiment 1
@dataclass
class StudentTeacherConfig:
    """Accuracy misleads, loss does not: a large-init student with AdamW + weight decay.

    Defaults (a CPU budget: ~20 s of training on 2 busy CPU cores): teacher ``D=10 -> 8 -> 1``
    ReLU; student ``D=10 -> 128 -> 1`` ReLU with ``init_scale=4`` (its initial output is
    ~16x the teacher's); ``P=500`` train, ``P_test=1000`` test points; full-batch AdamW,
    ``lr=3e-3``, ``weight_decay=0.1``, 20k steps; no output rescaling (``alpha=1``,
    uncentred), as in Liu et al.'s setting. Accuracy thresholds ``tau`` are relative to
    the test-target variance; a "grokking step" is the first measured step at which an
    accuracy reaches ``level``.
    """

    D: int = 10
    teacher_width: int = 8
    P: int = 500
    P_test: int = 1000
    width: int = 128
    activation: str = "relu"
    init_scale: float = 4.0
    lr: float = 3e-3
    weight_decay: float = 0.1
    steps: int = 20_000
    thresholds: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    level: float = 0.5
    per_decade: int = 24
    max_probe: int = 64
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    @classmethod
    def paper(cls, **overrides: Any) -> StudentTeacherConfig:
        """The budget behind ``--full``: 100k steps, 10k test points, 32 measurements per
        decade. (The paper's exact student-teacher hyperparameters are not reproduced here;
        the effect does not depend on them.)"""
        return cls(**{"steps": 100_000, "P_test": 10_000, "per_decade": 32, **overrides})


def train_student(
    cfg: StudentTeacherConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Train the large-init student with :class:`lazymeter.LazyMeter`; return a summary.

    Each measurement (log-spaced steps) records ``train_loss``, ``test_loss``, the train and
    test accuracy at every threshold (``tau{tau}_train_acc``, ``tau{tau}_test_acc``), and the
    meter's diagnostics (``ntk_drift``, ``alignment_*``, ``param_movement``, ``weight_norm``,
    the lazy baseline ``k0_test_mse``). Writes ``history.jsonl``, TensorBoard events,
    ``summary.json`` and ``figure.png`` to ``out_dir`` when given.

    Returns:
        ``{"config", "target_var", "crossings", "test_step_spread", "final_*", ...,
        "history"}``; ``crossings`` has one entry per threshold: the first steps at which the
        train and test accuracy reach ``level``, their ratio (the apparent grokking delay),
        and the test loss at the test crossing over ``tau * target_var``.
    """
    import lazymeter as lm

    if not 0 < cfg.level <= 1:
        raise ValueError(f"level: expected an accuracy in (0, 1], got {cfg.level}")
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    data = make_teacher_data(
        cfg.D, cfg.teacher_width, cfg.P, cfg.P_test, generator=g, dtype=dtype, device=cfg.device
    )
    # Its own generator: the student's init does not change with the data sizes.
    student = TwoLayerNet(
        cfg.D,
        cfg.width,
        activation=cfg.activation,
        sigma=cfg.init_scale,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
        dtype=dtype,
    ).to(cfg.device)
    var = float(data.y_test.var())
    meter = lm.LazyMeter(
        student,
        alpha=1.0,
        center=False,  # the plain network, large random initial function included
        probe=(data.x, data.y),
        test_probe=(data.x_test, data.y_test),
        schedule=f"log:{cfg.per_decade}",
        log_dir=out_dir,
        max_probe=cfg.max_probe,
    )
    opt = torch.optim.AdamW(meter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bar = progress_bar(cfg.steps, progress, f"student init x{cfg.init_scale:g}")
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        out = meter(data.x)
        loss = _mse(out, data.y)
        scalars = {"train_loss": loss.item()}
        last = step == cfg.steps
        if meter.will_measure(step) or last:
            # Accuracies and the test loss only when they will be recorded: the test forward
            # would otherwise double the cost of a step.
            with torch.no_grad():
                pred_t = meter(data.x_test)
                scalars["test_loss"] = _mse(pred_t, data.y_test).item()
                for split, p, y in (("train", out, data.y), ("test", pred_t, data.y_test)):
                    accs = threshold_accuracy(p, y, cfg.thresholds, var)
                    scalars.update(
                        {acc_key(split, t): a for t, a in zip(cfg.thresholds, accs, strict=True)}
                    )
        row = meter.step(step=step, **scalars)
        if last:
            if row is None:
                meter.measure()  # the final state is always in the history
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)
        if step % 500 == 0:
            bar.set_postfix(train=f"{scalars['train_loss']:.3g}", refresh=False)
    bar.close()
    meter.close()
    seconds = time.perf_counter() - t0

    hist = meter.history
    steps = [r["step"] for r in hist]
    crossings = []
    for tau in cfg.thresholds:
        tr = first_step_at_or_above(steps, [r[acc_key("train", tau)] for r in hist], cfg.level)
        te = first_step_at_or_above(steps, [r[acc_key("test", tau)] for r in hist], cfg.level)
        at = next((r["test_loss"] for r in hist if r["step"] == te), math.nan)
        crossings.append(
            {
                "threshold": tau,
                "train_step": tr,
                "test_step": te,
                "delay_ratio": te / tr if tr > 0 else math.nan,
                "test_loss_at_test_step": at,
                "test_loss_over_threshold": at / (tau * var),
                "final_test_acc": hist[-1][acc_key("test", tau)],
            }
        )
    te_steps = [c["test_step"] for c in crossings if math.isfinite(c["test_step"])]
    first, last_row = hist[0], hist[-1]
    # Loss-based crossings (no accuracy threshold): each loss below 1e-3 x its start.
    grok = lm.time_to_grok(
        steps, [r["train_loss"] for r in hist], [r["test_loss"] for r in hist], threshold=1e-3
    )
    # Lazy -> rich: when the network first beats the lazy (K0 kernel regression) solution,
    # and when its NTK starts aligning with the target: the (unbiased) alignment's rise over
    # its initial value exceeds twice its paired standard error.
    k0 = meter.baseline.get("k0_test_mse", math.nan)
    a0 = first.get("alignment0_test", math.nan)
    aligns = [r.get("alignment_test", math.nan) for r in hist]
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "target_var": var,
        "level": cfg.level,
        "crossings": crossings,
        "test_step_spread": max(te_steps) / min(te_steps) if len(te_steps) > 1 else math.nan,
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "initial_train_loss": first["train_loss"],
        "initial_test_loss": first["test_loss"],
        "final_train_loss": last_row["train_loss"],
        "final_test_loss": last_row["test_loss"],
        "min_test_loss": min(r["test_loss"] for r in hist),
        "loss_time_to_grok": grok.as_dict(),
        "initial_weight_norm": first["weight_norm"],
        "final_weight_norm": last_row["weight_norm"],
        "final_param_movement": last_row["param_movement"],
        "final_ntk_drift": last_row["ntk_drift"],
        "alignment0_test": a0,
        "final_alignment_test": last_row.get("alignment_test"),
        "max_alignment_test": max((a for a in aligns if math.isfinite(a)), default=math.nan),
        "test_below_k0_step": next((r["step"] for r in hist if r["test_loss"] <= k0), math.nan),
        "alignment_rise_step": next(
            (
                r["step"]
                for r in hist
                if r.get("alignment_rise_test", math.nan)
                > 2 * r.get("alignment_rise_test_se", math.inf)
            ),
            math.nan,
        ),
        "seconds": seconds,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "summary.json"), summary)
        if figure:
            plot_student_teacher(hist, summary, os.path.join(out_dir, "figure.png"))
    summary["history"] = hist
    return summary


def _col(hist: Sequence[dict[str, Any]], key: str, norm: float = 1.0):
    pts = [
        (r["step"], r[key] / norm)
        for r in hist
        if r["step"] > 0 and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def plot_student_teacher(hist: Sequence[dict[str, Any]], summary: dict[str, Any], path: str):
    """Left: train/test loss (log-log) with each threshold ``tau * var`` as a dotted line;
    middle: train (dashed) and test (solid) accuracy per threshold, each test crossing of
    ``level`` marked with its step; right: the meter's lazy/rich diagnostics."""
    from matplotlib.figure import Figure

    cfg, var, level = summary["config"], summary["target_var"], summary["level"]
    fig = Figure(figsize=(16, 4.4))
    ax, ax2, ax3 = fig.subplots(1, 3)
    ax.plot(*_col(hist, "train_loss"), color="C0", label="train loss")
    ax.plot(*_col(hist, "test_loss"), color="C3", label="test loss")
    k0 = summary.get("k0_test_mse")
    if k0 is not None and math.isfinite(k0):
        ax.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    for i, c in enumerate(summary["crossings"]):
        color = f"C{i + 4}"
        ax.axhline(c["threshold"] * var, color=color, ls=(0, (2, 2)), lw=1)
        label = f"test, tau={c['threshold']:g}"
        ax2.plot(*_col(hist, acc_key("test", c["threshold"])), color=color, label=label)
        ax2.plot(*_col(hist, acc_key("train", c["threshold"])), color=color, ls="--", lw=1)
        s = c["test_step"]
        if math.isfinite(s):
            for a in (ax, ax2):
                a.axvline(s, color=color, alpha=0.35, lw=2)
            ax2.annotate(
                f"{s:,.0f}",
                (s, level),
                xytext=(4, -14 - 11 * i),
                textcoords="offset points",
                color=color,
                fontsize=8,
            )
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE (target variance ~1)")
    ax.set_title(f"losses: no threshold (dotted: tau x var), init x{cfg['init_scale']:g}")
    ax.legend(fontsize=8, loc="lower left")
    ax2.axhline(level, color="k", lw=0.8, ls=":")
    ax2.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step")
    ax2.set_ylabel("accuracy: frac. with (f - y)^2 < tau var")
    spread = summary["test_step_spread"]
    ax2.set_title(f"test acc reaches {level:g} at steps {spread:.1f}x apart (dashed: train)")
    ax2.legend(fontsize=8, loc="upper left")
    w0 = summary["initial_weight_norm"]
    for key, label, norm in (
        ("param_movement", "||theta-theta0||/||theta0||", 1.0),
        ("ntk_drift", "NTK drift ||K-K0||/||K0||", 1.0),
        ("weight_norm", "||theta|| / ||theta0||", w0),
        ("alignment_test", "alignment (test)", 1.0),
    ):
        xs, ys = _col(hist, key, norm)
        if xs:
            ax3.plot(xs, ys, label=label)
    ax3.set(xscale="log", xlabel="step", title="lazy vs rich diagnostics (LazyMeter)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- experiment 2
@dataclass
class ScaleConfig:
    """One run of the (sigma, alpha) grid: full-batch GD on the centred, alpha-scaled MSE.

    The learning rate is ``lr_frac`` of the gradient-descent stability edge of the run:
    ``lr = lr_frac * P / (alpha^2 * lambda_max(K0))``, ``K0`` the initial NTK of the unscaled
    student on the train set (the loss Hessian in function space is ``2 alpha^2 K0 / P``).
    For the homogeneous (ReLU) student ``lambda_max(K0)`` is exactly ``sigma^2`` times its
    value at ``sigma = 1``, so every run with the same ``alpha sigma^2`` takes identical steps
    in ``theta_hat = theta / sigma``; for tanh this rule is the natural generalisation. (With
    power-of-two ``sigma`` and ``alpha`` every rescaling is exact in binary floating point, and
    equal-``alpha sigma^2`` ReLU runs agree bit for bit; other values agree to rounding.)
    """

    D: int = 10
    teacher_width: int = 8
    P: int = 300
    P_test: int = 1000
    width: int = 128
    activation: str = "relu"
    sigma: float = 1.0
    alpha: float = 1.0
    steps: int = 2000
    lr_frac: float = 0.5
    center: bool = True
    per_decade: int = 8
    max_probe: int = 64
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"


def train_scaled(
    cfg: ScaleConfig,
    out_dir: str | None = None,
    *,
    progress: bool = False,
    bar: Any = None,
) -> dict[str, Any]:
    """Train the student at init scale ``sigma`` and output scale ``alpha``; return a summary.

    The data come from ``seed`` and the student's unit-scale draws from ``seed + 1``, the
    same for every ``(sigma, alpha)``. Writes ``history.jsonl`` and TensorBoard events (and
    ``summary.json``) to ``out_dir`` when given; ``bar`` is an outer progress bar to update.

    Returns:
        ``{"config", "sigma2_alpha", "lambda_max_K0", "lr", "final_param_movement",
        "final_train_loss", "final_test_loss", "final_ntk_drift", "seconds", "history"}``.
    """
    import lazymeter as lm

    dtype = getattr(torch, cfg.dtype)
    data = make_teacher_data(
        cfg.D,
        cfg.teacher_width,
        cfg.P,
        cfg.P_test,
        generator=torch.Generator().manual_seed(cfg.seed),
        dtype=dtype,
        device=cfg.device,
    )
    model = TwoLayerNet(
        cfg.D,
        cfg.width,
        activation=cfg.activation,
        sigma=cfg.sigma,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
        dtype=dtype,
    ).to(cfg.device)
    lam = lm.kernel_spectrum(lm.empirical_ntk(model, data.x), k=1)["eig_1"]
    meter = lm.LazyMeter(
        model,
        alpha=cfg.alpha,
        center=cfg.center,
        probe=(data.x, data.y),
        test_probe=(data.x_test, data.y_test),
        schedule=f"log:{cfg.per_decade}",
        log_dir=out_dir,
        max_probe=cfg.max_probe,
    )
    lr = meter.scaled_lr(cfg.lr_frac * cfg.P / lam)
    opt = torch.optim.SGD(meter.parameters(), lr=lr)
    own_bar = bar is None
    if own_bar:
        bar = progress_bar(cfg.steps, progress, f"sigma={cfg.sigma:g} alpha={cfg.alpha:g}")
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        loss = _mse(meter(data.x), data.y)
        scalars = {"train_loss": loss.item()}
        last = step == cfg.steps
        if meter.will_measure(step) or last:
            with torch.no_grad():
                scalars["test_loss"] = _mse(meter(data.x_test), data.y_test).item()
        row = meter.step(step=step, **scalars)
        if last:
            if row is None:
                meter.measure()
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)
    if own_bar:
        bar.close()
    meter.close()
    h = meter.history[-1]
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "sigma": cfg.sigma,
        "alpha": cfg.alpha,
        "activation": cfg.activation,
        "sigma2_alpha": cfg.sigma**2 * cfg.alpha,
        "lambda_max_K0": lam,
        "lr": lr,
        "final_param_movement": h["param_movement"],
        "final_train_loss": h["train_loss"],
        "final_test_loss": h["test_loss"],
        "final_ntk_drift": h["ntk_drift"],
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "seconds": time.perf_counter() - t0,
    }
    if out_dir is not None:
        write_json(os.path.join(out_dir, "summary.json"), summary)
    summary["history"] = meter.history
    return summary


def run_dir(out: str, activation: str, sigma: float, alpha: float) -> str:
    """Per-run folder of the grid: ``OUT/runs/<activation>_sigma<s>_alpha<a>``."""
    return os.path.join(out, "runs", f"{activation}_sigma{sigma:g}_alpha{alpha:g}")


def collapse_stats(runs: Sequence[dict[str, Any]], key: str = "final_param_movement"):
    """How well ``key`` collapses onto a function of ``sigma^2 * alpha``, per activation.

    Runs with equal ``sigma2_alpha`` (to 10 digits) form a group; its spread is
    ``(max - min) / mean`` of ``key``. ``r2_log`` is the fraction of the variance of
    ``log(key)`` across all runs explained by the group means (1 = perfect collapse);
    ``slope`` is the least-squares slope of ``log key`` against ``log(sigma^2 alpha)``.
    """
    out: dict[str, Any] = {}
    for act in sorted({r["activation"] for r in runs}):
        rs = [r for r in runs if r["activation"] == act and r[key] > 0]
        groups: dict[float, list[dict[str, Any]]] = {}
        for r in rs:
            groups.setdefault(round(r["sigma2_alpha"], 10), []).append(r)

        def logs_of(rows: Sequence[dict[str, Any]]) -> Tensor:
            return torch.tensor([math.log(r[key]) for r in rows], dtype=torch.float64)

        logs = logs_of(rs)
        within = sum(float(((t - t.mean()) ** 2).sum()) for t in map(logs_of, groups.values()))
        total = float(((logs - logs.mean()) ** 2).sum())
        xs = torch.tensor([math.log(r["sigma2_alpha"]) for r in rs], dtype=torch.float64)
        slope = float(
            ((xs - xs.mean()) * (logs - logs.mean())).sum() / ((xs - xs.mean()) ** 2).sum()
        )
        group_rows = []
        for prod, g in sorted(groups.items()):
            vals = [r[key] for r in g]
            mean = sum(vals) / len(vals)
            group_rows.append(
                {
                    "sigma2_alpha": prod,
                    "members": [{"sigma": r["sigma"], "alpha": r["alpha"], key: r[key]} for r in g],
                    "mean": mean,
                    "rel_spread": (max(vals) - min(vals)) / mean if len(vals) > 1 else math.nan,
                }
            )
        spreads = [x["rel_spread"] for x in group_rows if math.isfinite(x["rel_spread"])]
        values = [r[key] for r in rs]
        out[act] = {
            "groups": group_rows,
            "max_rel_spread": max(spreads) if spreads else math.nan,
            "range": max(values) / min(values),
            "r2_log": 1 - within / total if total > 0 else math.nan,
            "slope": slope,
        }
    return out


def trajectory_spread(runs: Sequence[dict[str, Any]], key: str = "param_movement") -> dict:
    """Largest ``(max - min) / mean`` of ``key`` over the measured steps within each group of
    equal ``sigma^2 alpha``, per activation: whole histories collapse, not only endpoints."""
    out: dict[str, float] = {}
    for act in sorted({r["activation"] for r in runs}):
        groups: dict[float, list[dict[str, Any]]] = {}
        for r in runs:
            if r["activation"] == act:
                groups.setdefault(round(r["sigma2_alpha"], 10), []).append(r)
        worst = 0.0
        for g in groups.values():
            if len(g) < 2:
                continue
            cols = [{h["step"]: h[key] for h in r["history"]} for r in g]
            for s in set.intersection(*(set(c) for c in cols)):
                vals = [c[s] for c in cols]
                mean = sum(vals) / len(vals)
                if mean > 0 and all(math.isfinite(v) for v in vals):
                    worst = max(worst, (max(vals) - min(vals)) / mean)
        out[act] = worst
    return out


@dataclass
class ScaleGrid:
    """The (sigma, alpha) grid of :func:`run_scale_grid`, per activation."""

    sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    alphas: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0, 16.0])
    activations: list[str] = field(default_factory=lambda: ["relu", "tanh"])


def run_scale_grid(
    base: ScaleConfig,
    grid: ScaleGrid,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Train every (activation, sigma, alpha) of ``grid``; summarise the collapse.

    Per-run files go to ``OUT/runs/<activation>_sigma<s>_alpha<a>/``; ``OUT/summary.json``
    holds every run's summary (without history), :func:`collapse_stats` of the final
    parameter movement and of the final test loss, and :func:`trajectory_spread`;
    ``OUT/figure.png`` plots them.
    """
    cells = [(a, s, al) for a in grid.activations for s in grid.sigmas for al in grid.alphas]
    bar = progress_bar(len(cells) * base.steps, progress, f"{len(cells)} runs")
    runs = []
    t0 = time.perf_counter()
    for act, sigma, alpha in cells:
        cfg = replace(base, activation=act, sigma=sigma, alpha=alpha)
        d = None if out_dir is None else run_dir(out_dir, act, sigma, alpha)
        runs.append(train_scaled(cfg, d, bar=bar))
        r = runs[-1]
        bar.set_postfix(
            run=f"{act} sigma={sigma:g} alpha={alpha:g} move={r['final_param_movement']:.3g}",
            refresh=False,
        )
    bar.close()
    summary: dict[str, Any] = {
        "config": asdict(base),
        "grid": asdict(grid),
        "collapse_movement": collapse_stats(runs, "final_param_movement"),
        "collapse_test_loss": collapse_stats(runs, "final_test_loss"),
        "trajectory_spread": trajectory_spread(runs),
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
        "seconds": time.perf_counter() - t0,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "summary.json"), summary)
        if figure:
            plot_scale_grid(runs, summary, os.path.join(out_dir, "figure.png"))
    summary["histories"] = {(r["activation"], r["sigma"], r["alpha"]): r["history"] for r in runs}
    return summary


def plot_scale_grid(runs: Sequence[dict[str, Any]], summary: dict[str, Any], path: str) -> None:
    """Left: final movement against ``sigma^2 alpha`` (log-log; colour = sigma, filled =
    ReLU, open = tanh, line = group means); middle: movement over training for the first
    activation (colour = ``sigma^2 alpha``, line style = sigma); right: final test loss."""
    import matplotlib
    from matplotlib.figure import Figure

    sigmas = sorted({r["sigma"] for r in runs})
    acts = list(dict.fromkeys(r["activation"] for r in runs))
    markers = {a: m for a, m in zip(acts, ["o", "s", "^", "D"], strict=False)}
    fig = Figure(figsize=(16, 4.4))
    ax, ax2, ax3 = fig.subplots(1, 3)
    for a_i, act in enumerate(acts):
        cs = summary["collapse_movement"][act]
        for key, axis in (("final_param_movement", ax), ("final_test_loss", ax3)):
            for i, s in enumerate(sigmas):
                pts = [
                    (r["sigma2_alpha"], r[key])
                    for r in runs
                    if r["activation"] == act and r["sigma"] == s
                ]
                xs, ys = zip(*pts, strict=True)
                axis.scatter(
                    xs,
                    ys,
                    marker=markers[act],
                    s=60 - 18 * i,
                    facecolors=f"C{i}" if a_i == 0 else "none",
                    edgecolors=f"C{i}",
                    label=f"{act}, sigma={s:g}",
                    zorder=3,
                )
            which = "movement" if key == "final_param_movement" else "test_loss"
            stats = summary[f"collapse_{which}"][act]
            gx = [g["sigma2_alpha"] for g in stats["groups"]]
            gy = [g["mean"] for g in stats["groups"]]
            axis.plot(gx, gy, color="k", lw=0.8, ls="-" if a_i == 0 else "--")
        ax.text(
            0.03,
            0.05 + 0.09 * a_i,
            f"{act}: R^2(log) = {cs['r2_log']:.6f}, max spread {cs['max_rel_spread']:.2g}",
            transform=ax.transAxes,
            fontsize=8,
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="sigma^2 * alpha",
        ylabel="final ||theta-theta0||/||theta0||",
    )
    ax.set_title("init scale sigma and output scale alpha act alike")
    ax.legend(fontsize=7, loc="upper right")
    ax3.set(xscale="log", yscale="log", xlabel="sigma^2 * alpha", ylabel="final test MSE")
    ax3.set_title("final test loss (target variance ~1)")
    first = acts[0]
    prods = sorted({r["sigma2_alpha"] for r in runs})
    cmap = matplotlib.colormaps["viridis"]
    styles = ["-", "--", ":", "-."]
    for r in runs:
        if r["activation"] != first:
            continue
        pts = [(h["step"], h["param_movement"]) for h in r["history"] if h["step"] > 0]
        c = cmap(prods.index(r["sigma2_alpha"]) / max(1, len(prods) - 1))
        i = sigmas.index(r["sigma"])
        # Thinner lines for larger sigma, so that curves lying on top of each other show.
        lw = max(0.8, 4.0 - 1.4 * i)
        ax2.plot(*zip(*pts, strict=True), color=c, ls=styles[i % len(styles)], lw=lw, alpha=0.8)
    for p in prods:
        ax2.plot([], [], color=cmap(prods.index(p) / max(1, len(prods) - 1)), label=f"{p:g}")
    for i, s in enumerate(sigmas):
        lw = max(0.8, 4.0 - 1.4 * i)
        ax2.plot([], [], color="gray", ls=styles[i % len(styles)], lw=lw, label=f"sigma={s:g}")
    ax2.set(xscale="log", yscale="log", xlabel="GD step", ylabel="||theta-theta0||/||theta0||")
    ax2.set_title(f"{first}: movement over training (colour = sigma^2 alpha)")
    ax2.legend(title="sigma^2 alpha", fontsize=7, title_fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
