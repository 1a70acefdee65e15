"""Labels that are eigenvectors of the initial NTK (the paper's Figure 5).

The experiment isolates one of the paper's conditions for a delayed generalisation, the
alignment of the initial NTK with the task, from everything else about the task: the inputs
are pure noise and the labels are the ``k``-th eigenvector (eigenvalues in descending order)
of the centred initial NTK on all ``n = 2P`` points, train and test together; the network
trains on the first ``P`` and is tested on the rest. ``k = 1`` is the direction the initial
kernel fits best (aligned), a large ``k`` one it hardly sees (misaligned).

Settings of the authors' code for this figure (``grokking-feature-timescales-anon-final``,
cell "Figure 5"): ``x ~ N(0, I_D)``, ``D = 100``, ``P = 100`` train and 100 test points, the
quadratic net of the polynomial task with ``N = 2`` hidden units,
``f(x) = alpha * mean_i phi(w_i . x / sqrt(D))``, ``phi(h) = h + eps/2 h^2``, ``eps = 0.25``,
only ``W`` trained (no readouts), ``W`` standard normal, ``alpha = 1``, the centred MSE
``mean((f - f0 - y)^2)`` with full-batch GD at ``lr = N / 2`` for 25k epochs, the labels the
unit-norm eigenvector of ``K0 - mean(K0)`` (the kernel's scalar mean subtracted), ``k`` in
{1, 5, 70, 75, 100, 150}: :meth:`EigenLabelsConfig.paper`. The network here is
:class:`paper.polynomial.QuadraticNet` (``h = W x``) fed ``x / sqrt(D)``: the data
tensors hold ``x / sqrt(D)``, so the function and its NTK are exactly the paper's.

The default differs in two ways that leave the dynamics alone. The labels have unit
variance (``sqrt(2P)`` x the unit-norm vector) and ``alpha = sqrt(2P)``: with a centred
model and ``lr / alpha^2`` these are the same parameter dynamics
(``alpha (f - f0) - sqrt(2P) u = alpha (f - f0 - u)``), with losses ``2P`` times larger;
it says plainly that the paper's run is a lazy one (alpha ~ 14). And the kernel is
double-centred, ``H K0 H`` (``H = I - 11^T/n``), whose eigenvectors are exactly centred,
instead of ``K0 - mean(K0)`` (``centring="mean"``, the paper's). On seed 0 the two give
the same picture (``--full --epochs 5000 --lr-scale 5 --ks 1,70,100``, the paper's
conventions on the default budget: the train loss halves at epoch 10, 45, 100, the test
loss at 15, 490 and never; the k=70 test loss ends at 0.26 of its start, the k=100 one
rises x1.9; default: 10, 45, 115; 15, 565, never; 0.34; x2.3).

What it shows: the run stays lazy throughout. The network equals its linearisation (the
linearised model's losses lie on the network's), the parameters move little and the
kernel keeps its shape, and each final test loss is that of kernel regression with ``K0``.
The labels are learned at the speed of their eigenvalue: the train loss of a higher ``k``
(a smaller eigenvalue) falls later, and whether, and how late, the test loss follows is
set by how the train and test halves of the eigenvector sit in the initial kernel. The
spread of delays is the initial kernel's spectrum at work, not a transition from lazy to
rich training. The measured numbers are in ``examples/ntk_eigenvector_labels.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import lazymeter as lm

from .harness import Setup, SubRun, Task, option, run
from .polynomial import QuadraticNet
from .results import first_step_at_or_above, series

_NORMALIZE = ("variance", "norm")
_CENTRING = ("double", "mean")


def centred_ntk_eigh(
    model: nn.Module,
    x: Tensor,
    *,
    centring: str = "double",
    output_fn: Callable[[Any], Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the centred empirical NTK of ``model`` on ``x``.

    ``K0 = lazymeter.empirical_ntk(model, x)`` (``[n, n]``, outputs traced), centred as
    ``H K0 H`` (``centring="double"``, ``H = I - 11^T/n``) or ``K0 - mean(K0)``
    (``centring="mean"``, the paper's code).

    Returns:
        ``(eigenvalues [n], eigenvectors [n, n])`` in float64, eigenvalues in *descending*
        order, eigenvector ``i`` in column ``i`` (unit norm). With double centring the
        constant vector is an eigenvector with eigenvalue 0, so it comes last.
    """
    import lazymeter as lm

    if centring not in _CENTRING:
        raise ValueError(f"centring: expected one of {_CENTRING}, got {centring!r}")
    K = lm.empirical_ntk(model, x, output_fn=output_fn).to(torch.float64)
    Kc = lm.center_kernel(K) if centring == "double" else K - K.mean()
    evals, evecs = torch.linalg.eigh((Kc + Kc.T) / 2)  # symmetrise away rounding
    return evals.flip(0), evecs.flip(1)


def _max_k(n: int, centring: str) -> int:
    # double centring: k = n is the constant vector the centring removes (eigenvalue 0)
    return n - 1 if centring == "double" else n


def _check_k(k: Any, n: int, centring: str) -> None:
    top = _max_k(n, centring)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= top:
        why = (
            "; k = n would be the constant vector that the centring removes"
            if centring == "double"
            else ""
        )
        raise ValueError(f"k: expected an int in [1, {top}] (n = {n} samples{why}), got {k!r}")


def _label_vector(evecs: Tensor, k: int, normalize: str) -> Tensor:
    """Column ``k - 1`` of ``evecs``, sign fixed (largest-magnitude entry positive), scaled."""
    u = evecs[:, k - 1]
    if u[u.abs().argmax()] < 0:
        u = -u
    return u * math.sqrt(u.numel()) if normalize == "variance" else u


def eigenvector_labels(
    model: nn.Module,
    x: Tensor,
    k: int,
    *,
    normalize: str = "variance",
    centring: str = "double",
    output_fn: Callable[[Any], Any] | None = None,
) -> Tensor:
    """Labels ``y [n]``: the ``k``-th eigenvector of the centred initial NTK on ``x``.

    Eigenvalues are sorted in descending order (``k = 1``: the top eigenvector, the
    direction the kernel fits best). The sign is fixed so that the largest-magnitude entry
    is positive (eigenvectors have no sign of their own; this makes the labels
    reproducible). Pure: the model is not changed. If ``lambda_k`` is degenerate the
    eigenvector is any unit vector of its eigenspace (as ``torch.linalg.eigh`` returns it).

    Args:
        model: the network at initialisation (its NTK over all trainable parameters).
        x: ``[n, ...]`` all inputs, train and test together.
        k: 1-based index, ``1 <= k <= n - 1`` with double centring (``k = n`` is the
            constant vector that the centring removes), ``1 <= k <= n`` with ``"mean"``.
        normalize: ``"variance"``: mean square 1 (``sqrt(n)`` x the unit vector);
            ``"norm"``: unit Euclidean norm (the paper's labels).
        centring: ``"double"`` (``H K0 H``: the labels have mean 0) or ``"mean"``
            (``K0 - mean(K0)``, the paper's code); see :func:`centred_ntk_eigh`.
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
    if centring not in _CENTRING:
        raise ValueError(f"centring: expected one of {_CENTRING}, got {centring!r}")
    _check_k(k, n, centring)
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize: expected one of {_NORMALIZE}, got {normalize!r}")
    _, evecs = centred_ntk_eigh(model, x, centring=centring, output_fn=output_fn)
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return _label_vector(evecs, k, normalize).to(device=x.device, dtype=dtype)


# The paper's protocol (its code for Figure 5) and a seconds-long run; the multi-run preset
# adds its eigenvector indices.
_PAPER: dict[str, Any] = dict(
    epochs=25_000, lr_scale=1.0, alpha=1.0, normalize="norm", centring="mean"
)
_SMOKE: dict[str, Any] = dict(D=20, P=20, epochs=100, lr_scale=3.0, per_decade=6)


@dataclass
class _EigenLabelsBase:
    """The settings shared by one run (:class:`EigenLabelsRunConfig`) and the experiment
    (:class:`EigenLabelsConfig`)."""

    D: int = option(100, "input dimension (x ~ N(0, I_D), fed as x / sqrt(D))")
    P: int = option(100, "training points (as many test points)")
    N: int = option(2, "hidden width")
    eps: float = option(0.25, "strength of the quadratic term of phi(h) = h + eps/2 h^2")
    alpha: float | None = option(
        None, "output scale; None: sqrt(2P), the paper's run with unit-variance labels"
    )
    normalize: str = option(
        "variance", "labels with unit variance ('variance') or unit norm ('norm', the paper's)"
    )
    centring: str = option(
        "double", "kernel centring: 'double' (H K0 H) or 'mean' (K0 - mean(K0), the paper's)"
    )
    epochs: int = option(5000, "full-batch GD steps")
    lr_scale: float = option(5.0, "lr = lr_scale * N / (2 alpha^2); steps count lr_scale epochs")
    seed: int = option(0, "seed of the inputs and the initial network (hence of the labels)")
    linearized: bool = option(True, "also train the linearised model (its losses: lin_*)")
    per_decade: int = option(16, "measurements per decade of steps")
    threshold: float = option(0.1, "a loss crosses when it falls below threshold x its start")
    device: str = option("cpu", "torch device")
    dtype: str = option("float64", "float64 or float32")

    def resolved_alpha(self) -> float:
        """``alpha``, or ``sqrt(2P)`` when it is None (the paper's scale, see the module doc)."""
        return math.sqrt(2 * self.P) if self.alpha is None else float(self.alpha)


@dataclass
class EigenLabelsRunConfig(_EigenLabelsBase):
    """One run of Figure 5: the labels are the ``k``-th eigenvector (see
    :class:`EigenLabelsConfig` for the budget and the presets)."""

    k: int = option(70, "eigenvector index, 1-based, descending eigenvalues")

    @classmethod
    def paper(cls, **overrides: Any) -> EigenLabelsRunConfig:
        """The paper's protocol: ``alpha = 1``, unit-norm labels of ``K0 - mean(K0)``,
        ``lr = N / 2`` for 25k epochs."""
        return cls(**{**_PAPER, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> EigenLabelsRunConfig:
        """A seconds-long run: D=20, P=20, 100 steps at lr_scale 3."""
        return cls(**{**_SMOKE, "k": 1, **overrides})


@dataclass
class EigenLabelsConfig(_EigenLabelsBase):
    """The Figure 5 experiment: one run per ``k`` in ``ks``. Defaults: the paper's setting
    on a CPU budget.

    Full-batch GD on the centred MSE with ``lr = lr_scale * N / (2 alpha^2)`` for ``epochs``
    steps. At these learning rates GD follows gradient flow, so the curves depend on
    ``lr * epochs``: steps are reported as *lr-equivalent epochs* ``step * lr_scale`` (the
    paper's epochs at ``lr = N / 2`` with ``alpha = 1``). The default ``lr_scale=5`` for 5k
    steps covers the paper's 25k epochs (the stability edge is ``lr_scale`` ~ 40 here), on
    three of the paper's six ``k`` (aligned, the middle, misaligned); the labels are
    unit-variance with ``alpha = sqrt(2P)`` and from the double-centred kernel, the same
    dynamics as the paper's unit-norm labels at ``alpha = 1`` (module docstring).
    :meth:`paper` runs the paper's exact protocol.
    """

    ks: tuple[int, ...] = option((1, 70, 100), "eigenvector indices, 1-based (one run each)")

    @classmethod
    def paper(cls, **overrides: Any) -> EigenLabelsConfig:
        """The paper's protocol: ``k`` in {1, 5, 70, 75, 100, 150}, ``alpha = 1``, unit-norm
        labels of ``K0 - mean(K0)``, ``lr = N / 2`` for 25k epochs."""
        return cls(**{**_PAPER, "ks": (1, 5, 70, 75, 100, 150), **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> EigenLabelsConfig:
        """A seconds-long run: D=20, P=20, 100 steps at lr_scale 3, k in {1, 10, 30}."""
        return cls(**{**_SMOKE, "ks": (1, 10, 30), **overrides})


def _check_choices(cfg: _EigenLabelsBase) -> None:
    if cfg.normalize not in _NORMALIZE:
        raise ValueError(f"normalize: expected one of {_NORMALIZE}, got {cfg.normalize!r}")
    if cfg.centring not in _CENTRING:
        raise ValueError(f"centring: expected one of {_CENTRING}, got {cfg.centring!r}")


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


def make_setup(cfg: _EigenLabelsBase) -> tuple[EigenLabelsData, QuadraticNet]:
    """The seeded inputs (``2P`` points) and the initial network, on ``cfg.device``: the
    same for every ``k`` of a seed (so each run, in whichever process, rebuilds its labels)."""
    dtype = getattr(torch, cfg.dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(2 * cfg.P, cfg.D, generator=g, dtype=dtype) / math.sqrt(cfg.D)
    model = QuadraticNet(cfg.D, cfg.N, cfg.eps, generator=g, dtype=dtype)
    return EigenLabelsData(x.to(cfg.device), cfg.P), model.to(cfg.device)


def _check_stability(cfg: _EigenLabelsBase, model: nn.Module, x_train: Tensor) -> None:
    # Full-batch GD on the MSE is stable below lr * alpha^2 * 2 lambda_max(K0_train) / P < 2,
    # with lr = lr_scale * N / (2 alpha^2): lr_scale < 2P / (lambda_max N).
    import lazymeter as lm

    lam = lm.kernel_spectrum(lm.empirical_ntk(model, x_train), k=1)["eig_1"]
    max_scale = 2 * x_train.shape[0] / (lam * cfg.N)
    if cfg.lr_scale >= max_scale:
        raise ValueError(
            f"lr_scale: {cfg.lr_scale:g} puts gradient descent past its stability edge for this "
            f"D/P/N (lr_scale must stay below {max_scale:.3g}); lower lr_scale and raise epochs "
            "to keep lr * epochs"
        )


def build(cfg: EigenLabelsRunConfig) -> Setup:
    """The seeded inputs and initial network, the ``k``-th eigenvector labels of its NTK on
    all ``2P`` points (computed here, once per run), the meter's probes (all train and all
    test points) and full-batch GD on the centred MSE (network and linearisation)."""
    _check_choices(cfg)
    data, model = make_setup(cfg)
    n = data.x.shape[0]
    _check_k(cfg.k, n, cfg.centring)
    _check_stability(cfg, model, data.x_train)
    evals, evecs = centred_ntk_eigh(model, data.x, centring=cfg.centring)
    y = _label_vector(evecs, cfg.k, cfg.normalize).to(device=data.x.device, dtype=data.x.dtype)
    yy, yt = y[: data.P], y[data.P :]
    x, xt = data.x_train, data.x_test
    mse = lambda out, target: ((out - target) ** 2).mean()  # noqa: E731

    def loss(meter: Any, i: int) -> Tensor:
        # The network and its linearisation have disjoint parameters: one backward of the
        # sum gives each its own gradient (one optimiser, the same lr).
        total = mse(meter(x), yy)
        return total + mse(meter.linearized(x), yy) if cfg.linearized else total

    def measure(meter: Any) -> dict[str, float]:
        out = {"train_loss": mse(meter(x), yy).item(), "test_loss": mse(meter(xt), yt).item()}
        if cfg.linearized:
            out["lin_train_loss"] = mse(meter.linearized(x), yy).item()
            out["lin_test_loss"] = mse(meter.linearized(xt), yt).item()
        return out

    def optimizer(meter: Any) -> torch.optim.Optimizer:
        params = list(meter.parameters())
        if cfg.linearized:
            params += list(meter.linearized.parameters())
        return torch.optim.SGD(params, lr=meter.scaled_lr(cfg.lr_scale * cfg.N / 2))

    return Setup(
        model=model,
        meter=dict(
            alpha=cfg.resolved_alpha(),
            center=True,
            # all of them: a 100-point NTK of 200 parameters is cheap
            probe=lm.ProbeSet((x, yy), test=(xt, yt), max_points=max(3, data.P)),
            schedule=f"log:{cfg.per_decade}",
            quantities=lm.quantities.default(linearized=cfg.linearized),
        ),
        steps=cfg.epochs,
        loss=loss,
        measure=measure,
        optimizer=optimizer,
        step_unit=cfg.lr_scale,
        hparams=dict(k=cfg.k, eps=cfg.eps, D=cfg.D, P=cfg.P, N=cfg.N, lr_scale=cfg.lr_scale),
        desc=f"k={cfg.k}",
        data=dict(
            eigenvalue=float(evals[cfg.k - 1]),
            eigenvalues_top5=[float(v) for v in evals[:5]],
            label_rms_test=float(yt.pow(2).mean().sqrt()),
        ),
    )


def _max_or_nan(values: Sequence[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else math.nan


def laziness(hist: Sequence[Mapping[str, Any]], label_rms_test: float) -> dict[str, float]:
    """How far the run is from its linearisation, over the whole history (NaN if unmeasured).

    Returns:
        ``lin_test_gap``: ``max_t |test_loss - lin_test_loss|`` over the largest value of
        either curve (the network's and the linearised model's test losses);
        ``lin_output_gap``: ``max_t`` RMS distance of the two models' outputs on the test
        points / RMS of the test labels; ``kernel_change``: ``max_t 1 - cka(K_t, K_0)`` on
        the train points (0: the kernel keeps its shape); ``ntk_drift``:
        ``max_t ||K_t - K_0||_F / ||K_0||_F``; ``param_movement``:
        ``max_t ||W_t - W_0|| / ||W_0||``.
    """
    rows = [r for r in hist if r.get("lin_test_loss") is not None]
    # on the curves' own scale (their largest value): a test loss that rises 5x is not
    # judged against its start
    height = _max_or_nan([max(r["test_loss"], r["lin_test_loss"]) for r in rows])
    gaps = [abs(r["test_loss"] - r["lin_test_loss"]) / height for r in rows]
    return {
        "lin_test_gap": _max_or_nan(gaps),
        "lin_output_gap": _max_or_nan([r.get("lin_gap_test") for r in hist]) / label_rms_test,
        "kernel_change": _max_or_nan(
            [None if r.get("ntk_cka") is None else 1 - r["ntk_cka"] for r in hist]
        ),
        "ntk_drift": _max_or_nan([r.get("ntk_drift") for r in hist]),
        "param_movement": _max_or_nan([r.get("param_movement") for r in hist]),
    }


def summarize(cfg: EigenLabelsRunConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """Losses, the K0 baseline, the crossings at ``threshold`` and at one half of each
    loss's start, the alignments and the laziness evidence (:func:`laziness`)."""
    import lazymeter as lm

    hist = meter.history
    cols = {key: [r[key] for r in hist] for key in ("step", "train_loss", "test_loss")}
    grok = lm.time_to_grok(cols["step"], cols["train_loss"], cols["test_loss"], cfg.threshold)
    half = lm.time_to_grok(cols["step"], cols["train_loss"], cols["test_loss"], 0.5)
    first, last = hist[0], hist[-1]
    return {
        "k": cfg.k,
        "alpha": cfg.resolved_alpha(),
        "eigenvalue": setup.data["eigenvalue"],
        "eigenvalues_top5": setup.data["eigenvalues_top5"],
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "initial_train_loss": first["train_loss"],
        "initial_test_loss": first["test_loss"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_lin_test_loss": last.get("lin_test_loss"),
        "max_test_loss": max(cols["test_loss"]),
        # the first step where the test loss is above its start: a test loss that rises
        "test_rise_step": first_step_at_or_above(
            cols["step"], cols["test_loss"], first["test_loss"], strict=True
        ),
        "alignment0_train": first.get("alignment0_train"),
        "alignment0_test": first.get("alignment0_test"),
        "final_alignment_train": last.get("alignment_train"),
        "final_alignment_test": last.get("alignment_test"),
        "laziness": laziness(hist, setup.data["label_rms_test"]),
        "time_to_grok": grok.as_dict(),
        "time_to_half": half.as_dict(),
        "epochs_unit": _epochs_unit(cfg),
    }


def _epochs_unit(cfg: _EigenLabelsBase) -> str:
    return f"lr-equivalent epochs at the paper's lr = N/2 (lr_scale={cfg.lr_scale:g})"


def run_config(cfg: EigenLabelsConfig, k: int) -> EigenLabelsRunConfig:
    """The configuration of the run for eigenvector ``k`` of the experiment ``cfg``."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(_EigenLabelsBase)}
    return EigenLabelsRunConfig(**shared, k=int(k))


def runs(cfg: EigenLabelsConfig) -> list[SubRun]:
    """One run per ``k`` (``out/k<k>/``), all from the same seeded inputs and network."""
    _check_choices(cfg)
    if not cfg.ks:
        raise ValueError("ks: give at least one eigenvector index")
    for k in cfg.ks:
        _check_k(k, 2 * cfg.P, cfg.centring)
    if len(set(cfg.ks)) != len(cfg.ks):
        raise ValueError(f"ks: expected distinct indices, got {cfg.ks}")
    return [(f"k{k}", RUN, run_config(cfg, k)) for k in cfg.ks]


def combine(cfg: EigenLabelsConfig, subs: list[dict[str, Any]]) -> dict[str, Any]:
    """The experiment's numbers: per ``k`` the crossings (NaN: never, written as null),
    the final test loss relative to its start, and the laziness evidence at its worst over
    every run."""
    by_k = {}
    for s in subs:
        g, h = s["time_to_grok"], s["time_to_half"]
        by_k[str(s["k"])] = {
            "eigenvalue": s["eigenvalue"],
            "train_half": h["train_step"],
            "test_half": h["test_step"],
            "train_grok": g["train_step"],
            "test_grok": g["test_step"],
            "final_test_over_start": s["final_test_loss"] / s["initial_test_loss"],
            "final_test_over_k0": s["final_test_loss"] / s["k0_test_mse"]
            if s.get("k0_test_mse")
            else math.nan,
        }
    lazy = {key: _max_or_nan([s["laziness"][key] for s in subs]) for key in subs[0]["laziness"]}
    return {
        "alpha": cfg.resolved_alpha(),
        "eigenvalues_top5": subs[0]["eigenvalues_top5"],
        "by_k": by_k,
        "laziness_max": lazy,
        "epochs_unit": _epochs_unit(cfg),
    }


def _fmt(v: float | None, spec: str = "g", missing: str = "never") -> str:
    return missing if v is None or not math.isfinite(v) else format(v, spec)


def headline(summary: Mapping[str, Any]) -> str:
    """One line per ``k``: eigenvalue, initial alignments, crossings, test loss, laziness."""
    subs = summary["runs"] if "runs" in summary else [summary]
    thr = summary["config"]["threshold"]
    lines = [f"steps in {subs[0]['epochs_unit']}; crossings: loss <= {thr:g} (half) x its start"]
    for s in subs:
        g, h, lz = s["time_to_grok"], s["time_to_half"], s["laziness"]
        lines.append(
            f"k={s['k']:>3} (lambda_k={s['eigenvalue']:.3g}, alignment0 train/test "
            f"{_fmt(s['alignment0_train'], '.3f', '-')}/"
            f"{_fmt(s['alignment0_test'], '.3f', '-')}): train at "
            f"{_fmt(g['train_step'])} ({_fmt(h['train_step'])}), test at "
            f"{_fmt(g['test_step'])} ({_fmt(h['test_step'])}); test loss "
            f"{s['initial_test_loss']:.3g} -> {s['final_test_loss']:.3g} (max "
            f"{s['max_test_loss']:.3g}, K0 regression {_fmt(s['k0_test_mse'], '.3g', '-')})"
        )
        lines.append(
            f"      lazy: |test - linearised test| <= {_fmt(lz['lin_test_gap'], '.2g', '-')} "
            "x its height, "
            f"1-CKA(K_t, K0) <= {lz['kernel_change']:.2g}, NTK drift <= {lz['ntk_drift']:.2g}, "
            f"parameter movement <= {lz['param_movement']:.2g}"
        )
    return "\n".join(lines)


def plot(cfg: Any, summary: Mapping[str, Any], path: str) -> None:
    """Figure 5 (one column per ``k``): see :func:`plot_eigenlabels`."""
    plot_eigenlabels(summary, path)


def plot_eigenlabels(summary: Mapping[str, Any], path: str) -> None:
    """Figure 5: one column per ``k`` (the summary's ``runs``, or the run itself); top,
    train/test loss (log-log) with the linearised model and the K0-regression level;
    bottom, kernel-target alignment of ``K_t`` (train and test) with NTK drift, parameter
    movement and kernel change ``1 - CKA(K_t, K0)`` on a log twin axis. Shaded lines mark
    the steps where each loss falls below the threshold x its start, dotted lines half its
    start (train blue, test red)."""
    from matplotlib.figure import Figure

    runs = list(summary["runs"]) if "runs" in summary else [summary]
    fig = Figure(figsize=(4.6 * len(runs), 7.0))
    axes = fig.subplots(2, len(runs), squeeze=False, sharex=True)
    unit = "epochs (lr-equivalent)"
    for j, s in enumerate(runs):
        hist = s["history"]
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
        k0 = s.get("k0_test_mse")
        if k0 is not None and math.isfinite(k0):
            ax.axhline(k0, color="C3", ls=":", label="K0 regression (test)")
        for crossing, style in (
            (s["time_to_grok"], dict(alpha=0.25, lw=3)),
            (s["time_to_half"], dict(alpha=0.6, lw=1, ls=":")),
        ):
            for key, color in (("train_step", "C0"), ("test_step", "C3")):
                v = crossing.get(key)
                if v is not None and math.isfinite(v) and v > 0:
                    ax.axvline(v, color=color, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(
            f"k={s['k']}  (lambda_k={s['eigenvalue']:.3g}): "
            f"test/start {s['final_test_loss'] / s['initial_test_loss']:.2g}",
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
        change = [
            {"step": r["step"], "v": 1 - r["ntk_cka"]} for r in hist if r.get("ntk_cka") is not None
        ]
        for rows, key, color, label in (
            (hist, "ntk_drift", "C4", "NTK drift ||K-K0||/||K0||"),
            (hist, "param_movement", "C5", "||W-W0||/||W0||"),
            (change, "v", "C7", "1 - CKA(K, K0)"),
        ):
            xs, ys = series(rows, key)
            pos = [(a, b) for a, b in zip(xs, ys, strict=True) if b > 0]  # log axis
            if pos:
                twin.plot(*zip(*pos, strict=True), color=color, ls="-.", lw=1, label=label)
        twin.set_yscale("log")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    cfg = summary.get("config", {})
    fig.suptitle(
        f"NTK-eigenvector labels: D={cfg.get('D')}, P={cfg.get('P')}, N={cfg.get('N')}, "
        f"eps={cfg.get('eps')}, alpha={summary.get('alpha', float('nan')):.3g} "
        "(lazy throughout: network = its linearisation)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


RUN = Task(
    name="eigenlabels_run",
    description="Figure 5, one k: labels = k-th eigenvector of the initial NTK, noise inputs",
    config=EigenLabelsRunConfig,
    build=build,
    summarize=summarize,
    plot=plot,
    headline=headline,
)

TASK = Task(
    name="eigenlabels",
    description="Figure 5: labels = k-th eigenvector of the initial NTK, one run per k (lazy "
    "throughout: the delays come from the initial kernel's spectrum)",
    config=EigenLabelsConfig,
    runs=runs,
    combine=combine,
    plot=plot,
    headline=headline,
)


def train(
    cfg: EigenLabelsConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """:func:`paper.harness.run` of this task: the summary, with ``runs`` (one
    summary per ``k``, in the order of ``cfg.ks``, each with its ``history``: ``step`` in
    lr-equivalent epochs, ``train_loss``, ``test_loss``, ``lin_*_loss``, ``lin_gap_*``,
    ``alignment_train``/``alignment_test`` of ``K_t`` with the labels, ``ntk_drift``,
    ``ntk_cka``, ``param_movement``, ...)."""
    return run(TASK, cfg, out_dir, progress=progress, figure=figure, workers=workers)
