"""Labels that are eigenvectors of the initial NTK (the paper's Figure 5).

The experiment isolates one of the paper's conditions for grokking, the alignment of the
initial NTK with the task, from everything else about the task: the inputs are pure noise
and the labels are the ``k``-th eigenvector (eigenvalues in descending order) of the
*centred* initial NTK ``H K0 H`` (``H = I - 11^T/n``) on all ``n = 2P`` points, train and
test together; the network trains on the first ``P`` and is tested on the rest. ``k = 1``
is the direction the initial kernel fits best (aligned), a large ``k`` one it hardly sees
(misaligned).

Settings from the paper's code for this figure: ``x ~ N(0, I_D)``, ``D = 100``, ``P = 100``
train and 100 test points, the quadratic net of the polynomial task with ``N = 2`` hidden
units, ``f(x) = mean_i phi(w_i . x / sqrt(D))``, ``phi(h) = h + eps/2 h^2``, ``eps = 0.25``,
only ``W`` trained (no readouts), ``W`` standard normal, the centred MSE with full-batch GD
at ``lr = N / 2`` for 25k epochs, ``k`` in {1, 5, 70, 75, 100, 150}. The network here is
:class:`lazymeter.tasks.polynomial.QuadraticNet` (``h = W x``) fed ``x / sqrt(D)``: the data
tensors hold ``x / sqrt(D)``, so the function and its NTK are exactly the paper's.

The paper's labels are the unit-norm eigenvector (entries ~ ``1/sqrt(2P)``) with
``alpha = 1``. Here the labels have unit variance (``sqrt(2P)`` x the unit-norm vector) and
``alpha = sqrt(2P)`` by default: with a centred model and ``lr / alpha^2`` these are the
same parameter dynamics (``alpha (f - f0) - sqrt(2P) u = alpha (f - f0 - u)``), so the run
*is* the paper's, with losses ``2P`` times larger; it also says plainly that the paper's run
is a lazy one (alpha ~ 14). (The paper subtracts the scalar mean of ``K0`` instead of
double-centring, ``K0 - mean(K0)``; :func:`eigenvector_labels` uses ``H K0 H``, whose
eigenvectors are exactly centred. On seed 0 the two give the same picture; the k=70 test
loss ends at 0.25 vs 0.34 of its start.)

What it shows (seed 0, the default budget; steps in lr-equivalent epochs; alignments are
the meter's unbiased estimates on all train and test points): for ``k = 1`` (alignment of
``K0`` with the train labels 0.29) the train and test losses fall together,
below 10% of their start at epochs 25 and 65, and the test loss ends at 3% of its start; for
``k = 70`` (alignment -0.01, i.e. none) the test loss falls an order of magnitude after the
train loss (to half its start at epoch 565 vs 45; the train loss is below 10% at 240) but only to a
third of its start, so it never crosses 10%; for ``k = 100`` (alignment -0.04) the test
loss *rises*, 1.04 -> 2.34, while the train loss is fitted: no generalisation. The net stays
lazy throughout (parameters move 4-17%, the NTK drifts ~3%, the alignment of ``K_t`` with
the labels barely changes), the linearised model's curves lie on the network's, and each
final test loss is that of kernel regression with ``K0``: in this setting the spread of
delays is the initial kernel's alignment at work, not a late switch to feature learning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..history import series
from .polynomial import QuadraticNet, fit_full_batch
from .results import write_json

_NORMALIZE = ("variance", "norm")


def centred_ntk_eigh(
    model: nn.Module, x: Tensor, *, output_fn: Callable[[Any], Any] | None = None
) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the double-centred empirical NTK ``H K0 H`` of ``model`` on ``x``.

    ``K0 = lazymeter.empirical_ntk(model, x)`` (``[n, n]``, outputs traced), ``H = I - 11^T/n``.

    Returns:
        ``(eigenvalues [n], eigenvectors [n, n])`` in float64, eigenvalues in *descending*
        order, eigenvector ``i`` in column ``i`` (unit norm). The constant vector is an
        eigenvector with eigenvalue 0 (centring removes it), so it comes last.
    """
    from ..metrics import center_kernel
    from ..ntk import empirical_ntk

    K = empirical_ntk(model, x, output_fn=output_fn).to(torch.float64)
    Kc = center_kernel(K)
    evals, evecs = torch.linalg.eigh((Kc + Kc.T) / 2)  # symmetrise away rounding
    return evals.flip(0), evecs.flip(1)


def eigenvector_labels(
    model: nn.Module,
    x: Tensor,
    k: int,
    *,
    normalize: str = "variance",
    output_fn: Callable[[Any], Any] | None = None,
) -> Tensor:
    """Labels ``y [n]``: the ``k``-th eigenvector of the centred initial NTK ``H K0 H`` on ``x``.

    Eigenvalues are sorted in descending order (``k = 1``: the top eigenvector, the
    direction the kernel fits best). The sign is fixed so that the largest-magnitude entry
    is positive (eigenvectors have no sign of their own; this makes the labels
    reproducible). Pure: the model is not changed. If ``lambda_k`` is degenerate the
    eigenvector is any unit vector of its eigenspace (as ``torch.linalg.eigh`` returns it).

    Args:
        model: the network at initialisation (its NTK over all trainable parameters).
        x: ``[n, ...]`` all inputs, train and test together.
        k: 1-based index, ``1 <= k <= n - 1`` (``k = n`` is the constant vector that the
            centring removes).
        normalize: ``"variance"``: mean 0, mean square 1 (``sqrt(n)`` x the unit vector);
            ``"norm"``: unit Euclidean norm (the paper's labels).
        output_fn: reduces the model output to one scalar per sample (see
            :func:`lazymeter.empirical_ntk`).

    Returns:
        ``[n]`` labels in ``x``'s floating dtype (float64 for integer inputs), on ``x``'s device.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    n = x.shape[0] if x.dim() > 0 else 0
    if n < 2:
        raise ValueError(f"x: needs at least 2 samples to centre a kernel, got {n}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(
            f"k: expected an int in [1, {n - 1}] (n = {n} samples; k = n would be the constant "
            f"vector that the centring removes), got {k!r}"
        )
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize: expected one of {_NORMALIZE}, got {normalize!r}")
    evals, evecs = centred_ntk_eigh(model, x, output_fn=output_fn)
    u = evecs[:, k - 1]
    if u[u.abs().argmax()] < 0:
        u = -u
    if normalize == "variance":
        u = u * math.sqrt(n)
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return u.to(device=x.device, dtype=dtype)


@dataclass
class EigenLabelsConfig:
    """The Figure 5 experiment. Defaults: the paper's settings (above) on a CPU budget.

    Full-batch GD on the centred MSE with ``lr = lr_scale * N / (2 alpha^2)`` for ``epochs``
    steps. At these learning rates GD follows gradient flow, so the curves depend on
    ``lr * epochs``: steps are reported as *lr-equivalent epochs* ``step * lr_scale`` (the
    paper's epochs at ``lr = N / 2`` with ``alpha = 1``). The default ``lr_scale=5`` for 5k
    steps is the paper's 25k epochs (the stability edge is ``lr_scale`` ~ 40 here);
    :meth:`paper` runs ``lr_scale=1`` for 25k steps.

    ``alpha=None`` means ``sqrt(2P)``, which with unit-variance labels is the paper's run
    (``alpha = 1``, unit-norm labels; see the module docstring).
    """

    D: int = 100
    P: int = 100
    N: int = 2
    eps: float = 0.25
    alpha: float | None = None
    ks: Sequence[int] = (1, 70, 100)
    normalize: str = "variance"
    epochs: int = 5000
    lr_scale: float = 5.0
    seed: int = 0
    linearized: bool = True
    per_decade: int = 16
    threshold: float = 0.1
    device: str = "cpu"
    dtype: str = "float64"

    @classmethod
    def paper(cls, **overrides: Any) -> EigenLabelsConfig:
        """The paper's exact schedule: ``lr = N / (2 alpha^2)`` for 25k epochs."""
        return cls(**{"epochs": 25_000, "lr_scale": 1.0, **overrides})

    def resolved_alpha(self) -> float:
        """``alpha``, or ``sqrt(2P)`` when it is None (the paper's scale, see the class doc)."""
        return math.sqrt(2 * self.P) if self.alpha is None else float(self.alpha)


@dataclass
class EigenLabelsData:
    """``x`` holds the network inputs ``x_raw / sqrt(D)``, ``x_raw ~ N(0, I_D)``; train first."""

    x: Tensor  # [2P, D]
    P: int

    @property
    def x_train(self) -> Tensor:
        return self.x[: self.P]

    @property
    def x_test(self) -> Tensor:
        return self.x[self.P :]


def make_setup(cfg: EigenLabelsConfig) -> tuple[EigenLabelsData, QuadraticNet]:
    """The seeded inputs (``2P`` points) and the initial network, on ``cfg.device``."""
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(2 * cfg.P, cfg.D, generator=g, dtype=dtype) / math.sqrt(cfg.D)
    model = QuadraticNet(cfg.D, cfg.N, cfg.eps, generator=g, dtype=dtype)
    return EigenLabelsData(x.to(cfg.device), cfg.P), model.to(cfg.device)


def _train_one(
    cfg: EigenLabelsConfig,
    model: QuadraticNet,
    data: EigenLabelsData,
    y: Tensor,
    k: int,
    out_dir: str | None,
    progress: bool,
) -> dict[str, Any]:
    import lazymeter as lm

    alpha = cfg.resolved_alpha()
    x, xt = data.x_train, data.x_test
    yy, yt = y[: data.P], y[data.P :]
    meter = lm.LazyMeter(
        model,
        alpha=alpha,
        center=True,
        probe=(x, yy),
        test_probe=(xt, yt),
        schedule=f"log:{cfg.per_decade}",
        log_dir=out_dir,
        max_probe=max(2, data.P),  # all of them: a 100-point NTK of 200 parameters is cheap
        linearized=cfg.linearized,
    )
    lr = meter.scaled_lr(cfg.lr_scale * cfg.N / 2)
    fit_full_batch(
        meter,
        x,
        yy,
        xt,
        yt,
        epochs=cfg.epochs,
        lr=lr,
        lr_scale=cfg.lr_scale,
        linearized=cfg.linearized,
        progress=progress,
        desc=f"k={k}",
    )
    meter.close()

    hist = meter.history
    cols = {key: [r[key] for r in hist] for key in ("step", "train_loss", "test_loss")}
    grok = lm.time_to_grok(cols["step"], cols["train_loss"], cols["test_loss"], cfg.threshold)
    half = lm.time_to_grok(cols["step"], cols["train_loss"], cols["test_loss"], 0.5)
    first, last = hist[0], hist[-1]
    return {
        "k": k,
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "initial_train_loss": first["train_loss"],
        "initial_test_loss": first["test_loss"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_lin_test_loss": last.get("lin_test_loss"),
        "max_test_loss": max(cols["test_loss"]),
        "alignment0_train": first.get("alignment0_train"),
        "alignment0_test": first.get("alignment0_test"),
        "final_alignment_train": last.get("alignment_train"),
        "final_alignment_test": last.get("alignment_test"),
        "final_ntk_drift": last.get("ntk_drift"),
        "final_param_movement": last.get("param_movement"),
        "time_to_grok": grok.as_dict(),
        "time_to_half": half.as_dict(),
        "history": hist,
    }


def train(
    cfg: EigenLabelsConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Build the eigenvector labels and train one network per ``k`` in ``cfg.ks``.

    Every run starts from the same initial network, the one whose NTK defines the labels.
    Writes to ``out_dir`` (when given): ``k<k>/history.jsonl`` and TensorBoard events per
    run (``step`` in lr-equivalent epochs, ``train_loss``, ``test_loss``, ``lin_*_loss``,
    ``alignment_train``/``alignment_test`` of ``K_t`` with the labels, ``ntk_drift``,
    ``param_movement``, ...), ``summary.json`` and ``figure.png`` (with matplotlib).

    Returns:
        ``{"config", "alpha", "eigenvalues" (the top 5, and lambda_k per run), "runs"
        (one summary per k, each with its ``history``), "seconds", "epochs_unit"}``.
    """
    import os
    import time

    if cfg.normalize not in _NORMALIZE:
        raise ValueError(f"normalize: expected one of {_NORMALIZE}, got {cfg.normalize!r}")
    data, model0 = make_setup(cfg)
    evals, _ = centred_ntk_eigh(model0, data.x)
    # Full-batch GD on the MSE is stable below lr * alpha^2 * 2 lambda_max(K0_train) / P < 2.
    from ..ntk import empirical_ntk

    lam = float(torch.linalg.eigvalsh(empirical_ntk(model0, data.x_train).double())[-1])
    max_scale = 2 * data.P / (lam * cfg.N)
    if cfg.lr_scale >= max_scale:
        raise ValueError(
            f"lr_scale: {cfg.lr_scale:g} puts gradient descent past its stability edge for this "
            f"D/P/N (lr_scale must stay below {max_scale:.3g}); lower lr_scale and raise epochs "
            "to keep lr * epochs"
        )
    runs: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for k in cfg.ks:
        y = eigenvector_labels(model0, data.x, int(k), normalize=cfg.normalize)
        model = QuadraticNet(cfg.D, cfg.N, cfg.eps, dtype=data.x.dtype, device=data.x.device)
        model.load_state_dict(model0.state_dict())
        run_dir = None if out_dir is None else os.path.join(out_dir, f"k{k}")
        run = _train_one(cfg, model, data, y, int(k), run_dir, progress)
        run["eigenvalue"] = float(evals[int(k) - 1])
        runs[str(k)] = run
    seconds = time.perf_counter() - t0

    summary: dict[str, Any] = {
        "config": {**cfg.__dict__, "ks": [int(k) for k in cfg.ks]},
        "alpha": cfg.resolved_alpha(),
        "eigenvalues": {"top5": [float(v) for v in evals[:5]], "n": int(evals.numel())},
        "runs": runs,
        "seconds": seconds,
        "epochs_unit": (
            f"lr-equivalent epochs at the paper's lr = N/2 (lr_scale={cfg.lr_scale:g})"
        ),
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        slim = {
            **summary,
            "runs": {k: {n: v for n, v in r.items() if n != "history"} for k, r in runs.items()},
        }
        write_json(os.path.join(out_dir, "summary.json"), slim, indent=2)
        if figure:
            plot_eigenlabels(summary, os.path.join(out_dir, "figure.png"))
    return summary


def plot_eigenlabels(summary: dict[str, Any], path: str) -> None:
    """Figure 5: one column per ``k``; top, train/test loss (log-log) with the linearised
    model and the K0-regression level; bottom, kernel-target alignment of ``K_t`` (train and
    test) with NTK drift and parameter movement on a log twin axis. Shaded lines mark the
    steps where each loss falls below the threshold x its start, dotted lines half its start
    (train blue, test red)."""
    from matplotlib.figure import Figure

    runs = list(summary["runs"].values())
    fig = Figure(figsize=(4.6 * len(runs), 7.0))
    axes = fig.subplots(2, len(runs), squeeze=False, sharex=True)
    unit = "epochs (lr-equivalent)"
    for j, run in enumerate(runs):
        hist = run["history"]
        ax, ax2 = axes[0, j], axes[1, j]
        for key, style, label in (
            ("lin_train_loss", dict(color="0.55", ls="--", lw=3.5), "linearised train"),
            ("lin_test_loss", dict(color="0.55", lw=3.5), "linearised test"),
            ("train_loss", dict(color="C0", ls="--", lw=1.6), "train"),
            ("test_loss", dict(color="C3", lw=1.6), "test"),
        ):
            xs, ys = series(hist, key)
            if xs:
                ax.plot(xs, ys, label=label, **style)
        k0 = run.get("k0_test_mse")
        if k0 is not None and math.isfinite(k0):
            ax.axhline(k0, color="C3", ls=":", label="K0 regression (test)")
        for crossing, style in (
            (run["time_to_grok"], dict(alpha=0.25, lw=3)),
            (run["time_to_half"], dict(alpha=0.6, lw=1, ls=":")),
        ):
            for key, color in (("train_step", "C0"), ("test_step", "C3")):
                v = crossing.get(key)
                if v is not None and math.isfinite(v) and v > 0:
                    ax.axvline(v, color=color, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(
            f"k={run['k']}  (lambda_k={run['eigenvalue']:.3g}): "
            f"test/start {run['final_test_loss'] / run['initial_test_loss']:.2g}",
            fontsize=10,
        )
        if j == 0:
            ax.set_ylabel("MSE")
        ax.legend(fontsize=7, loc="lower left")

        for key, color, label in (
            ("alignment_train", "C2", "alignment (train)"),
            ("alignment_test", "C1", "alignment (test)"),
        ):
            xs, ys = series(hist, key)
            if xs:
                ax2.plot(xs, ys, color=color, label=label)
        ax2.set_xlabel(unit)
        if j == 0:
            ax2.set_ylabel("centred kernel-target alignment")
        twin = ax2.twinx()
        for key, color, label in (
            ("ntk_drift", "C4", "NTK drift ||K-K0||/||K0||"),
            ("param_movement", "C5", "||W-W0||/||W0||"),
        ):
            xs, ys = series(hist, key)
            if xs:
                twin.plot(xs, ys, color=color, ls="-.", lw=1, label=label)
        twin.set_yscale("log")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    cfg = summary.get("config", {})
    fig.suptitle(
        f"NTK-eigenvector labels: D={cfg.get('D')}, P={cfg.get('P')}, N={cfg.get('N')}, "
        f"eps={cfg.get('eps')}, alpha={summary.get('alpha', float('nan')):.3g}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
