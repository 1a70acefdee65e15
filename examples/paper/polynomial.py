"""The paper's polynomial-regression task (section 5, Figure 1; the runs of Figures 3 and 4).

Data: ``x ~ N(0, I/D)``, ``beta ~ N(0, I_D)``, target ``y = (beta . x)^2 / 2`` (Figures 1,
3e and 4) or ``y = (beta . x)^2`` (Figure 3a: the authors' ``(beta . X / sqrt(D))^2`` with
``X ~ N(0, I)``).
Model (no readouts): ``f(x) = mean_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2``,
``W [N, D]`` standard normal, only ``W`` trained (optional readouts ``a [N]``:
``f(x) = mean_i a_i phi(w_i . x)``). The output scale alpha and the centring
are applied by :class:`lazymeter.LazyMeter`, not here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .harness import Setup, Task, option, run
from .results import at_epoch, first_step_at_or_above, is_finite, reached


class QuadraticNet(nn.Module):
    """``f(x) = mean_i a_i phi(w_i . x)`` with ``phi(h) = h + eps/2 h^2``; output ``[B]``.

    Args:
        D: input dimension; N: hidden width; eps: strength of the quadratic term.
        readouts: learn readout weights ``a`` (standard normal); else ``a_i = 1`` fixed.
    """

    def __init__(
        self,
        D: int,
        N: int,
        eps: float,
        *,
        readouts: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.eps = float(eps)
        # An nn.Linear (not a raw Parameter) so that per-layer NTK rules apply to it.
        self.hidden = nn.Linear(D, N, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.randn(N, D, generator=generator, dtype=dtype))
        a = torch.randn(N, generator=generator, dtype=dtype) if readouts else None
        self.a = None if a is None else nn.Parameter(a.to(device))

    @property
    def W(self) -> Tensor:
        """First-layer weights ``[N, D]``."""
        return self.hidden.weight

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x)
        act = h + (self.eps / 2) * h * h
        return (act if self.a is None else act * self.a).mean(-1)


@dataclass
class PolynomialData:
    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    beta: Tensor


TARGETS = {"half_square": 0.5, "square": 1.0}  # y = scale * (beta . x)^2
THRESHOLD_KINDS = ("relative", "absolute")


def make_data(
    D: int,
    P: int,
    P_test: int,
    *,
    target: str = "half_square",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PolynomialData:
    """``P`` train and ``P_test`` test points, ``x ~ N(0, I/D)``, of ``y = (beta . x)^2 / 2``
    (``target="half_square"``) or ``y = (beta . x)^2`` (``"square"``); the draws do not
    depend on ``target``."""
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {sorted(TARGETS)}, got {target!r}")
    scale = TARGETS[target]
    beta = torch.randn(D, generator=generator, dtype=dtype)
    x = torch.randn(P, D, generator=generator, dtype=dtype) / D**0.5
    xt = torch.randn(P_test, D, generator=generator, dtype=dtype) / D**0.5
    target_fn = lambda v: scale * (v @ beta) ** 2  # noqa: E731
    to = lambda t: t.to(device)  # noqa: E731
    return PolynomialData(to(x), to(target_fn(x)), to(xt), to(target_fn(xt)), to(beta))


@dataclass
class PolynomialConfig:
    """One run of the paper's polynomial task. Defaults: Figure 1 on a CPU budget.

    Full-batch GD on the centred (or uncentred) MSE with ``lr = lr_scale * N / alpha^2``
    for ``epochs`` steps. Gradient descent at these learning rates follows gradient flow,
    so the curves depend on ``lr * epochs``: steps are reported as *lr-equivalent epochs*
    ``step * lr_scale`` (the paper's epochs at ``lr = N / alpha^2``). The default
    ``lr_scale=20`` with 5k epochs covers the paper's 100k epochs; ``paper()`` runs them
    at ``lr_scale=1``.

    Crossings (time to grok): a loss crosses when it first falls to ``threshold`` x its
    start (``threshold_kind="relative"``, :func:`lazymeter.time_to_grok`; Figure 1) or below
    ``threshold`` itself (``"absolute"``: the authors' phase diagram, Figure 3e).
    ``stop_early`` ends the run at the first measurement where both losses have crossed (the
    crossings are all a phase diagram reads), or where it has converged without the test
    loss crossing: the train loss has crossed and either fell to ``converge_train`` x its
    start (the gradient has vanished: the test loss is frozen) or the test loss, below its
    start, moved by at most ``converge_rtol`` of itself over the last decade of steps (a
    plateau). The authors stop when both losses change by under 1e-5 in 4 steps with the
    test loss below its start, or after 110k steps.
    """

    D: int = option(100, "input dimension")
    P: int = option(550, "training points")
    P_test: int = option(1000, "test points")
    N: int = option(500, "hidden width")
    alpha: float = option(1.0, "output scale (laziness)")
    eps: float = option(0.02, "strength of the quadratic term of phi(h) = h + eps/2 h^2")
    epochs: int = option(5000, "full-batch GD steps")
    lr_scale: float = option(20.0, "lr = lr_scale * N / alpha^2; steps count lr_scale epochs")
    seed: int = option(0, "seed of data and initialisation")
    center: bool = option(True, "centre the model (subtract its output at initialisation)")
    readouts: bool = option(False, "learn readout weights a_i (else a_i = 1)")
    linearized: bool = option(True, "also train the linearised model (its losses: lin_*)")
    decompose: bool | None = option(
        None, "measure the test-loss decomposition (default: when uncentred)"
    )
    per_decade: int = option(16, "measurements per decade of steps")
    max_probe: int = option(64, "points of the meter's train/test probes")
    paper_points: int = option(
        1000, "test points of the paper's (biased) and the unbiased alignment (0: off)"
    )
    device: str = option("cpu", "torch device")
    dtype: str = option("float32", "float32 or float64")
    threshold: float = option(
        0.1, "a loss crosses at threshold x its start (relative) or below threshold (absolute)"
    )
    threshold_kind: str = option("relative", "relative (x the loss's start) or absolute")
    target: str = option("half_square", "y = (beta . x)^2 / 2 (half_square) or (beta . x)^2")
    stop_early: bool = option(
        False, "stop once both losses crossed, or once converged without the test crossing"
    )
    converge_rtol: float = option(
        0.01, "stop_early: converged when the test loss moved by <= this x itself in a decade"
    )
    converge_train: float = option(
        1e-6, "stop_early: converged when the train loss fell to this x its start"
    )

    @classmethod
    def paper(cls, **overrides: Any) -> PolynomialConfig:
        """The paper's exact schedule: ``lr = N / alpha^2`` for 100k epochs."""
        return cls(**{"epochs": 100_000, "lr_scale": 1.0, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> PolynomialConfig:
        """A seconds-long run: D=10, P=40, N=20, 100 epochs at lr_scale 2."""
        small = dict(D=10, P=40, P_test=50, N=20, epochs=100, lr_scale=2.0, paper_points=50)
        return cls(**{**small, **overrides})


def build(cfg: PolynomialConfig) -> Setup:
    """The quadratic net on its data, the meter's probes and quantities, full-batch GD."""
    import lazymeter as lm

    if cfg.threshold_kind not in THRESHOLD_KINDS:
        raise ValueError(
            f"threshold_kind: expected one of {THRESHOLD_KINDS}, got {cfg.threshold_kind!r}"
        )
    if not (0 < cfg.threshold < 1 or cfg.threshold_kind == "absolute" and cfg.threshold > 0):
        raise ValueError(
            f"threshold: expected a fraction in (0, 1) (relative) or > 0 (absolute), got "
            f"{cfg.threshold}"
        )
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    data = make_data(
        cfg.D, cfg.P, cfg.P_test, target=cfg.target, generator=g, dtype=dtype, device=cfg.device
    )
    model = QuadraticNet(
        cfg.D, cfg.N, cfg.eps, readouts=cfg.readouts, generator=g, dtype=dtype, device=cfg.device
    )
    # Full-batch GD on the MSE follows gradient flow only below the stability edge
    # lr * alpha^2 * 2 lambda_max(K0) / P < 2; past it the run blows up.
    lam = lm.kernel_spectrum(lm.empirical_ntk(model, data.x), k=1)["eig_1"]
    max_scale = cfg.P / (lam * cfg.N)
    if cfg.lr_scale >= max_scale:
        raise ValueError(
            f"lr_scale: {cfg.lr_scale:g} puts gradient descent past its stability edge for "
            f"this D/P/N (lr_scale must stay below {max_scale:.3g}; about D/2 here); lower "
            "lr_scale and raise epochs to keep lr * epochs"
        )
    decompose = (not cfg.center) if cfg.decompose is None else cfg.decompose
    metrics = (
        {
            # follows the meter's centring (and its initial weights); the decomposition is of
            # (beta' . x)^2 / 2, so beta' = sqrt(2 scale) beta for y = scale (beta . x)^2
            "decomp": lm.QuadraticDecomposition(
                data.beta * (2 * TARGETS[cfg.target]) ** 0.5, alpha=cfg.alpha, eps=cfg.eps
            )
        }
        if decompose
        else None
    )
    quantities = lm.quantities.default(metrics=metrics, linearized=cfg.linearized)
    if cfg.paper_points:
        # the paper's alignment on its test points, and the unbiased one on the same points
        # (a kernel on 1000 points: at half the meter's rate, shared by the two)
        on_test = dict(points=cfg.paper_points, splits=("test",))
        quantities += [
            lm.quantities.Alignment("rows", "biased", prefix="alignment_paper", **on_test),
            lm.quantities.Alignment(prefix="alignment_full", **on_test),
        ]
        for q in quantities[-2:]:
            q.schedule = f"log:{max(cfg.per_decade // 2, 1)}"
    mse = lambda out, target: ((out - target) ** 2).mean()  # noqa: E731

    rows: list[tuple[float, float, float]] = []  # (step, train, test): what stop_early reads

    def loss(meter: Any, i: int) -> Tensor:
        # The network and its linearisation have disjoint parameters: one backward of the
        # sum gives each its own gradient (one optimiser, the same lr).
        total = mse(meter(data.x), data.y)
        return total + mse(meter.linearized(data.x), data.y) if cfg.linearized else total

    def measure(meter: Any) -> dict[str, float]:
        out = {
            "train_loss": mse(meter(data.x), data.y).item(),
            "test_loss": mse(meter(data.x_test), data.y_test).item(),
        }
        if cfg.linearized:
            out["lin_train_loss"] = mse(meter.linearized(data.x), data.y).item()
            out["lin_test_loss"] = mse(meter.linearized(data.x_test), data.y_test).item()
        return out

    def stop(step: int, scalars: dict[str, float]) -> str | None:
        rows.append((step, scalars["train_loss"], scalars["test_loss"]))
        return stop_reason(cfg, rows)

    def optimizer(meter: Any) -> torch.optim.Optimizer:
        params = list(meter.parameters())
        if cfg.linearized:
            params += list(meter.linearized.parameters())
        return torch.optim.SGD(params, lr=meter.scaled_lr(cfg.lr_scale * cfg.N))

    return Setup(
        model=model,
        meter=dict(
            alpha=cfg.alpha,
            center=cfg.center,
            # the paper's alignment reads its paper_points itself (Alignment(points=...))
            probe=lm.ProbeSet(
                (data.x, data.y), test=(data.x_test, data.y_test), max_points=cfg.max_probe
            ),
            schedule=f"log:{cfg.per_decade}",
            quantities=quantities,
        ),
        steps=cfg.epochs,
        loss=loss,
        measure=measure,
        optimizer=optimizer,
        step_unit=cfg.lr_scale,
        hparams=dict(
            eps=cfg.eps,
            lr_scale=cfg.lr_scale,
            D=cfg.D,
            P=cfg.P,
            N=cfg.N,
            center=cfg.center,
            seed=cfg.seed,
        ),
        desc=f"alpha={cfg.alpha:g} eps={cfg.eps:g}",
        stop=stop if cfg.stop_early else None,
    )


def crossed(cfg: PolynomialConfig, loss: float, start: float) -> bool:
    """Whether ``loss`` has crossed: ``loss <= threshold * start`` (relative, as
    :func:`lazymeter.time_to_grok`) or ``loss < threshold`` (absolute, as the authors'
    phase diagram); False for a non-finite loss."""
    if not math.isfinite(loss):
        return False
    if cfg.threshold_kind == "absolute":
        return loss < cfg.threshold
    return loss <= cfg.threshold * start


def stop_reason(cfg: PolynomialConfig, rows: list[tuple[float, float, float]]) -> str | None:
    """``"crossed"``, ``"converged"`` or None for the measured ``(step, train_loss,
    test_loss)`` rows so far (see :class:`PolynomialConfig`, ``stop_early``)."""
    step, train, test = rows[-1]
    _, train0, test0 = rows[0]
    hit_train = any(crossed(cfg, r[1], train0) for r in rows)
    if hit_train and any(crossed(cfg, r[2], test0) for r in rows):
        return "crossed"
    if not hit_train or step <= 0:
        return None
    if train <= cfg.converge_train * train0:
        return "converged"
    if not test < test0:
        return None
    # the last row at least a decade before this one (log-spaced measurements)
    past = [r for r in rows if 0 < r[0] <= step / 10]
    if past and abs(test - past[-1][2]) <= cfg.converge_rtol * test:
        return "converged"
    return None


def grok_time(cfg: PolynomialConfig, hist: list[dict]) -> dict[str, float]:
    """The crossings of the run's curves (``train_step``, ``test_step``, ``delay``,
    ``ratio``, ``threshold``; NaN where a loss never crosses), with ``cfg``'s threshold
    kind."""
    import lazymeter as lm

    steps = [r["step"] for r in hist]
    train, test = [r["train_loss"] for r in hist], [r["test_loss"] for r in hist]
    if cfg.threshold_kind == "relative":
        return lm.time_to_grok(steps, train, test, threshold=cfg.threshold).as_dict()

    def first(curve: list[float]) -> float:
        # the first step with loss < threshold: -loss > -threshold (NaN entries skipped)
        return first_step_at_or_above(steps, [-v for v in curve], -cfg.threshold, strict=True)

    t_train, t_test = first(train), first(test)
    delay = t_test - t_train
    ratio = t_test / t_train if t_train > 0 else math.nan
    return {
        "train_step": t_train,
        "test_step": t_test,
        "delay": delay,
        "ratio": ratio if math.isfinite(ratio) else math.nan,
        "threshold": cfg.threshold,
    }


def summarize(cfg: PolynomialConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """Final losses, the K0 baseline, the crossings (time to grok), where and why the run
    stopped (``stopped``: None when it ran its epochs) and the alignments."""
    hist = meter.history
    last = hist[-1]
    return {
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_lin_train_loss": last.get("lin_train_loss"),
        "final_lin_test_loss": last.get("lin_test_loss"),
        "max_test_loss": max(r["test_loss"] for r in hist),
        "time_to_grok": grok_time(cfg, hist),
        "threshold_kind": cfg.threshold_kind,
        "final_step": last["step"],
        "stopped": setup.stopped,
        "alignment": _alignment_summary(hist, cfg.paper_points),
        "epochs_unit": f"lr-equivalent epochs at lr = N/alpha^2 (lr_scale={cfg.lr_scale:g})",
    }


def headline(summary: Mapping[str, Any]) -> str:
    """Time to grok, the final test loss against the K0 regression, the alignments."""
    g, cfg = summary["time_to_grok"], summary["config"]
    absolute = cfg.get("threshold_kind") == "absolute"
    level = f"{cfg['threshold']:g}" + ("" if absolute else " x start")
    later = f" ({reached(g['ratio'], '.3g', 'x later')})" if is_finite(g["test_step"]) else ""
    lines = [
        f"train loss < {level}: {at_epoch(g['train_step'])}; test loss: "
        f"{at_epoch(g['test_step'])}{later}; final test {summary['final_test_loss']:.4g}"
        f" vs K0 regression {reached(summary['k0_test_mse'], '.4g', missing='-')}"
    ]
    for head, a in summary["alignment"].items():
        lines.append(
            f"{head} ({a['what']}): init {a['init']:.4g}, end {a['end']:.4g} "
            f"(rise {reached(a['rise'], '.2g', missing='-')} +- "
            f"{reached(a['rise_se'], '.2g', missing='-')})"
        )
    return "\n".join(lines)


def plot(cfg: PolynomialConfig, summary: Mapping[str, Any], path: str) -> None:
    from .figures import paper_figure

    paper_figure(summary["history"], summary, path)


TASK = Task(
    name="polynomial",
    description="Figure 1: quadratic target (beta . x)^2 / 2, quadratic net, full-batch GD",
    config=PolynomialConfig,
    build=build,
    summarize=summarize,
    plot=plot,
    headline=headline,
)


def train(
    cfg: PolynomialConfig, out_dir: str | None = None, *, progress: bool = True, figure: bool = True
) -> dict[str, Any]:
    """:func:`paper.harness.run` of this task: the summary, with its ``history``
    (one row per measurement: ``step`` in lr-equivalent epochs, ``train_loss``,
    ``test_loss``, ``lin_*``, ``ntk_drift``, ``alignment_*``, ``param_movement``, ...)."""
    return run(TASK, cfg, out_dir, progress=progress, figure=figure)


def _alignment_summary(hist: list[dict], points: int) -> dict[str, object]:
    """Alignment at initialisation and at the last measurement of it, in both definitions."""
    out: dict[str, object] = {}
    for head, what in (
        ("alignment_paper_test", f"paper's definition (biased, 'rows'), {points} test points"),
        ("alignment_full_test", f"unbiased, {points} test points"),
        ("alignment_train", "unbiased, train probe"),
    ):
        rows = [r for r in hist if head in r]
        if rows:
            first, last = rows[0], rows[-1]
            init = head.replace("alignment", "alignment0", 1)
            rise = head.replace("alignment", "alignment_rise", 1)
            out[head] = {
                "what": what,
                "init": last.get(init, first[head]),
                "init_se": last.get(init + "_se"),
                "end": last[head],
                "end_se": last.get(head + "_se"),
                "end_step": last["step"],
                "rise": last.get(rise),
                "rise_se": last.get(rise + "_se"),
            }
    return out
