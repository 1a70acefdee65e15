"""The alpha-rescaled, centred model a loss should see: ``alpha * (f(x) - f0(x))``.

:class:`ScaledModel` wraps the user's network with a frozen snapshot of its initial
parameters and buffers; :class:`~lazymeter.LazyMeter` is a ``ScaledModel`` that also
measures. Forwards at the snapshot swap tensors by object identity
(:func:`~lazymeter.ntk.functional.call_with`), so the user's model is left as it was.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from .distributed import unwrap
from .ntk import fsdp
from .ntk.functional import (
    call_with,
    check_measure_mode,
    deterministic,
    replayed_rng,
    rng_state,
    same_rng,
)


class Snapshot(nn.Module):
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


def scaled_lr(
    lr: float, alpha: float, optimizer: str = "sgd", dtype: torch.dtype | None = None
) -> float:
    """:meth:`ScaledModel.scaled_lr` for ``alpha``, checked against the model's ``dtype``
    when given (None: only that it is a finite positive float)."""
    if optimizer == "sgd":
        out = lr / alpha / alpha  # not alpha**2: no OverflowError
    elif optimizer == "adam":
        out = lr / alpha
    elif optimizer == "none":
        out = lr
    else:
        raise ValueError(f"optimizer: expected 'sgd', 'adam' or 'none', got {optimizer!r}")
    rule = {"sgd": " / alpha^2", "adam": " / alpha", "none": ""}[optimizer]
    shown = {"sgd": f" / {alpha:g}^2", "adam": f" / {alpha:g}", "none": ""}
    if not (math.isfinite(out) and out > 0):
        raise ValueError(
            f"alpha: lr{rule} = {lr}{shown[optimizer]} is {out}, not a usable "
            "learning rate; pick alpha (and lr) so that it is a finite positive float"
        )
    if dtype is None or not dtype.is_floating_point:
        return out
    info = torch.finfo(dtype)
    if out > info.max:
        raise ValueError(
            f"alpha: lr{rule} = {lr}{shown[optimizer]} is {out:.3g}, above the largest "
            f"{dtype} ({info.max:.3g}), the model's dtype: the first step overflows. Pick a "
            "larger alpha or train in float64 (model.double())"
        )
    # A step moves a parameter by about `step` times (output gradient x residual) for SGD
    # (lr/alpha^2 * alpha), by about `step` for Adam; below the dtype's resolution the
    # updates round away against parameters of order one and training stalls.
    step = {"sgd": out * alpha, "adam": out, "none": math.inf}[optimizer]
    if step < info.eps:
        warnings.warn(
            f"alpha={alpha:g}: with lr={lr:g} a step moves a parameter by about {step:.1e} "
            f"(per unit output gradient and residual), below the resolution of {dtype} "
            f"({info.eps:.1e}), the model's dtype: the updates round away and training "
            "stalls. Train in float64 (model.double()) or use a smaller alpha",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


class ScaledModel(nn.Module):
    """``alpha * (model(x) - model0(x))`` (``center=True``) or ``alpha * model(x)``.

    Args:
        model: the network (possibly inside ``DistributedDataParallel``); this module's
            parameters are exactly its parameters.
        alpha: output scale (> 0).
        center: subtract the initial model's output.
        output_fn: reduces the model's output to what the loss sees (and the NTK measures).
        measure_mode: how measurements run the model. ``"eval"`` (default): every module in
            eval mode for the duration of a measurement (every form of dropout off, including
            ``training``-gated functional dropout inside attention; BatchNorm on its running
            statistics), each module's flag restored afterwards. ``"as_is"``: the model's own
            modes, with only ``nn.Dropout`` modules switched off (a train-mode BatchNorm then
            has no per-sample NTK and the kernel metrics are NaN).
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        center: bool = True,
        output_fn: Callable[[Any], Any] | None = None,
        measure_mode: str = "eval",
    ) -> None:
        super().__init__()
        self.measure_mode = check_measure_mode(measure_mode)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha: expected a positive number, got {type(alpha).__name__}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha: must be finite and > 0, got {alpha}")
        self.model = model
        self.alpha = float(alpha)
        self.center = bool(center)
        self.output_fn = output_fn
        self._cache: list[tuple[tuple[Any, ...], Any]] = []
        net = unwrap(model)
        if not any(p.requires_grad for p in net.parameters()):
            raise ValueError(
                "model: has no parameters with requires_grad=True, so there is nothing to "
                "train or measure; unfreeze the parameters to be trained"
            )
        self._dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        self.snapshot = Snapshot(net)  # under fully_shard: DTensors, sharded as the model
        self._fsdp = fsdp.is_fsdp(net)
        # The Parameter objects measured against the snapshot: a layer replaced by one of
        # the same shape is found by identity (a plain dict: not registered, not saved; a
        # deep copy or unpickling maps it to the copied model's Parameters).
        self._measured = dict(net.named_parameters())

    @property
    def net(self) -> nn.Module:
        """The user's model without a ``DistributedDataParallel`` wrapper: what is measured."""
        return unwrap(self.model)

    @property
    def _sharded(self) -> bool:
        """Whether the parameters are ``fully_shard`` shards now (not inside
        :meth:`full_model` on a rank that keeps the full model)."""
        return self._fsdp and not fsdp.gathered(self.net)

    def _device(self) -> torch.device:
        for t in self.net.parameters():
            return t.device
        return torch.device("cpu")

    def _apply(self, fn: Any, recurse: bool = True) -> ScaledModel:
        super()._apply(fn, recurse)
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

        In the model's dtype: a learning rate above its largest value is a ``ValueError``;
        a step below its resolution (``lr / alpha`` under SGD or Adam smaller than
        ``torch.finfo(dtype).eps``, e.g. alpha=1e8 in float32) a ``RuntimeWarning``, as
        such updates round away and training silently stalls.

        ``optimizer="none"`` returns ``lr`` unchanged (no alpha scaling, e.g. the paper's
        MNIST runs: AdamW at a fixed lr for every alpha). The function-space speed then
        scales with alpha: ``alpha^2`` times the ``alpha = 1`` speed under GD, ``alpha``
        times under Adam, so alpha sets both the laziness and the speed.
        """
        dtype = next((p.dtype for p in self.net.parameters() if p.requires_grad), None)
        return scaled_lr(lr, self.alpha, optimizer, dtype)

    def _reduce(self, out: Any) -> Any:
        return out if self.output_fn is None else self.output_fn(out)

    def initial_output(self, *args: Any, **kwargs: Any) -> Any:
        """``model0(*args)``: the frozen initial model's (reduced) output, without a graph.

        Cached for the last few inputs (same tensor objects, unmodified, same mode),
        so a full-batch loop pays for it once; not cached while dropout is active.
        """
        # A stochastic forward must be drawn afresh each call (and consume the RNG as an
        # uncached run would), so only deterministic models are cached.
        random = bool(self._dropouts) and any(m.training for m in self._dropouts)
        return self._initial(args, kwargs, cacheable=not random)

    def _initial(self, args: tuple[Any, ...], kwargs: dict[str, Any], cacheable: bool) -> Any:
        key = None
        if cacheable and not kwargs and all(isinstance(a, Tensor) for a in args):
            key = (self.model.training, *[a._version for a in args])
            for k, (refs, out0) in self._cache:
                # Identity, not equality: the cache holds the inputs, so ids stay unique.
                if k == key and len(refs) == len(args) and all(map(operator.is_, refs, args)):
                    return out0
        with torch.no_grad():
            if self._sharded:  # every rank, its own batch: FSDP's forward
                out0 = fsdp.call_at_snapshot(self.net, self.snapshot.as_dict(), args, kwargs)
            else:
                out0 = call_with(self.net, self.snapshot.as_dict(), args, kwargs)
            out0 = self._reduce(out0)
        if key is not None:
            # Holding the inputs keeps their ids from being reused by other tensors.
            self._cache = [(key, (args, out0))] + self._cache[:3]
        return out0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``alpha * (model(x) - model0(x))`` (centred) or ``alpha * model(x)``, applied to
        every floating-point tensor of the (reduced) output; other leaves pass through."""
        # Under fully_shard the initial model's forward reshards every module, which must not
        # happen between a forward and its backward: it runs first there.
        early = self.center and self._sharded
        # In train mode f0 replays the random numbers f draws (the same dropout masks, so
        # that f - f0 is 0 at initialisation) and the run's RNG advances as by f alone.
        device = self._device()
        state = rng_state(device) if self.center and self.model.training else None
        out0 = self._f0(state, args, kwargs) if early else None
        out = self._reduce(self.model(*args, **kwargs))
        if self.center and not early:
            # Whether f drew random numbers (any dropout, modules or functional inside
            # attention): then f0 is drawn afresh with the same ones, never from the cache.
            drew = state is not None and not same_rng(state, rng_state(device))
            if drew:
                with replayed_rng(state, device):
                    out0 = self._initial(args, kwargs, cacheable=False)
            else:
                out0 = self._initial(args, kwargs, cacheable=True)
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

    def _f0(self, state: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """f0 before f (under fully_shard): from the RNG state f will start from."""
        if state is None:
            return self.initial_output(*args, **kwargs)
        with replayed_rng(state, self._device()):
            return self.initial_output(*args, **kwargs)

    def check_structure(self) -> None:
        """A ``ValueError`` naming the first trainable parameter whose name, shape or object
        no longer matches the snapshot taken at construction (a layer replaced or resized
        after the meter was built, even by one of the same shape): measurements against
        ``theta0``/``K0`` would be meaningless."""
        snap = self.snapshot.as_dict()
        for name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            if name not in snap:
                raise ValueError(
                    f"model: parameter {name!r} is not in the snapshot taken when the meter was "
                    "built (a layer added or replaced afterwards?); build the meter after the "
                    "model is final"
                )
            if snap[name].shape != p.shape:
                raise ValueError(
                    f"model: parameter {name!r} has shape {tuple(p.shape)} but "
                    f"{tuple(snap[name].shape)} in the snapshot taken when the meter was built "
                    "(a layer replaced afterwards?); build the meter after the model is final"
                )
            # Under fully_shard the measuring ranks swap gathered Parameters in: shapes only.
            if not self._fsdp and self._measured.get(name) is not p:
                raise ValueError(
                    f"model: parameter {name!r} is not the Parameter object the meter was built "
                    "with (a layer replaced by a new one of the same shape?); its initial "
                    "values are unknown, so build the meter after the model is final"
                )

    def measured_output(self, x: Tensor) -> Tensor:
        """This module's output on ``x`` as a measurement sees it: no graph, buffers
        untouched (:func:`call_with` runs the forward on copies of them)."""
        with torch.no_grad():
            out = self._reduce(call_with(self.net, {}, (x,)))
            if self.center:
                out = out - self.initial_output(x)
            return self.alpha * out

    @contextlib.contextmanager
    def full_model(self, keep: bool = True) -> Iterator[None]:
        """Under ``fully_shard``: a collective (every rank must enter it) after which, with
        ``keep``, this rank's model and snapshot hold plain full tensors for the block
        (:func:`lazymeter.fsdp.full_model`); a no-op for an unsharded model."""
        if not self._sharded:
            yield
            return
        with fsdp.full_model(self.net, keep, self.snapshot):
            yield

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Measure deterministically without a trace: the RNG forked, autocast off, and the
        model in eval mode (``measure_mode="eval"``; with ``"as_is"`` only ``nn.Dropout``
        modules are switched off); every module's training flag is restored after."""
        with deterministic(self.net, self.measure_mode):
            yield

    def check_outputs(self, x: Tensor) -> int:
        """Clear errors at construction for a model whose output the NTK cannot use;
        returns the number of outputs per sample."""
        net = self.net
        shapes = []
        with self.measuring():
            for n in (2, 3):
                with torch.set_grad_enabled(n == 2):  # one pass also checks differentiability
                    out = self._reduce(call_with(net, {}, (x[:n],)))
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
