"""A model seen as a pure function of its trainable parameters.

Engines only need three things from a model: the dict of trainable
parameters, a batched forward ``f(params, x) -> [B, O]`` and a single-sample
forward ``f(params, x_i) -> [O]`` for ``vmap``. This module builds them once,
validates inputs, and keeps the model itself untouched (no mode switch, no
buffer update, no ``.grad`` written, the same Parameter objects afterwards).

:func:`call_with` replaces ``torch.func.functional_call`` everywhere in lazymeter:
torch's version swaps tensors *by name* and, when one submodule is registered under
two names (``self.fc = nn.Linear(..)`` and ``self.net = nn.Sequential(self.fc, ..)``),
restores the second name with the swapped-in tensor, leaving a plain tensor where the
user's Parameter was (the optimiser then updates an orphan). Swapping by object
identity, slot by slot, cannot do that.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .cache import CACHE

Inputs = Tensor | tuple[Tensor, ...]
OutputFn = Callable[[Any], Tensor]


def _resolve(model: nn.Module, name: str) -> Tensor:
    """The parameter or buffer object registered under ``name`` (any alias of it)."""
    mname, _, local = name.rpartition(".")
    try:
        m = model.get_submodule(mname)
    except AttributeError:
        m = None
    t = None
    if m is not None:
        t = m._parameters.get(local, m._buffers.get(local))
    if t is None:
        raise KeyError(f"tensors: the model has no parameter or buffer named {name!r}")
    return t


def call_with(
    model: nn.Module,
    tensors: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]],
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """``model(*args, **kwargs)`` with some parameters and buffers replaced for this call.

    ``tensors`` maps parameter/buffer names (any of an aliased tensor's names) to the
    values to use (a dict, or several dicts merged). Every registration of a replaced
    tensor, under any module that holds it (aliased submodules, tied weights), sees the
    new value; parametrisations and weight-norm hooks compute from it as usual. Each
    slot is restored to its own original object afterwards, and tensor attributes that
    forward hooks set on modules get their previous values back
    (:func:`tensor_attributes_kept`), so the model is left exactly as it was found.
    """
    maps = [tensors] if isinstance(tensors, Mapping) else list(tensors)
    by_id: dict[int, Tensor] = {}
    for mapping in maps:
        for name, value in mapping.items():
            by_id[id(_resolve(model, name))] = value
    saved: list[tuple[dict, str, Any]] = []
    for m in model.modules():
        for slots in (m._parameters, m._buffers):
            for local, t in slots.items():
                if t is not None and id(t) in by_id:
                    saved.append((slots, local, t))
    with tensor_attributes_kept(model):
        try:
            for slots, local, t in saved:
                slots[local] = by_id[id(t)]
            return model(*args, **(kwargs or {}))
        finally:
            for slots, local, t in reversed(saved):
                slots[local] = t


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device``'s type: a kernel computed inside a user's
    ``torch.autocast`` region would otherwise silently run in bfloat16/float16."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(model: nn.Module, mode: str = "eval") -> Iterator[None]:
    """Measure ``model`` deterministically: the RNG forked, autocast off, and every module in
    eval mode (``mode="eval"``: no dropout of any kind, BatchNorm on its running statistics)
    or only its ``nn.Dropout`` modules switched off (``mode="as_is"``); every module's
    training flag is restored after."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    devices = [device] if device.type == "cuda" else []
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=devices), no_autocast(device):
            for m, _ in modes:
                if mode == "eval" or isinstance(m, nn.modules.dropout._DropoutNd):
                    m.training = False
            yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def tensor_attributes_kept(model: nn.Module) -> Iterator[None]:
    """Run a forward that must not leave traces in ``model``: tensor attributes that hooks
    set on modules during it (``weight`` under ``torch.nn.utils.weight_norm``, a cached
    attention map) get their previous values back afterwards."""
    attrs = [
        (m.__dict__, k, v)
        for m in model.modules()
        for k, v in m.__dict__.items()
        if isinstance(v, Tensor)
    ]
    try:
        yield
    finally:
        for d, k, v in attrs:
            d[k] = v


def as_inputs(x: Any, name: str, device: torch.device | None = None) -> tuple[Tensor, ...]:
    """Normalise a model input (a tensor or a tuple of tensors sharing dim 0) and validate it."""
    xs = (x,) if isinstance(x, Tensor) else x
    if not isinstance(xs, (tuple, list)) or not xs or not all(isinstance(t, Tensor) for t in xs):
        raise TypeError(
            f"{name}: expected a Tensor (or a tuple of Tensors sharing the sample dimension 0), "
            f"got {type(x).__name__}"
        )
    n = xs[0].shape[0] if xs[0].dim() > 0 else None
    for t in xs:
        if t.dim() == 0:
            raise ValueError(f"{name}: inputs need a leading sample dimension; got a 0-d tensor")
        if t.shape[0] != n:
            raise ValueError(
                f"{name}: all input tensors must share the sample dimension; got sizes "
                f"{[t.shape[0] for t in xs]}"
            )
        if device is not None and t.device != device:
            raise ValueError(
                f"{name}: is on {t.device} but the model is on {device}; move it with "
                f"{name}.to(device)"
            )
        if t.is_floating_point() or t.is_complex():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name}: contains NaN or Inf; clean the inputs first")
    if n == 0:
        raise ValueError(f"{name}: has no samples (dimension 0 is empty)")
    return tuple(xs)


def num_samples(xs: tuple[Tensor, ...]) -> int:
    return int(xs[0].shape[0])


def slice_inputs(xs: tuple[Tensor, ...], start: int, stop: int) -> tuple[Tensor, ...]:
    return tuple(t[start:stop] for t in xs)


def _check_batch_independent(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
            m.training or not m.track_running_stats
        ):
            raise ValueError(
                f"model: BatchNorm layer '{name or type(m).__name__}' normalises with batch "
                "statistics, so each output depends on the whole batch and there is no "
                "per-sample NTK; call model.eval() (with track_running_stats=True) before "
                "computing the NTK"
            )


class FunctionalModel:
    """``model`` as pure functions of its trainable parameters.

    Attributes:
        params: ``{name: tensor}`` of parameters with ``requires_grad=True`` (and in
            ``only`` when given; detached views; the kernel is taken w.r.t. these alone).
        constants: frozen parameters and buffers, used as they are.
        n_params: total number of trainable scalars.
    """

    def __init__(
        self,
        model: nn.Module,
        output_fn: OutputFn | None = None,
        only: Collection[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise TypeError("output_fn: expected a callable mapping the model output to a Tensor")
        _check_batch_independent(model)
        self.model = model
        self.output_fn = output_fn
        self.params: dict[str, Tensor] = {}
        self.constants: dict[str, Tensor] = {}
        for name, p in model.named_parameters():
            trainable = p.requires_grad and (only is None or name in only)
            (self.params if trainable else self.constants)[name] = p.detach()
        if not self.params:
            raise ValueError(
                "model: has no parameters with requires_grad=True, so its NTK is zero; "
                "unfreeze the parameters the kernel should be taken over"
            )
        self.constants.update(dict(model.named_buffers()))
        self.n_params = sum(p.numel() for p in self.params.values())
        first = next(iter(self.params.values()))
        self.dtype = first.dtype
        self.device = first.device

    def batched(self, params: dict[str, Tensor], xs: tuple[Tensor, ...]) -> Tensor:
        """Model output for a batch, reduced by ``output_fn`` and flattened: ``[B, O]``."""
        out = call_with(self.model, (params, self.constants), xs)
        if self.output_fn is not None:
            out = self.output_fn(out)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"output_fn: the model returned {type(out).__name__}; pass output_fn that picks "
                "a Tensor out of it (e.g. output_fn=lambda out: out['logits'])"
            )
        if out.dim() == 0 or out.shape[0] != xs[0].shape[0]:
            raise ValueError(
                f"output_fn: the output must keep the batch dimension first; got shape "
                f"{tuple(out.shape)} for a batch of {xs[0].shape[0]}"
            )
        return out.reshape(out.shape[0], -1)

    def single(self, params: dict[str, Tensor], *x: Tensor) -> Tensor:
        """Model output for one sample (no batch dimension): ``[O]``."""
        return self.batched(params, tuple(t.unsqueeze(0) for t in x))[0]

    def num_outputs(self, xs: tuple[Tensor, ...]) -> int:
        with torch.no_grad():
            return int(self.batched(self.params, slice_inputs(xs, 0, 1)).shape[1])

    def forward_flops(self, xs: tuple[Tensor, ...]) -> float:
        """Matmul/conv FLOPs of one sample's forward pass (0 if they cannot be counted).

        Counted once per model, mode, output reduction, parameter shapes and per-sample
        input shapes (remembered in :data:`lazymeter.ntk.CACHE`), with the random number
        generators left as they were (a dropout layer draws nothing that the caller sees).
        """
        key = (
            self.model.training,
            id(self.output_fn),
            tuple((k, tuple(v.shape)) for k, v in self.params.items()),
            tuple((t.shape[1:], t.dtype, t.device) for t in xs),
        )
        known = CACHE.flops.get(self.model, {}).get(key)
        if known is not None:
            return known
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            from torch.utils.flop_counter import FlopCounterMode

            with torch.random.fork_rng(devices=devices), torch.no_grad():
                with FlopCounterMode(display=False) as counter:
                    self.batched(self.params, slice_inputs(xs, 0, 1))
            flops = float(counter.get_total_flops())
        except Exception:  # the counter is an optimisation hint only
            flops = 0.0
        CACHE.flops.setdefault(self.model, {})[key] = flops
        return flops

    def supports_forward_ad(self, xs: tuple[Tensor, ...]) -> bool:
        """Whether every operation of one sample's forward has a forward-mode AD formula
        (``torch.func.jvp``), which the NTK-vector engine needs (``torch._weight_norm``,
        behind ``parametrizations.weight_norm``, has none)."""
        try:
            with torch.no_grad():
                torch.func.jvp(
                    lambda p: self.batched(p, slice_inputs(xs, 0, 1)),
                    (self.params,),
                    ({k: torch.zeros_like(v) for k, v in self.params.items()},),
                )
        except NotImplementedError:
            return False
        return True

    def activation_bytes(self, xs: tuple[Tensor, ...]) -> int:
        """Bytes of intermediate tensors autograd saves per sample in a forward pass: the
        difference between the saved bytes of two samples and of one, so that tensors
        that do not grow with the batch (copies of the parameters that ``einsum`` or a
        transpose make) are not counted."""
        params = {k: v.detach().requires_grad_() for k, v in self.params.items()}
        own = {v.data_ptr() for v in self.params.values()}

        def saved(n: int) -> int:
            total = 0

            def pack(t: Tensor) -> Tensor:
                nonlocal total
                if t.data_ptr() not in own:
                    total += t.numel() * t.element_size()
                return t

            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                self.batched(params, slice_inputs(xs, 0, n))
            return total

        one = saved(1)
        if num_samples(xs) < 2:
            return one
        return max(saved(2) - one, 0)


def cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` with floating parameters and buffers in ``dtype``, holding the
    model's current values, modes and ``requires_grad`` flags.

    The copy is made once per (model, dtype), kept in :data:`lazymeter.ntk.CACHE` and
    refreshed in place on later calls, so per-model caches (structured plans, exactness
    checks) stay valid between calls.
    """
    shadow = CACHE.casts.get(model)
    if shadow is None or next(iter(shadow.parameters())).dtype != dtype:
        # Tensors that hooks computed and left on modules (weight_norm's ``weight``) are
        # graph outputs, which deepcopy refuses: the copy gets them detached.
        memo: dict[int, Any] = {
            id(v): v.detach().clone()
            for m in model.modules()
            for v in m.__dict__.values()
            if isinstance(v, Tensor) and not v.is_leaf
        }
        with torch.no_grad():
            shadow = copy.deepcopy(model, memo)
            shadow.to(dtype)
        CACHE.casts[model] = shadow
    with torch.no_grad():
        for (_, p), (_, q) in zip(model.named_parameters(), shadow.named_parameters(), strict=True):
            q.copy_(p)
            q.requires_grad_(p.requires_grad)
        for (_, b), (_, c) in zip(model.named_buffers(), shadow.named_buffers(), strict=True):
            c.copy_(b)
    for m, c in zip(model.modules(), shadow.modules(), strict=True):
        c.training = m.training
    return shadow
