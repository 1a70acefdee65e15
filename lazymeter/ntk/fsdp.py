"""FSDP2 (``fully_shard``) support: measure a sharded model on its full parameters.

A model sharded with :func:`torch.distributed.fsdp.fully_shard` holds each parameter
as a ``DTensor`` whose rows are split over the ranks; FSDP all-gathers a module's
parameters in a forward pre-hook and frees them after. The meter needs two things
from such a model:

* **The initial model's output during training** (``center=True``), on each rank's
  own batch. :func:`call_at_snapshot` copies the snapshot's shards into the
  parameters' shards, runs FSDP's own forward (so each module is gathered only while
  it runs, exactly as in training), then copies the trained shards back. Cost: one
  extra sharded forward per training step and a copy of this rank's shard twice; no
  rank ever holds more than FSDP itself does. The parameter objects are the same
  ``DTensor``s afterwards, with bit-identical values.
* **Measurements** (NTK, outputs, movement) on plain tensors. :func:`full_model` is the
  "gather on rank 0" strategy: every rank takes part in gathering each parameter and
  each snapshot tensor (``DTensor.full_tensor``, one at a time); the ranks that measure
  keep them and, for the measurement, the model's parameter slots hold plain full
  ``nn.Parameter``s with FSDP's forward hooks switched off (so no rank waits in a
  collective that the others never enter). Cost on a measuring rank: two full copies
  of the parameters (current and initial) plus the NTK engine's working memory, for
  the duration of the measurement; other ranks hold one full parameter at a time.

A layer-by-layer gather (each layer's full weights alive only while its features are
computed) would need the engines' backward passes to re-gather every layer as FSDP's
own backward does; it is not implemented.

The older ``FullyShardedDataParallel`` wrapper (FSDP1) flattens parameters into
``FlatParameter``s whose names and shapes are not the model's; it is rejected with an
error naming ``fully_shard``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .functional import call_with

try:  # torch >= 2.6 exports both; older builds have FSDP2 elsewhere or not at all
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel as FSDP1
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - torch without FSDP2
    FSDPModule = FSDP1 = DTensor = None  # type: ignore[assignment, misc]

FSDP1_UNSUPPORTED = (
    "model: the FullyShardedDataParallel wrapper (FSDP1) is not supported: its flat "
    "parameters hide the model's own names and shapes. Shard with "
    "torch.distributed.fsdp.fully_shard (FSDP2) instead; LazyMeter(model) then measures "
    "the sharded model"
)

DTENSOR_WITHOUT_FSDP = (
    "model: parameter {name!r} is a DTensor but no module is sharded with fully_shard "
    "(tensor or other parallelism?); LazyMeter supports DistributedDataParallel and "
    "fully_shard (FSDP2)"
)


def is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` or any submodule is sharded with ``fully_shard``. A clear error for
    the FSDP1 wrapper and for ``DTensor`` parameters that FSDP2 does not manage."""
    if FSDPModule is None:
        return False
    modules = list(model.modules())
    if any(isinstance(m, FSDP1) for m in modules):
        raise TypeError(FSDP1_UNSUPPORTED)
    sharded = any(isinstance(m, FSDPModule) for m in modules)
    if not sharded:
        for name, p in model.named_parameters():
            if is_dtensor(p):
                raise TypeError(DTENSOR_WITHOUT_FSDP.format(name=name))
    return sharded


def reshard_all(model: nn.Module) -> None:
    """Free every unsharded parameter FSDP holds (the root keeps its own after a forward),
    so that the next forward gathers from the shards as they are now."""
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def call_at_snapshot(
    model: nn.Module, snapshot: Mapping[str, Tensor], args: tuple, kwargs: Mapping[str, Any]
) -> Any:
    """``model(*args, **kwargs)`` at the snapshot's parameters, through FSDP's own sharded
    forward (call without a graph). ``snapshot`` maps names to tensors of the same kind
    as the model's: ``DTensor`` shards for sharded parameters (copied into the
    parameters' shards for the call, the trained values copied back after), plain
    tensors for buffers and unsharded parameters (swapped in by :func:`call_with`)."""
    reshard_all(model)  # the sharded DTensors back in the modules' slots
    params = dict(model.named_parameters())
    sharded = {n: t for n, t in snapshot.items() if n in params and is_dtensor(params[n])}
    plain = {n: t for n, t in snapshot.items() if n not in sharded}
    trained = {n: params[n].detach().clone() for n in sharded}
    try:
        for n, t in sharded.items():
            params[n].copy_(t)
        return call_with(model, plain, args, kwargs)
    finally:
        reshard_all(model)  # the snapshot's gathered weights must not serve the next forward
        for n, t in trained.items():
            params[n].copy_(t)


def _gather(t: Tensor) -> Tensor:
    with torch.no_grad():
        return t.full_tensor()


@contextlib.contextmanager
def _fsdp_hooks_off(model: nn.Module) -> Iterator[None]:
    """FSDP's forward hooks removed (and put back in their places): a forward on plain
    full parameters must not all-gather."""
    saved = []
    for m in model.modules():
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            ours = {k: h for k, h in hooks.items() if _is_fsdp_hook(h)}
            if ours:
                saved.append((hooks, dict(hooks)))
                for k in ours:
                    del hooks[k]
    try:
        yield
    finally:
        for hooks, before in saved:
            hooks.clear()
            hooks.update(before)


def _is_fsdp_hook(hook: Any) -> bool:
    return str(getattr(hook, "__module__", "")).startswith("torch.distributed.fsdp")


#: Models inside a :func:`full_model` block on this rank (their parameters are plain).
_GATHERED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def gathered(model: nn.Module) -> bool:
    """Whether ``model`` is inside a :func:`full_model` block that keeps it on this rank."""
    return model in _GATHERED


def needs_gather(model: nn.Module) -> bool:
    """Whether ``model`` is sharded with ``fully_shard`` and not inside :func:`full_model`
    (so a kernel of it must gather first)."""
    return isinstance(model, nn.Module) and not gathered(model) and is_fsdp(model)


@contextlib.contextmanager
def full_model(
    model: nn.Module, keep: bool = True, snapshot: nn.Module | None = None
) -> Iterator[None]:
    """A collective: every rank gathers each sharded parameter of ``model`` and each
    ``DTensor`` buffer of ``snapshot`` (same order everywhere). With ``keep``, for the
    duration of the block the model's slots hold plain full ``nn.Parameter``s (aliases
    share one), the snapshot holds full tensors and FSDP's forward hooks are off; the
    original ``DTensor`` objects are put back after. Without ``keep`` the gathered
    tensors are dropped at once.

    Example (every rank runs it; each gets the whole kernel)::

        with full_model(sharded_model):
            K = lazymeter.empirical_ntk(sharded_model, x)

    (:func:`lazymeter.empirical_ntk` on a sharded model does exactly this.)
    """
    reshard_all(model)  # a module FSDP left gathered holds plain tensors, not its DTensors
    slots: list[tuple[dict, str, Tensor]] = []
    full: dict[int, Tensor] = {}
    for m in model.modules():
        for name, p in m._parameters.items():
            if p is not None and is_dtensor(p):
                if id(p) not in full:
                    g = _gather(p)
                    if keep:
                        full[id(p)] = nn.Parameter(g, requires_grad=p.requires_grad)
                slots.append((m._parameters, name, p))
    snap_slots = []
    for name, t in ({} if snapshot is None else snapshot._buffers).items():
        if t is not None and is_dtensor(t):
            g = _gather(t)
            if keep:
                snap_slots.append((name, t, g))
    if not keep:
        yield
        return
    try:
        for holder, name, p in slots:
            holder[name] = full[id(p)]
        for name, _, g in snap_slots:
            snapshot._buffers[name] = g  # type: ignore[union-attr]
        _GATHERED.add(model)
        with _fsdp_hooks_off(model):
            yield
    finally:
        _GATHERED.discard(model)
        for holder, name, p in slots:
            holder[name] = p
        for name, t, _ in snap_slots:
            snapshot._buffers[name] = t  # type: ignore[union-attr]
