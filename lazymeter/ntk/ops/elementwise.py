"""Elementwise uses of a parameter, with broadcasting: ``x + b``, ``x - b``, ``-b``,
``x * g``, ``W / 2`` (the normalisation layers' affine weights build on these:
:mod:`~lazymeter.ntk.ops.norms`).

Per sample, ``y = x + b`` gives ``J_b = sum over broadcast dimensions of g`` and
``y = x * g`` gives ``J_g = sum over broadcast dimensions of (dy * x)``: dense forms
``[c, O, numel]`` in the parameter's layout (biases, scales, position tables: small).
Refused: in-place versions, ``add(..., alpha=...)``, a parameter in a denominator.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import torch
from torch import Tensor

from ..forms import Dense
from .trace import Tracked, Use, register_op_rule


def reduce_to(g: Tensor, shape: torch.Size) -> Tensor:
    """``g [c, O, *y]`` summed over the dimensions along which ``shape`` was broadcast to
    ``y``, flattened: ``[c, O, prod(shape)]``."""
    pad = (1,) * (g.dim() - 2 - len(shape)) + tuple(shape)
    return g.sum_to_size(*g.shape[:2], *pad).reshape(*g.shape[:2], -1)


def broadcast_use(w: Tracked, y: Tensor, scale: float, shape: tuple[int, ...] | None = None) -> Use:
    """``y = ... + scale * w`` (``w`` broadcast to ``y``; ``scale`` a fixed number);
    ``shape``: ``w`` as it is broadcast (``[C, 1, 1]`` for a per-channel bias), else its own."""
    shape = w.tensor.shape if shape is None else shape

    def build(ts: tuple[Tensor, ...], g: Tensor) -> Dense:
        J = reduce_to(g, shape)
        return Dense(J if scale == 1 else J * scale, w.index.reshape(-1))

    return Use(w.name, w.index.reshape(-1), (), build)


def scaled_use(
    w: Tracked,
    y: Tensor,
    factor: Any,
    divide: bool = False,
    shape: tuple[int, ...] | None = None,
) -> Use | str:
    """``y = w * factor`` (or ``w / factor``), ``factor`` a number or a tensor held fixed;
    ``shape`` as for :func:`broadcast_use`."""
    shape = w.tensor.shape if shape is None else shape
    if isinstance(factor, Number):
        f = float(factor)  # type: ignore[arg-type]
        return broadcast_use(w, y, 1 / f if divide else f, shape)
    if not isinstance(factor, Tensor):
        return "the other operand is neither a number nor a tensor"
    nd = y.dim()

    def build_t(ts: tuple[Tensor, ...], g: Tensor) -> Dense:
        x = ts[0]  # [c, *factor.shape]
        x = x.reshape(x.shape[0], 1, *((1,) * (nd - (x.dim() - 1))), *x.shape[1:])
        return Dense(reduce_to(g / x if divide else g * x, shape), w.index.reshape(-1))

    return Use(w.name, w.index.reshape(-1), (factor.detach(),), build_t)


def _alpha_ok(kwargs: dict[str, Any]) -> bool:
    return kwargs.get("alpha", 1) == 1 and kwargs.get("out") is None


def _sum(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any, sa: float, sb: float
) -> list[Use] | str:
    """``sa * a + sb * b`` with each followed operand broadcast to the output."""
    if not _alpha_ok(kwargs) or len(args) > 2:
        return "alpha or out= is not handled"
    b = args[1] if len(args) > 1 else kwargs.get("other")
    uses = []
    for t, sign in ((args[0], sa), (b, sb)):
        w = find(t)
        if w is not None:
            uses.append(broadcast_use(w, out, sign))
    return uses


@register_op_rule("add", "__add__", "__radd__")
def add(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``a + b``."""
    return _sum(args, kwargs, find, out, 1.0, 1.0)


@register_op_rule("sub", "__sub__", "subtract")
def sub(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``a - b``."""
    return _sum(args, kwargs, find, out, 1.0, -1.0)


@register_op_rule("__rsub__", "rsub")
def rsub(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``__rsub__(a, b) = b - a``."""
    return _sum(args, kwargs, find, out, -1.0, 1.0)


@register_op_rule("neg", "__neg__", "negative")
def neg(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``-w``."""
    return [broadcast_use(find(args[0]), out, -1.0)]


@register_op_rule("mul", "__mul__", "__rmul__", "multiply")
def mul(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``a * b``: each followed operand scaled by the other, held fixed."""
    if kwargs.get("out") is not None or len(args) != 2:
        return "out= is not handled"
    uses = []
    for t, other in ((args[0], args[1]), (args[1], args[0])):
        w = find(t)
        if w is not None:
            u = scaled_use(w, out, other)
            if isinstance(u, str):
                return u
            uses.append(u)
    return uses


@register_op_rule("div", "__truediv__", "true_divide", "divide")
def div(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``w / x``: linear in the numerator only."""
    if find(args[1]) is not None:
        return "a parameter in a denominator is not linear"
    if kwargs.get("rounding_mode") is not None or kwargs.get("out") is not None:
        return "rounding_mode or out= is not handled"
    u = scaled_use(find(args[0]), out, args[1], divide=True)
    return u if isinstance(u, str) else [u]
