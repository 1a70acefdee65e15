"""``LazyMeter``: wrap a model, rescale it by alpha, and measure lazy vs rich training.

The meter is an ``nn.Module`` around the user's model. ``meter(x)`` is the
alpha-rescaled, centred output the loss should see; ``meter.step(...)`` is
called once per optimiser step with the user's scalars and measures on the
probe sets when the schedule says so. Measurements compose the pure
functions of :mod:`lazymeter.metrics` and :mod:`lazymeter.ntk`; they never
change the model's parameters, gradients, mode or the global RNG stream.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from . import metrics as M
from .baselines import Linearized, kernel_regression
from .distributed import WRONG_ORDER, Dist, make_dist, unwrap, world_size
from .ntk import FunctionalModel, empirical_ntk, kernel_dtype, select_method
from .ntk.functional import call_with
from .regime import RegimeThresholds, alignment_gain, classify
from .schedules import ScheduleSpec, make_schedule
from .sinks import JsonlSink, TensorBoardSink

Probe = tuple[Tensor, Tensor]
MetricFn = Callable[[nn.Module], Mapping[str, float]]

_STATE_VERSION = 1

logger = logging.getLogger("lazymeter")


def _as_probe(probe: Any, name: str, device: torch.device) -> Probe | None:
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
    return x, y


def _check_writable(log_dir: str) -> None:
    """A clear error at construction, instead of a crash at the first measurement."""
    try:
        os.makedirs(log_dir, exist_ok=True)
        probe = os.path.join(log_dir, f".lazymeter-write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"log_dir: cannot write to {log_dir!r} ({e.strerror or e}); pass a writable "
            "directory, or log_dir=None to keep the history in memory only"
        ) from None


def _subsample(probe: Probe, k: int, seed: int) -> Probe:
    """At most ``k`` samples, a fixed (seeded) random subset in original order."""
    x, y = probe
    if x.shape[0] <= k:
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:k].sort().values.to(x.device)
    return x[idx], y[idx]


def _targets(y: Tensor, num_classes: int | None = None) -> Tensor:
    """Regression targets ``[P, C]`` in float64: integer class labels become one-hot."""
    if not y.is_floating_point():
        C = num_classes or int(y.max()) + 1
        return torch.nn.functional.one_hot(y.long().reshape(-1), C).to(torch.float64)
    y = y.to(torch.float64)
    return y.reshape(y.shape[0], -1)


class _Snapshot(nn.Module):
    """Frozen copy of a model's parameters and buffers (buffers here, so that
    ``.to()`` moves them and ``state_dict`` carries them, but optimisers never see them)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        named = list(model.named_parameters()) + list(model.named_buffers())
        self.names = [n for n, _ in named]
        for i, (_, t) in enumerate(named):
            self.register_buffer(f"t{i}", t.detach().clone())

    def as_dict(self) -> dict[str, Tensor]:
        return {n: getattr(self, f"t{i}") for i, n in enumerate(self.names)}


class LazyMeter(nn.Module):
    """Lazy-vs-rich diagnostics for any ``nn.Module``, inside the user's training loop.

    ``meter(x)`` returns ``alpha * (model(x) - model0(x))`` (``center=True``;
    ``model0`` is the model frozen at construction) or ``alpha * model(x)``.
    Train it with ``lr = meter.scaled_lr(lr)``. Each ``meter.step(**scalars)``
    logs the scalars; on scheduled steps the meter measures, on the probes:

    * ``ntk_drift`` = ``||K_t - K_0||_F / ||K_0||_F`` and ``ntk_cka`` = ``cka(K_t, K_0)``
      (empirical NTK of the model on the train probe, outputs traced);
    * ``alignment_train`` / ``alignment_test``: ``kernel_alignment(K_t, y)`` on each probe,
      and ``alignment0_*`` of ``K_0`` for reference; ``test_ntk_drift``;
    * ``param_movement`` = ``||theta - theta0|| / ||theta0||``, ``weight_norm`` = ``||theta||``;
    * ``spectrum_trace``, ``spectrum_effective_rank``, ``spectrum_eig_1..k`` of ``K_t``;
    * ``feature_cka/<layer>``: linear CKA of a layer's activations to their values at init;
    * ``k0_test_mse`` (computed once, at construction): the lazy baseline, the test-probe
      MSE of kernel regression with ``K_0`` on the train probe (``k0_test_acc`` too for
      integer class labels, which are one-hot encoded).

    Args:
        model: the network to train; the meter's parameters are exactly its parameters.
        alpha: output scale (> 0). Large alpha = lazy, small alpha = rich.
        center: subtract the initial model's output (so the initial function is 0).
        probe: ``(x, y)`` training points to measure on; ``test_probe``: held-out points.
        schedule: int k (every k steps), ``"log"`` (8 log-spaced steps per decade),
            ``"log:N"``, or a callable ``step -> bool``.
        log_dir: directory for ``history.jsonl`` and TensorBoard event files.
        writer: a ``SummaryWriter`` to log into instead of creating one in ``log_dir``.
        output_fn: reduces the model output to a Tensor (e.g. ``lambda y: y[:, -1]``);
            applied in ``forward`` and in the NTK.
        max_probe: measurement kernels use at most this many probe points (a fixed
            seeded subset); a measurement costs ``O(max_probe^2 * n_params)``.
        max_baseline: points of each probe used for the one-off lazy baseline.
        features: names of submodules whose outputs are compared (linear CKA) to init.
        metrics: extra ``fn(model) -> {name: float}`` evaluated at each measurement
            (e.g. a test-loss decomposition).
        ntk_method: ``method`` of :func:`lazymeter.empirical_ntk` (resolved once if "auto").
        ntk_chunk_size: ``chunk_size`` of :func:`lazymeter.empirical_ntk`.
        centering: kernel-alignment centring (see :func:`lazymeter.kernel_alignment`).
        ridge: ridge of the lazy-baseline kernel regression.
        seed: seed of the probe subsample.
        scalar_every: write the scalars passed to :meth:`step` to TensorBoard every this
            many steps (and at every measurement). A TensorBoard event costs ~50 us, which
            is several percent of a small model's step; TensorBoard itself keeps only
            ~1000 points per curve.
        linearized: also build ``meter.linearized``, the model's linearisation around
            its initial parameters (:class:`lazymeter.baselines.Linearized`, same alpha and
            centring), for the user to train alongside with the same loss and learning rate
            (its own optimiser over ``meter.linearized.parameters()``) and log as
            ``lin_train_loss`` / ``lin_test_loss``. It is saved in ``state_dict``.
        tb_figures: also log, at each measurement, TensorBoard figures of the kernel
            spectrum (K_t against K_0) and of any ``decomp_*`` terms.
        regime_thresholds: thresholds of the lazy/transitioning/rich read-out logged as
            TensorBoard text at each measurement (:mod:`lazymeter.regime`).
        memory_budget: bytes (or ``"2GiB"``) for the NTK engines' blocks (see
            :func:`lazymeter.empirical_ntk`; default ``$LAZYMETER_MEMORY_BUDGET`` or 512 MiB).
        distributed: for ``LazyMeter(DistributedDataParallel(model))`` under
            ``torch.distributed``: ``"auto"`` (= ``"rank0"``), ``"rank0"`` (rank 0 measures and
            broadcasts the row) or ``"shard"`` (each rank computes its rows of the kernels;
            they are all-gathered). Either way every rank holds the same snapshot (rank 0's),
            the same probes (rank 0's), the same history (rank 0's scalars), and only rank 0
            writes files; every rank must call :meth:`step` at the same steps. None: no
            collectives (independent meters, e.g. when only rank 0 steps the meter).

    Precision: kernels of float16/bfloat16 models are computed and accumulated in float32
    (see :func:`lazymeter.empirical_ntk`); probes on another device than the model are
    moved to it once, at construction, with a warning in the ``lazymeter`` logger.
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        center: bool = True,
        probe: Probe | None = None,
        test_probe: Probe | None = None,
        schedule: ScheduleSpec = 100,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        writer: Any = None,
        output_fn: Callable[[Any], Any] | None = None,
        max_probe: int = 64,
        max_baseline: int = 2048,
        features: Sequence[str] | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
        ntk_method: str = "auto",
        ntk_chunk_size: int | None = None,
        centering: str = "double",
        spectrum_k: int = 5,
        ridge: float = 0.0,
        seed: int = 0,
        scalar_every: int = 10,
        linearized: bool = False,
        tb_figures: bool = False,
        regime_thresholds: RegimeThresholds | None = None,
        memory_budget: int | str | None = None,
        distributed: str | None = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha: expected a positive number, got {type(alpha).__name__}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha: must be finite and > 0, got {alpha}")
        for name, v in (("max_probe", max_probe), ("max_baseline", max_baseline)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 3:
                raise ValueError(f"{name}: expected an int >= 3, got {v!r}")
        self.model = model
        self.alpha = float(alpha)
        self.center = bool(center)
        self.output_fn = output_fn
        self.ntk_kwargs = {
            "method": ntk_method,
            "chunk_size": ntk_chunk_size,
            "memory_budget": memory_budget,
        }
        self.centering = centering
        self.spectrum_k = spectrum_k
        self.ridge = ridge
        self.metric_fns = dict(metrics or {})
        self.schedule = make_schedule(schedule)
        self.tb_figures = bool(tb_figures)
        self.regime_thresholds = regime_thresholds or RegimeThresholds()
        self._eigs: dict[str, Tensor] = {}
        if isinstance(scalar_every, bool) or not isinstance(scalar_every, int) or scalar_every < 1:
            raise ValueError(f"scalar_every: expected a positive int, got {scalar_every!r}")
        self.scalar_every = scalar_every
        net = unwrap(model)
        if not any(p.requires_grad for p in net.parameters()):
            raise ValueError(
                "model: has no parameters with requires_grad=True, so there is nothing to "
                "train or measure; unfreeze the parameters to be trained"
            )
        self._distributed = distributed
        self._dist: Dist | None = make_dist(model, distributed, self._device())
        self.snapshot = _Snapshot(net)
        if self._dist is not None:
            self._dist.broadcast_(list(self.snapshot.buffers()))  # rank 0's init, everywhere
        # Not a registered submodule: optimisers over meter.parameters() must not see it.
        self._linearized = [Linearized(net, alpha, center, output_fn)] if linearized else []
        self._dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        self.history: list[dict[str, float]] = []
        self.baseline: dict[str, float] = {}
        self._reference: dict[str, float] = {}
        self._scalars: dict[str, float] = {}
        self._step: int | None = None  # last step seen
        self._cache: list[tuple[tuple[Any, ...], Any]] = []
        self._warned: set[str] = set()
        self._soft_failures: list[tuple[str, Exception]] = []
        self._metric_keys: dict[str, list[str]] = {}

        device = self._device()
        full = _as_probe(probe, "probe", device)
        full_test = _as_probe(test_probe, "test_probe", device)
        if full_test is not None and full is None:
            raise ValueError("test_probe: needs a training probe too (pass probe=(x, y))")
        self.features = list(features or [])
        for name in self.features:
            try:
                net.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"features: the model has no submodule {name!r}; pick names from "
                    "[n for n, _ in model.named_modules()]"
                ) from None
        if self.features and full is None:
            raise ValueError("features: needs a probe to compute activations on")
        for name in ("probe_x", "probe_y", "test_x", "test_y", "K0", "K0_test"):
            self.register_buffer(name, None)
        self._features0: dict[str, Tensor] = {}
        if full is not None:
            probe, test = _subsample(full, max_probe, seed), None
            base, base_test = _subsample(full, max_baseline, seed), None
            if full_test is not None:
                test = _subsample(full_test, max_probe, seed + 1)
                base_test = _subsample(full_test, max_baseline, seed + 1)
            num_classes = None
            if not full[1].is_floating_point():
                ys = [full[1]] + ([full_test[1]] if full_test is not None else [])
                num_classes = int(max(int(t.max()) for t in ys)) + 1
            if self._dist is not None:
                # Rank 0's data everywhere: a rank's own shard would give other metrics.
                if self._dist.strategy == "shard":
                    probe, test, num_classes, base, base_test = self._dist.share(
                        (probe, test, num_classes, base, base_test)
                    )
                else:  # rank 0 alone computes the reference from its own baseline sets
                    probe, test, num_classes = self._dist.share((probe, test, num_classes))
            self.probe_x, self.probe_y = probe
            if test is not None:
                self.test_x, self.test_y = test
            self._num_classes = num_classes
            labels = {"probe": probe[1], **({"test_probe": test[1]} if test else {})}
            for name, py in labels.items():
                t = _targets(py, num_classes)
                if bool((t == t[:1]).all()):
                    raise ValueError(
                        f"{name}: the labels y have zero variance over the {len(py)} probe "
                        "points, so kernel-target alignment is undefined; use a probe whose "
                        "labels differ (for classes, several classes)"
                    )
            self._n_out = self._check_outputs(self.probe_x)
            if ntk_method == "auto":
                # Resolved once: every measurement has the same shapes.
                try:
                    self.ntk_kwargs["method"] = select_method(
                        net, self.probe_x, output_fn=output_fn
                    )
                except ValueError:
                    pass  # reported (once) by the first NTK computation below
            if self._computes:
                with self._measuring():
                    self._init_reference(base, base_test)
            if self._dist is not None and self._dist.strategy == "rank0":
                self._receive_reference()
            if self.K0 is not None and not bool((self.K0 != 0).any()):
                raise ValueError(
                    "model: its NTK on the probe is exactly zero at initialisation: the output "
                    "does not depend differentiably on the trainable parameters (a round(), "
                    "sign() or other zero-gradient op inside forward?)"
                )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._jsonl = None
        if self._dist is not None and not self._dist.main:
            self.log_dir, writer = None, None  # one writer per run: rank 0
        if self.log_dir is not None:
            _check_writable(self.log_dir)
            path = os.path.join(self.log_dir, "history.jsonl")
            if os.path.exists(path) and os.path.getsize(path) > 0:
                # A new meter starts a new history; an earlier run's rows are kept aside
                # (load_state_dict then rewrites the file from the checkpoint's history).
                n = 1
                while os.path.exists(f"{path}.{n}"):
                    n += 1
                os.replace(path, f"{path}.{n}")
                warnings.warn(
                    f"lazymeter: {path} existed; moved it to {path}.{n}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self._jsonl = JsonlSink(path)
        self._tb = TensorBoardSink(self.log_dir, writer)

    @property
    def net(self) -> nn.Module:
        """The user's model without a ``DistributedDataParallel`` wrapper: what is measured."""
        return unwrap(self.model)

    @property
    def _computes(self) -> bool:
        """Whether this process computes measurements (all but non-zero ranks under rank0)."""
        d = self._dist
        return d is None or d.strategy == "shard" or d.main

    def _receive_reference(self) -> None:
        assert self._dist is not None
        ref = (self.K0, self.K0_test, self._reference, self.baseline, self._features0)
        ref = self._dist.share((*ref, "ntk" in self._warned))
        self.K0, self.K0_test, self._reference, self.baseline, self._features0, failed = ref
        if failed:
            self._warned.add("ntk")

    # ------------------------------------------------------------------ the wrapped model
    def _device(self) -> torch.device:
        for t in unwrap(self.model).parameters():
            return t.device
        return torch.device("cpu")

    @property
    def linearized(self) -> Linearized:
        """The linearised shadow model (requires ``LazyMeter(..., linearized=True)``)."""
        if not self._linearized:
            raise RuntimeError("linearized: construct the meter with linearized=True")
        return self._linearized[0]

    def _apply(self, fn: Any, recurse: bool = True) -> LazyMeter:
        super()._apply(fn, recurse)
        for lin in self._linearized:  # .to()/.double() move the shadow along
            lin._apply(fn, recurse)
        self._cache = []
        return self

    def scaled_lr(self, lr: float, optimizer: str = "sgd") -> float:
        """Learning rate for training ``alpha * (f - f0)``: ``lr / alpha**2`` for SGD/GD.

        Why: with ``g = alpha (f - f0)``, a gradient step moves parameters by
        ``lr * alpha * df``, hence ``g`` by ``lr * alpha^2 * K``: dividing ``lr`` by
        ``alpha^2`` keeps the function-space speed independent of alpha, so alpha
        only sets how far the parameters (and the NTK) must move: large alpha =
        lazy. Adam-type optimisers normalise the gradient scale away: each
        parameter moves about ``lr`` per step, so ``g`` moves ``alpha * lr``;
        ``optimizer="adam"`` returns ``lr / alpha`` to keep that speed fixed.
        """
        if optimizer == "sgd":
            return lr / self.alpha**2
        if optimizer == "adam":
            return lr / self.alpha
        raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")

    def _reduce(self, out: Any) -> Any:
        return out if self.output_fn is None else self.output_fn(out)

    def initial_output(self, *args: Any, **kwargs: Any) -> Any:
        """``model0(*args)``: the frozen initial model's (reduced) output, without a graph.

        Cached for the last few inputs (same tensor objects, unmodified, same mode),
        so a full-batch loop pays for it once; not cached while dropout is active.
        """
        key = None
        # A stochastic forward must be drawn afresh each call (and consume the RNG as an
        # uncached run would), so only deterministic models are cached.
        random = self._dropouts and any(m.training for m in self._dropouts)
        if not random and not kwargs and all(isinstance(a, Tensor) for a in args):
            key = (self.model.training, *[a._version for a in args])
            for k, (refs, out0) in self._cache:
                # Identity, not equality: the cache holds the inputs, so ids stay unique.
                if k == key and len(refs) == len(args) and all(map(operator.is_, refs, args)):
                    return out0
        with torch.no_grad():
            out0 = self._reduce(call_with(self.net, self.snapshot.as_dict(), args, kwargs))
        if key is not None:
            # Holding the inputs keeps their ids from being reused by other tensors.
            self._cache = [(key, (args, out0))] + self._cache[:3]
        return out0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``alpha * (model(x) - model0(x))`` (centred) or ``alpha * model(x)``, applied to
        every floating-point tensor of the (reduced) output; other leaves pass through."""
        out = self._reduce(self.model(*args, **kwargs))
        out0 = self.initial_output(*args, **kwargs) if self.center else None
        a = self.alpha
        if isinstance(out, Tensor) and out.is_floating_point():  # the common case, kept lean
            if out0 is not None:
                out = out - out0
            return out if a == 1.0 else a * out

        def scale(t: Any, t0: Any = None) -> Any:
            if not (isinstance(t, Tensor) and t.is_floating_point()):
                return t
            return a * (t - t0) if t0 is not None else a * t

        return tree_map(scale, out) if out0 is None else tree_map(scale, out, out0)

    # ------------------------------------------------------------------ measurements
    @contextlib.contextmanager
    def _measuring(self) -> Iterator[None]:
        """Measure deterministically without a trace: the RNG is forked, and dropout layers
        are switched off (kernels of a random sub-network are noise) and restored after."""
        devices = [self._device()] if self._device().type == "cuda" else []
        active = [m for m in self._dropouts if m.training]
        try:
            with torch.random.fork_rng(devices=devices):
                for m in active:
                    m.training = False
                yield
        finally:
            for m in active:
                m.training = True

    def _check_outputs(self, x: Tensor) -> int:
        """Clear errors at construction for a model whose output the NTK cannot use;
        returns the number of outputs per sample."""
        net, state = self.net, self._own_state()
        shapes = []
        with self._measuring():
            for n in (2, 3):
                with torch.set_grad_enabled(n == 2):  # one pass also checks differentiability
                    out = self._reduce(call_with(net, state, (x[:n],)))
                if not isinstance(out, Tensor):
                    raise TypeError(
                        f"model: returned {type(out).__name__}, not a Tensor; pass output_fn "
                        "that picks the tensor to measure (e.g. output_fn=lambda o: o['logits'])"
                    )
                if not out.is_floating_point():
                    raise TypeError(
                        f"model: returned a {out.dtype} tensor; the NTK needs a floating-point "
                        "output (an argmax or round in forward? return the logits)"
                    )
                if out.dim() == 0 or out.shape[0] != n:
                    raise ValueError(
                        f"model: the output must keep the batch dimension first; got shape "
                        f"{tuple(out.shape)} for {n} samples (use output_fn to reduce it)"
                    )
                if not bool(torch.isfinite(out).all()):
                    raise ValueError("model: the initial output on the probe has NaN or Inf")
                if n == 2 and not out.requires_grad:
                    raise ValueError(
                        "model: its output does not depend differentiably on the trainable "
                        "parameters (a detach() or torch.no_grad() inside forward?)"
                    )
                shapes.append(tuple(out.shape[1:]))
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"model: the per-sample output shape depends on the batch ({shapes[0]} for 2 "
                f"samples, {shapes[1]} for 3); the NTK needs per-sample outputs"
            )
        return math.prod(shapes[0])

    def _ntk(self, x: Tensor, x2: Tensor | None = None) -> Tensor:
        net, kw = self.net, {"output_fn": self.output_fn, **self.ntk_kwargs}
        d = self._dist
        if d is None or d.strategy != "shard":
            return empirical_ntk(net, x, x2, **kw)
        cols = x if x2 is None else x2
        like = next(iter(self._trainable().values()))
        like = like.new_empty(0, dtype=kernel_dtype(like.dtype))
        K = d.sharded_kernel(
            lambda a, b: empirical_ntk(net, x[a:b], cols, **kw), len(x), len(cols), like
        )
        return (K + K.T) / 2 if x2 is None else K

    def _trainable(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.net.named_parameters() if p.requires_grad}

    def _initial_trainable(self) -> dict[str, Tensor]:
        snap = self.snapshot.as_dict()
        return {n: snap[n] for n in self._trainable()}

    def _own_state(self) -> dict[str, Tensor]:
        """The model's parameters and *copies* of its buffers, for ``functional_call``
        forwards that must leave BatchNorm statistics untouched."""
        net = self.net
        return {
            **dict(net.named_parameters()),
            **{k: b.clone() for k, b in net.named_buffers()},
        }

    def _activations(self, x: Tensor) -> dict[str, Tensor]:
        """Outputs of the named feature layers on ``x`` (buffers copied: BN stats untouched)."""
        acts: dict[str, Tensor] = {}
        net = self.net
        hooks = [
            net.get_submodule(n).register_forward_hook(
                lambda m, i, o, n=n: acts.__setitem__(n, o if isinstance(o, Tensor) else o[0])
            )
            for n in self.features
        ]
        try:
            with torch.no_grad():
                call_with(net, self._own_state(), (x,))
        finally:
            for h in hooks:
                h.remove()
        return {n: a.detach().reshape(a.shape[0], -1) for n, a in acts.items()}

    def _init_reference(self, base: Probe, base_test: Probe | None) -> None:
        if self.features:
            self._features0 = self._activations(self.probe_x)
        try:
            self.K0 = self._ntk(self.probe_x)
            if not bool((self.K0 != 0).any()):
                return  # rejected by the constructor, on every rank (after sharing)
        except (ValueError, RuntimeError, NotImplementedError) as e:
            # E.g. BatchNorm in training mode: no per-sample NTK. Training must go on.
            self._warned.add("ntk")
            warnings.warn(
                f"lazymeter: the NTK of this model cannot be computed ({e}); the NTK metrics "
                "and the lazy baseline will be NaN",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        y = _targets(self.probe_y, self._num_classes)
        self._reference["alignment0_train"] = M.kernel_alignment(self.K0, y, self.centering)
        if self.test_x is not None:
            self.K0_test = self._ntk(self.test_x)
            yt = _targets(self.test_y, self._num_classes)
            self._reference["alignment0_test"] = M.kernel_alignment(
                self.K0_test, yt, self.centering
            )
        if base_test is not None:
            self._lazy_baseline(base, base_test)

    def _lazy_baseline(self, base: Probe, base_test: Probe) -> None:
        """Test MSE of kernel regression with K0: the network's limit as alpha -> infinity.

        Centred, the initial function is 0 and the lazy limit predicts
        ``K0(x, X) K0^-1 y``; uncentred, it fits the residual ``y - f0`` and adds ``f0``.
        """
        (x, y), (xt, yt) = base, base_test
        Y, Yt = _targets(y, self._num_classes), _targets(yt, self._num_classes)
        f0, f0t = 0.0, 0.0
        if not self.center:
            f0, f0t = (
                self.alpha * self.initial_output(v).to(torch.float64).reshape(v.shape[0], -1)
                for v in (x, xt)
            )
        K, Kt = self._ntk(x), self._ntk(xt, x)
        pred = f0t + kernel_regression(K, Y - f0, Kt, ridge=self.ridge)
        pred_train = f0 + kernel_regression(K, Y - f0, K, ridge=self.ridge)
        self.baseline["k0_test_mse"] = float(((pred - Yt) ** 2).mean())
        self.baseline["k0_train_mse"] = float(((pred_train - Y) ** 2).mean())
        if self._num_classes is not None:
            self.baseline["k0_test_acc"] = float((pred.argmax(1) == Yt.argmax(1)).double().mean())

    def _kernel_metrics(self) -> dict[str, float]:
        if self.K0 is None:
            raise RuntimeError("no initial NTK K0 (it could not be computed at construction)")
        n_out = FunctionalModel(self.net, self.output_fn).num_outputs((self.probe_x,))
        if n_out != self._n_out:
            raise ValueError(
                f"model: outputs per sample changed from {self._n_out} at construction to "
                f"{n_out}; its kernels are no longer comparable to K0"
            )
        K = self._ntk(self.probe_x)
        out: dict[str, float] = {}
        # One degenerate number (a ValueError from a metric) must not blank its neighbours.
        put = self._put
        put(out, "ntk", "ntk_drift", lambda: M.ntk_drift(K, self.K0))
        put(out, "ntk", "ntk_cka", lambda: M.cka(K, self.K0))
        y = _targets(self.probe_y, self._num_classes)
        put(out, "ntk", "alignment_train", lambda: M.kernel_alignment(K, y, self.centering))
        out.update({f"spectrum_{k}": v for k, v in M.kernel_spectrum(K, self.spectrum_k).items()})
        if self.tb_figures:
            self._eigs = {
                "K_t": M.symmetric_eigvals(K.double()).flip(0).cpu(),
                "K_0": M.symmetric_eigvals(self.K0.double()).flip(0).cpu(),
            }
        if self.test_x is not None:
            Kt = self._ntk(self.test_x)
            yt = _targets(self.test_y, self._num_classes)
            put(out, "ntk", "alignment_test", lambda: M.kernel_alignment(Kt, yt, self.centering))
            put(out, "ntk", "test_ntk_drift", lambda: M.ntk_drift(Kt, self.K0_test))
        return out

    def _feature_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, a in self._activations(self.probe_x).items():
            a0 = self._features0[n]
            key = f"feature_cka/{n}"
            self._put(out, "feature_cka", key, lambda a=a, a0=a0: M.linear_cka(a, a0))
        return out

    def _put(self, out: dict[str, float], group: str, key: str, fn: Callable[[], float]) -> None:
        """``out[key] = fn()``, or NaN (noted for the measurement's warning) on ValueError."""
        try:
            out[key] = float(fn())
        except ValueError as e:
            out[key] = math.nan
            self._soft_failures.append((group, e))

    def _metric_groups(self) -> list[tuple[str, Callable[[], Mapping[str, float]], list[str]]]:
        """``(name, compute, keys recorded as NaN if compute fails)`` for each metric group."""

        def params() -> dict[str, float]:
            theta = self._trainable()
            return {
                "param_movement": M.parameter_movement(theta, self._initial_trainable()),
                "weight_norm": M.weight_norm(theta),
            }

        groups = [("param_movement", params, ["param_movement", "weight_norm"])]
        if self.probe_x is not None:
            keys = ["ntk_drift", "ntk_cka", "alignment_train", "spectrum_trace"]
            keys += ["spectrum_effective_rank"]
            keys += [
                f"spectrum_eig_{i + 1}" for i in range(min(self.spectrum_k, len(self.probe_x)))
            ]
            if self.test_x is not None:
                keys += ["alignment_test", "test_ntk_drift"]
            groups.append(("ntk", self._kernel_metrics, keys))
        if self.features:
            groups.append(
                (
                    "feature_cka",
                    self._feature_metrics,
                    [f"feature_cka/{n}" for n in self.features],
                )
            )
        for name, fn in self.metric_fns.items():
            # A failing user metric keeps its columns (as NaN): the ones it returned last time.
            groups.append(
                (
                    name,
                    lambda n=name, fn=fn: self._user_metric(n, fn),
                    self._metric_keys.get(name, [name]),
                )
            )
        return groups

    def _user_metric(self, name: str, fn: MetricFn) -> dict[str, float]:
        out = {k: float(v) for k, v in fn(self.net).items()}
        self._metric_keys[name] = list(out)
        return out

    def measure(self) -> dict[str, float]:
        """Measure now (whatever the schedule); append to ``history`` and the sinks.

        Returns the row: ``step``, the last scalars passed to :meth:`step`, and the
        metrics listed in the class docstring. Never changes parameters, gradients,
        mode or the RNG stream.
        """
        row: dict[str, float] = {"step": -1 if self._step is None else self._step}
        row.update(self._scalars)
        failures: list[tuple[str, Exception]] = []
        self._soft_failures = failures
        if self._computes:
            with self._measuring(), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # degenerate -> NaN, quietly
                for name, fn, keys in self._metric_groups():
                    try:
                        row.update(fn())
                    except Exception as e:  # noqa: BLE001 - a diagnostic must never stop training
                        row.update(dict.fromkeys(keys, math.nan))
                        failures.append((name, e))
        if self._dist is not None:
            row = self._dist.share(row)  # one history on every rank: rank 0's
            if not self._dist.main:
                failures = []  # rank 0 warns for the run
        new: dict[str, Exception] = {}
        for name, e in failures:
            if name not in self._warned:
                new.setdefault(name, e)
        if new:
            # One warning per measurement, each metric group named in it once per run.
            self._warned.update(new)
            what = "; ".join(f"{name} ({e})" for name, e in new.items())
            warnings.warn(
                f"lazymeter: could not measure {what}; recorded as NaN (warned once per metric)",
                RuntimeWarning,
                stacklevel=2,
            )
        row.update(self._reference)
        row.update(self.baseline)
        self.history.append(row)
        if self._jsonl is not None:
            try:
                self._jsonl.write(row)
            except OSError as e:  # disk full, directory gone: the in-memory history goes on
                self._warn_once(
                    "jsonl",
                    f"could not write {self._jsonl.path} ({e}); measurements are kept in "
                    "meter.history (warned once)",
                )
        step = int(row["step"])
        self._tb.write(row, step, flush=False)
        if self._tb.enabled:
            self._tb.write_text(
                "lazymeter/regime",
                f"step {step}: **{classify(row, self.regime_thresholds)}** (drift "
                f"{row.get('ntk_drift', math.nan):.3g}, movement "
                f"{row.get('param_movement', math.nan):.3g}, alignment gain "
                f"{alignment_gain(row):.3g})",
                step,
            )
            if self.tb_figures:
                self._write_figures(row, step)
            if self._tb.writer is not None:
                self._tb.writer.flush()
        return row

    def _write_figures(self, row: dict[str, float], step: int) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        if self._eigs:
            fig, ax = plt.subplots(figsize=(4, 3))
            for name, lam in self._eigs.items():
                ax.semilogy(lam.clamp_min(1e-30).numpy(), label=name)
            ax.set_xlabel("index")
            ax.set_ylabel("eigenvalue")
            ax.legend()
            fig.tight_layout()
            self._tb.write_figure("lazymeter/figures/spectrum", fig, step)
        terms = {
            k[7:]: v for k, v in row.items() if k.startswith("decomp_") and k != "decomp_total"
        }
        if terms:
            fig, ax = plt.subplots(figsize=(4, 3))
            ax.bar(list(terms), list(terms.values()))
            ax.set_yscale("log")
            ax.set_title(f"decomposition at step {step}")
            fig.tight_layout()
            self._tb.write_figure("lazymeter/figures/decomposition", fig, step)

    def step(self, step: int | None = None, **scalars: float) -> dict[str, float] | None:
        """Record ``scalars`` (e.g. ``train_loss=..., test_loss=...``) at ``step``; measure
        if the schedule says so. ``step`` defaults to the previous step + 1 (0 first) and
        must increase. Returns the measurement row when one was taken, else None."""
        first = self._step is None
        if first and self._dist is None and self._distributed is not None and world_size() > 1:
            # The meter was built before init_process_group, or is inside DDP(LazyMeter(..)).
            raise TypeError(WRONG_ORDER.format(world=world_size()))
        if step is None:
            step = 0 if self._step is None else self._step + 1
        elif isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step: expected an int, got {type(step).__name__}")
        if self._step is not None and step <= self._step:
            # Mid-run: never stop training; skip the call, say so once.
            self._warn_once(
                "step",
                f"step went backwards ({step} after {self._step}); ignoring meter.step calls "
                f"until the step passes {self._step} (warned once; after loading a checkpoint, "
                "continue from meter.last_step + 1)",
            )
            return None
        values = {}
        for k, v in scalars.items():
            try:
                if isinstance(v, (str, bytes)):
                    raise TypeError
                values[k] = float(v)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(
                    f"{k}: expected a number (or a one-element tensor), got {v!r}"
                ) from None
            if not math.isfinite(values[k]):
                self._warn_once(k, f"{k} is {values[k]} at step {step}; recorded as is")
        self._step = step
        self._scalars = values
        if self.schedule.due(step):
            return self.measure()  # writes the scalars along with the measurement
        if step % self.scalar_every == 0:
            self._tb.write(values, step)
        return None

    def _warn_once(self, key: str, message: str) -> None:
        """A ``RuntimeWarning`` at the user's call site, the first time ``key`` goes wrong."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"lazymeter: {message}", RuntimeWarning, stacklevel=3)

    def will_measure(self, step: int | None = None) -> bool:
        """Whether :meth:`step` at ``step`` (default: the next one) will measure; use it to
        compute expensive scalars (a test loss) only when they will be recorded."""
        if step is None:
            step = 0 if self._step is None else self._step + 1
        return self.schedule.peek(step)

    def _probe_size(self) -> int:
        return 0 if self.probe_x is None else int(self.probe_x.shape[0])

    @property
    def last_step(self) -> int | None:
        """The last step passed to :meth:`step` (None before the first)."""
        return self._step

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        if self._tb.writer_if_open is not None:
            # A checkpoint is a promise that what came before it is on disk.
            self._tb.writer_if_open.flush()
        return {
            "version": _STATE_VERSION,
            "alpha": self.alpha,
            "step": self._step,
            "schedule": self.schedule.state_dict(),
            "history": [dict(r) for r in self.history],
            "baseline": dict(self.baseline),
            "reference": dict(self._reference),
            "scalars": dict(self._scalars),
            "num_classes": getattr(self, "_num_classes", None),
            "features0": dict(self._features0),
            "linearized": [lin.state_dict() for lin in self._linearized],
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"state_dict: unsupported lazymeter state version {state.get('version')}"
            )
        if not math.isclose(state["alpha"], self.alpha):
            raise ValueError(
                f"state_dict: was saved with alpha={state['alpha']} but this meter has alpha="
                f"{self.alpha}; construct the meter with the same alpha"
            )
        self._step = state["step"]
        self.schedule.load_state_dict(state["schedule"])
        self.history = [dict(r) for r in state["history"]]
        self.baseline = dict(state["baseline"])
        self._reference = dict(state["reference"])
        self._scalars = dict(state["scalars"])
        self._num_classes = state["num_classes"]
        self._features0 = dict(state["features0"])
        for lin, sd in zip(self._linearized, state.get("linearized", []), strict=False):
            lin.load_state_dict(sd)
        self._cache = []
        # Whatever a crashed run logged after this checkpoint is dropped, so that the
        # files continue exactly as the in-memory history does.
        if self._jsonl is not None:
            self._jsonl.rewrite(self.history)
        if self._step is not None:
            self._tb.purge_after(self._step)

    def close(self, hparams: Mapping[str, Any] | None = None) -> None:
        """Flush and close the log files (the meter keeps working in memory).

        ``hparams`` (e.g. ``{"alpha": 1, "eps": 0.02, "lr": ..., "max_probe": 64}``) are
        logged with the last measurement's values to TensorBoard's HPARAMS tab.
        """
        if hparams is not None and self.history:
            self._tb.write_hparams(
                {"alpha": self.alpha, "max_probe": self._probe_size(), **dict(hparams)},
                {k: v for k, v in self.history[-1].items() if k != "step"},
            )
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        self._tb.close()
