"""The paper's transformer experiment: a one-layer transformer groks modular addition, and a
larger output scale alpha (lazier training) delays or prevents it.

Task: all pairs ``(a, b)`` of ``0..p-1`` as tokens ``[a, b, =]`` (``=`` is token ``p``), label
``(a + b) mod p``; a random 40% of the ``p^2`` pairs train, the rest test
(:func:`paper.modular.modular_addition`). Model: Nanda et al.'s grokking transformer
(:class:`paper.transformer.Transformer`: token + position embeddings, one attention
block, one ReLU MLP, no LayerNorm, context 3), logits ``[B, p]`` read at the last position.
Training follows the paper: the loss sees the centred, rescaled logits ``alpha * (f(x) - f0(x))``
(:class:`lazymeter.LazyMeter` with ``center=True``), cross-entropy computed in float64,
full-batch AdamW (betas 0.9/0.98, weight decay 1.0) at ``lr = base / alpha^2`` with a linear
warm-up over ``warmup`` steps.

Learning rate and alpha: the authors' code divides the AdamW learning rate by ``alpha^2``, the
gradient-descent rule (``meter.scaled_lr(base)``), and so do we. Adam normalises the gradient
scale away, so under that rule a larger alpha is both lazier (parameters must move less to
change the output) and slower in function space (``alpha * lr`` per step ~ ``base / alpha``),
and the decoupled weight decay ``lr * wd`` per step slows by ``alpha^2`` too.
``lr_scaling="alpha"`` uses ``base / alpha`` instead (``meter.scaled_lr(base, "adam")``), which
keeps the function-space speed fixed and isolates laziness.

Two tasks: :data:`RUN` (``transformer_modular_run``) trains one alpha; :data:`TASK`
(``transformer_modular``) sweeps ``alphas``, one :data:`RUN` sub-run per alpha (written into
``OUT/alpha<a>/``), and draws the comparison figure. Every measurement row (``log:
curve_per_decade`` steps, every ``eval_every`` steps and the last step) holds the train and
test loss and accuracy; the NTK diagnostics (drift, alignment, parameter movement) are measured
on the sparser ``log:per_decade`` grid and at the last step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .harness import Setup, Task, option, run
from .results import delay_grows, first_step_at_or_above, is_finite, ran_for, reached, step_text

# (base lr, weight decay) when not given. AdamW: see the module docstring. SGD and heavy-ball
# momentum (the appendix's optimiser controls) need a far larger step on this cross-entropy
# loss and a matching smaller weight decay (the per-step shrink is lr * wd for all three);
# these fit the train set of the default task in a few hundred steps.
OPTIMIZER_DEFAULTS = {"adamw": (1e-2, 1.0), "sgd": (0.5, 1e-3), "momentum": (0.05, 1e-3)}

# The authors' notebook (grokking-feature-timescales-anon-final.ipynb, transformer cell):
# p=113, d_model=128, 4 heads, d_mlp=4*d_model, 40% train, AdamW(lr=6e-6/alpha^2,
# weight_decay=1, betas=(0.9, 0.98)), a 10-step linear warm-up, 200k full-batch epochs, and
# alpha ("scale") = 0.05, 0.1, ..., 0.5.
PAPER = dict(
    p=113, d_model=128, n_heads=4, d_mlp=512, lr=6e-6, steps=200_000, eval_every=100,
)  # fmt: skip
PAPER_ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
SMOKE = dict(
    p=7, d_model=16, n_heads=4, d_mlp=32, steps=30, eval_every=5, per_decade=4, max_probe=16,
    curve_per_decade=8, max_baseline=64,
)  # fmt: skip


@dataclass
class _Common:
    """The fields shared by one run and the sweep (see :class:`TransformerModularConfig`)."""

    p: int = option(31, "modulus: the task is (a + b) mod p on all p^2 pairs")
    train_frac: float = option(0.4, "fraction of the p^2 pairs that train")
    d_model: int = option(32, "residual width")
    n_heads: int = option(4, "attention heads (of d_model / n_heads each)")
    d_mlp: int = option(128, "MLP hidden width")
    center: bool = option(True, "train the centred logits alpha * (f - f0) (the paper's)")
    optimizer: str = option("adamw", "adamw (the paper's), sgd or momentum (appendix controls)")
    lr: float | None = option(
        None, "base lr before the alpha scaling (None: the optimiser's default, 1e-2 for adamw)"
    )
    weight_decay: float | None = option(
        None, "weight decay (None: the optimiser's default, 1.0 for adamw)"
    )
    lr_scaling: str = option(
        "alpha2", "lr = base / alpha^2 ('alpha2', the paper's) or base / alpha ('alpha')"
    )
    betas: tuple[float, float] = option((0.9, 0.98), "AdamW betas")
    momentum: float = option(0.9, "momentum of the 'momentum' optimiser")
    warmup: int = option(10, "steps of the linear lr warm-up")
    steps: int = option(2000, "full-batch epochs")
    eval_every: int = option(10, "a measurement row (losses, accuracies) every this many steps")
    curve_per_decade: int = option(32, "also measurement rows on this log grid (early steps)")
    per_decade: int = option(8, "NTK diagnostics on this log grid (and at the last step)")
    max_probe: int = option(
        32, "probe points of the NTK diagnostics (cost ~ max_probe^2 * p * params)"
    )
    max_baseline: int = option(2048, "points per split of the K0 kernel-regression baseline")
    seed: int = option(0, "seed of the split and the initialisation")
    device: str = option("cpu", "torch device")
    acc_threshold: float = option(0.9, "an accuracy crosses when it exceeds this")
    threshold: float = option(0.1, "a loss crosses when it falls below threshold x its start")

    def resolved(self) -> Any:
        """A copy with ``lr`` and ``weight_decay`` filled in from the optimiser's defaults."""
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(
                f"optimizer: expected one of {sorted(OPTIMIZER_DEFAULTS)}, got {self.optimizer!r}"
            )
        if self.lr_scaling not in ("alpha2", "alpha"):
            raise ValueError(f"lr_scaling: expected 'alpha2' or 'alpha', got {self.lr_scaling!r}")
        lr, wd = OPTIMIZER_DEFAULTS[self.optimizer]
        return dataclasses.replace(
            self,
            lr=lr if self.lr is None else self.lr,
            weight_decay=wd if self.weight_decay is None else self.weight_decay,
        )


@dataclass
class TransformerModularConfig(_Common):
    """One run: the transformer on ``(a + b) mod p`` at output scale ``alpha``.

    ``paper()``: the authors' p=113, d_model=128, 4 heads, d_mlp=512, base lr 6e-6
    (``lr = 6e-6 / alpha^2``), 200k full-batch epochs. The default is a CPU-sized task that
    keeps the mechanism (centred logits, AdamW at ``base / alpha^2``, weight decay 1, 40%
    train): p=31, d_model=32, d_mlp=128, base lr 1e-2 and 2000 epochs. The small net tolerates
    a far larger step than the paper's, and grokking time scales roughly as ``1 / (lr * wd)``.
    """

    alpha: float = option(1.0, "output scale (laziness)")

    @classmethod
    def paper(cls, **overrides: Any) -> TransformerModularConfig:
        """The authors' transformer at the rich end of their sweep (alpha 0.05)."""
        return cls(**{**PAPER, "alpha": PAPER_ALPHAS[0], **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> TransformerModularConfig:
        """A seconds-long run: p=7, d_model=16, d_mlp=32, 30 epochs."""
        return cls(**{**SMOKE, **overrides})


@dataclass
class TransformerSweepConfig(_Common):
    """The alpha sweep: one :class:`TransformerModularConfig` run per entry of ``alphas``.

    ``paper()``: the authors' ten alphas 0.05, 0.1, ..., 0.5 at base lr 6e-6 (so
    ``lr = 2.4e-3 ... 2.4e-5``), p=113, d_model=128, d_mlp=512, 200k epochs (a GPU job:
    ``--device cuda``; on a CPU the one-off K0 baseline on 2048 points alone takes over ten
    minutes, ``--max-baseline`` lowers it). The CPU default keeps the mechanism (centred
    logits, AdamW at ``base / alpha^2``, weight decay 1, 40% train, a sweep that reaches the
    rich side) on a smaller task: p=31, d_model=32, d_mlp=128, base lr 1e-2 (1700x the
    authors', so that 2000 epochs replace their 200k) and alphas 0.5, 1, 2, 4, chosen to
    straddle alpha = 1, where this net's runs stop grokking within the budget (on seed 0, 0.5
    and 1 grok and 2 and 4 do not; where the boundary falls changes with the seed, see
    docs/reproduction.md).
    """

    alphas: tuple[float, ...] = option((0.5, 1.0, 2.0, 4.0), "output scales, one run each")

    @classmethod
    def paper(cls, **overrides: Any) -> TransformerSweepConfig:
        """The authors' sweep: alpha 0.05..0.5, lr 6e-6 / alpha^2, 200k epochs."""
        return cls(**{**PAPER, "alphas": PAPER_ALPHAS, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> TransformerSweepConfig:
        """A seconds-long sweep: alphas 0.5 and 4 on the smoke-sized run."""
        return cls(**{**SMOKE, "alphas": (0.5, 4.0), **overrides})

    def run_config(self, alpha: float) -> TransformerModularConfig:
        """The configuration of this sweep's run at ``alpha``."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(_Common)}
        return TransformerModularConfig(**shared, alpha=float(alpha))


def _log_steps(per_decade: int, last: int) -> set[int]:
    """Step 0 and ``round(10 ** (j / per_decade))`` up to ``last`` (the meter's ``log:N``)."""
    out, j = {0}, 0
    while (s := round(10 ** (j / per_decade))) <= last:
        out.add(s)
        j += 1
    return out


def _make_optimizer(cfg: TransformerModularConfig, params: Any, lr: float) -> Any:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=cfg.weight_decay)


def build(cfg: TransformerModularConfig) -> Setup:
    """The transformer on its split, the meter's probes and schedules, AdamW with warm-up.

    Measurement rows (``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``lr``) at
    ``log:curve_per_decade`` steps, every ``eval_every`` steps and the last one; the meter's
    quantities (NTK drift, alignment, parameter movement, spectrum, K0 baseline) only on
    ``log:per_decade`` steps and the last one, since each costs an NTK on the probe.
    """
    import lazymeter as lm

    from .modular import modular_addition
    from .transformer import Transformer

    cfg = cfg.resolved()
    dev = torch.device(cfg.device)
    split = modular_addition(cfg.p, cfg.train_frac, cfg.seed)
    tokens, labels, n = split.tokens().to(dev), split.labels.to(dev), split.n_train
    x, y, x_test, y_test = tokens[:n], labels[:n], tokens[n:], labels[n:]
    # The runner seeds the global RNG with cfg.seed before build(): the init is reproducible.
    model = Transformer(cfg.p + 1, cfg.d_model, cfg.n_heads, cfg.d_mlp, n_ctx=3, n_classes=cfg.p)
    model = model.to(dev)

    rows = _log_steps(cfg.curve_per_decade, cfg.steps) | {cfg.steps}
    kernel = _log_steps(cfg.per_decade, cfg.steps) | {cfg.steps}
    quantities = lm.quantities.default(max_baseline=cfg.max_baseline)
    for q in quantities:
        q.schedule = lambda s: s in kernel
    box: dict[str, Any] = {}  # the optimiser, and the train logits of the current iteration

    def xent(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # float64: the train loss falls to ~1e-7, below float32's resolution of log-softmax.
        return F.cross_entropy(out.double(), target)

    def acc(out: torch.Tensor, target: torch.Tensor) -> float:
        return (out.argmax(-1) == target).double().mean().item()

    def loss(meter: Any, i: int) -> torch.Tensor:
        out = meter(x)  # [n_train, p]: alpha * (f - f0) at the "=" position
        box["train_out"] = out.detach()  # measure() reuses it (the same state, no 2nd pass)
        return xent(out, y)

    def measure(meter: Any) -> dict[str, float]:
        out = box.pop("train_out", None)
        out = meter(x) if out is None else out
        test = meter(x_test)
        lr = box["opt"].param_groups[0]["lr"] if "opt" in box else math.nan
        return {
            "train_loss": xent(out, y).item(),
            "train_acc": acc(out, y),
            "test_loss": xent(test, y_test).item(),
            "test_acc": acc(test, y_test),
            "lr": lr,
        }

    def optimizer(meter: Any) -> torch.optim.Optimizer:
        lr = meter.scaled_lr(cfg.lr, "sgd" if cfg.lr_scaling == "alpha2" else "adam")
        box["opt"] = _make_optimizer(cfg, meter.parameters(), lr)
        return box["opt"]

    def scheduler(opt: torch.optim.Optimizer) -> Any:
        # Linear warm-up to the full lr over cfg.warmup steps (the authors' min(step/10, 1)
        # starts at lr 0; this starts at 1/warmup, so no step is spent at lr 0).
        warm = max(cfg.warmup, 1)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))

    return Setup(
        model=model,
        meter=dict(
            alpha=cfg.alpha,
            center=cfg.center,
            probe=lm.ProbeSet((x, y), test=(x_test, y_test), max_points=cfg.max_probe),
            schedule=lambda s: s in rows or s % cfg.eval_every == 0,
            output_fn=lambda out: out[:, -1],  # the answer is read at the "=" position
            quantities=quantities,
        ),
        steps=cfg.steps,
        loss=loss,
        measure=measure,
        optimizer=optimizer,
        scheduler=scheduler,
        hparams=dict(
            p=cfg.p,
            d_model=cfg.d_model,
            d_mlp=cfg.d_mlp,
            optimizer=cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            lr_scaling=cfg.lr_scaling,
            seed=cfg.seed,
        ),
        desc=f"alpha={cfg.alpha:g}",
        data=dict(resolved=cfg),
    )


def summarize(cfg: TransformerModularConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """Accuracy crossings, final numbers, the K0 baseline and the lazy/rich diagnostics.

    ``train_acc_step`` / ``test_acc_step``: the first measured step at which the accuracy
    exceeds ``acc_threshold`` (None: never within ``steps``); ``lr``: the lr after the alpha
    scaling (before the warm-up factor); ``time_to_grok``: the loss crossings (``threshold``
    x each loss's start).
    """
    import lazymeter as lm

    res = setup.data["resolved"]
    hist = meter.history
    steps = [r["step"] for r in hist]
    kernel = [r for r in hist if "ntk_drift" in r]
    last, last_k = hist[-1], (kernel[-1] if kernel else {})
    grok = lm.time_to_grok(
        steps, [r["train_loss"] for r in hist], [r["test_loss"] for r in hist], cfg.threshold
    )
    cross = lambda key: first_step_at_or_above(  # noqa: E731
        steps, [r[key] for r in hist], cfg.acc_threshold, strict=True
    )
    rule = "sgd" if res.lr_scaling == "alpha2" else "adam"
    return {
        "alpha": cfg.alpha,
        "lr": meter.scaled_lr(res.lr, rule),
        "base_lr": res.lr,
        "weight_decay": res.weight_decay,
        "acc_threshold": cfg.acc_threshold,
        "train_acc_step": cross("train_acc"),
        "test_acc_step": cross("test_acc"),
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "max_test_loss": max(r["test_loss"] for r in hist),
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "final_ntk_drift": last_k.get("ntk_drift"),
        "final_param_movement": last_k.get("param_movement"),
        "final_alignment_test": last_k.get("alignment_test"),
        "alignment0_test": last_k.get("alignment0_test"),
        "time_to_grok": grok.as_dict(),
    }


def runs(cfg: TransformerSweepConfig) -> list[tuple[str, Task, TransformerModularConfig]]:
    """One :data:`RUN` per alpha, into ``OUT/alpha<a>/``."""
    if not cfg.alphas:
        raise ValueError("alphas: give at least one output scale")
    return [(f"alpha{a:g}", RUN, cfg.run_config(a)) for a in cfg.alphas]


def combine(cfg: TransformerSweepConfig, subs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-alpha crossings and the figure's two claims, checked.

    ``delay_grows_with_alpha``: in increasing alpha, the test-accuracy crossing steps of the
    runs that generalised grow (:func:`~paper.results.delay_grows`: at least two such runs; a
    run that never fits fails it; runs that fit and never generalise may only come above every
    run that did, the lazy end); ``delay_grows_why`` says why not. ``laziest_k0_gap``: the
    largest alpha's final test accuracy minus the test accuracy of kernel regression with the
    initial NTK (the alpha -> infinity limit).
    """
    order = sorted(range(len(subs)), key=lambda i: subs[i]["alpha"])
    grows, why = delay_grows(
        [f"alpha={subs[i]['alpha']:g}" for i in order],
        [subs[i]["train_acc_step"] for i in order],
        [subs[i]["test_acc_step"] for i in order],
        [ran_for(subs[i]) for i in order],
        of_test=True,
        never_tail=True,
    )
    lazy = subs[order[-1]]
    k0 = lazy.get("k0_test_acc")
    return {
        "alphas": [s["alpha"] for s in subs],
        "test_acc_steps": [s["test_acc_step"] for s in subs],
        "train_acc_steps": [s["train_acc_step"] for s in subs],
        "final_test_accs": [s["final_test_acc"] for s in subs],
        "k0_test_acc": k0,
        "delay_grows_with_alpha": bool(grows),
        "delay_grows_why": why,
        "laziest_k0_gap": lazy["final_test_acc"] - k0 if is_finite(k0) else None,
    }


def headline(summary: Mapping[str, Any]) -> str:
    """A table of the runs' crossings and final accuracies, and the claims."""
    subs = summary["runs"] if "runs" in summary else [summary]
    thr = subs[0]["acc_threshold"]
    lines = [f"alpha  lr        train>{thr:g}  test>{thr:g}  train_acc  test_acc  test_loss"]
    for s in subs:
        lines.append(
            f"{s['alpha']:<6g} {s['lr']:<9.3g} {step_text(s['train_acc_step']):>9} "
            f"{step_text(s['test_acc_step']):>9}  {s['final_train_acc']:9.3f} "
            f"{s['final_test_acc']:9.3f} {s['final_test_loss']:10.3g}"
        )
    k0 = subs[0].get("k0_test_acc")
    lines.append(f"K0 kernel regression test accuracy (the lazy limit): {step_text(k0)}")
    if "delay_grows_with_alpha" in summary:
        why = summary.get("delay_grows_why") or ""
        grows = "yes" if summary["delay_grows_with_alpha"] else "no"
        lines.append(
            f"grokking later with larger alpha: {grows}"
            + (f" ({why})" if why else "")
            + f"; laziest run minus K0 accuracy: {reached(summary['laziest_k0_gap'], '.3g')}"
        )
    return "\n".join(lines)


def _positive(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if s > 0 and is_finite(v)]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(subs: list[Mapping[str, Any]], path: str) -> None:
    """Accuracy, loss, and lazy-vs-rich diagnostics against steps (log x), one colour per
    alpha; train dashed, test solid. Dots mark where each test accuracy first exceeds the
    threshold; the dotted grey line is the test accuracy of kernel regression with the initial
    NTK K0 (the alpha -> infinity limit; the same for every alpha)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5))
    axes = fig.subplots(2, 2)
    (ax_acc, ax_loss), (ax_move, ax_align) = axes
    for i, r in enumerate(subs):
        hist, color, label = r.get("history") or [], f"C{i}", f"alpha={r['alpha']:g}"
        steps = [h["step"] for h in hist]
        for key, ax, style in (
            ("train_acc", ax_acc, "--"),
            ("test_acc", ax_acc, "-"),
            ("train_loss", ax_loss, "--"),
            ("test_loss", ax_loss, "-"),
            ("param_movement", ax_move, "-"),
            ("ntk_drift", ax_move, "--"),
            ("alignment_test", ax_align, "-"),
            ("alignment_train", ax_align, "--"),
        ):
            xs, ys = _positive(steps, [h.get(key, math.nan) for h in hist])
            if xs:
                ax.plot(xs, ys, style, color=color, lw=1.3, label=label if style == "-" else None)
        t = r.get("test_acc_step")
        if is_finite(t) and t > 0:
            ax_acc.plot([t], [r["acc_threshold"]], "o", color=color, ms=6)
    first = subs[0] if subs else {}
    k0 = first.get("k0_test_acc")
    if is_finite(k0):
        ax_acc.axhline(k0, color="gray", ls=":", label="K0 kernel regression (test)")
    a0 = first.get("alignment0_test")
    if is_finite(a0):
        ax_align.axhline(a0, color="gray", ls=":", label="K0 (test)")
    cfg = first.get("config", {})
    ax_acc.set_title(
        f"(a) accuracy (train --, test -), p={cfg.get('p')}, {cfg.get('optimizer')}, "
        f"wd={first.get('weight_decay')}"
    )
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.set_title("(b) cross-entropy (train --, test -)")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_move.set_title("(c) ||theta - theta0|| / ||theta0|| (-), NTK drift ||K-K0||/||K0|| (--)")
    ax_move.set_yscale("log")
    ax_align.set_title("(d) kernel-target alignment of the NTK (test -, train --)")
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xlabel("step (full-batch epochs)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_one(cfg: Any, summary: Mapping[str, Any], path: str) -> None:
    plot_runs([summary], path)


def _plot_sweep(cfg: Any, summary: Mapping[str, Any], path: str) -> None:
    plot_runs(summary["runs"], path)


RUN = Task(
    name="transformer_modular_run",
    description="one alpha of the transformer on (a + b) mod p (centred logits, AdamW)",
    config=TransformerModularConfig,
    build=build,
    summarize=summarize,
    plot=_plot_one,
    headline=headline,
)

TASK = Task(
    name="transformer_modular",
    description="transformer on (a + b) mod p: alpha sweep, grokking delayed as alpha grows",
    config=TransformerSweepConfig,
    runs=runs,
    combine=combine,
    plot=_plot_sweep,
    headline=headline,
)


def train(
    cfg: TransformerModularConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """:func:`paper.harness.run` of one alpha (:data:`RUN`): the summary, with its
    ``history`` (one row per measurement: ``step``, ``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc``, ``lr``, and on the kernel grid ``ntk_drift``,
    ``alignment_*``, ``param_movement``, ...)."""
    return run(RUN, cfg, out_dir, progress=progress, figure=figure)


def sweep(
    cfg: TransformerSweepConfig,
    out_dir: str | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """:func:`paper.harness.run` of the sweep (:data:`TASK`); ``workers > 1`` needs
    :data:`RUN` registered in ``paper.TASKS`` (sub-runs cross processes by name)."""
    return run(TASK, cfg, out_dir, progress=progress, figure=figure, workers=workers)
