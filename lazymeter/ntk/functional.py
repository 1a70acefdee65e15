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
import functools
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
    forward hooks set on modules get their previous values back (new ones are removed;
    :func:`tensor_attributes_kept`), so the model is left exactly as it was found.

    Buffers are never written: the forward sees a fresh copy of every buffer (the given
    value, or the model's own), so a forward that updates a buffer (BatchNorm's running
    statistics in train mode, a step counter, a cache) changes only the copy. The given
    tensors and the model's buffers hold the same values after the call, and every call
    sees the same ones. The copies cost the buffers' size once per call.
    """
    maps = [tensors] if isinstance(tensors, Mapping) else list(tensors)
    by_id: dict[int, Tensor] = {}
    for mapping in maps:
        for name, value in mapping.items():
            by_id[id(_resolve(model, name))] = value
    copies: dict[int, Tensor] = {}  # one copy per buffer object, shared by its aliases
    saved: list[tuple[dict, str, Any]] = []
    swap: list[Tensor] = []
    for m in model.modules():
        for slots, is_buffer in ((m._parameters, False), (m._buffers, True)):
            for local, t in slots.items():
                if t is None or (not is_buffer and id(t) not in by_id):
                    continue
                value = by_id.get(id(t), t)
                if is_buffer:
                    if id(t) not in copies:
                        copies[id(t)] = value.detach().clone()
                    value = copies[id(t)]
                saved.append((slots, local, t))
                swap.append(value)
    with tensor_attributes_kept(model):
        try:
            for (slots, local, _), value in zip(saved, swap, strict=True):
                slots[local] = value
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
def full_precision(device: torch.device) -> Iterator[None]:
    """TensorFloat-32 off on a CUDA ``device`` for the block, every flag restored after.

    cuDNN convolutions default to TF32 on Ampere and later GPUs (``cudnn.allow_tf32`` is
    True out of the box), and a user may allow it for matmuls: a float32 kernel would then
    carry ~1e-3 relative error where the CPU's has ~1e-7. The legacy flags are used
    unless the process set TF32 through the newer ``fp32_precision`` API (torch >= 2.9),
    whose values are then saved and restored instead (the two must not be mixed)."""
    if device.type != "cuda":
        yield
        return
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        legacy = (cuda.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # the new API is in use: reading the legacy flags is refused
        legacy = None
    if legacy is not None:
        try:
            cuda.allow_tf32, cudnn.allow_tf32 = False, False
            yield
        finally:
            cuda.allow_tf32, cudnn.allow_tf32 = legacy
        return
    places = [cuda, cudnn.conv, cudnn.rnn]
    saved = [p.fp32_precision for p in places]
    try:
        for p in places:
            p.fp32_precision = "ieee"
        yield
    finally:
        for p, value in zip(places, saved, strict=True):
            p.fp32_precision = value


def rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The global CPU RNG state and, on a CUDA device, that device's: what a forward on
    ``device`` draws its dropout masks from."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def same_rng(a: tuple[Tensor, Tensor | None], b: tuple[Tensor, Tensor | None]) -> bool:
    """Whether two :func:`rng_state` readings are equal (no random number drawn between)."""
    same_cuda = (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))
    return same_cuda and torch.equal(a[0], b[0])


@contextlib.contextmanager
def replayed_rng(state: tuple[Tensor, Tensor | None], device: torch.device) -> Iterator[None]:
    """Run a block from the RNG ``state`` (:func:`rng_state`), then put the RNG back where
    it was: a second forward inside draws the same dropout masks as the first one drawn
    from ``state``, and the run's random stream is as if only the first had run."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


#: ``id()`` of the models inside a :func:`deterministic` block now: a nested block (a
#: public call made by the meter while it measures) keeps the outer block's mode.
_MEASURING: set[int] = set()

#: ``measure_mode`` values: see :func:`deterministic`.
MEASURE_MODES = ("eval", "as_is")


def check_measure_mode(mode: Any) -> str:
    if mode not in MEASURE_MODES:
        raise ValueError(f"measure_mode: expected one of {MEASURE_MODES}, got {mode!r}")
    return mode


@contextlib.contextmanager
def deterministic(model: nn.Module, mode: str = "eval") -> Iterator[None]:
    """Measure ``model`` deterministically: the RNG forked, autocast and TensorFloat-32 off
    (:func:`full_precision`), and every module in
    eval mode (``mode="eval"``: no dropout of any kind, BatchNorm on its running statistics)
    or only its ``nn.Dropout`` modules switched off (``mode="as_is"``); every module's
    training flag is restored after. Every public call that runs the model for a number
    (kernels, alignment, coverage, the meter's measurements) runs inside one; inside an
    enclosing block for the same model (the meter measuring) the outer mode holds.

    The forwards themselves run through :func:`call_with`, which gives them copies of the
    buffers, so a forward that updates a buffer changes nothing of the model's."""
    check_measure_mode(mode)
    if id(model) in _MEASURING:
        yield
        return
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    devices = [device] if device.type == "cuda" else []
    modes = [(m, m.training) for m in model.modules()]
    _MEASURING.add(id(model))
    try:
        with torch.random.fork_rng(devices=devices), no_autocast(device), full_precision(device):
            for m, _ in modes:
                if mode == "eval" or isinstance(m, nn.modules.dropout._DropoutNd):
                    m.training = False
            yield
    finally:
        _MEASURING.discard(id(model))
        for m, training in modes:
            m.training = training


def measured(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run the public call ``fn(model, ...)`` inside :func:`deterministic` (its
    ``measure_mode`` keyword when it has one, else ``"eval"``)."""

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(model, nn.Module):
            return fn(model, *args, **kwargs)  # fn's own type check names the argument
        with deterministic(model, kwargs.get("measure_mode", "eval")):
            return fn(model, *args, **kwargs)

    return wrapper


#: Attribute values a forward may leave on a module (a cached tensor, a call counter) that
#: :func:`tensor_attributes_kept` puts back; other objects (hooks, FSDP's state) are left.
_KEPT = (Tensor, int, float, complex)


@contextlib.contextmanager
def tensor_attributes_kept(model: nn.Module) -> Iterator[None]:
    """Run a forward that must not leave traces in ``model``: tensor (and number)
    attributes that the forward or its hooks set on modules (``weight`` under
    ``torch.nn.utils.weight_norm``, a cached attention map, a call counter) get their
    previous values back afterwards, and ones that did not exist before are removed."""
    modules = list(model.modules())
    attrs = [{k: v for k, v in m.__dict__.items() if isinstance(v, _KEPT)} for m in modules]
    try:
        yield
    finally:
        for m, before in zip(modules, attrs, strict=True):
            d = m.__dict__
            for k in [k for k, v in d.items() if isinstance(v, _KEPT) and k not in before]:
                del d[k]
            d.update(before)


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
