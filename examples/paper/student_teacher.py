"""Student-teacher regression: the paper's student-teacher section (after Omnigrok).

A fixed random *teacher* network labels Gaussian inputs, ``y = teacher(x)``, and a student of
the same form, started from a *large* initialisation (every weight and bias times
``init_scale``), learns it with AdamW and weight decay: the setting in which Liu et al.
(Omnigrok, 2023) reported grokking of a regression task through an "accuracy" = fraction of
samples whose squared error is below a threshold ``tau``. The paper's point: that accuracy is
a threshold read off the loss, so *when* it jumps depends on ``tau``, while the train/test
loss curves (no threshold) are the reliable signal; and the paper's output scale ``alpha``
(uncentred here, as in the authors' notebook) works on this task too.

Model (:class:`MLP`): ``f(x) = L_k(act(... act(L_1 x)))``, linear layers ``L_i`` with biases,
``act = tanh`` (the paper: ``5 -> 100 -> 100 -> 5``), PyTorch's default ``nn.Linear``
initialisation (weights and biases uniform in ``+-1/sqrt(fan_in)``) times ``init_scale``;
output ``[B, d_out]``. The squared error of a sample is the mean over its ``d_out`` outputs.
The init-scale-vs-alpha appendix (:mod:`paper.init_scale`) uses the same
:class:`MLP` for its homogeneous ReLU sanity check (no biases, LeCun-normal init).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import lazymeter as lm

from .harness import Setup, Task, option
from .results import first_step_at_or_above, is_finite, reached

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class MLP(nn.Module):
    """``f(x) = L_k(act(... act(L_1 x)))``; output ``[B, d_out]`` (``[B]`` when
    ``squeeze`` and ``d_out == 1``).

    Args:
        d_in, hidden, d_out: input width, hidden widths (one ``nn.Linear`` + activation each),
            output width.
        activation: ``"tanh"`` or ``"relu"`` (with ``bias=False`` and one hidden layer the
            net is positively homogeneous of degree 2: ``f(c theta) = c^2 f(theta)``).
        bias: biases in every layer.
        init: ``"uniform"`` = PyTorch's ``nn.Linear`` default (weights and biases
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, the Omnigrok/paper student and teacher);
            ``"normal"`` = LeCun normal (weights ``N(0, 1/fan_in)``, biases 0).
        init_scale: multiplies every initial weight and bias. With the same ``generator``
            state the draws are the same for every ``init_scale``, only multiplied by it.
    """

    def __init__(
        self,
        d_in: int,
        hidden: Sequence[int],
        d_out: int,
        *,
        activation: str = "tanh",
        bias: bool = True,
        init: str = "uniform",
        init_scale: float = 1.0,
        squeeze: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if init not in ("uniform", "normal"):
            raise ValueError(f"init: expected 'uniform' or 'normal', got {init!r}")
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale: expected a positive number, got {init_scale}")
        self.activation = activation
        self.act = _ACTIVATIONS[activation]
        self.squeeze = squeeze and d_out == 1
        widths = [d_in, *hidden, d_out]
        # nn.Linear layers (not raw Parameters) so that per-layer NTK rules apply.
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype, device=device)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        with torch.no_grad():
            for layer in self.layers:
                fan_in = layer.in_features
                if init == "uniform":
                    bound = init_scale / fan_in**0.5
                    u = lambda *shape: 2 * torch.rand(*shape, generator=generator, dtype=dtype) - 1  # noqa: E731
                    layer.weight.copy_(bound * u(*layer.weight.shape))
                    if bias:
                        layer.bias.copy_(bound * u(*layer.bias.shape))
                else:
                    w = torch.randn(*layer.weight.shape, generator=generator, dtype=dtype)
                    layer.weight.copy_(w * (init_scale / fan_in**0.5))
                    if bias:
                        layer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        out = self.layers[-1](x)
        return out.squeeze(-1) if self.squeeze else out


@dataclass
class TeacherData:
    """Train and test inputs ``x ~ N(0, I_D)`` and the teacher's targets ``[P, d_out]``."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    teacher: MLP
    scale: float  # the teacher's outputs were divided by this (1 when not normalised)


def make_teacher_data(
    teacher: MLP,
    P: int,
    P_test: int,
    *,
    normalize: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> TeacherData:
    """``P`` train and ``P_test`` test points of ``y = teacher(x) / s``, ``x ~ N(0, I_D)``.

    ``s = 1``, or with ``normalize`` the std of the teacher's outputs over all ``P + P_test``
    inputs (targets of variance ~1).
    """
    d_in = teacher.layers[0].in_features
    dtype = teacher.layers[0].weight.dtype
    x = torch.randn(P, d_in, generator=generator, dtype=dtype)
    xt = torch.randn(P_test, d_in, generator=generator, dtype=dtype)
    with torch.no_grad():
        y, yt = teacher(x), teacher(xt)
    s = float(torch.cat([y, yt]).std()) if normalize else 1.0
    to = lambda t: t.to(device)  # noqa: E731
    return TeacherData(to(x), to(y / s), to(xt), to(yt / s), teacher.to(device), s)


# --------------------------------------------------------------------------- accuracy
def sample_errors(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error per sample ``[P]``: ``(pred - target)^2`` averaged over all but the
    first dimension (the notebook's ``mean((out - y)^2, dim=1)``), in float64."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred, target: expected equal shapes, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    err = (pred.detach() - target.detach()).double() ** 2
    return err.reshape(err.shape[0], -1).mean(1) if err.dim() > 1 else err


def threshold_accuracy(
    pred: Tensor, target: Tensor, thresholds: Iterable[float], scale: float = 1.0
) -> list[float]:
    """Fraction of samples whose squared error (:func:`sample_errors`) is ``< tau * scale``.

    The "accuracy" of a regression task used in grokking studies (Liu et al. 2023): a sample
    counts as correct when its error is below a threshold; ``scale`` = 1 (absolute thresholds,
    the paper) or the target variance (relative ones). ``pred``, ``target``: ``[P]`` or
    ``[P, d_out]``. Returns one float in ``[0, 1]`` per threshold.
    """
    err = sample_errors(pred, target)
    return [float((err < tau * scale).double().mean()) for tau in thresholds]


def acc_key(split: str, tau: float) -> str:
    """History column of the accuracy at threshold ``tau``: e.g. ``tau0.01_test_acc``."""
    return f"tau{tau:g}_{split}_acc"


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).mean()


# --------------------------------------------------------------------------- the task
@dataclass
class StudentTeacherConfig:
    """Accuracy misleads, loss does not: a large-init student with AdamW and weight decay.

    ``paper()`` is the authors' notebook (after Omnigrok's code): teacher and student
    ``tanh 5 -> 100 -> 100 -> 5`` with biases and PyTorch's default init, the student's
    weights and biases times 2; ``x ~ N(0, I_5)``, 100 train and 100 test points, unnormalised
    targets; full-batch AdamW, lr 3e-4, weight decay 0.05, 100k steps, no output rescaling
    (``alpha = 1``, uncentred); accuracy = fraction of samples with squared error (mean over
    the 5 outputs) below an absolute ``tau`` in {1e-4, 5e-4, 5e-3, 0.01, 0.1}.

    The CPU default keeps all of that but runs 10k steps at 10x the learning rate (3e-3): the
    same ``lr x steps`` as the paper, so the same decoupled weight decay (per step the
    weights shrink by ``lr * wd``), at a tenth of the steps; and it measures on 1000 test
    points instead of 100 (accuracies in steps of 0.1% instead of 1%; the same teacher). A
    "grokking step" is the first measured step at which an accuracy reaches ``level``.
    """

    d_in: int = option(5, "input dimension")
    hidden: tuple[int, ...] = option((100, 100), "hidden widths of the student")
    teacher_hidden: tuple[int, ...] = option((100, 100), "hidden widths of the teacher")
    d_out: int = option(5, "output dimension")
    activation: str = option("tanh", "tanh or relu (student and teacher)")
    bias: bool = option(True, "biases in every layer")
    init: str = option("uniform", "uniform (PyTorch's nn.Linear default) or normal (LeCun)")
    P: int = option(100, "training points")
    P_test: int = option(1000, "test points")
    normalize: bool = option(False, "divide the targets by the teacher's output std")
    init_scale: float = option(2.0, "student init scale: every initial weight and bias times it")
    alpha: float = option(1.0, "output scale of the student (uncentred: f -> alpha f)")
    lr: float = option(3e-3, "AdamW learning rate (not scaled with alpha, as in the notebook)")
    weight_decay: float = option(0.05, "AdamW (decoupled) weight decay")
    steps: int = option(10_000, "full-batch AdamW steps")
    thresholds: tuple[float, ...] = option(
        (1e-4, 5e-4, 5e-3, 1e-2, 1e-1), "accuracy thresholds tau on a sample's squared error"
    )
    relative: bool = option(False, "thresholds relative to the test-target variance")
    level: float = option(0.5, "accuracy at which a split counts as learned (grokking step)")
    per_decade: int = option(24, "measurements per decade of steps")
    max_probe: int = option(64, "points of the meter's train/test probes")
    seed: int = option(0, "seed of teacher and data (the student's init: seed + 1)")
    device: str = option("cpu", "torch device")
    dtype: str = option("float32", "float32 or float64")

    @classmethod
    def paper(cls, **overrides: Any) -> StudentTeacherConfig:
        """The authors' notebook: lr 3e-4 for 100k steps, 100 test points."""
        return cls(**{"lr": 3e-4, "steps": 100_000, "P_test": 100, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> StudentTeacherConfig:
        """A seconds-long run: 5 -> 32 -> 32 -> 5 (teacher the same), 400 steps at lr 2e-2."""
        small = dict(
            hidden=(32, 32), teacher_hidden=(32, 32), P_test=200, lr=2e-2, steps=400,
            per_decade=8, max_probe=16,
        )  # fmt: skip
        return cls(**{**small, **overrides})


def build(cfg: StudentTeacherConfig) -> Setup:
    """Teacher, data and large-init student; the accuracies at every measurement."""
    if not 0 < cfg.level <= 1:
        raise ValueError(f"level: expected an accuracy in (0, 1], got {cfg.level}")
    dtype = getattr(torch, cfg.dtype)
    arch = dict(activation=cfg.activation, bias=cfg.bias, init=cfg.init, dtype=dtype)
    g = torch.Generator().manual_seed(cfg.seed)
    teacher = MLP(cfg.d_in, cfg.teacher_hidden, cfg.d_out, generator=g, **arch)
    data = make_teacher_data(
        teacher, cfg.P, cfg.P_test, normalize=cfg.normalize, generator=g, device=cfg.device
    )
    # Its own generator: the student's init does not change with the data sizes.
    student = MLP(
        cfg.d_in,
        cfg.hidden,
        cfg.d_out,
        init_scale=cfg.init_scale,
        generator=torch.Generator().manual_seed(cfg.seed + 1),
        **arch,
    ).to(cfg.device)
    var = float(data.y_test.var())
    scale = var if cfg.relative else 1.0

    def loss(meter: Any, i: int) -> Tensor:
        return _mse(meter(data.x), data.y)

    def measure(meter: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for split, x, y in (("train", data.x, data.y), ("test", data.x_test, data.y_test)):
            pred = meter(x)
            out[f"{split}_loss"] = _mse(pred, y).item()
            accs = threshold_accuracy(pred, y, cfg.thresholds, scale)
            out.update({acc_key(split, t): a for t, a in zip(cfg.thresholds, accs, strict=True)})
        return out

    def optimizer(meter: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            meter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True
        )

    return Setup(
        model=student,
        meter=dict(
            alpha=cfg.alpha,
            center=False,  # the plain network, large random initial function included
            probe=lm.ProbeSet(
                (data.x, data.y), test=(data.x_test, data.y_test), max_points=cfg.max_probe
            ),
            schedule=f"log:{cfg.per_decade}",
        ),
        steps=cfg.steps,
        loss=loss,
        measure=measure,
        optimizer=optimizer,
        hparams=dict(
            init_scale=cfg.init_scale,
            alpha=cfg.alpha,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            P=cfg.P,
            seed=cfg.seed,
        ),
        desc=f"student init x{cfg.init_scale:g} alpha={cfg.alpha:g}",
        data={"target_var": var, "threshold_scale": scale},
    )


def summarize(cfg: StudentTeacherConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """Per threshold: the first steps at which train and test accuracy reach ``level``, their
    ratio (the apparent grokking delay) and the test loss there over ``tau * scale``; the
    spread of the test steps over the thresholds; losses, weight norm and the lazy/rich
    diagnostics (when the test loss beats the K0 regression, when the alignment rises)."""
    import lazymeter as lm

    hist = meter.history
    var, scale = setup.data["target_var"], setup.data["threshold_scale"]
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
                "test_loss_over_threshold": at / (tau * scale),
                "final_test_acc": hist[-1][acc_key("test", tau)],
            }
        )
    te_steps = [c["test_step"] for c in crossings if math.isfinite(c["test_step"])]
    first, last = hist[0], hist[-1]
    # Loss-based crossings (no accuracy threshold): each loss below 1e-2 x its start.
    grok = lm.time_to_grok(
        steps, [r["train_loss"] for r in hist], [r["test_loss"] for r in hist], threshold=1e-2
    )
    k0 = meter.baseline.get("k0_test_mse", math.nan)
    aligns = [r.get("alignment_test", math.nan) for r in hist]
    rises = (
        r["step"]
        for r in hist
        if r.get("alignment_rise_test", math.nan) > 2 * r.get("alignment_rise_test_se", math.inf)
    )
    return {
        "target_var": var,
        "threshold_scale": scale,
        "level": cfg.level,
        "crossings": crossings,
        "test_step_spread": max(te_steps) / min(te_steps) if len(te_steps) > 1 else math.nan,
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "initial_train_loss": first["train_loss"],
        "initial_test_loss": first["test_loss"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "min_test_loss": min(r["test_loss"] for r in hist),
        "loss_time_to_grok": grok.as_dict(),
        "initial_weight_norm": first["weight_norm"],
        "final_weight_norm": last["weight_norm"],
        "final_param_movement": last["param_movement"],
        "final_ntk_drift": last["ntk_drift"],
        "alignment0_test": first.get("alignment0_test", math.nan),
        "final_alignment_test": last.get("alignment_test"),
        "max_alignment_test": max((a for a in aligns if math.isfinite(a)), default=math.nan),
        "test_below_k0_step": next((r["step"] for r in hist if r["test_loss"] <= k0), math.nan),
        # the (unbiased) alignment's rise over its initial value beyond two paired SEs
        "alignment_rise_step": next(rises, math.nan),
    }


def headline(summary: Mapping[str, Any]) -> str:
    """One line per threshold, then what the loss and the diagnostics say."""
    level = summary["level"]
    lines = [f"test accuracy reaches {level:g} (train in brackets) at step:"]
    for c in summary["crossings"]:
        lines.append(
            f"  tau={c['threshold']:<7g} test {reached(c['test_step'], ',.0f'):>11}  (train "
            f"{reached(c['train_step'], ',.0f')}, apparent delay "
            f"{reached(c['delay_ratio'], '.2f', 'x')}); test loss there "
            f"= {reached(c['test_loss_over_threshold'], '.2f', ' x tau', missing='-')}"
        )
    spread = summary["test_step_spread"]
    moves = (
        f"moves {spread:.1f}x with the threshold"
        if is_finite(spread)
        else "is not reached at two thresholds: no spread"
    )
    lines.append(
        f"the 'grokking step' {moves}; "
        f"test loss {summary['initial_test_loss']:.3g} -> {summary['final_test_loss']:.3g} "
        f"(K0 regression {summary['k0_test_mse']:.3g}), weight norm "
        f"{summary['initial_weight_norm']:.3g} -> {summary['final_weight_norm']:.3g}"
    )
    lines.append(
        f"lazy -> rich: test loss below K0 regression: "
        f"{reached(summary['test_below_k0_step'], ',.0f', prefix='from step ')}; test alignment "
        f"{summary['alignment0_test']:.3f} -> max {summary['max_alignment_test']:.3f}, rising "
        "(beyond 2 standard errors): "
        f"{reached(summary['alignment_rise_step'], ',.0f', prefix='from step ')}"
    )
    return "\n".join(lines)


def _col(hist: Sequence[Mapping[str, Any]], key: str, norm: float = 1.0):
    pts = [
        (r["step"], r[key] / norm)
        for r in hist
        if r["step"] > 0 and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def plot(cfg: StudentTeacherConfig, summary: Mapping[str, Any], path: str) -> None:
    """Left: train/test loss (log-log) with each threshold ``tau * scale`` as a dotted line;
    middle: train (dashed) and test (solid) accuracy per threshold, each test crossing of
    ``level`` marked with its step; right: the meter's lazy/rich diagnostics."""
    from matplotlib.figure import Figure

    hist = summary["history"]
    scale, level = summary["threshold_scale"], summary["level"]
    fig = Figure(figsize=(16, 4.4))
    ax, ax2, ax3 = fig.subplots(1, 3)
    ax.plot(*_col(hist, "train_loss"), color="C0", label="train loss")
    ax.plot(*_col(hist, "test_loss"), color="C3", label="test loss")
    k0 = summary.get("k0_test_mse")
    if k0 is not None and math.isfinite(k0):
        ax.axhline(k0, color="gray", ls=":", label="K0 regression (test)")
    for i, c in enumerate(summary["crossings"]):
        color = f"C{(i + 4) % 10}"
        ax.axhline(c["threshold"] * scale, color=color, ls=(0, (2, 2)), lw=1)
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
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE")
    ax.set_title(f"losses: no threshold (dotted: tau), init x{cfg.init_scale:g}")
    ax.legend(fontsize=8, loc="lower left")
    ax2.axhline(level, color="k", lw=0.8, ls=":")
    ax2.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step")
    ax2.set_ylabel("accuracy: frac. with squared error < tau")
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


TASK = Task(
    name="student_teacher",
    description="student-teacher (tanh 5-100-100-5, Omnigrok): accuracy thresholds mislead",
    config=StudentTeacherConfig,
    build=build,
    summarize=summarize,
    plot=plot,
    headline=headline,
)
