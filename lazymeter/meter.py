"""``LazyMeter``: wrap a model, rescale it by alpha, and measure lazy vs rich training.

The meter is a :class:`~lazymeter.scaled.ScaledModel` around the user's model (``meter(x)``
is the alpha-rescaled, centred output the loss should see) that loops over
:class:`~lazymeter.Quantity` objects: ``meter.step(...)`` is called once per optimiser
step with the user's scalars and measures the quantities that are due. The meter owns
the probes, the initial kernels ``K_0``, the failure policy (NaN plus one warning per
newly failing quantity), checkpoints and sinks; each diagnostic lives in its quantity.
Measurements never change the model's parameters, gradients, mode or the global RNG.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

from . import quantities as Q
from .deprecations import accepts_legacy_arguments
from .distributed import WRONG_ORDER, Dist, make_dist, sharded_ntk, world_size
from .failures import SlowWarning, Warner
from .history import KIND_KEY, SCALARS
from .ntk import (
    FunctionalModel,
    coverage,
    kernel_dtype,
    kernel_plan,
    resolve_budget,
    select_method,
)
from .ntk.blocks import user_stacklevel
from .ntk.fsdp import is_dtensor, reshard_all
from .ntk.functional import call_with
from .ntk.options import NTKOptions
from .probes import POOL, Probe, ProbeSet, check_against_model, prepare_probes
from .regime import RegimeThresholds, describe
from .scaled import ScaledModel
from .schedules import ScheduleSpec, make_schedule
from .sinks import RunLog, Sink, read_jsonl, scalar_values

_STATE_VERSION = 2
#: Outputs per sample from which an exact-output meter suggests ``Sketch(16)`` at construction.
MANY_OUTPUTS = 64
#: The keys of the meter's own state (``state_dict()['_extra_state']``); ``sinks`` is optional.
_STATE_KEYS = (
    "version",
    "alpha",
    "step",
    "schedule",
    "history",
    "scalars",
    "num_classes",
    "quantities",
)


def _few(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}] ({len(keys)})"


class LazyMeter(ScaledModel):
    """Lazy-vs-rich diagnostics for any ``nn.Module``, inside the user's training loop.

    ``meter(x)`` is ``alpha * (model(x) - model0(x))`` (``center=True``; ``model0``: the model
    at construction) or ``alpha * model(x)``; train it with ``lr = meter.scaled_lr(lr)``.
    ``meter.step(**scalars)`` logs the scalars and measures the quantities that are due
    (default :func:`lazymeter.quantities.default`; docs/meter.md lists every key).

    Each option lives on the object it configures: the probe on :class:`~lazymeter.ProbeSet`,
    each diagnostic's on its :class:`~lazymeter.Quantity`, the kernels' on
    :class:`~lazymeter.NTKOptions`, TensorBoard's on :class:`~lazymeter.TensorBoardSink`.

    Args:
        model: the network to train; the meter's parameters are exactly its parameters.
        alpha: output scale (> 0). Large alpha = lazy, small alpha = rich.
        probe: the points to measure on: a :class:`~lazymeter.ProbeSet` (train and test
            points, how many, seed) or a plain ``(x, y)`` of training points. The meter
            keeps up to the largest number of points any quantity reads at setup (the lazy
            baseline's ``max_points``). None: parameter quantities only.
        quantities: what to measure (:class:`~lazymeter.Quantity` objects, deep-copied;
            each owns its options); None = :func:`lazymeter.quantities.default`.
        schedule: int k (every k steps), ``"log"`` (8 log-spaced steps per decade),
            ``"log:N"``, or a callable ``step -> bool``; quantities may have their own.
        ntk: how kernels are computed: :class:`~lazymeter.NTKOptions` (engine, block size,
            memory budget, exact or sketched outputs); None = ``NTKOptions()``.
        log_dir: directory for ``history.jsonl``, ``meta.json`` and TensorBoard event files.
        sinks: more places for the measurements: a :class:`~lazymeter.TensorBoardSink` with
            options (scalar cadence, figures, the user's ``SummaryWriter``), and
            :class:`~lazymeter.Sink` objects (``write_row(row, step)`` and ``close()``), e.g.
            :class:`lazymeter.integrations.mlflow.MlflowSink` or
            :class:`lazymeter.integrations.wandb.WandbSink`; only rank 0 writes to them.
        center: subtract the initial model's output (so the initial function is 0).
        output_fn: reduces the model output to a Tensor (e.g. ``lambda y: y[:, -1]``).
        measure_mode: ``"eval"`` (default: measurements see the model in eval mode: no
            dropout of any kind, BatchNorm on running statistics) or ``"as_is"`` (its own
            modes); see :class:`~lazymeter.scaled.ScaledModel`.
        distributed: for ``LazyMeter(DistributedDataParallel(model))`` and a model sharded
            with ``fully_shard``: ``"auto"`` (= ``"rank0"``: rank 0 measures, the row is
            broadcast), ``"shard"`` (each rank computes its rows of the kernels) or None
            (independent meters; DDP only). Every rank holds rank 0's probes and history
            and the same snapshot (under ``fully_shard``, sharded as the model); only rank 0
            writes files. Under ``fully_shard`` the measuring ranks gather the full model
            for the duration of a measurement (:mod:`lazymeter.fsdp`; docs: Distributed).

    The keywords of lazymeter 0.1 (``test_probe``, ``max_probe``, ``ntk_method``,
    ``writer``, ``centering``, ...) still work for one release, with a
    ``DeprecationWarning`` naming the new spelling (:mod:`lazymeter.deprecations`).
    ``regime_thresholds`` (of the lazy/rich read-out logged as text and drawn by
    :meth:`plot`) is an attribute: set ``meter.regime_thresholds = RegimeThresholds(...)``.
    """

    @accepts_legacy_arguments
    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        *,
        probe: ProbeSet | Probe | None = None,
        quantities: Sequence[Q.Quantity] | None = None,
        schedule: ScheduleSpec = 100,
        ntk: NTKOptions | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        sinks: Sequence[Sink] | None = None,
        center: bool = True,
        output_fn: Callable[[Any], Any] | None = None,
        measure_mode: str = "eval",
        distributed: str | None = "auto",
    ) -> None:
        super().__init__(model, alpha, center, output_fn, measure_mode)
        if ntk is None:
            ntk = NTKOptions()
        if not isinstance(ntk, NTKOptions):
            raise TypeError(f"ntk: expected lazymeter.NTKOptions, got {type(ntk).__name__}")
        self.ntk = ntk
        self._sketch_se: list[float] = []
        self.schedule = make_schedule(schedule)
        self.regime_thresholds = RegimeThresholds()
        if quantities is None:
            quantities = Q.default()
        self.quantities: list[Q.Quantity] = [Q.own_copy(q) for q in quantities]
        # By position, not id(): a deep copy or an unpickled meter keeps them (ids change).
        self._schedules = [q.make_schedule() for q in self.quantities]
        net = self.net
        for q in self.quantities:
            q.bind(net, self.alpha, self.center, self.output_fn)
        self._distributed = distributed
        self._dist: Dist | None = make_dist(model, distributed, self._device(), self._fsdp)
        if self._dist is not None:  # rank 0's init everywhere (sharded tensors: one already)
            self._dist.broadcast_([t for t in self.snapshot.buffers() if not is_dtensor(t)])
        self._engine_info: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []
        self._scalars: dict[str, float] = {}
        self._step: int | None = None  # last step seen
        self._warner = Warner()
        self._returned: dict[int, list[str]] = {}  # by position: keys when it last worked
        for name in ("probe_x", "probe_y", "test_x", "test_y", "K0", "K0_test"):
            self.register_buffer(name, None)
        self._num_classes: int | None = None
        self._init_probes(ProbeSet.of(probe))
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        if self._dist is not None and not self._dist.main:
            self.log_dir, sinks = None, None  # one writer per run: rank 0
        self._log = RunLog(self.log_dir, sinks)
        estimators = {
            q.name: q.describe() for q in self.quantities if callable(getattr(q, "describe", None))
        }
        if self._fsdp:  # measured on the gathered model, once: a collective
            with self.full_model(keep=self._computes):
                info = self.ntk_engine if self._computes else None
            self._engine_info = self._dist.share(info) if self._dist is not None else info
        self._log.write_meta(
            {
                "ntk_engine": self.ntk_engine,
                "measure_mode": measure_mode,
                "estimators": estimators,
                "probe_choice": self.probe_choice,
            }
        )

    # ------------------------------------------------------------------ construction
    def _init_probes(self, probes: ProbeSet | None) -> None:
        """The probes, prepared in one place (:func:`~lazymeter.probes.prepare_probes`),
        then the initial kernels and every quantity's setup."""
        self._seed = 0 if probes is None else probes.seed
        dtype = next(p.dtype for p in self.net.parameters() if p.requires_grad)
        keep = max((q.probe_points() for q in self.quantities), default=0)
        fixed = probes is not None and isinstance(probes.max_points, int)
        keep = max(keep, POOL, probes.max_points if fixed else 0)
        self._keep = keep
        need = max(((q.min_points(), q.name) for q in self.quantities if q.needs), default=(3, ""))
        with self._warner.collected():  # the pilot kernel's torch warnings, once
            ready = prepare_probes(
                probes, device=self._device(), dtype=dtype, keep=keep, need=need,
                pilot=self._pilot_kernel, dist=self._dist, check=self._check_probes,
            )  # fmt: skip
        self.probe_choice: dict[str, Any] | None = ready.choice
        if ready.train is None:  # parameter quantities only
            self.quantities = [q for q in self.quantities if not q.needs]
            self._schedules = [q.make_schedule() for q in self.quantities]
            return
        self.probe_x, self.probe_y = ready.train
        if ready.test is not None:
            self.test_x, self.test_y = ready.test
        self._num_classes = ready.num_classes
        with self.full_model(keep=self._computes):
            self._n_out = self._main_first(lambda: self.check_outputs(self.probe_x))
            if not self.ntk.sketched and self._n_out >= MANY_OUTPUTS:  # said, not switched
                warnings.warn(
                    f"lazymeter: the model has {self._n_out} outputs per sample and exact "
                    "kernels (NTKOptions(outputs='all')) take one backward pass per output; "
                    "ntk=lm.NTKOptions(outputs=lm.ntk.Sketch(16)) estimates them from 16 "
                    f"output projections, ~{self._n_out / 16:.0f}x fewer backward passes "
                    "(its relative standard error is logged as ntk_sketch_rel_se)",
                    SlowWarning,
                    stacklevel=user_stacklevel(),
                )
            if self._computes:
                with self.measuring(), self._warner.collected():
                    self._setup(ready.full)
        if self._dist is not None and self._dist.strategy == "rank0":
            self._receive_reference()
        if self.K0 is not None and not bool((self.K0 != 0).any()):
            raise ValueError(
                "model: its NTK on the probe is exactly zero at initialisation: the output "
                "does not depend differentiably on the trainable parameters (a round(), "
                "sign() or other zero-gradient op inside forward?)"
            )

    def _check_probes(self, named: dict[str, Probe | None]) -> None:
        """:func:`~lazymeter.probes.check_against_model` with the model's output as
        measurements see it (as :meth:`measured_output`: eval mode, no graph, buffers
        untouched, after ``output_fn``), before any kernel: a probe the model cannot take,
        or labels that do not fit its outputs, are a ``ValueError`` naming the probe."""

        net = self.net

        def forward(x: Tensor) -> Any:
            with self.measuring(), torch.no_grad():
                return self._reduce(call_with(net, {}, (x,)))

        with self.full_model(keep=self._computes):
            self._main_first(lambda: check_against_model(named, forward, net, self.check_outputs))

    def _pilot_kernel(self, x: Tensor) -> tuple[Tensor, float]:
        """``(K, seconds)`` of ``x`` for :class:`~lazymeter.ProbeSize`; the first call also
        routes and plans, so the second is timed."""
        with self.measuring():
            self._ntk(x)
            t0 = time.perf_counter()
            K = self._ntk(x)
            return K, time.perf_counter() - t0

    def _setup(self, full: dict[str, Probe | None]) -> None:
        """``K_0`` of each probe, then every quantity's ``setup`` (init-time references)."""
        try:
            self.K0 = self._ntk(self.probe_x)
            if not bool((self.K0 != 0).any()):
                return  # rejected by the constructor, on every rank (after sharing)
            if self.test_x is not None:
                self.K0_test = self._ntk(self.test_x)
        except (ValueError, RuntimeError, NotImplementedError) as e:
            # E.g. BatchNorm in training mode: no per-sample NTK. Training must go on.
            self.K0 = self.K0_test = None
            msg = f"the NTK of this model cannot be computed ({e}); the NTK metrics and the "
            self._warner.once("ntk", msg + "lazy baseline will be NaN", stacklevel=5)
        ctx = self._context(-1, full)
        for q in self.quantities:
            if q.needs != "kernel" or self.K0 is not None:
                ctx.current = q.name
                q.setup(ctx)

    def _main_first(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; under ``fully_shard`` with the ``"rank0"`` strategy only rank 0 can run
        the model, so its result (or error) is every rank's."""
        if not (self._fsdp and self._dist is not None and self._dist.strategy == "rank0"):
            return fn()
        out, error = None, None
        if self._dist.main:
            try:
                out = fn()
            except Exception as e:  # noqa: BLE001 - raised on every rank, after the collective
                error = e
        out, error = self._dist.share((out, error))
        if error is not None:
            raise error
        return out

    @property
    def _computes(self) -> bool:
        """Whether this process computes measurements (all but non-zero ranks under rank0)."""
        d = self._dist
        return d is None or d.strategy == "shard" or d.main

    def _receive_reference(self) -> None:
        assert self._dist is not None
        states = [q.state_dict() for q in self.quantities]
        ref = (self.K0, self.K0_test, states, "ntk" in self._warner.warned)
        self.K0, self.K0_test, states, failed = self._dist.share(ref)
        for q, state in zip(self.quantities, states, strict=True):
            q.load_state_dict(state)
        if failed:
            self._warner.warned.add("ntk")

    # ------------------------------------------------------------------ measurements
    def _ntk(self, x: Tensor, x2: Tensor | None = None) -> Tensor:
        net, kw = self.net, {"output_fn": self.output_fn, "measure_mode": self.measure_mode}
        if self._dist is None or self._dist.strategy != "shard":
            K, rel_se = self.ntk.kernel(net, x, x2, **kw)
            if rel_se is not None:
                self._sketch_se.append(rel_se)
            return K
        like = next(p for p in net.parameters() if p.requires_grad)
        like = like.new_empty(0, dtype=kernel_dtype(like.dtype))
        kernel = lambda a, b: self.ntk.kernel(net, a, b, **kw)[0]  # noqa: E731
        return sharded_ntk(self._dist, kernel, x, x2, like)

    def _check_outputs_unchanged(self) -> None:
        n_out = FunctionalModel(self.net, self.output_fn).num_outputs((self.probe_x,))
        if n_out != self._n_out:
            raise ValueError(
                f"model: outputs per sample changed from {self._n_out} at construction to "
                f"{n_out}; its kernels are no longer comparable to K0"
            )

    def _params0(self) -> dict[str, Tensor]:
        snap = self.snapshot.as_dict()
        return {n: snap[n] for n, p in self.net.named_parameters() if p.requires_grad}

    def _context(self, step: int, full: dict[str, Probe | None] | None = None) -> Q.MeasureContext:
        probes = {
            "train": None if self.probe_x is None else (self.probe_x, self.probe_y),
            "test": None if self.test_x is None else (self.test_x, self.test_y),
        }
        return Q.MeasureContext(
            model=self.net, step=step, alpha=self.alpha, center=self.center, probes=probes,
            num_classes=self._num_classes, ntk=self._ntk,
            init_kernels={"train": self.K0, "test": self.K0_test}, params0=self._params0,
            initial_output=self.initial_output, output=self.measured_output,
            check=self._check_outputs_unchanged,
            full_probes={k: v for k, v in (full or {}).items() if v is not None}, seed=self._seed,
            kept=getattr(self, "_keep", None),
        )  # fmt: skip

    def measure(self) -> dict[str, float]:
        """Measure every quantity now (whatever the schedules); append the row to
        ``history`` and the sinks, and return it: ``step``, the last scalars passed to
        :meth:`step`, and each quantity's keys. Never changes parameters, gradients, mode
        or the RNG stream; a quantity that fails records NaN (one warning per quantity).

        Before any :meth:`step`, this is the run's first row, at step 0 (the model as it is:
        call it before training; a warning says when the model has moved since the meter
        was built), and :meth:`step` then counts from 1."""
        if self._step is None:
            self._first_row(0)
        return self._measure(list(enumerate(self.quantities)))

    def _measure(self, due: Sequence[tuple[int, Q.Quantity]]) -> dict[str, float]:
        row: dict[str, float] = {"step": -1 if self._step is None else self._step}
        row.update(self._scalars)
        ctx = self._context(int(row["step"]))
        self._sketch_se = []
        failures: list[tuple[str, Exception]] = []
        with self.full_model(keep=self._computes):
            self._compute(due, row, ctx, failures)
        if self._dist is not None:
            row = self._dist.share(row)  # one history on every rank: rank 0's
            failures = failures if self._dist.main else []  # rank 0 warns for the run
        self._warner.failures(failures)
        self.history.append(row)
        self._write(row, ctx, [q for _, q in due])
        return row

    # ------------------------------------------------------------------ first and last rows
    def _first_row(self, step: int) -> None:
        """The first call (``measure()``, or ``step(s)`` with ``s <= 0``) is the run's first
        row, at ``step``, of the model as it is: the schedules start there, and a warning
        says when the model is no longer the one the meter was built with."""
        self._step, self._scalars = step, {}
        self._start_schedules(step)
        if self._moved():
            self._warner.once(
                "first",
                f"the first row (step {step}) is measured after the model moved from its "
                "initial state, so the run has no row before training; call meter.step() "
                "after each update (the meter records step 0 itself) or pass step=k after k "
                "updates (step=epoch + 1 after each epoch), or call meter.measure() before "
                "training (warned once)",
            )

    def _start_schedules(self, step: int) -> None:
        self.schedule.due(step)
        for s in self._schedules:
            if s is not None:
                s.due(step)

    def _initial_row(self) -> dict[str, float]:
        """The row at step 0: every quantity, measured on the model before any update (the
        snapshot's parameters and buffers copied in for the measurement, then the model's
        own copied back bit for bit), without scalars."""
        self._step, self._scalars = 0, {}
        self._start_schedules(0)
        return self._at_init(lambda: self._measure(list(enumerate(self.quantities))))

    def _moved_tensors(self) -> list[tuple[Tensor, Tensor]]:
        """``(the tensor's data, its initial value)`` for each parameter and buffer of the
        model that differs from the snapshot: this rank's shards under ``fully_shard``
        (local tensors sharing the model's storage)."""
        snap = self.snapshot.as_dict()
        net = self.net
        if self._fsdp:
            reshard_all(net)  # a layer FSDP left gathered holds plain tensors, not its shards
        out = []
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            t0 = snap.get(name)
            if t0 is None or t0.shape != t.shape:
                continue  # a changed structure: the measurement says so (NaN, a warning)
            a, b = (x.to_local() if is_dtensor(x) else x for x in (t.data, t0.detach()))
            if a.shape != b.shape:
                continue  # placed differently: nothing this rank can copy
            if a.dtype != b.dtype or a.device != b.device or not torch.equal(a, b):
                out.append((a, b))
        return out

    def _moved(self) -> bool:
        return bool(self._moved_tensors())

    def _at_init(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` with the model at its initial values. Copied through ``.data``: no
        autograd version bump, so a graph built before (and backpropagated after) still
        sees the values it was built with. A no-op for a model that has not moved."""
        moved = self._moved_tensors()
        saved = [t.clone() for t, _ in moved]
        try:
            with torch.no_grad():
                for t, t0 in moved:
                    t.copy_(t0)
            return fn()
        finally:
            with torch.no_grad():
                for (t, _), s in zip(moved, saved, strict=True):
                    t.copy_(s)

    def _measure_last(self) -> dict[str, float] | None:
        """The row of the last step, measured now (every quantity, with that step's
        scalars) when that step has none yet; else None (cheap: nothing is computed)."""
        if self._step is None or (self.history and int(self.history[-1]["step"]) == self._step):
            return None
        return self._measure(list(enumerate(self.quantities)))

    def _plot_rows(self) -> list[dict[str, float]]:
        """The rows :meth:`plot` draws: ``history.jsonl`` when this meter writes one
        (measurements and scalar rows), else :attr:`history`; with the last step's scalars
        as a scalar row when that step has no row, so the losses reach the run's end."""
        rows: list[dict[str, Any]] = [dict(r) for r in self.history]
        jsonl = self._log.jsonl
        if jsonl is not None and os.path.isfile(jsonl.path):
            try:
                rows = read_jsonl(jsonl.path)
            except (OSError, ValueError):
                pass  # unreadable: the in-memory history
        last = rows[-1]["step"] if rows else None
        if self._step is not None and self._scalars and last != self._step:
            rows.append({"step": self._step, **self._scalars, KIND_KEY: SCALARS})
        return rows

    def _compute(
        self,
        due: Sequence[tuple[int, Q.Quantity]],
        row: dict[str, float],
        ctx: Q.MeasureContext,
        failures: list[tuple[str, Exception]],
    ) -> None:
        """Fill ``row`` with each due quantity's values (NaN and a failure for each that
        fails) on a process that computes measurements."""
        if not self._computes:
            return
        changed = None
        if self._dist is not None and self._dist.strategy == "shard":
            net = self.net  # a collective on every rank: are the replicas still one model?
            named = [*net.named_parameters(), *net.named_buffers()]
            differ = self._dist.differing(named)
            if differ is not None:
                changed = ValueError(
                    f"distributed='shard': the replicas differ ({differ}), so each rank would "
                    "measure its own model and the kernels would mix them; keep them "
                    "identical (DDP's broadcast_buffers=True, the default, for BatchNorm "
                    "statistics) or pass distributed='rank0' (rank 0's model alone)"
                )
        try:
            self.check_structure()
        except ValueError as e:  # every quantity would compare against a stale snapshot
            changed = changed or e
        # torch's known harmless warnings dropped, any other shown once per run (a bare
        # catch_warnings would reprint it at every measurement): Warner.collected.
        with self.measuring(), torch.no_grad(), self._warner.collected():
            warnings.simplefilter("ignore", RuntimeWarning)  # degenerate -> NaN, quietly
            for i, q in due:
                ctx.current = q.name
                try:
                    if changed is not None:
                        raise changed
                    out = q.compute(ctx)
                    self._returned[i] = list(out)
                    row.update(out)
                except Exception as e:  # noqa: BLE001 - a diagnostic must never stop training
                    keys = q.keys(ctx)
                    if keys is None:  # the columns it had last time keep existing, as NaN
                        keys = self._returned.get(i, [q.name])
                    row.update(dict.fromkeys(keys, math.nan))
                    failures.append((q.name, e))
        failures += ctx.soft_failures
        if self.ntk.sketched:
            row["ntk_sketch_rel_se"] = max(self._sketch_se, default=math.nan)

    def _write(self, row: dict[str, float], ctx: Q.MeasureContext, due: Sequence[Any]) -> None:
        step = int(row["step"])
        regime = describe(row, self.regime_thresholds)

        def figures() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for q in due if self._log.tb.figures else ():
                try:
                    out.update(q.figures(ctx, row))
                except Exception:  # noqa: BLE001 - a figure is a courtesy (no matplotlib?)
                    pass
            return out

        error = self._log.write_row(row, step, {"lazymeter/regime": regime}, figures)
        if error is not None:
            self._warner.once(
                "jsonl",
                f"could not write {self._log.jsonl.path} ({error}); measurements are kept "
                "in meter.history (warned once)",
            )

    def step(self, step: int | None = None, **scalars: float) -> dict[str, float] | None:
        """Record ``scalars`` (e.g. ``train_loss=..., test_loss=...``) at ``step``; measure
        the quantities that are due. Returns the measurement row when one was taken, else
        None.

        Steps count updates: call it after each optimiser step. The run's first row is step
        0, before any update: at the first call with ``step`` None or positive, the meter
        first measures the model at its initial values (every quantity, no scalars).
        ``step`` defaults to the previous step + 1 (so 1 at the first call) and must
        increase. A first call with ``step=0`` (or below) is itself the first row, every
        quantity measured on the model as it is (a warning when it has already moved)."""
        first = self._step is None
        if first and self._dist is None and self._distributed is not None and world_size() > 1:
            # The meter was built before init_process_group, or is inside DDP(LazyMeter(..)).
            raise TypeError(WRONG_ORDER.format(world=world_size()))
        if step is None:
            step = 1 if self._step is None else self._step + 1
        elif isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step: expected an int, got {type(step).__name__}")
        if self._step is not None and step <= self._step:
            # Mid-run: never stop training; skip the call, say so once.
            self._warner.once(
                "step",
                f"step went backwards ({step} after {self._step}); ignoring meter.step calls "
                f"until the step passes {self._step} (warned once; after loading a checkpoint, "
                "continue from meter.last_step + 1)",
            )
            return None
        values = scalar_values(scalars)
        for k, v in values.items():
            if not math.isfinite(v):
                self._warner.once(k, f"{k} is {v} at step {step}; recorded as is")
        if first and step <= 0:  # the user's own first row: every quantity, as it is
            self._first_row(step)
            self._scalars = values
            return self._measure(list(enumerate(self.quantities)))
        if first:
            self._initial_row()  # step 0, before any update
        self._step = step
        self._scalars = values
        due = self.schedule.due(step)
        # Quantities with a schedule of their own are measured on theirs alone.
        own = {i for i, s in enumerate(self._schedules) if s is not None and s.due(step)}
        if due or own:
            mine = [
                (i, q)
                for i, q in enumerate(self.quantities)
                if i in own or (due and self._schedules[i] is None)
            ]
            return self._measure(mine)  # + the scalars
        self._log.write_scalars(values, step)  # to the sinks whose scalar_every is due
        return None

    @property
    def scalar_every(self) -> int:
        """The most often :meth:`step`'s scalars reach a sink, in steps (TensorBoard's
        ``TensorBoardSink(scalar_every=...)``, 10 by default); :meth:`wants_scalars` says
        whether a given step's do."""
        return self._log.scalar_every

    def wants_scalars(self, step: int) -> bool:
        """Whether the scalars passed to :meth:`step` at ``step`` are recorded anywhere (a
        measurement is due, or a sink's ``scalar_every`` divides ``step``): compute
        expensive scalars only then."""
        return self.will_measure(step) or self._log.wants_scalars(step)

    def will_measure(self, step: int | None = None) -> bool:
        """Whether :meth:`step` at ``step`` (default: the next one) will measure; use it to
        compute expensive scalars (a test loss) only when they will be recorded. Before
        the first call: True for ``step <= 0`` (the first row); for a later step, as the
        schedules will be after the initial row at step 0."""
        if step is None:
            step = 1 if self._step is None else self._step + 1
        schedules = [self.schedule, *(s for s in self._schedules if s is not None)]
        if self._step is None:
            if step <= 0:
                return True
            schedules = [copy.deepcopy(s) for s in schedules]
            for s in schedules:
                s.due(0)  # as the initial row leaves them
        return any(s.peek(step) for s in schedules)

    @property
    def last_step(self) -> int | None:
        """The last step passed to :meth:`step` (None before the first)."""
        return self._step

    @property
    def ntk_engine(self) -> dict[str, Any]:
        """Which NTK engine measures: ``method`` (as asked), ``engine`` (as run: for
        ``"auto"`` its choice, remembered after any fallback past engines that failed on
        this model) and, for ``"structured"``, ``coverage`` (the fraction of trainable
        entries its rules compute on the probe). Also in ``log_dir/meta.json`` and the
        TensorBoard text tab. The memory budget and block sizes: :attr:`ntk_plan`."""
        if self._sharded and self._engine_info is not None:
            return dict(self._engine_info)  # found on the gathered model at construction
        info: dict[str, Any] = {**self.ntk.describe(), "engine": None}
        if self.probe_x is None:
            return info
        kw = {"output_fn": self.output_fn}
        try:
            with self.measuring():  # in the mode measurements see
                info["engine"] = info["method"]
                if info["method"] == "auto":
                    info["engine"] = select_method(
                        self.net, self.probe_x, memory_budget=self.ntk.memory_budget, **kw
                    )
                if info["engine"] == "structured":
                    info["coverage"] = coverage(self.net, self.probe_x, **kw)
        except (ValueError, RuntimeError) as e:  # no NTK at all (train-mode BatchNorm, as_is)
            info["engine"], info["error"] = None, str(e)
        return info

    @property
    def ntk_plan(self) -> dict[str, Any]:
        """How a kernel of the probe runs now: ``memory_budget`` (bytes), ``budget_source``
        (the argument, the environment variable, or the fraction of the device's free
        memory it is: read at each kernel, so it follows the device), ``chunk_size`` and
        ``blocks`` (:func:`lazymeter.ntk.kernel_plan`; with a ``Sketch``, the budget only).
        Not in ``meta.json``: it depends on the memory free at the moment, not the numbers."""
        budget = self.ntk.memory_budget
        size, source = resolve_budget(budget, self._device())
        engine = self.ntk_engine["engine"]
        if self.probe_x is None or engine is None or self.ntk.sketched:
            return {"memory_budget": size, "budget_source": source}
        with self.measuring():
            found = kernel_plan(
                self.net, self.probe_x, method=engine, memory_budget=budget,
                chunk_size=self.ntk.chunk_size, output_fn=self.output_fn,
            )  # fmt: skip
        return {k: v for k, v in found.items() if k != "engine"}

    @property
    def baseline(self) -> dict[str, float]:
        """The lazy baseline's values (``k0_test_mse``, ...; empty without a test probe)."""
        found = [q.results for q in self.quantities if isinstance(q, Q.LazyBaseline)]
        return dict(found[0]) if found else {}

    @property
    def linearized(self) -> nn.Module:
        """The linearised shadow model (requires a :class:`~lazymeter.quantities.LinearizedShadow`
        quantity, e.g. ``quantities=lm.quantities.default(linearized=True)``)."""
        for q in self.quantities:
            if isinstance(q, Q.LinearizedShadow) and q.shadow is not None:
                return q.shadow
        raise RuntimeError(
            "linearized: construct the meter with a LinearizedShadow quantity "
            "(quantities=lazymeter.quantities.default(linearized=True))"
        )

    def _apply(self, fn: Any, recurse: bool = True) -> LazyMeter:
        super()._apply(fn, recurse)
        # .to()/.double() move what quantities hold: the shadow, and the tensors they keep
        # (K0 per layer, initial activations, leave-one-out values, own points), which
        # would otherwise stay behind and mix devices at every later measurement.
        self._quantity_tensors(fn, recurse)
        return self

    def _quantity_tensors(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> None:
        """Apply ``fn`` to the modules the quantities hold (in place) and to the tensors in
        their other attributes (dicts, lists and tuples of them are rebuilt)."""
        for q in self.quantities:
            for k, v in list(vars(q).items()):
                if isinstance(v, nn.Module):
                    v._apply(fn, recurse)
                elif any(isinstance(t, Tensor) for t in tree_leaves(v)):
                    setattr(q, k, tree_map(lambda t: fn(t) if isinstance(t, Tensor) else t, v))

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        self._log.flush()  # a checkpoint is a promise that what came before it is on disk
        return {
            "version": _STATE_VERSION,
            "alpha": self.alpha,
            "step": self._step,
            "schedule": self.schedule.state_dict(),
            "history": [dict(r) for r in self.history],
            "scalars": dict(self._scalars),
            "num_classes": self._num_classes,
            "quantities": [
                (q.name, q.state_dict(), s.state_dict() if s is not None else None)
                for q, s in zip(self.quantities, self._schedules, strict=True)
            ],
            "sinks": self._log.state_dict(),
        }

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a checkpoint of :meth:`state_dict`: all or nothing.

        Everything is checked before anything changes (every key present and no stranger
        with ``strict``; every tensor of the shape this meter and model hold; the meter's
        own state complete, of this version, alpha and quantities, each quantity and
        schedule able to take its part): a rejected checkpoint is a ``ValueError`` or
        ``TypeError`` naming the key, and leaves the model, the meter and its files as they
        were. Only then are the tensors copied, the history restored, and ``history.jsonl``
        rewritten from it (a file holding rows that the checkpoint does not is first moved
        aside to ``history.jsonl.N``). ``strict=False`` lets model keys be missing or extra,
        never the meter's own."""
        self._check_state(state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _check_state(self, sd: Any, strict: bool) -> None:
        if not isinstance(sd, Mapping):
            raise TypeError(
                "state_dict: expected the mapping meter.state_dict() returns, got "
                f"{type(sd).__name__}"
            )
        own = super().state_dict(keep_vars=True)
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        ours = [k for k in missing if not k.startswith("model.")]
        if ours or (strict and (missing or unexpected)):
            what = []
            if missing:
                what.append(f"missing keys {_few(missing)}")
            if unexpected:
                what.append(f"unexpected keys {_few(unexpected)}")
            raise ValueError(
                f"state_dict: {' and '.join(what)}; it was saved from another model or meter "
                "set-up (probes, quantities, model): build the meter as the saved one was"
            )
        for k, v in own.items():
            if k not in sd or not isinstance(v, Tensor):
                continue
            t = sd[k]
            if not isinstance(t, Tensor):
                raise TypeError(f"state_dict[{k!r}]: expected a Tensor, got {type(t).__name__}")
            if t.shape != v.shape:
                raise ValueError(
                    f"state_dict[{k!r}]: has shape {tuple(t.shape)} but this meter holds "
                    f"{tuple(v.shape)}; it was saved from another model or probe"
                )
        key = "_extra_state"
        if key in sd:
            self._check_extra_state(sd[key])

    def _check_extra_state(self, state: Any) -> None:
        where = "state_dict['_extra_state']"
        if not isinstance(state, Mapping):
            raise ValueError(f"{where}: expected a dict, got {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"{where}: unsupported lazymeter state version {state.get('version')!r} (this "
                f"lazymeter writes and reads version {_STATE_VERSION})"
            )
        absent = [k for k in _STATE_KEYS if k not in state]
        if absent:
            raise ValueError(f"{where}: missing {absent}; the checkpoint is incomplete")
        alpha = state["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise ValueError(f"{where}['alpha']: expected a number, got {alpha!r}")
        if not math.isclose(alpha, self.alpha):
            raise ValueError(
                f"state_dict: was saved with alpha={alpha} but this meter has alpha="
                f"{self.alpha}; construct the meter with the same alpha"
            )
        step = state["step"]
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ValueError(f"{where}['step']: expected an int or None, got {step!r}")
        history = state["history"]
        if not isinstance(history, Sequence) or not all(isinstance(r, Mapping) for r in history):
            raise ValueError(f"{where}['history']: expected a list of dicts (rows)")
        if not isinstance(state["scalars"], Mapping):
            raise ValueError(f"{where}['scalars']: expected a dict")
        entries = state["quantities"]
        if not isinstance(entries, Sequence) or not all(
            isinstance(e, Sequence) and len(e) == 3 for e in entries
        ):
            raise ValueError(f"{where}['quantities']: expected (name, state, schedule) triples")
        saved = [e[0] for e in entries]
        if saved != [q.name for q in self.quantities]:
            raise ValueError(
                f"state_dict: was saved with quantities {saved} but this meter measures "
                f"{[q.name for q in self.quantities]}; construct it with the same quantities"
            )
        # Each part is tried on a copy (schedules) or tried and reverted (quantities, whose
        # state_dict round-trips by contract), so nothing has changed if one refuses.
        trials: list[tuple[str, Callable[[], None]]] = [
            ("schedule", lambda: copy.deepcopy(self.schedule).load_state_dict(state["schedule"]))
        ]
        for i, (name, _, ss) in enumerate(entries):
            sched = self._schedules[i]
            if (ss is None) != (sched is None):
                raise ValueError(f"{where}['quantities'][{i}] ({name}): schedule mismatch")
            if sched is not None:
                trials.append((name, lambda s=sched, ss=ss: copy.deepcopy(s).load_state_dict(ss)))
        for label, trial in trials:
            try:
                trial()
            except Exception as e:  # noqa: BLE001 - named, then re-raised as a ValueError
                raise ValueError(f"{where}: the {label} schedule cannot load ({e!r})") from None
        before = [q.state_dict() for q in self.quantities]
        try:
            for q, (name, qs, _) in zip(self.quantities, entries, strict=True):
                try:
                    q.load_state_dict(qs)
                except Exception as e:  # noqa: BLE001 - named, then re-raised as a ValueError
                    raise ValueError(
                        f"{where}: quantity {name!r} cannot load its saved state ({e!r})"
                    ) from None
        finally:
            for q, qs in zip(self.quantities, before, strict=True):
                q.load_state_dict(qs)
        self._log.check_state(state.get("sinks"))

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._check_extra_state(state)  # again: set_extra_state may be called on its own
        self._step = state["step"]
        self.schedule.load_state_dict(state["schedule"])
        self.history = [dict(r) for r in state["history"]]
        self._scalars = dict(state["scalars"])
        self._num_classes = state["num_classes"]
        for i, (q, (_, qs, ss)) in enumerate(
            zip(self.quantities, state["quantities"], strict=True)
        ):
            q.load_state_dict(qs)
            if ss is not None:
                self._schedules[i].load_state_dict(ss)
        # Tensors a quantity keeps come back where they were saved (a checkpoint loaded
        # with map_location="cpu" into a GPU meter): put them beside the model.
        device = self._device()
        self._quantity_tensors(lambda t: t.to(device))
        self._cache = []
        self._log.load_state_dict(state.get("sinks"))
        self._log.rewind(self.history, self._step)

    def __getstate__(self) -> dict[str, Any]:
        """``copy.deepcopy(meter)`` and pickling (``torch.save(meter)``): the copy holds the
        model, snapshot, probes, kernels, quantities and history, and measures in memory: the
        log files and sinks stay with the original (``log_dir`` None, no TensorBoard). A
        distributed meter is refused (it holds a process group)."""
        if self._dist is not None:
            raise TypeError(
                "LazyMeter: a distributed meter cannot be copied or pickled (it holds a "
                "process group); save meter.state_dict() and load it into a meter built the "
                "same way in the new process"
            )
        state = super().__getstate__()
        state["_log"] = RunLog(None)
        state["log_dir"] = None
        return state

    def close(self, hparams: Mapping[str, Any] | None = None, *, measure: bool = True) -> None:
        """Measure the last step if it has no row yet, then flush and close the log files
        (the meter keeps working in memory).

        The run's last row is its last step's: when the schedule skipped that step, every
        quantity is measured now with that step's scalars (once: a second ``close()``, or
        one after a measured last step, computes nothing). ``measure=False`` skips that
        measurement and writes the last step's scalars to ``history.jsonl`` as a scalar row
        instead. A distributed meter measures collectively: call ``close()`` on every rank.

        ``hparams`` (e.g. ``{"alpha": 1, "eps": 0.02, "lr": ..., "max_probe": 64}``) are
        logged with the last measurement's values to TensorBoard's HPARAMS tab.
        """
        if measure:
            self._measure_last()
        else:
            self._log.write_last_scalars(self._scalars, self._step)
        if hparams is not None and self.history:
            probe_size = 0 if self.probe_x is None else int(self.probe_x.shape[0])
            self._log.write_hparams(
                {"alpha": self.alpha, "max_probe": probe_size, **dict(hparams)},
                {k: v for k, v in self.history[-1].items() if k != "step"},
            )
        self._log.close()

    # ------------------------------------------------------------------ notebooks
    def plot(self, **kwargs: Any) -> Any:
        """A matplotlib ``Figure`` of the run so far: :func:`lazymeter.plot_run` of
        :attr:`history` (losses and the K0 baseline, NTK drift and CKA to init, alignment
        with bands of one standard error, parameter movement, the regime read at each
        measurement), with ``log_dir/meta.json`` when there is one and the meter's
        ``regime_thresholds``. ``kwargs``: those of :func:`~lazymeter.plot_run`, e.g.
        ``loss="cross_entropy"`` (the baseline, an MSE, is then not drawn on the loss's
        axes) or ``step_label="epoch"``. The losses come from ``history.jsonl`` when the
        meter writes one (its scalar rows too) and reach the last step passed to
        :meth:`step`. Needs matplotlib; pyplot is never used."""
        from .plots import plot_run, run_info

        kwargs.setdefault("thresholds", self.regime_thresholds)
        kwargs["meta"] = {**run_info(self.log_dir), **(kwargs.get("meta") or {})}
        return plot_run(self._plot_rows(), **kwargs)

    def live(self, every: int = 1, *, display: Any = None, **plot_kwargs: Any) -> Any:
        """Show :meth:`plot` in a Jupyter notebook now and redraw it in place after every
        ``every``-th measurement; returns the :class:`~lazymeter.LiveView`, a sink of this
        meter from now on (``close()`` stops it; a view attached earlier is closed and
        replaced). ``display``: IPython's ``display`` by default (ImportError without
        IPython) or a stand-in; ``plot_kwargs`` go to :meth:`plot`."""
        from .live import LiveView

        view = LiveView(lambda: self.plot(**plot_kwargs), every=every, display=display)
        view.rows = [dict(r) for r in self.history]
        for old in [s for s in self._log.sinks if isinstance(s, LiveView)]:
            old.close()
            self._log.sinks.remove(old)
        view.refresh()  # the output appears in the cell that calls live()
        self._log.sinks.append(view)
        return view
