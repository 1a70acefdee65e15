"""The paper's modular-arithmetic MLP (Figure 2) and its appendix controls.

Task (Gromov 2023, as in the paper's code): all ``p^2`` pairs ``(a, b)``, ``p = 23``; the
input is the concatenated one-hot pair (``D = 2p``), the target the one-hot of
``(a + b) mod p``; 90% of the pairs train, the rest test. Model: two bias-free layers,
hidden width ``N = 100``, quadratic activation, weights ``N(0, 1)``::

    f(x) = scale * W2 phi(W1 x) / (D N),     phi(h) = h^2,

trained on the MSE against the one-hot targets by full-batch gradient descent at
``lr = 100 / scale^2``. ``scale`` is the paper's output scale alpha: here it is LazyMeter's
``alpha`` with ``center=False`` (the paper's model is not centred), so the meter computes
``scale * model(x)``, sets the learning rate (``meter.scaled_lr``) and measures NTK drift,
kernel-target alignment and parameter movement along the way.

What it shows: the train accuracy reaches 100% first, the test accuracy rises later while
the weight norm grows (features are learned), and a larger scale (a lazier start) delays
both the fit and, more, the generalisation. Controls (paper's appendix): weight decay is
not necessary for this delay (the default has none), and momentum or AdamW keep it.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..history import series
from ..threads import torch_threads
from .modular import ModularSplit, modular_addition
from .results import write_json

OPTIMIZERS = ("sgd", "momentum", "adamw")


class ModularMLP(nn.Module):
    """``f(x) = W2 (W1 x)^2 / (D N)`` with bias-free ``nn.Linear`` layers; output ``[B, C]``.

    The output scale is applied by :class:`lazymeter.LazyMeter` (``alpha=scale``,
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
    """One run of the modular-arithmetic MLP. Defaults: Figure 2 on a CPU budget.

    SGD runs at ``lr = meter.scaled_lr(lr * lr_scale) = lr * lr_scale / scale^2`` for
    ``steps`` full-batch steps. Full-batch GD at these rates follows gradient flow, so the
    curves depend on ``lr * steps``: the logged ``step`` is the *lr-equivalent step*
    ``round(k * lr_scale)`` (the paper's steps at ``lr = 100 / scale^2``). The default
    ``lr_scale=20`` for 5k steps reproduces the paper's rate for 100k steps (``paper()``).

    ``optimizer``: ``"sgd"`` (the paper's plain GD); ``"momentum"`` (heavy ball, 0.9, with
    the learning rate times ``1 - momentum`` so that its terminal speed, hence the time
    axis, matches GD); ``"adamw"`` (``lr = meter.scaled_lr(adam_lr, optimizer="adam") =
    adam_lr / scale``; its steps are real steps, ``lr_scale`` does not apply).
    ``weight_decay`` is the optimiser's (torch's) parameter: for SGD the loss gains
    ``wd/2 ||theta||^2`` (so the decay per lr-equivalent step is ``lr * wd``); for AdamW it
    is decoupled (``theta *= 1 - lr * wd`` per step).
    """

    p: int = 23
    train_frac: float = 0.9
    N: int = 100
    scale: float = 1.0
    lr: float = 100.0
    lr_scale: float = 20.0
    steps: int = 5000
    optimizer: str = "sgd"
    momentum: float = 0.9
    adam_lr: float = 0.003
    weight_decay: float = 0.0
    seed: int = 0
    per_decade: int = 24
    max_probe: int = 64
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = 1  # torch CPU threads while training: one is fastest at this size
    threshold: float = 0.1

    @classmethod
    def paper(cls, **overrides: object) -> ModularMLPConfig:
        """The paper's schedule: ``lr = 100 / scale^2``, one lr-equivalent step per step."""
        return cls(**{"steps": 100_000, "lr_scale": 1.0, **overrides})  # type: ignore[arg-type]

    @property
    def step_unit(self) -> float:
        """lr-equivalent steps per optimiser step (1 for AdamW)."""
        return 1.0 if self.optimizer == "adamw" else self.lr_scale


def make_optimizer(cfg: ModularMLPConfig, meter: Any) -> torch.optim.Optimizer:
    """The optimiser of ``cfg.optimizer`` over the meter's (= the model's) parameters."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    params = meter.parameters()
    wd = cfg.weight_decay
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=meter.scaled_lr(cfg.adam_lr, optimizer="adam"), weight_decay=wd
        )
    lr = meter.scaled_lr(cfg.lr * cfg.lr_scale)
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


def train(
    cfg: ModularMLPConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
    split: ModularSplit | None = None,
) -> dict[str, Any]:
    """Train the quadratic MLP with :class:`lazymeter.LazyMeter` and return a summary.

    Writes to ``out_dir`` (when given): ``history.jsonl`` (one row per measurement:
    ``step`` in lr-equivalent steps, ``train_loss``, ``test_loss``, ``train_acc``,
    ``test_acc``, ``weight_norm``, ``param_movement``, ``ntk_drift``, ``alignment_*``, ...),
    TensorBoard events, ``summary.json`` and ``figure.png`` (panels a, b, d of Figure 2;
    the scale sweep, panel c, is drawn by :func:`plot_figure` when given sweep runs).

    Returns:
        ``{"config", "final_*", "acc_crossings", "loss_crossings", "k0_test_mse",
        "k0_test_acc", "seconds", "history"}``; crossings are ``time_to_grok`` dicts
        (accuracy: error at 0.1 x its start; loss: loss at ``cfg.threshold`` x its start).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    with torch_threads(cfg.threads if torch.device(cfg.device).type == "cpu" else None):
        return _train(cfg, out_dir, progress, figure, split)


def _train(
    cfg: ModularMLPConfig,
    out_dir: str | None,
    progress: bool,
    figure: bool,
    split: ModularSplit | None,
) -> dict[str, Any]:
    import lazymeter as lm

    from .progress import progress_bar

    dtype = getattr(torch, cfg.dtype)
    split = split or modular_addition(cfg.p, cfg.train_frac, cfg.seed)
    n = split.n_train
    x_all = split.one_hot_pairs(dtype).to(cfg.device)
    labels = split.labels.to(cfg.device)
    x, x_test, lab, lab_test = x_all[:n], x_all[n:], labels[:n], labels[n:]
    y = nn.functional.one_hot(lab, cfg.p).to(dtype)
    y_test = nn.functional.one_hot(lab_test, cfg.p).to(dtype)

    g = torch.Generator().manual_seed(cfg.seed)
    model = ModularMLP(2 * cfg.p, cfg.N, cfg.p, generator=g, dtype=dtype, device=cfg.device)
    meter = lm.LazyMeter(
        model,
        alpha=cfg.scale,
        center=False,  # the paper's model is uncentred: meter(x) = scale * model(x)
        probe=(x, lab),  # integer labels: the meter one-hot encodes them for its metrics
        test_probe=(x_test, lab_test),
        schedule=f"log:{cfg.per_decade}",
        log_dir=out_dir,
        max_probe=cfg.max_probe,
    )
    opt = make_optimizer(cfg, meter)
    mse = lambda out, t: ((out - t) ** 2).mean()  # noqa: E731 - MSE on one-hot targets
    acc = lambda out, t: (out.argmax(1) == t).to(torch.float64).mean().item()  # noqa: E731
    desc = f"scale={cfg.scale:g} {cfg.optimizer}" + (
        f" wd={cfg.weight_decay:g}" if cfg.weight_decay else ""
    )
    bar = progress_bar(cfg.steps, progress, desc)
    t0 = time.perf_counter()
    for k in range(cfg.steps + 1):
        step = round(k * cfg.step_unit)
        out = meter(x)
        loss = mse(out, y)
        if meter.will_measure(step):
            # The state before this step's update, matching the train loss above.
            with torch.no_grad():
                out_test = meter(x_test)
                scalars = {
                    "train_loss": loss.item(),
                    "test_loss": mse(out_test, y_test).item(),
                    "train_acc": acc(out, lab),
                    "test_acc": acc(out_test, lab_test),
                }
            meter.step(step=step, **scalars)
            if not math.isfinite(scalars["train_loss"]):
                # Past the stability edge of GD (it moves as the weights grow): stop here.
                warnings.warn(
                    f"modular_mlp: the train loss diverged at step {step}; lower lr_scale "
                    f"(now {cfg.lr_scale:g}) and raise steps to keep lr * steps",
                    RuntimeWarning,
                    stacklevel=3,
                )
                break
            bar.set_postfix(
                train_acc=f"{scalars['train_acc']:.2f}",
                test_acc=f"{scalars['test_acc']:.2f}",
                refresh=False,
            )
        if k == cfg.steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)
    bar.close()
    meter.close()
    seconds = time.perf_counter() - t0

    hist = meter.history
    last = hist[-1]
    loss_cross = lm.time_to_grok(
        [r["step"] for r in hist],
        [r["train_loss"] for r in hist],
        [r["test_loss"] for r in hist],
        threshold=cfg.threshold,
    )
    summary: dict[str, Any] = {
        "config": {**cfg.__dict__},
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "max_test_loss": max(
            (r["test_loss"] for r in hist if math.isfinite(r["test_loss"])), default=math.nan
        ),
        "initial_weight_norm": hist[0]["weight_norm"],
        "final_weight_norm": last["weight_norm"],
        "final_param_movement": last["param_movement"],
        "final_ntk_drift": last.get("ntk_drift"),
        "alignment0_test": last.get("alignment0_test"),
        "final_alignment_test": last.get("alignment_test"),
        "acc_crossings": accuracy_crossings(hist),
        "loss_crossings": loss_cross.as_dict(),
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "seconds": seconds,
        "steps_unit": (
            "optimizer steps (AdamW)"
            if cfg.optimizer == "adamw"
            else f"lr-equivalent steps at lr = {cfg.lr:g}/scale^2 (lr_scale={cfg.lr_scale:g})"
        ),
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "summary.json"), summary, indent=2)
        if figure:
            plot_figure(hist, summary, os.path.join(out_dir, "figure.png"))
    summary["history"] = hist
    return summary


def sweep_table(runs: Mapping[float, Mapping[str, Any]]) -> list[dict[str, float]]:
    """One row per scale: accuracy crossings (train/test error at 0.1 x start, i.e. ~90%
    accuracy), loss crossings and final accuracies of each run's summary."""
    rows = []
    for s in sorted(runs):
        r = runs[s]
        a, lc = r["acc_crossings"], r["loss_crossings"]
        rows.append(
            {
                "scale": s,
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


def plot_figure(
    hist: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    path: str,
    sweep: Mapping[float, Sequence[Mapping[str, Any]]] | None = None,
) -> None:
    """Figure 2 of the paper: (a) train/test accuracy (log step) with the weight norm on a
    twin axis, (b) train/test loss, (c) test accuracy for each scale of ``sweep``
    (``{scale: history}``; train accuracy dashed, ~90%-test-accuracy steps marked), and
    (d) LazyMeter's diagnostics: NTK drift, parameter movement, test alignment."""
    from matplotlib.figure import Figure

    cfg = summary.get("config", {})
    xlabel = (
        "step"
        if cfg.get("optimizer") == "adamw"
        else f"step (lr-equivalent, lr = {cfg.get('lr', 100):g}/scale$^2$)"
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
    title = f"(a) scale={cfg.get('scale', '?')}, {cfg.get('optimizer', 'sgd')}"
    if cfg.get("weight_decay"):
        title += f", wd={cfg['weight_decay']:g}"
    ax_a.set_title(title)

    for key, color, label in (("train_loss", "C0", "train"), ("test_loss", "C3", "test")):
        ax_b.plot(*series(hist, key), color=color, label=label)
    k0 = summary.get("k0_test_mse")
    if k0 is not None and math.isfinite(k0):
        ax_b.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    ax_b.set_xscale("log")
    ax_b.set_yscale("log")
    ax_b.set_xlabel(xlabel)
    ax_b.set_ylabel("MSE (one-hot targets)")
    ax_b.legend(fontsize=8, loc="lower left")
    ax_b.set_title("(b) loss")

    if ax_c is not None and sweep:
        grok = []
        for i, (s, h) in enumerate(sorted(sweep.items())):
            ax_c.plot(*series(h, "test_acc"), color=f"C{i}", label=f"scale={s:g}")
            ax_c.plot(*series(h, "train_acc"), color=f"C{i}", ls="--", lw=0.9, alpha=0.7)
            cross = accuracy_crossings(h)
            grok.append((s, cross["train_step"], cross["test_step"]))
            t = cross["test_step"]
            if math.isfinite(t) and t > 0:
                ax_c.plot([t], [0.9], "o", color=f"C{i}", ms=5)
        # Inset: time to ~90% accuracy against the scale (NaN: never within the budget).
        ins = ax_c.inset_axes([0.25, 0.3, 0.33, 0.36])
        sc, tr, te = zip(*grok, strict=True)
        ins.plot(sc, [v / 1000 for v in tr], "o--", color="C0", ms=3, lw=1, label="train")
        ins.plot(sc, [v / 1000 for v in te], "o-", color="C3", ms=3, lw=1, label="test")
        ins.set_ylim(bottom=0)
        ins.set_xlabel("scale", fontsize=7, labelpad=1)
        ins.set_ylabel("step to ~90% acc (k)", fontsize=7, labelpad=1)
        ins.tick_params(labelsize=6)
        ins.legend(fontsize=6, loc="upper left")
        ax_c.set_xscale("log")
        ax_c.set_ylim(-0.03, 1.03)
        ax_c.set_xlabel(xlabel)
        ax_c.set_ylabel("accuracy (test -, train --)")
        ax_c.legend(fontsize=8, loc="upper left", ncols=2)
        ax_c.set_title("(c) larger scale (lazier) groks later")

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
