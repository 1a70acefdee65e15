"""The paper's modular-arithmetic MLP (Figure 2) and its appendix controls.

Task (Gromov 2023, as in the paper's code): all ``p^2`` pairs ``(a, b)``, ``p = 23``; the
input is the concatenated one-hot pair (``D = 2p``), the target the one-hot of
``(a + b) mod p``; 90% of the pairs train, the rest test. Model: two bias-free layers,
hidden width ``N = 100``, quadratic activation, weights ``N(0, 1)``::

    g(x) = W2 phi(W1 x) / (D N),     phi(h) = h^2,     f(x) = alpha * g(x),

trained on the MSE against the one-hot targets by full-batch gradient descent. LazyMeter
applies the output scale (``alpha``, ``center=False``: the paper's model is uncentred), sets
the learning rate and measures NTK drift, kernel-target alignment and parameter movement.

Two conventions for the knob ``scale = s`` (``convention``):

* ``"paper"`` (the authors' code): the output is multiplied by ``s`` twice, so
  ``alpha = s^2``; the train loss is ``MSE / s^2`` and SGD runs at ``lr = 100 / s^2``. On the
  plain MSE that is a rate ``100 / s^4 = 100 / alpha^2``: the same gradient flow as the
  "alpha" convention at ``alpha = s^2``. A sweep ``s = 0.5 .. 2`` covers ``alpha = 0.25 .. 4``.
* ``"alpha"``: ``alpha = s``, the loss is the MSE, ``lr = 100 / alpha^2``.

What it shows: the train accuracy reaches 100% first, the test accuracy rises later while
the weight norm grows (features are learned), and a larger alpha (a lazier start) delays
both the fit and, more, the generalisation. Controls (paper's appendix): weight decay is
not necessary for this delay (the default has none), and momentum or AdamW keep it.

Tasks: :data:`RUN` is one run at ``scale`` (panels a, b, d of Figure 2); :data:`TASK`
(``python -m examples.paper run modular_mlp``) runs every scale of ``scales`` and ``scale``
(panel c) and draws the whole figure; with ``scales=()`` it is the single run
(``python -m examples.paper sweep modular_mlp --scale 0.5,1 --scales ''``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import lazymeter as lm

from .harness import Setup, SubRun, Task, option, run
from .modular import modular_addition
from .results import series, step_text

OPTIMIZERS = ("sgd", "momentum", "adamw")
CONVENTIONS = ("paper", "alpha")
# Sub-runs cross process boundaries (--workers): name the single-run task by "module:ATTR".
RUN_REF = f"{__name__}:RUN"


class ModularMLP(nn.Module):
    """``g(x) = W2 (W1 x)^2 / (D N)`` with bias-free ``nn.Linear`` layers; output ``[B, C]``.

    The output scale is applied by :class:`lazymeter.LazyMeter` (``alpha``,
    ``center=False``), not here. Weights are standard normal, as in the paper's code.
    """

    def __init__(
        self,
        D: int,
        N: int,
        C: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.D, self.N = D, N
        self.layer1 = nn.Linear(D, N, bias=False, dtype=dtype, device=device)
        self.layer2 = nn.Linear(N, C, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            for layer in (self.layer1, self.layer2):
                w = torch.randn(layer.weight.shape, generator=generator, dtype=dtype)
                layer.weight.copy_(w)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layer1(x)
        return self.layer2(h * h) / (self.D * self.N)


@dataclass
class ModularMLPConfig:
    """Figure 2: the MLP at ``scale`` (panels a, b, d) and at each of ``scales`` (panel c).
    Defaults: the paper's protocol on a CPU budget.

    SGD minimises ``loss_weight * MSE`` (``loss_weight = 1 / s^2`` in the paper's
    convention, 1 in the "alpha" one) at ``lr * lr_scale / (loss_weight * alpha^2)``
    (``100 lr_scale / s^2`` in the paper's) for ``steps`` full-batch steps: on the plain MSE
    a rate ``lr * lr_scale / alpha^2`` in both.
    Full-batch GD at these rates follows gradient flow, so the curves depend on
    ``lr * steps``: the logged ``step`` is the *lr-equivalent step* ``round(k * lr_scale)``
    (the paper's steps at its rate). What the default changes from ``paper()``: ``lr_scale``
    20 for 8k steps (160k lr-equivalent steps) instead of the paper's rate for 100k steps
    (the sweep at ``s = 2``, ``alpha = 4``, needs more than 100k to reach 90% test
    accuracy); model, convention and scales are the paper's. The default seed is 0, as for
    every task; ``paper()`` uses seed 1, the authors' split.

    ``optimizer``: ``"sgd"`` (the paper's plain GD); ``"momentum"`` (heavy ball, with the
    learning rate times ``1 - momentum`` so that its terminal speed, hence the time axis,
    matches GD); ``"adamw"`` (``lr = meter.scaled_lr(adam_lr, optimizer="adam") =
    adam_lr / alpha``; its steps are real steps, ``lr_scale`` does not apply).
    ``weight_decay`` is the optimiser's (torch's) parameter: for SGD the minimised loss gains
    ``wd/2 ||theta||^2`` (a decay ``lr * wd`` per lr-equivalent step: ``100 wd / s^2`` in the
    paper's convention, ``100 wd / alpha^2`` in the other); for AdamW it is decoupled
    (``theta *= 1 - lr * wd`` per step).
    """

    p: int = option(23, "modulus: the task is (a + b) mod p; D = 2p inputs, p outputs")
    train_frac: float = option(0.9, "fraction of the p^2 pairs that train")
    N: int = option(100, "hidden width")
    scale: float = option(1.0, "output scale s of the main run (panels a, b, d)")
    scales: tuple[float, ...] = option(
        (0.5, 1.0, 1.5, 2.0), "scales of the sweep (panel c); empty: only the main run"
    )
    convention: str = option(
        "paper",
        "'paper': alpha = s^2, loss MSE/s^2, lr/s^2 (the authors' code); 'alpha': alpha = s",
    )
    lr: float = option(
        100.0, "SGD learning rate at alpha = 1 (the optimiser's: x 1/(loss_weight alpha^2))"
    )
    lr_scale: float = option(20.0, "lr multiple; steps count lr_scale lr-equivalent steps")
    steps: int = option(8000, "full-batch optimiser steps")
    optimizer: str = option("sgd", "sgd (the paper's), momentum or adamw (appendix controls)")
    momentum: float = option(0.9, "heavy-ball momentum of --optimizer momentum")
    adam_lr: float = option(0.003, "AdamW learning rate at alpha = 1 (x 1/alpha)")
    weight_decay: float = option(0.0, "the optimiser's weight decay (the paper's: none)")
    seed: int = option(0, "seed of the split and of the weights (1: the authors' split)")
    per_decade: int = option(24, "measurements per decade of steps")
    max_probe: int = option(64, "points of the meter's train/test probes")
    device: str = option("cpu", "torch device")
    dtype: str = option("float32", "float32 or float64")
    threshold: float = option(0.1, "crossing: train/test error (loss) at threshold x its start")

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"convention: expected one of {CONVENTIONS}, got {self.convention!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        self.scales = tuple(float(s) for s in self.scales)

    @classmethod
    def paper(cls, **overrides: Any) -> ModularMLPConfig:
        """The authors' code: the "paper" convention, SGD at ``lr = 100 / s^2`` for 100k
        steps (their Figure 2c sweep; panels a, b ran 50k), scales 0.5, 1, 1.5, 2, seed 1."""
        return cls(**{"steps": 100_000, "lr_scale": 1.0, "seed": 1, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> ModularMLPConfig:
        """A seconds-long run: p=11, N=24, 60 steps at lr_scale 2, scales 0.5 and 1."""
        small = dict(p=11, N=24, steps=60, lr_scale=2.0, per_decade=6, max_probe=16)
        return cls(**{**small, "scales": (0.5, 1.0), **overrides})

    @property
    def alpha(self) -> float:
        """The effective output scale: ``s^2`` in the paper's convention, ``s`` otherwise."""
        return self.scale**2 if self.convention == "paper" else self.scale

    @property
    def loss_weight(self) -> float:
        """The factor on the minimised MSE: ``1 / s^2`` in the paper's convention, else 1."""
        return 1.0 / self.scale**2 if self.convention == "paper" else 1.0

    @property
    def step_unit(self) -> float:
        """lr-equivalent steps per optimiser step (1 for AdamW)."""
        return 1.0 if self.optimizer == "adamw" else self.lr_scale


def make_optimizer(cfg: ModularMLPConfig, meter: Any) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over the meter's (= the model's) parameters.

    SGD: ``lr = meter.scaled_lr(lr * lr_scale) / loss_weight`` (``meter.alpha`` is
    ``cfg.alpha``): ``100 lr_scale / s^2`` on ``MSE / s^2`` in the paper's convention."""
    params = meter.parameters()
    wd = cfg.weight_decay
    if cfg.optimizer == "adamw":
        # Adam normalises the gradient's scale away: the loss weight does not enter.
        return torch.optim.AdamW(
            params, lr=meter.scaled_lr(cfg.adam_lr, optimizer="adam"), weight_decay=wd
        )
    lr = meter.scaled_lr(cfg.lr * cfg.lr_scale) / cfg.loss_weight
    if cfg.optimizer == "momentum":
        # Heavy ball moves lr / (1 - m) per unit gradient at steady state: rescale so that
        # "lr-equivalent step" keeps its meaning and the rate stays below the stability edge.
        return torch.optim.SGD(
            params, lr=lr * (1 - cfg.momentum), momentum=cfg.momentum, weight_decay=wd
        )
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


def accuracy_crossings(
    hist: Sequence[Mapping[str, float]], threshold: float = 0.1
) -> dict[str, float]:
    """When the train and the test error (``1 - accuracy``) first fall to ``threshold`` x
    their start (about 90% accuracy for ``threshold=0.1`` and ``p`` classes), via
    :func:`lazymeter.time_to_grok` on the error curves: ``train_step``, ``test_step``,
    ``delay``, ``ratio``, ``threshold``."""
    import lazymeter as lm

    steps = [r["step"] for r in hist]
    err = lambda k: [1.0 - r[k] for r in hist]  # noqa: E731
    return lm.time_to_grok(steps, err("train_acc"), err("test_acc"), threshold).as_dict()


def build(cfg: ModularMLPConfig) -> Setup:
    """One run at ``cfg.scale``: the split, the MLP under a meter with ``alpha = cfg.alpha``
    (uncentred), the weighted full-batch MSE and the optimiser.

    Measurement rows: ``train_loss`` and ``test_loss`` are ``loss_weight * MSE`` (the
    minimised objective and the same on the test pairs; the authors plot the test MSE
    unweighted, ``s^2`` times this), ``train_acc``, ``test_acc`` (argmax = label)."""
    dtype = getattr(torch, cfg.dtype)
    split = modular_addition(cfg.p, cfg.train_frac, cfg.seed)
    n = split.n_train
    x_all = split.one_hot_pairs(dtype).to(cfg.device)
    labels = split.labels.to(cfg.device)
    x, x_test, lab, lab_test = x_all[:n], x_all[n:], labels[:n], labels[n:]
    y = nn.functional.one_hot(lab, cfg.p).to(dtype)
    y_test = nn.functional.one_hot(lab_test, cfg.p).to(dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    model = ModularMLP(2 * cfg.p, cfg.N, cfg.p, generator=g, dtype=dtype, device=cfg.device)
    w = cfg.loss_weight
    mse = lambda out, t: w * ((out - t) ** 2).mean()  # noqa: E731 - on one-hot targets
    acc = lambda out, t: (out.argmax(1) == t).to(torch.float64).mean().item()  # noqa: E731

    def loss(meter: Any, i: int) -> Tensor:
        return mse(meter(x), y)

    def measure(meter: Any) -> dict[str, float]:
        out, out_test = meter(x), meter(x_test)
        return {
            "train_loss": mse(out, y).item(),
            "test_loss": mse(out_test, y_test).item(),
            "train_acc": acc(out, lab),
            "test_acc": acc(out_test, lab_test),
        }

    desc = f"s={cfg.scale:g} (alpha={cfg.alpha:g}) {cfg.optimizer}" + (
        f" wd={cfg.weight_decay:g}" if cfg.weight_decay else ""
    )
    return Setup(
        model=model,
        meter=dict(
            alpha=cfg.alpha,
            center=False,  # the paper's model is uncentred: meter(x) = alpha * g(x)
            # integer labels: the meter one-hot encodes them for its metrics
            probe=lm.ProbeSet((x, lab), test=(x_test, lab_test), max_points=cfg.max_probe),
            schedule=f"log:{cfg.per_decade}",
        ),
        steps=cfg.steps,
        loss=loss,
        measure=measure,
        optimizer=lambda meter: make_optimizer(cfg, meter),
        step_unit=cfg.step_unit,
        hparams=dict(
            scale=cfg.scale,
            alpha=cfg.alpha,
            convention=cfg.convention,
            optimizer=cfg.optimizer,
            weight_decay=cfg.weight_decay,
            lr_scale=cfg.lr_scale,
            p=cfg.p,
            N=cfg.N,
            seed=cfg.seed,
        ),
        desc=desc,
    )


def summarize(cfg: ModularMLPConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """The convention and effective alpha, final losses and accuracies, weight norms, the
    meter's diagnostics, the accuracy crossings (``acc_crossings``: error at
    ``threshold`` x its start, ~90% accuracy) and the loss crossings (``time_to_grok``)."""
    import lazymeter as lm

    hist = meter.history
    last = hist[-1]
    finite = [r["test_loss"] for r in hist if math.isfinite(r["test_loss"])]
    k0 = meter.baseline.get("k0_test_mse")
    return {
        "convention": cfg.convention,
        "scale": cfg.scale,
        "alpha": cfg.alpha,
        "loss_weight": cfg.loss_weight,
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "max_test_loss": max(finite, default=math.nan),
        "initial_weight_norm": hist[0]["weight_norm"],
        "final_weight_norm": last["weight_norm"],
        "final_param_movement": last["param_movement"],
        "final_ntk_drift": last.get("ntk_drift"),
        "alignment0_test": last.get("alignment0_test"),
        "final_alignment_test": last.get("alignment_test"),
        "acc_crossings": accuracy_crossings(hist, cfg.threshold),
        "time_to_grok": lm.time_to_grok(
            [r["step"] for r in hist],
            [r["train_loss"] for r in hist],
            [r["test_loss"] for r in hist],
            threshold=cfg.threshold,
        ).as_dict(),
        "k0_test_mse": k0,
        "k0_test_loss": None if k0 is None else cfg.loss_weight * k0,
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "steps_unit": _steps_unit(cfg),
    }


def _steps_unit(cfg: ModularMLPConfig) -> str:
    if cfg.optimizer == "adamw":
        return "optimizer steps (AdamW)"
    on = "MSE/s^2 at lr = %g/s^2" if cfg.convention == "paper" else "MSE at lr = %g/alpha^2"
    return f"lr-equivalent steps: SGD on {on % cfg.lr} (lr_scale={cfg.lr_scale:g})"


def runs(cfg: ModularMLPConfig) -> list[SubRun]:
    """One run per scale of ``scales`` and ``scale`` (the main run), named ``scale=<s>``
    (its directory). A lone run (``scales`` empty or only ``scale``) is named ``""``: it
    writes into the output directory itself, the layout of one run (``lazymeter report``
    reads it there; a sweep over ``--scale`` gives one such directory per scale)."""
    every = sorted({float(cfg.scale), *cfg.scales})
    name = (lambda s: f"scale={s:g}") if len(every) > 1 else (lambda s: "")  # noqa: E731
    return [(name(s), RUN_REF, dataclasses.replace(cfg, scale=s, scales=())) for s in every]


def _main_run(cfg: ModularMLPConfig, subs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return next(r for r in subs if math.isclose(r["scale"], cfg.scale))


def combine(cfg: ModularMLPConfig, subs: list[dict[str, Any]]) -> dict[str, Any]:
    """The main run's numbers (``main_run``: its directory), and the ``sweep`` table."""
    main = _main_run(cfg, subs)
    keep = {k: v for k, v in main.items() if k not in ("history", "config", "name", "seconds")}
    return {**keep, "main_run": main["name"] or ".", "sweep": sweep_table(subs)}


def sweep_table(subs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per scale (ascending): scale, effective alpha, accuracy crossings (train/test
    error at 0.1 x start, i.e. ~90% accuracy), loss crossings, final accuracy and norm."""
    rows = []
    for r in sorted(subs, key=lambda r: r["scale"]):
        a, lc = r["acc_crossings"], r["time_to_grok"]
        rows.append(
            {
                "scale": r["scale"],
                "alpha": r["alpha"],
                "train_acc_step": a["train_step"],
                "test_acc_step": a["test_step"],
                "acc_delay": a["delay"],
                "acc_ratio": a["ratio"],
                "train_loss_step": lc["train_step"],
                "test_loss_step": lc["test_step"],
                "final_test_acc": r["final_test_acc"],
                "final_weight_norm": r["final_weight_norm"],
            }
        )
    return rows


def headline(summary: Mapping[str, Any]) -> str:
    """The convention, and per scale: ~90%-accuracy steps on train and test, the delay."""
    unit = summary.get("steps_unit", "steps")
    lines = [
        f"convention {summary['convention']!r}: error <= 0.1 x start (~90% accuracy) on "
        f"train -> test, in {unit}:"
    ]
    table = summary.get("sweep") or sweep_table([summary])
    for r in table:
        lines.append(
            f"  s={r['scale']:g} (alpha={r['alpha']:g}): train {step_text(r['train_acc_step'])}, "
            f"test {step_text(r['test_acc_step'])} (delay {step_text(r['acc_delay'])}); "
            f"final test acc {r['final_test_acc']:.3f}"
        )
    return "\n".join(lines)


def plot_run(cfg: ModularMLPConfig, summary: Mapping[str, Any], path: str) -> None:
    """Panels a, b, d of one run."""
    plot_figure(summary["history"], summary, path)


def plot(cfg: ModularMLPConfig, summary: Mapping[str, Any], path: str) -> None:
    """Figure 2: the main run's panels a, b, d and, with more than one scale, panel c."""
    subs = summary["runs"]
    main = _main_run(cfg, subs)
    sweep = {r["scale"]: r["history"] for r in subs} if len(subs) > 1 else None
    plot_figure(main["history"], main, path, sweep=sweep, convention=cfg.convention)


def plot_figure(
    hist: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    path: str,
    sweep: Mapping[float, Sequence[Mapping[str, Any]]] | None = None,
    convention: str | None = None,
) -> None:
    """Figure 2 of the paper: (a) train/test accuracy (log step) with the weight norm on a
    twin axis, (b) train/test loss, (c) test accuracy for each scale of ``sweep``
    (``{scale: history}``; train accuracy dashed, ~90%-test-accuracy steps marked), and
    (d) LazyMeter's diagnostics: NTK drift, parameter movement, test alignment.
    ``convention`` (default: the summary's) converts a scale to its alpha in panel c."""
    from matplotlib.figure import Figure

    cfg = summary.get("config", {})
    convention = convention or summary.get("convention", "alpha")
    to_alpha = (lambda s: s * s) if convention == "paper" else (lambda s: s)  # noqa: E731
    xlabel = (
        "step"
        if cfg.get("optimizer") == "adamw"
        else f"step (lr-equivalent, lr = {cfg.get('lr', 100):g}/$\\alpha^2$ on the MSE)"
    )
    if sweep:
        fig = Figure(figsize=(12, 8.6))
        (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    else:
        fig = Figure(figsize=(15.6, 4.3))
        ax_a, ax_b, ax_d = fig.subplots(1, 3)
        ax_c = None

    for key, color, label in (("train_acc", "C0", "train acc"), ("test_acc", "C3", "test acc")):
        ax_a.plot(*series(hist, key), color=color, label=label)
    ax_a.set_xscale("log")
    ax_a.set_ylim(-0.03, 1.03)
    ax_a.set_xlabel(xlabel)
    ax_a.set_ylabel("accuracy")
    twin = ax_a.twinx()
    twin.plot(*series(hist, "weight_norm"), color="k", ls="--", lw=1.2, label="weight norm")
    twin.set_ylabel("||theta||")
    la, lt = ax_a.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax_a.legend(la[0] + lt[0], la[1] + lt[1], fontsize=8, loc="upper left")
    a = summary.get("acc_crossings", {})
    for key, color in (("train_step", "C0"), ("test_step", "C3")):
        v = a.get(key)
        if v is not None and math.isfinite(v) and v > 0:
            ax_a.axvline(v, color=color, alpha=0.3, lw=3)
    title = (
        f"(a) s={summary['scale']:g} ($\\alpha$={summary['alpha']:g}, "
        f"{convention}), {cfg.get('optimizer', 'sgd')}"
    )
    if cfg.get("weight_decay"):
        title += f", wd={cfg['weight_decay']:g}"
    ax_a.set_title(title)

    for key, color, label in (("train_loss", "C0", "train"), ("test_loss", "C3", "test")):
        ax_b.plot(*series(hist, key), color=color, label=label)
    k0 = summary.get("k0_test_loss")
    if k0 is not None and math.isfinite(k0):
        ax_b.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    ax_b.set_xscale("log")
    ax_b.set_yscale("log")
    ax_b.set_xlabel(xlabel)
    w = summary.get("loss_weight", 1.0)
    ax_b.set_ylabel("MSE (one-hot targets)" + (f" x {w:.3g}" if w != 1 else ""))
    ax_b.legend(fontsize=8, loc="lower left")
    ax_b.set_title("(b) loss")

    if ax_c is not None and sweep:
        grok = []
        for i, (s, h) in enumerate(sorted(sweep.items())):
            label = f"s={s:g} ($\\alpha$={to_alpha(s):g})"
            ax_c.plot(*series(h, "test_acc"), color=f"C{i}", label=label)
            ax_c.plot(*series(h, "train_acc"), color=f"C{i}", ls="--", lw=0.9, alpha=0.7)
            cross = accuracy_crossings(h)
            grok.append((to_alpha(s), cross["train_step"], cross["test_step"]))
            t = cross["test_step"]
            if math.isfinite(t) and t > 0:
                ax_c.plot([t], [0.9], "o", color=f"C{i}", ms=5)
        # Inset: time to ~90% accuracy against the scale (NaN: never within the budget).
        ins = ax_c.inset_axes([0.25, 0.3, 0.33, 0.36])
        sc, tr, te = zip(*grok, strict=True)
        ins.plot(sc, [v / 1000 for v in tr], "o--", color="C0", ms=3, lw=1, label="train")
        ins.plot(sc, [v / 1000 for v in te], "o-", color="C3", ms=3, lw=1, label="test")
        ins.set_ylim(bottom=0)
        ins.set_xlabel("$\\alpha$", fontsize=7, labelpad=1)
        ins.set_ylabel("step to ~90% acc (k)", fontsize=7, labelpad=1)
        ins.tick_params(labelsize=6)
        ins.legend(fontsize=6, loc="upper left")
        ax_c.set_xscale("log")
        ax_c.set_ylim(-0.03, 1.03)
        ax_c.set_xlabel(xlabel)
        ax_c.set_ylabel("accuracy (test -, train --)")
        ax_c.legend(fontsize=8, loc="upper left", ncols=2)
        ax_c.set_title("(c) larger $\\alpha$ (lazier) groks later")

    for key, label in (
        ("ntk_drift", "NTK drift ||K-K0||/||K0||"),
        ("param_movement", "||theta-theta0||/||theta0||"),
    ):
        xs, ys = series(hist, key)
        if xs:
            ax_d.plot(xs, ys, label=label)
    ax_d.set_xscale("log")
    ax_d.set_yscale("log")
    ax_d.set_xlabel(xlabel)
    twin_d = ax_d.twinx()  # alignment moves by tens of percent: a linear axis shows it
    for key, color, label in (
        ("alignment_train", "C2", "alignment (train)"),
        ("alignment_test", "C3", "alignment (test)"),
    ):
        xs, ys = series(hist, key)
        if xs:
            twin_d.plot(xs, ys, color=color, lw=1.2, label=label)
    twin_d.set_ylabel("centred kernel-target alignment")
    ld, lt = ax_d.get_legend_handles_labels(), twin_d.get_legend_handles_labels()
    ax_d.legend(ld[0] + lt[0], ld[1] + lt[1], fontsize=8, loc="upper left")
    ax_d.set_title("(d) lazy vs rich diagnostics")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


TASK = Task(
    name="modular_mlp",
    description="Figure 2: (a + b) mod 23 with a quadratic MLP, full-batch GD, a scale sweep",
    config=ModularMLPConfig,
    runs=runs,
    combine=combine,
    plot=plot,
    headline=headline,
)

RUN = Task(
    name="modular_mlp_run",
    description="one run of the modular-arithmetic MLP at --scale (Figure 2 a, b, d)",
    config=ModularMLPConfig,
    build=build,
    summarize=summarize,
    plot=plot_run,
    headline=headline,
)


def train(
    cfg: ModularMLPConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """:func:`paper.harness.run` of :data:`RUN` (one run at ``cfg.scale``;
    ``cfg.scales`` is ignored): the summary, with its ``history`` (one row per measurement:
    ``step`` in lr-equivalent steps, ``train_loss``, ``test_loss``, ``train_acc``,
    ``test_acc``, ``weight_norm``, ``param_movement``, ``ntk_drift``, ``alignment_*``, ...)."""
    return run(RUN, cfg, out_dir, progress=progress, figure=figure, threads=threads)
