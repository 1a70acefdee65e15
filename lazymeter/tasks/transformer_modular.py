"""The paper's transformer experiment: a one-layer transformer groks modular addition, and a
larger output scale alpha (lazier training) delays or prevents it.

Task: all pairs ``(a, b)`` of ``0..p-1`` as tokens ``[a, b, =]`` (``=`` is token ``p``), label
``(a + b) mod p``; a random 40% of the ``p^2`` pairs train, the rest test
(:func:`lazymeter.tasks.modular.modular_addition`). Model: Nanda et al.'s grokking transformer
(:class:`lazymeter.tasks.transformer.Transformer`: token + position embeddings, one attention
block, one ReLU MLP, no LayerNorm, context 3), logits read at the last position. Training
follows the paper: the loss sees the centred, rescaled logits ``alpha * (f(x) - f0(x))``
(:class:`lazymeter.LazyMeter` with ``center=True``), cross-entropy computed in float64,
full-batch AdamW (betas 0.9/0.98, weight decay 1.0) at ``lr = base / alpha^2`` with a linear
warm-up.

Learning rate and alpha: the paper's code divides the AdamW learning rate by ``alpha^2``, the
gradient-descent rule (``meter.scaled_lr(base)``), and so do we. Adam normalises the gradient
scale away, so under that rule a larger alpha is both lazier (parameters must move less to
change the output) and slower in function space (``alpha * lr`` per step ~ ``base / alpha``),
and the decoupled weight decay ``lr * wd`` per step slows by ``alpha^2`` too.
``lr_scaling="alpha"`` uses ``base / alpha`` instead (``meter.scaled_lr(base, "adam")``), which
keeps the function-space speed fixed and isolates laziness.

Paper settings (``TransformerModularConfig.paper()``): p=113, d_model=128, 4 heads of 32,
d_mlp=512, base lr 1e-3 (Nanda et al.'s), 200k full-batch epochs (a GPU job). The default is a
CPU-sized version that still groks: p=31, d_model=32 (4 heads of 8), d_mlp=128, base lr 3e-2
(the smaller net tolerates a larger step, and grokking time scales roughly as
``1 / (lr * wd)``), 2000 epochs. There, with alpha = 1, 1.5, 2, 4, the train accuracy passes
90% by step ~100 for all, the test accuracy at step 340 and 890 for alpha = 1 and 1.5, not
within the budget for alpha = 2 (0.77 at the end), and the alpha = 4 run ends at the test
accuracy of kernel regression with the initial NTK (0.37): the lazy limit
(``examples/transformer_modular.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ..threads import torch_threads
from .results import first_step_at_or_above, write_json

# (base lr, weight decay) when not given. AdamW: see the module docstring. SGD and heavy-ball
# momentum (the appendix's optimiser controls) need a far larger step on this cross-entropy
# loss and a matching smaller weight decay (the per-step shrink is lr * wd for all three);
# these fit the train set of the default task in a few hundred steps.
OPTIMIZER_DEFAULTS = {"adamw": (3e-2, 1.0), "sgd": (0.5, 1e-3), "momentum": (0.05, 1e-3)}
PAPER_LR = {"adamw": 1e-3}


@dataclass
class TransformerModularConfig:
    """One run: the transformer on ``(a + b) mod p`` at output scale ``alpha``.

    Defaults: the CPU-sized task (p=31, d_model=32, d_mlp=128, 2000 full-batch epochs).
    ``lr``/``weight_decay`` None: :data:`OPTIMIZER_DEFAULTS` for ``optimizer``. The learning
    rate is ``lr / alpha^2`` (``lr_scaling="alpha2"``, the paper's) or ``lr / alpha``
    (``"alpha"``), warmed up linearly over ``warmup`` steps. The test set is evaluated every
    ``eval_every`` steps and on a log grid (``curve_per_decade``); the meter measures on a
    ``log:per_decade`` schedule with ``max_probe`` probe points (the NTK of a model with ``p``
    outputs costs ``O(max_probe^2 * p * n_params)``).
    """

    p: int = 31
    train_frac: float = 0.4
    d_model: int = 32
    n_heads: int = 4
    d_mlp: int = 128
    alpha: float = 1.0
    center: bool = True
    optimizer: str = "adamw"
    lr: float | None = None
    weight_decay: float | None = None
    lr_scaling: str = "alpha2"
    betas: tuple[float, float] = (0.9, 0.98)
    momentum: float = 0.9
    warmup: int = 10
    steps: int = 2000
    eval_every: int = 10
    curve_per_decade: int = 32
    per_decade: int = 8
    max_probe: int = 32
    max_baseline: int = 2048
    seed: int = 0
    device: str = "cpu"
    acc_threshold: float = 0.9
    threshold: float = 0.1

    @classmethod
    def paper(cls, **overrides: Any) -> TransformerModularConfig:
        """The paper's setting: p=113, d_model=128, 4 heads, d_mlp=512, lr 1e-3, 200k epochs."""
        opt = overrides.get("optimizer", "adamw")
        base = dict(p=113, d_model=128, n_heads=4, d_mlp=512, steps=200_000, eval_every=100)
        base["lr"] = PAPER_LR.get(opt)
        return cls(**{**base, **overrides})

    def resolved(self) -> TransformerModularConfig:
        """A copy with ``lr`` and ``weight_decay`` filled in from the optimiser's defaults."""
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            raise ValueError(
                f"optimizer: expected one of {sorted(OPTIMIZER_DEFAULTS)}, got {self.optimizer!r}"
            )
        if self.lr_scaling not in ("alpha2", "alpha"):
            raise ValueError(f"lr_scaling: expected 'alpha2' or 'alpha', got {self.lr_scaling!r}")
        lr, wd = OPTIMIZER_DEFAULTS[self.optimizer]
        return replace(
            self,
            lr=lr if self.lr is None else self.lr,
            weight_decay=wd if self.weight_decay is None else self.weight_decay,
        )


def _make_optimizer(cfg: TransformerModularConfig, params: Any, lr: float) -> Any:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=cfg.weight_decay)


def train(
    cfg: TransformerModularConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Train the transformer at ``cfg.alpha`` with :class:`lazymeter.LazyMeter`; a summary.

    Writes to ``out_dir`` (when given): ``history.jsonl`` (one row per measurement: ``step``,
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``lr``, ``ntk_drift``,
    ``alignment_*``, ``param_movement``, ...), TensorBoard events, ``summary.json`` (with the
    dense accuracy/loss ``curve``) and ``figure.png``.

    Returns:
        ``{"config", "alpha", "lr", "train_acc_step", "test_acc_step", "final_train_acc",
        "final_test_acc", "final_train_loss", "final_test_loss", "k0_test_acc",
        "time_to_grok", "seconds", "curve", "history", ...}``. ``train_acc_step`` /
        ``test_acc_step``: first step at which the accuracy exceeds ``acc_threshold``
        (train checked every step, test every ``eval_every`` steps and on the log grid).
    """
    import time

    import lazymeter as lm

    from .modular import modular_addition
    from .progress import progress_bar
    from .transformer import Transformer

    cfg = cfg.resolved()
    t_setup = time.perf_counter()
    dev = torch.device(cfg.device)
    split = modular_addition(cfg.p, cfg.train_frac, cfg.seed)
    tokens, labels, n = split.tokens().to(dev), split.labels.to(dev), split.n_train
    x, y, x_test, y_test = tokens[:n], labels[:n], tokens[n:], labels[n:]
    # The model draws from the global RNG: seed it without disturbing the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Transformer(
            cfg.p + 1, cfg.d_model, cfg.n_heads, cfg.d_mlp, n_ctx=3, n_classes=cfg.p
        ).to(dev)
    meter = lm.LazyMeter(
        model,
        alpha=cfg.alpha,
        center=cfg.center,
        probe=(x, y),
        test_probe=(x_test, y_test),
        schedule=f"log:{cfg.per_decade}",
        log_dir=out_dir,
        output_fn=lambda out: out[:, -1],  # the answer is read at the "=" position
        max_probe=cfg.max_probe,
        max_baseline=cfg.max_baseline,
    )
    lr = meter.scaled_lr(cfg.lr, "sgd" if cfg.lr_scaling == "alpha2" else "adam")
    opt = _make_optimizer(cfg, meter.parameters(), lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    grid = lm.make_schedule(f"log:{cfg.curve_per_decade}")  # dense early curve points

    def evaluate(inp: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
        out = meter(inp)
        # float64: the train loss falls to ~1e-7, below float32's resolution of log-softmax.
        loss = F.cross_entropy(out.double(), target)
        return loss, (out.argmax(-1) == target).double().mean().item()

    curve: dict[str, list[float]] = {
        k: [] for k in ("step", "train_loss", "train_acc", "test_loss", "test_acc")
    }
    train_acc_step = math.nan
    bar = progress_bar(cfg.steps, progress, f"alpha={cfg.alpha:g}")
    setup_seconds = time.perf_counter() - t_setup
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        loss, acc = evaluate(x, y)
        scalars = {"train_loss": loss.item(), "train_acc": acc, "lr": opt.param_groups[0]["lr"]}
        if math.isnan(train_acc_step) and acc > cfg.acc_threshold:
            train_acc_step = float(step)
        on_grid = grid.due(step)
        if on_grid or step % cfg.eval_every == 0 or step == cfg.steps or meter.will_measure(step):
            # The state before this step's update, matching the train loss above.
            with torch.no_grad():
                test_loss, test_acc = evaluate(x_test, y_test)
            scalars.update(test_loss=test_loss.item(), test_acc=test_acc)
            for k in curve:
                curve[k].append(step if k == "step" else scalars[k])
        meter.step(step=step, **scalars)
        if step == cfg.steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(train=f"{acc:.2f}", test=f"{curve['test_acc'][-1]:.2f}", refresh=False)
    bar.close()
    if not meter.history or meter.history[-1]["step"] != cfg.steps:
        meter.measure()  # the final state too, whatever the log schedule says
    meter.close()
    seconds = time.perf_counter() - t0

    hist = meter.history
    last = hist[-1]
    grok = lm.time_to_grok(
        curve["step"], curve["train_loss"], curve["test_loss"], threshold=cfg.threshold
    )
    summary: dict[str, Any] = {
        "config": asdict(cfg),
        "alpha": cfg.alpha,
        "lr": lr,
        "train_acc_step": train_acc_step,
        "test_acc_step": first_step_at_or_above(
            curve["step"], curve["test_acc"], cfg.acc_threshold, strict=True
        ),
        "acc_threshold": cfg.acc_threshold,
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "max_test_loss": max(curve["test_loss"]),
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "final_ntk_drift": last.get("ntk_drift"),
        "final_param_movement": last.get("param_movement"),
        "final_alignment_test": last.get("alignment_test"),
        "alignment0_test": last.get("alignment0_test"),
        "time_to_grok": grok.as_dict(),
        "seconds": seconds,
        "setup_seconds": setup_seconds,
        "curve": curve,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "summary.json"), summary, indent=1)
        if figure:
            plot_runs([{**summary, "history": hist}], os.path.join(out_dir, "figure.png"))
    summary["history"] = hist
    return summary


def _run_dir(out: str, alpha: float) -> str:
    return os.path.join(out, f"alpha{alpha:g}")


def _train_quiet(cfg: TransformerModularConfig, out_dir: str | None) -> dict[str, Any]:
    """A worker's run: one torch thread (the workers share the cores), no bar, no figure."""
    with torch_threads(1):
        return train(cfg, out_dir, progress=False, figure=False)


def sweep(
    cfg: TransformerModularConfig,
    alphas: list[float],
    out_dir: str | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` at each alpha; OUT/alpha<a>/ holds each run's files, OUT/summary.json the
    per-alpha summaries (without histories) and OUT/figure.png the comparison.

    ``workers > 1`` trains in that many spawned processes (one torch thread each; CPU only).
    Returns ``{"config", "alphas", "runs" (summaries with histories), "wall_seconds", ...}``.
    """
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    configs = [replace(cfg, alpha=float(a)) for a in alphas]
    dirs = [None if out_dir is None else _run_dir(out_dir, a) for a in alphas]
    t0 = time.perf_counter()
    if workers > 1 and len(configs) > 1 and cfg.device == "cpu":
        # spawn, not fork: the parent may already hold torch/OpenMP thread pools.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            # The slowest (laziest) runs first, so that they do not start last.
            order = sorted(range(len(configs)), key=lambda i: -configs[i].alpha)
            futures = {i: pool.submit(_train_quiet, configs[i], dirs[i]) for i in order}
            runs = [futures[i].result() for i in range(len(configs))]
    else:
        runs = [
            train(c, d, progress=progress, figure=False) for c, d in zip(configs, dirs, strict=True)
        ]
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {
        "config": asdict(cfg.resolved()),
        "alphas": [float(a) for a in alphas],
        "workers": workers,
        "wall_seconds": wall,
        "runs": runs,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        light = {**result, "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs]}
        write_json(os.path.join(out_dir, "summary.json"), light, indent=1)
        plot_runs(runs, os.path.join(out_dir, "figure.png"))
    return result


def _positive(steps: list[float], values: list[float]) -> tuple[list[float], list[float]]:
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if s > 0 and math.isfinite(v)]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def plot_runs(runs: list[dict[str, Any]], path: str) -> None:
    """Accuracy, loss, and lazy-vs-rich diagnostics against steps (log x), one colour per
    alpha; train dashed, test solid. Dots mark where each test accuracy first exceeds the
    threshold; the dotted grey line is the test accuracy of kernel regression with the initial
    NTK K0 (the alpha -> infinity limit; the same for every alpha)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5))
    axes = fig.subplots(2, 2)
    (ax_acc, ax_loss), (ax_move, ax_align) = axes
    for i, r in enumerate(runs):
        c, color = r["curve"], f"C{i}"
        label = f"alpha={r['alpha']:g}"
        for key, ax, style in (
            ("train_acc", ax_acc, "--"),
            ("test_acc", ax_acc, "-"),
            ("train_loss", ax_loss, "--"),
            ("test_loss", ax_loss, "-"),
        ):
            xs, ys = _positive(c["step"], c[key])
            ax.plot(xs, ys, style, color=color, lw=1.3, label=label if style == "-" else None)
        t = r.get("test_acc_step", math.nan)
        if math.isfinite(t) and t > 0:
            ax_acc.plot([t], [r["acc_threshold"]], "o", color=color, ms=6)
        hist = r.get("history") or []
        steps = [h["step"] for h in hist]
        for key, ax, style in (
            ("param_movement", ax_move, "-"),
            ("ntk_drift", ax_move, "--"),
            ("alignment_test", ax_align, "-"),
            ("alignment_train", ax_align, "--"),
        ):
            xs, ys = _positive(steps, [h.get(key, math.nan) for h in hist])
            if xs:
                ax.plot(xs, ys, style, color=color, lw=1.3, label=label if style == "-" else None)
    k0 = runs[0].get("k0_test_acc") if runs else None
    if k0 is not None and math.isfinite(k0):
        ax_acc.axhline(k0, color="gray", ls=":", label="K0 kernel regression (test)")
    a0 = runs[0].get("alignment0_test") if runs else None
    if a0 is not None and math.isfinite(a0):
        ax_align.axhline(a0, color="gray", ls=":", label="K0 (test)")
    cfg = runs[0]["config"] if runs else {}
    ax_acc.set_title(
        f"(a) accuracy (train --, test -), p={cfg.get('p')}, {cfg.get('optimizer')}, "
        f"wd={cfg.get('weight_decay')}"
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
