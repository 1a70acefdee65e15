"""Probe sets: what a meter measures on (:class:`ProbeSet`), prepared, sized, shared and
checked in one place (:func:`prepare_probes`, :func:`check_against_model`); the seeded
subsets; regression targets."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .distributed import Dist, share_probes
from .metrics import alignment_estimate
from .validation import int_at_least

Probe = tuple[Tensor, Tensor]

#: A meter reads at most this many points of each probe (more when a quantity's
#: ``probe_points`` asks for more) and draws its measurement subset from them, so which
#: points are measured does not depend on which quantities are.
POOL = 2048

logger = logging.getLogger("lazymeter")


def _tensor(v: Any, dtype: torch.dtype | None) -> Any:
    """A numpy array (or anything ``numpy.asarray`` takes, not a tensor) as a tensor;
    floating arrays in ``dtype`` (the model's), so ``x`` fits the model as it is."""
    if isinstance(v, Tensor) or not hasattr(v, "__array__"):
        return v
    import numpy as np

    t = torch.from_numpy(np.ascontiguousarray(np.asarray(v)))
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def collect(probe: Any, name: str, limit: int, dtype: torch.dtype | None = None) -> Any:
    """``(x, y)`` from what users have at hand: a pair of tensors or numpy arrays, a
    ``DataLoader`` over an ``(x, y)`` dataset (its first ``limit`` items, read from the
    dataset by index: deterministic, no shuffling, no RNG drawn, the user's iterators
    untouched), or a re-iterable of ``(x, y)`` batches (a list; batches are taken until
    ``limit`` points). A one-shot iterator is refused: reading it would consume it."""
    if probe is None:
        return None
    from torch.utils.data import DataLoader

    if isinstance(probe, DataLoader):
        data = probe.dataset
        try:
            n = min(len(data), limit)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{name}: the DataLoader's dataset has no length (an IterableDataset); pass "
                "(x, y) tensors or a list of (x, y) batches"
            ) from None
        batch = probe.collate_fn([data[i] for i in range(n)])
        return _pair(batch, name, dtype)
    if isinstance(probe, (tuple, list)) and len(probe) == 2 and not _is_batch(probe[0]):
        return tuple(_tensor(v, dtype) for v in probe)
    if isinstance(probe, (tuple, list)) and probe and all(_is_batch(b) for b in probe):
        xs, ys, seen = [], [], 0
        for b in probe:
            x, y = _pair(b, name, dtype)
            xs.append(x[: limit - seen])
            ys.append(y[: limit - seen])
            seen += len(xs[-1])
            if seen >= limit:
                break
        return torch.cat(xs), torch.cat(ys)
    if hasattr(probe, "__next__"):
        raise TypeError(
            f"{name}: got a one-shot iterator, which reading would consume; pass the "
            "DataLoader itself, a list of (x, y) batches, or (x, y) tensors"
        )
    return probe  # as_probe says what is wrong with it


def _is_batch(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and len(v) == 2


def _pair(batch: Any, name: str, dtype: torch.dtype | None) -> tuple[Any, Any]:
    if not _is_batch(batch):
        raise TypeError(
            f"{name}: expected batches of (x, y), got {type(batch).__name__}; a dataset of "
            "dicts needs converting to (x, y) first"
        )
    return _tensor(batch[0], dtype), _tensor(batch[1], dtype)


def as_probe(
    probe: Any, name: str, device: torch.device, dtype: torch.dtype | None = None
) -> Probe | None:
    """Validate an ``(x, y)`` probe (None passes through) and put it on ``device``.

    Errors name the argument: not a pair of tensors, different lengths, fewer than 3
    points (centring degenerates), the meta device, NaN/Inf values. A probe on another
    device than the model is moved once, and a floating ``x`` of another floating dtype
    than ``dtype`` (the model's) cast once, each with a note in the ``lazymeter`` logger;
    integer inputs (token ids) and the labels are left as they are.
    """
    if probe is None:
        return None
    if not isinstance(probe, (tuple, list)) or len(probe) != 2:
        raise TypeError(f"{name}: expected a pair (x, y) of tensors, got {type(probe).__name__}")
    x, y = probe
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name}: expected (x, y) as torch.Tensors")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: x and y must have the same number of samples in dimension 0; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[0] < 3:
        raise ValueError(
            f"{name}: needs at least 3 samples (got {x.shape[0]}): centring leaves a 1x1 kernel "
            "zero and a 2x2 one rank 1, so every kernel comparison would be undefined or +-1"
        )
    if x.device.type == "meta" or y.device.type == "meta":
        raise ValueError(f"{name}: is on the meta device, which holds no values; pass real tensors")
    for t, part in ((x, "x"), (y, "y")):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: {part} contains NaN or Inf")
    if x.device != device or y.device != device:
        # Moved once here (not at every measurement); said in the log, as it costs memory.
        logger.warning(
            "lazymeter: %s is on %s but the model is on %s; moved it there once (pass it on "
            "the model's device to skip the copy)",
            name,
            x.device,
            device,
        )
        x, y = x.to(device), y.to(device)
    if dtype is not None and dtype.is_floating_point and x.is_floating_point() and x.dtype != dtype:
        # Cast once here, like the move: the model cannot multiply its weights with another
        # dtype ("mat1 and mat2 must have the same dtype"), and measurements run in its own.
        logger.warning(
            "lazymeter: %s: x is %s but the model's parameters are %s; cast it once (pass "
            "it in the model's dtype to skip the copy)",
            name,
            x.dtype,
            dtype,
        )
        x = x.to(dtype)
    return x, y


def subsample(probe: Probe, k: int, seed: int) -> Probe:
    """At most ``k`` samples, a fixed (seeded) random subset in original order."""
    x, y = probe
    if x.shape[0] <= k:
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:k].sort().values.to(x.device)
    return x[idx], y[idx]


def targets(y: Tensor, num_classes: int | None = None) -> Tensor:
    """Regression targets ``[P, C]`` in float64: integer class labels become one-hot."""
    if not y.is_floating_point():
        C = num_classes or int(y.max()) + 1
        return torch.nn.functional.one_hot(y.long().reshape(-1), C).to(torch.float64)
    y = y.to(torch.float64)
    return y.reshape(y.shape[0], -1)


@dataclass(frozen=True)
class ProbeSize:
    """Let the meter choose its probe size (``ProbeSet(..., max_points=ProbeSize(...))``), once,
    at construction, from a pilot measurement on ``pilot`` points of the train probe.

    The unbiased alignment's standard error falls as ``1/sqrt(P)`` (the leading term of a
    U-statistic's variance) and a kernel costs between ``P`` and ``P^2`` (``P^2`` assumed);
    so from the pilot's error ``se_pilot`` and kernel time ``t_pilot``:

    * ``target_se``: ``P = pilot * (se_pilot / target_se)^2``;
    * ``budget_s`` (seconds per train-probe kernel): ``P = pilot * sqrt(budget_s / t_pilot)``;

    the smaller of those given, within ``[pilot, max_points]`` and the points available. The
    pilot error is that of the initial kernel; as features align it usually grows, so aim
    a little low. The choice and its reason are in ``meter.probe_choice`` and the run's
    metadata.
    """

    target_se: float | None = 0.02
    budget_s: float | None = None
    pilot: int = 64
    max_points: int = 2048

    def __post_init__(self) -> None:
        if self.target_se is None and self.budget_s is None:
            raise ValueError("ProbeSize: give target_se, budget_s or both")
        for name in ("target_se", "budget_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name}: expected a positive number or None, got {v!r}")
        if not (isinstance(self.pilot, int) and 5 <= self.pilot <= self.max_points):
            raise ValueError(
                f"pilot: expected an int in [5, max_points={self.max_points}], got {self.pilot!r}"
            )

    def choose(self, se_pilot: float, seconds_pilot: float, available: int) -> tuple[int, str]:
        """``(P, why)`` from the pilot's standard error and kernel time (pure)."""
        wanted: list[tuple[float, str]] = []
        if self.target_se is not None and math.isfinite(se_pilot):
            n = self.pilot * (se_pilot / self.target_se) ** 2
            wanted.append((n, f"standard error {self.target_se:g} (pilot: {se_pilot:.3g})"))
        if self.budget_s is not None:
            n = self.pilot * math.sqrt(self.budget_s / max(seconds_pilot, 1e-9))
            wanted.append((n, f"{self.budget_s:g} s per kernel (pilot: {seconds_pilot:.3g} s)"))
        if not wanted:
            return self.pilot, "the pilot's error is undefined; kept the pilot size"
        n, why = min(wanted)
        cap = min(self.max_points, available)
        P = int(min(max(math.ceil(n), self.pilot), cap))
        if P == cap and n > cap:
            why += f"; capped at {cap} points (asked for {math.ceil(n)})"
        return P, why


def prepare(
    probe: Any,
    test_probe: Any,
    device: torch.device,
    max_probe: int,
    seed: int,
    limit: int = 2048,
    dtype: torch.dtype | None = None,
) -> tuple[Probe | None, Probe | None, Probe | None, Probe | None, int | None]:
    """``(probe, test, full, full_test, num_classes)``: validated probes (from tensors,
    numpy arrays, a DataLoader or a list of batches: :func:`collect`, at most ``limit``
    points), their measurement
    subsets (at most ``max_probe`` seeded points; the test subset with ``seed + 1``), the
    whole probes, and the class count for integer labels (None for regression targets).
    Labels with zero variance are a ``ValueError`` (alignment is undefined)."""
    full = as_probe(collect(probe, "probe", limit, dtype), "probe", device, dtype)
    test = collect(test_probe, "test_probe", limit, dtype)
    full_test = as_probe(test, "test_probe", device, dtype)
    if full_test is not None and full is None:
        raise ValueError("test_probe: needs a training probe too (pass probe=(x, y))")
    if full is None:
        return None, None, None, None, None
    sub = subsample(full, max_probe, seed)
    sub_test = None if full_test is None else subsample(full_test, max_probe, seed + 1)
    num_classes = None
    if not full[1].is_floating_point():
        ys = [full[1]] + ([full_test[1]] if full_test is not None else [])
        num_classes = int(max(int(t.max()) for t in ys)) + 1
    return sub, sub_test, full, full_test, num_classes


def check_label_variance(probes: dict[str, Probe | None], num_classes: int | None) -> None:
    """A ``ValueError`` naming the probe whose labels are all equal."""
    for name, p in probes.items():
        if p is None:
            continue
        if not p[1].is_floating_point() and int(p[1].min()) < 0:
            raise ValueError(
                f"{name}: the class labels y must be >= 0 (integer labels are classes); the "
                f"smallest is {int(p[1].min())}"
            )
        t = targets(p[1], num_classes)
        if bool((t == t[:1]).all()):
            raise ValueError(
                f"{name}: the labels y have zero variance over the {len(t)} probe "
                "points, so kernel-target alignment is undefined; use a probe whose "
                "labels differ (for classes, several classes)"
            )


class ProbeSet:
    """The points a meter measures on: ``LazyMeter(..., probe=ProbeSet((x, y), test=...))``.

    Args:
        train: ``(x, y)`` training points: tensors or numpy arrays, a ``DataLoader``, or a
            list of ``(x, y)`` batches (the first points are read without touching the
            user's iterators or RNG; :func:`collect`). ``y``: integer class labels
            (one-hot targets) or regression targets ``[P]`` / ``[P, C]``.
        test: held-out points, in the same forms (the lazy baseline's test loss and the
            test-probe kernels need them).
        max_points: kernels use at most this many points of each probe (a fixed seeded
            subset; a measurement costs ``O(max_points^2 * n_params)``), or a
            :class:`ProbeSize` that chooses it from a target standard error or a time budget
            (``meter.probe_choice`` says what it chose and why).
        seed: of that subset (the test subset uses ``seed + 1``).

    A plain ``probe=(x, y)`` is ``ProbeSet((x, y))``.
    """

    def __init__(
        self,
        train: Any,
        test: Any = None,
        *,
        max_points: int | ProbeSize = 64,
        seed: int = 0,
    ) -> None:
        if train is None and test is not None:
            raise ValueError(
                "test_probe: test points need training points too (pass probe=(x, y), or "
                "ProbeSet((x, y), test=...))"
            )
        if not isinstance(max_points, ProbeSize):
            int_at_least(max_points, "max_points", 3)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {seed!r}")
        self.train, self.test, self.max_points, self.seed = train, test, max_points, seed

    @classmethod
    def of(cls, probe: Any) -> ProbeSet | None:
        """``probe=`` as a :class:`ProbeSet` (a plain ``(x, y)`` becomes its train points)."""
        return probe if probe is None or isinstance(probe, ProbeSet) else cls(probe)

    def map(self, fn: Callable[[Any], Any]) -> ProbeSet:
        """The same set with ``fn`` applied to its train and (when present) test points:
        ``max_points`` and ``seed`` kept (e.g. an integration moving them to a device)."""
        test = None if self.test is None else fn(self.test)
        return ProbeSet(fn(self.train), test=test, max_points=self.max_points, seed=self.seed)

    def __repr__(self) -> str:
        test = "None" if self.test is None else "..."
        return f"ProbeSet(train=..., test={test}, max_points={self.max_points!r}, seed={self.seed})"


@dataclass
class PreparedProbes:
    """A meter's probes, ready to measure on (:func:`prepare_probes`).

    ``train``/``test``: the measurement subsets (at most ``max_points`` each; ``test`` None
    without test points); ``full``: ``{"train": ..., "test": ...}`` the whole probes (up to
    what setup reads: :meth:`Quantity.probe_points`), where this process runs setup;
    ``num_classes``: for integer labels (else None); ``choice``: what a
    :class:`ProbeSize` chose and why (else None)."""

    train: Probe | None = None
    test: Probe | None = None
    full: dict[str, Probe | None] = field(default_factory=dict)
    num_classes: int | None = None
    choice: dict[str, Any] | None = None


def prepare_probes(
    probes: ProbeSet | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    keep: int,
    need: tuple[int, str] = (3, ""),
    pilot: Callable[[Tensor], tuple[Tensor, float]] | None = None,
    dist: Dist | None = None,
    check: Callable[[dict[str, Probe | None]], None] | None = None,
) -> PreparedProbes:
    """Prepare, size, share and check a meter's probes, in that order, before anything is
    measured.

    1. Read and validate the points (:func:`collect`, :func:`as_probe`): at most ``keep``
       of each probe (the most any quantity reads at setup) on ``device``, floating arrays
       and floating ``x`` in ``dtype``.
    2. Size: ``probes.max_points``, or what a :class:`ProbeSize` chooses from ``pilot(x)``
       (``(K, seconds)``: the kernel of ``x`` and how long it took).
    3. Share (``dist``): rank 0's points on every rank
       (:func:`lazymeter.distributed.share_probes`).
    4. Check: each probe has ``need[0]`` points (what quantity ``need[1]`` needs for a
       value), labels that vary, and fits the model (``check({"probe": ...,
       "test_probe": ...})``, the meter's :func:`check_against_model`; also on the pilot's
       points, before its kernel).
    """
    if probes is None:
        return PreparedProbes()
    choice = None
    max_points = probes.max_points
    if isinstance(max_points, ProbeSize):
        max_points, choice = _choose_size(
            probes, max_points, device, dtype, keep, pilot, dist, check
        )
    limit = max(max_points, keep)
    train, test, full, full_test, num_classes = prepare(
        probes.train, probes.test, device, max_points, probes.seed, limit, dtype
    )
    if dist is not None:  # rank 0's data everywhere (a rank's own: other metrics)
        cut = lambda p, i: subsample(p, keep, probes.seed + i)  # noqa: E731
        shared = share_probes(dist, (train, test, num_classes), (full, full_test), cut)
        train, test, num_classes, full, full_test = shared
    named = {"probe": train, "test_probe": test}
    check_sizes(named, *need)
    check_label_variance(named, num_classes)
    if check is not None:
        check(named)
    return PreparedProbes(train, test, {"train": full, "test": full_test}, num_classes, choice)


def _choose_size(
    probes: ProbeSet,
    spec: ProbeSize,
    device: torch.device,
    dtype: torch.dtype,
    keep: int,
    pilot: Callable[[Tensor], tuple[Tensor, float]] | None,
    dist: Dist | None,
    check: Callable[[dict[str, Probe | None]], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The probe size a :class:`ProbeSize` chooses from a pilot kernel (kernel time and
    alignment error at initialisation), and the record of why."""
    if dist is not None:
        raise ValueError(
            "max_points: ProbeSize is not supported with a distributed meter (every rank "
            "must use the same probe size); pass an int"
        )
    if pilot is None:
        raise ValueError("max_points: ProbeSize needs a model to measure a pilot kernel on")
    limit = max(spec.max_points, keep)
    small, _, full, _, num_classes = prepare(
        probes.train, None, device, spec.pilot, probes.seed, limit, dtype
    )
    if small is None:
        raise ValueError("max_points: ProbeSize needs a probe=(x, y) to measure on")
    if check is not None:  # a probe the model cannot take: said before the pilot kernel
        check({"probe": small})
    K, seconds = pilot(small[0])
    try:
        se = alignment_estimate(K, targets(small[1], num_classes), "double", "unbiased").stderr
    except ValueError:
        se = math.nan
    size, why = spec.choose(se, seconds, int(full[0].shape[0]))
    return size, {"max_probe": size, "why": why, "pilot": spec.pilot}


def check_sizes(probes: dict[str, Probe | None], need: int, who: str) -> None:
    """A probe with fewer points than a quantity needs for a number (unbiased alignment and
    CKA with their error bars: 5) would give NaN at every measurement: an error now."""
    for name, p in probes.items():
        n = 0 if p is None else int(p[0].shape[0])
        if p is not None and n < need:
            raise ValueError(
                f"{name}: has {n} points (after max_points) but {who!r} needs at least "
                f"{need} for a value with its error bar; pass at least {need} points, or "
                "quantities with estimator='biased' (3 points)"
            )


def check_against_model(
    probes: dict[str, Probe | None],
    forward: Callable[[Tensor], Any],
    model: nn.Module,
    outputs: Callable[[Tensor], int],
) -> int | None:
    """Each probe against the model, once, before any kernel; returns the model's outputs
    per point (None without probes).

    1. ``forward`` (the model's output as measurements see it: eval mode, no graph, after
       ``output_fn``) on two points of each probe: a failure is a ``ValueError`` naming the
       probe, the shape and dtype of its ``x`` and what the model expects where that can
       be told (its first layer's input size, its parameters' dtype), chained to torch's
       error.
    2. ``outputs(x)`` (:meth:`~lazymeter.scaled.ScaledModel.check_outputs`): the model's
       output is one the NTK can use (errors name ``model``); its size per point ``n``.
    3. The labels of each probe against ``n`` (:func:`check_labels`).
    """
    named = {name: p for name, p in probes.items() if p is not None}
    for name, (x, _) in named.items():
        try:
            forward(x[:2])
        except Exception as e:  # noqa: BLE001 - re-raised saying what it was tried on
            raise ValueError(
                f"{name}: the model's forward fails on x of shape {tuple(x.shape)} and dtype "
                f"{x.dtype} (tried on 2 points): {type(e).__name__}: {_first_line(e)}. "
                f"{_expects(model)}; pass a probe the model takes"
            ) from e
    if not named:
        return None
    n = outputs(next(iter(named.values()))[0])
    for name, (_, y) in named.items():
        check_labels(name, y, n)
    return n


def check_labels(name: str, y: Tensor, n: int) -> None:
    """Labels that fit a model with ``n`` outputs per point (after ``output_fn``):
    regression targets ``[P, n]`` (any ``[P, ...]`` with ``n`` values per point) or one per
    point (``[P]``, ``[P, 1]``: for several outputs, a target each output is fitted to, as
    the loss broadcasts it); integer class labels ``[P]`` in ``[0, n)`` (0 and 1 for a
    single output: one logit). Anything else is a ``ValueError`` naming the labels."""
    outputs = f"{n} output{'s' if n != 1 else ''} per point (after output_fn)"
    if y.is_floating_point():
        c = math.prod(y.shape[1:])
        if c not in (n, 1):
            shapes = "[P] or [P, 1]" if n == 1 else f"[P, {n}] or [P], integer class labels [P],"
            raise ValueError(
                f"{name}: the labels y have shape {tuple(y.shape)}, {c} target"
                f"{'s' if c != 1 else ''} per point, but the model has {outputs}; pass "
                f"targets of shape {shapes} or an output_fn that picks the outputs the "
                "targets are for"
            )
        return
    if math.prod(y.shape[1:]) != 1:
        raise ValueError(
            f"{name}: integer class labels y must be one per point ([P]); got shape "
            f"{tuple(y.shape)} (float targets [P, C] for several values per point)"
        )
    hi = int(y.max())
    if hi >= n and not (n == 1 and hi == 1):  # one output: one logit for two classes
        raise ValueError(
            f"{name}: the class labels y go up to {hi} ({hi + 1} classes) but the model has "
            f"{outputs}; a classifier needs one output per class ({hi + 1}), or pass float "
            "regression targets"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def _expects(model: nn.Module) -> str:
    """What the model takes, as far as its first layer tells: ``"The model expects x with
    last dimension 20 (its first layer, '0', nn.Linear, has in_features=20); its
    parameters are torch.float32"``."""
    dtype = next((p.dtype for p in model.parameters() if p.requires_grad), None)
    params = f"its parameters are {dtype}" if dtype is not None else "it has no parameters"
    for where, m in model.named_modules():
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in m.parameters(False)):
            continue  # a lazy layer: sized by its first input
        layer = f"(its first layer, {where or 'the model'!r}, nn.{type(m).__name__}, has"
        if isinstance(m, nn.Linear):
            takes = f"x with last dimension {m.in_features} {layer} in_features={m.in_features})"
        elif isinstance(m, nn.modules.conv._ConvNd):
            d = len(m.kernel_size)
            dims = ", ".join(["P", str(m.in_channels), *["..."] * d])
            takes = f"x of shape [{dims}] {layer} in_channels={m.in_channels})"
        elif isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            k = m.num_embeddings
            takes = f"integer token ids in [0, {k}) {layer} num_embeddings={k})"
        elif isinstance(m, nn.RNNBase):
            takes = f"x with last dimension {m.input_size} {layer} input_size={m.input_size})"
        else:
            continue
        return f"The model expects {takes}; {params}"
    return f"The model: {params}"
