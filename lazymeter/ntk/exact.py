"""The exact kernel over the engine registry: :func:`exact_ntk` (``empirical_ntk`` with
``outputs="all"`` on an unsharded model), how ``method="auto"`` chooses
(:func:`select_method`) and what a call would do (:func:`kernel_plan`).

:func:`lazymeter.empirical_ntk` (``api.py``) is the public entry point: it gathers a
sharded model and sends a ``Sketch`` to :mod:`~lazymeter.ntk.sketch`, which builds on this
module; nothing here imports either, so the layers do not form a circle."""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from . import tuning
from .blocks import slow_scope
from .budget import resolve_budget
from .cache import CACHE
from .engines import ENGINES, as_engine, choose_engine, engine_kernel, ranked_engines
from .functional import (
    FunctionalModel,
    OutputFn,
    as_inputs,
    cast_copy,
    measured,
    num_samples,
    slice_inputs,
)
from .groups import group_names

logger = logging.getLogger("lazymeter")


def kernel_dtype(model_dtype: torch.dtype, dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype a kernel is computed and accumulated in: ``dtype`` when given, float32
    for half-precision (float16/bfloat16) models, else the model's parameter dtype."""
    if dtype is not None:
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
        return dtype
    if model_dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return model_dtype


def choose_method(
    fm: FunctionalModel, x1: tuple[Tensor, ...], n2: int | None, n_out: int, trace: bool
) -> str:
    """The engine ``method="auto"`` takes: the applicable registered engine with the lowest
    estimated cost (:func:`~lazymeter.ntk.engines.choose_engine`; each engine's
    :meth:`~lazymeter.ntk.engines.Engine.cost` and
    :meth:`~lazymeter.ntk.engines.Engine.applicable` say how)."""
    return choose_engine(fm, x1, n2, n_out, trace)


def _cast_inputs(xs: tuple[Tensor, ...], dtype: torch.dtype) -> tuple[Tensor, ...]:
    return tuple(t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t for t in xs)


def _as_computed(
    model: nn.Module, output_fn: OutputFn | None, x1: Any, x2: Any, dtype: torch.dtype | None
) -> tuple[FunctionalModel, tuple[Tensor, ...], tuple[Tensor, ...] | None]:
    """The model and inputs as the engines see them: in the kernel's dtype
    (:func:`kernel_dtype`; a cast copy of a half-precision model), inputs on its device.
    Planning, engine choice and the kernel all go through here, so that they agree."""
    fm = FunctionalModel(model, output_fn)
    target = kernel_dtype(fm.dtype, dtype)
    if target != fm.dtype:
        fm = FunctionalModel(cast_copy(model, target), output_fn)
    xs1 = _cast_inputs(as_inputs(x1, "x1", fm.device), target)
    xs2 = None if x2 is None else _cast_inputs(as_inputs(x2, "x2", fm.device), target)
    return fm, xs1, xs2


@measured
def select_method(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    trace_outputs: bool = True,
    memory_budget: int | str | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """The engine ``method="auto"`` uses for these shapes: the one it ran successfully on
    this model, input signature and size bucket if it has (after falling back past
    failing engines), else its first choice: the fastest applicable engine on a timed
    trial where :mod:`~lazymeter.ntk.tuning` is on (CUDA by default; the trial is then
    remembered for the kernels that follow), else the lowest estimated cost.
    ``memory_budget`` and ``dtype``: as for :func:`empirical_ntk` (the trial runs with
    them)."""
    fm, xs1, xs2 = _as_computed(model, output_fn, x1, x2, dtype)
    budget, _ = resolve_budget(memory_budget, fm.device)
    return _auto_choice(fm, xs1, xs2, trace_outputs, budget)


def _auto_choice(
    fm: FunctionalModel,
    xs1: tuple[Tensor, ...],
    xs2: tuple[Tensor, ...] | None,
    trace: bool,
    budget: int,
) -> str:
    """:func:`select_method` on the model and inputs as the engines see them."""
    key = _auto_key(fm, xs1, xs2, trace)
    known = CACHE.methods.get(fm.model, {}).get(key)
    if known is not None:
        return known
    n_out = fm.num_outputs(xs1)
    run = dict(n_out=n_out, trace=trace, chunk_size=None, budget=budget, groups=None)
    order, _, why_not = _auto_order(fm, xs1, xs2, key, run)
    first = next(order, None)
    if first is None:
        raise ValueError("method='auto': no registered engine applies (" + "; ".join(why_not) + ")")
    return first


@measured
def kernel_plan(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    method: str = "auto",
    trace_outputs: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    dtype: torch.dtype | None = None,
    measure_mode: str = "eval",
) -> dict[str, Any]:
    """How :func:`empirical_ntk` with these arguments would compute the kernel, without
    computing it: ``engine`` (for ``"auto"`` its choice, or the engine it remembered),
    ``memory_budget`` (bytes) and ``budget_source`` (the argument, the environment
    variable, or which fraction of what the device has free), ``chunk_size`` (samples per
    block, as given or planned to fit the budget), ``blocks`` (row blocks for ``x1``),
    ``choice`` (why this engine: forced, timed on a trial block, or the FLOP model) and
    ``predicted_peak`` (bytes: the engine's memory model of its blocks,
    :meth:`~lazymeter.ntk.engines.Engine.peak_bytes`, plus the returned kernel and its
    float64 block sums)."""
    fm, xs1, xs2 = _as_computed(model, output_fn, x1, x2, dtype)
    budget, source = resolve_budget(memory_budget, fm.device)
    engine, choice = method, f"forced by method={method!r}"
    if method == "auto":
        engine = _auto_choice(fm, xs1, xs2, trace_outputs, budget)
        trials = CACHE.tunings.get(fm.model, {}).get(_auto_key(fm, xs1, xs2, trace_outputs))
        choice = tuning.describe(trials or [], fm.device)
    if engine not in ENGINES:
        raise ValueError(f"method: unknown {method!r}; choose 'auto' or one of {sorted(ENGINES)}")
    n_out = fm.num_outputs(xs1)
    if chunk_size is None:
        chunk_size = _planned_chunk(engine, fm, xs1, xs2, n_out, trace_outputs, budget)
    n1, n2 = num_samples(xs1), None if xs2 is None else num_samples(xs2)
    blocks = as_engine(ENGINES[engine], engine).peak_bytes(
        fm, xs1, n2, n_out=n_out, trace=trace_outputs, chunk_size=int(chunk_size), budget=budget
    )
    o2 = 1 if trace_outputs else n_out**2
    c = min(int(chunk_size), n1)
    kernel = n1 * (n2 or n1) * o2 * fm.dtype.itemsize + c * min(c, n2 or n1) * o2 * 8
    return {
        "engine": engine,
        "memory_budget": budget,
        "budget_source": source,
        "chunk_size": int(chunk_size),
        "blocks": -(-n1 // int(chunk_size)),
        "choice": choice,
        "predicted_peak": int(blocks + kernel),
    }


@measured
def exact_ntk(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    method: str = "auto",
    trace_outputs: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    dtype: torch.dtype | None = None,
    per_layer: bool = False,
    measure_mode: str = "eval",
) -> Tensor | dict[str, Tensor]:
    """:func:`lazymeter.empirical_ntk` with ``outputs="all"`` on an unsharded model (its
    docstring has the arguments): the engine chosen, run and checked for overflow."""
    fm, xs1, xs2 = _as_computed(model, output_fn, x1, x2, dtype)
    if method != "auto" and method not in ENGINES:
        raise ValueError(f"method: unknown {method!r}; choose 'auto' or one of {sorted(ENGINES)}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
    budget, _ = resolve_budget(memory_budget, fm.device)

    n_out = fm.num_outputs(xs1)
    split = group_names(fm.params) if per_layer else None
    run = dict(n_out=n_out, trace=trace_outputs, chunk_size=chunk_size, budget=budget)
    run["groups"] = None if split is None else list(split.values())
    if method != "auto":
        K = _run(method, fm, xs1, xs2, **run)
        if not _finite(K):
            _warn_non_finite(fm, method, _finite_model(fm, xs1, xs2))
        return _named(K, split)
    # auto: the fastest applicable engine (timed on a trial block where tuning is on, else
    # the lowest FLOP estimate); if it fails on this model (an op without a batching or
    # forward-mode rule, ...) or returns a non-finite kernel of a finite model (an overflow
    # inside its contraction), the next one, and the one that worked is remembered for
    # this model, input signature and size bucket.
    key = _auto_key(fm, xs1, xs2, trace_outputs)
    known = CACHE.methods.get(fm.model, {}).get(key)
    last: tuple[str, Tensor] | None = None  # the first engine whose kernel overflowed
    if known is not None and known in ENGINES:
        K = _run(known, fm, xs1, xs2, **run)
        if _finite(K):
            return _named(K, split)
        if not _finite_model(fm, xs1, xs2):  # NaN in, NaN out: every engine would agree
            _warn_non_finite(fm, known, False)
            return _named(K, split)
        last = (known, K)  # it overflowed on these inputs: the others, not it again
    skip = None if last is None else last[0]
    order, trial, why_not = _auto_order(fm, xs1, xs2, key, run, skip=skip)
    tried: list[str] = []
    for i, name in enumerate(order):
        try:
            K = trial if trial is not None and i == 0 else _run(name, fm, xs1, xs2, **run)
        except (RuntimeError, NotImplementedError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            tried.append(f"{name} ({first})")
            logger.warning(
                "lazymeter: method='auto': engine %r failed on this model (%s); trying the next",
                name,
                first,
            )
            continue
        if not _finite(K):
            if not _finite_model(fm, xs1, xs2):  # NaN in, NaN out: every engine would agree
                _warn_non_finite(fm, name, False)
                return _named(K, split)
            logger.warning(
                "lazymeter: method='auto': engine %r returned NaN/Inf for a finite model and "
                "inputs (an overflow in its contraction); trying the next",
                name,
            )
            last = last or (name, K)
            continue
        CACHE.methods.setdefault(fm.model, {})[key] = name
        return _named(K, split)
    if last is not None:
        _warn_non_finite(fm, last[0], True)
        return _named(last[1], split)
    raise RuntimeError(
        "method='auto': every applicable engine failed: "
        + "; ".join(tried or ["none applies"] + why_not)
    )


def _auto_order(
    fm: FunctionalModel,
    xs1: tuple[Tensor, ...],
    xs2: tuple[Tensor, ...] | None,
    key: tuple,
    run: dict[str, Any],
    skip: str | None = None,
) -> tuple[Iterator[str], Tensor | None, list[str]]:
    """``(engines to try, in order; the first one's kernel when its trial was the whole
    kernel; why the others do not apply, filled as the engines are asked)``. Applicable
    engines come cheapest estimate first, asked lazily (an expensive applicability test
    runs only when its engine is next in line); where :mod:`~lazymeter.ntk.tuning` is on,
    the first few are timed on a trial block once per ``key`` (the timings kept in
    ``CACHE.tunings``) and put fastest first."""
    n2 = None if xs2 is None else num_samples(xs2)
    why_not: list[str] = []

    def applicable() -> Iterator[str]:
        for name, why in ranked_engines(fm, xs1, n2, run["n_out"], run["trace"]):
            if why is not None:
                why_not.append(f"{name}: {why}")
            elif name != skip:
                yield name

    rest = applicable()
    trials = CACHE.tunings.get(fm.model, {}).get(key)
    trial = None
    if trials is None and tuning.enabled(fm.device):
        head = list(itertools.islice(rest, tuning.MAX_CANDIDATES))
        rest = itertools.chain(head, rest)
        if len(head) > 1:
            points = min(num_samples(xs1), tuning.TRIAL_POINTS)
            block = slice_inputs(xs1, 0, points)
            trials, trial = tuning.time_engines(
                head,
                lambda name: _run(name, fm, block, None, **run),
                points=points,
                device=fm.device,
                finite=_finite,
            )
            CACHE.tunings.setdefault(fm.model, {})[key] = trials
            if not (xs2 is None and points == num_samples(xs1)):
                trial = None  # a block of a larger kernel: not the answer
    if not trials:
        return rest, None, why_not
    timed = [t.engine for t in trials if t.seconds is not None and t.engine != skip]
    others = (name for name in rest if name not in timed)
    return itertools.chain(timed, others), trial, why_not


def _finite(K: Tensor) -> bool:
    return bool(torch.isfinite(K).all())


def _finite_model(
    fm: FunctionalModel, xs1: tuple[Tensor, ...], xs2: tuple[Tensor, ...] | None
) -> bool:
    """Whether the trainable parameters and floating inputs hold only finite values."""
    tensors = [*fm.params.values(), *xs1, *(xs2 or ())]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _warn_non_finite(fm: FunctionalModel, name: str, finite_model: bool) -> None:
    """A kernel with NaN or Inf never leaves :func:`empirical_ntk` silently."""
    if not finite_model:
        why = "the model's parameters hold NaN or Inf (a diverged run?)"
    else:
        why = (
            f"an overflow inside engine {name!r} (inputs or activations near the dtype's "
            f"limit, {fm.dtype}); try method='auto' (it falls back past such an engine), "
            "dtype=torch.float64 or smaller inputs"
        )
    warnings.warn(
        f"lazymeter: empirical_ntk: the kernel has NaN or Inf: {why}", RuntimeWarning, stacklevel=4
    )


def _auto_key(
    fm: FunctionalModel, xs: tuple[Tensor, ...], xs2: tuple[Tensor, ...] | None, trace: bool
) -> tuple:
    """What ``"auto"``'s choice depends on: modes, output reduction, trainable parameters,
    per-sample input shapes, dtype and device, and the kernel's size bucket."""
    longest = max(num_samples(xs), 0 if xs2 is None else num_samples(xs2))
    return (
        tuning.size_bucket(longest),
        fm.model.training,
        id(fm.output_fn),
        tuple(sorted(fm.params)),
        trace,
        tuple((t.shape[1:], t.dtype, t.device) for t in xs),
    )


def _named(K: Tensor, split: dict[str, list[str]] | None) -> Tensor | dict[str, Tensor]:
    """``K`` itself, or its groups ``K[g]`` by group name when the kernel was split."""
    if split is None:
        return K
    return dict(zip(split, K.unbind(0), strict=True))


def _planned_chunk(
    method: str,
    fm: FunctionalModel,
    xs1: tuple[Tensor, ...],
    xs2: tuple[Tensor, ...] | None,
    n_out: int,
    trace: bool,
    budget: int,
) -> int:
    """The block size engine ``method`` plans for these inputs within ``budget`` bytes."""
    longest = max(num_samples(xs1), 0 if xs2 is None else num_samples(xs2))
    engine = as_engine(ENGINES[method], method)
    return engine.plan_chunk(fm, xs1, n_out=n_out, trace=trace, budget=budget, n_samples=longest)


def _run(
    method: str,
    fm: FunctionalModel,
    xs1: tuple[Tensor, ...],
    xs2: tuple[Tensor, ...] | None,
    *,
    n_out: int,
    trace: bool,
    chunk_size: int | None,
    budget: int,
    groups: list[list[str]] | None = None,
) -> Tensor:
    """One engine's kernel, its block size planned by the engine when not given; split by
    parameter group (``[G, ...]``) when ``groups`` are given."""
    engine = as_engine(ENGINES[method], method)
    if chunk_size is None:
        chunk_size = _planned_chunk(method, fm, xs1, xs2, n_out, trace, budget)

    def cheaper() -> list[str]:  # asked only when the kernel turns out slow
        n2 = None if xs2 is None else num_samples(xs2)
        own = float(engine.cost(fm, xs1, n2, n_out, trace))
        found = []
        for name, why in ranked_engines(fm, xs1, n2, n_out, trace):
            cost = float(as_engine(ENGINES[name], name).cost(fm, xs1, n2, n_out, trace))
            if name != method and why is None and cost < own:
                found.append(name)
        return found

    # The kernel is a measurement: it must not record into the user's autograd graph.
    with torch.no_grad(), slow_scope(engine=method, cheaper=cheaper):
        return engine_kernel(
            engine, fm, xs1, xs2, n_out=n_out, trace=trace, chunk_size=chunk_size,
            budget=budget, groups=groups,
        )  # fmt: skip
