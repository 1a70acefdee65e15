"""Normalisation layers' affine parameters: ``y = x_hat * weight + bias`` of the
normalised input ``x_hat`` (``F.layer_norm``, ``F.rms_norm``, ``F.group_norm`` and
``F.batch_norm`` with running statistics).

``x_hat`` does not depend on the parameters, so per sample ``J_weight = sum over
broadcast dimensions of (dy * x_hat)`` and ``J_bias = sum over them of dy``: dense forms
``[c, O, d]`` (:func:`~lazymeter.ntk.ops.elementwise.scaled_use`,
:func:`~lazymeter.ntk.ops.elementwise.broadcast_use`), cost ``c O S d`` for ``S``
positions. ``x_hat`` is recomputed here from the operation's input without the affine.
Refused: a parameter as the normalised input; batch statistics (``training=True``), by
which each output depends on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .elementwise import broadcast_use, scaled_use
from .trace import Use, register_op_rule


def _args(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict:
    return dict(zip(names, args, strict=False)) | kwargs


def affine_uses(
    find: Any, x_hat: Tensor, out: Tensor, weight: Any, bias: Any, shape: tuple[int, ...] | None
) -> list[Use]:
    """The uses of ``weight`` and ``bias`` in ``out = x_hat * weight + bias`` (``shape``:
    how they broadcast, e.g. ``[C, 1, 1]`` per channel; None: trailing dimensions)."""
    uses = []
    w = find(weight)
    if w is not None:
        u = scaled_use(w, out, x_hat.detach(), shape=shape)
        assert not isinstance(u, str)
        uses.append(u)
    b = find(bias)
    if b is not None:
        uses.append(broadcast_use(b, out, 1.0, shape))
    return uses


def _channel(x: Tensor, n_channels: int) -> tuple[int, ...]:
    """A per-channel parameter as broadcast against ``x`` (channels at dimension 1, or 0
    for an input without the batch dimension)."""
    lead = 1 if x.dim() >= 2 else 0
    return (n_channels,) + (1,) * (x.dim() - lead - 1)


@register_op_rule("layer_norm")
def layer_norm(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``F.layer_norm(x, shape, weight, bias, eps)``: ``x_hat`` over the last dimensions."""
    a = _args(("input", "normalized_shape", "weight", "bias", "eps"), args, kwargs)
    x = a["input"]
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the normalised input"
    x_hat = F.layer_norm(x.detach(), a["normalized_shape"], None, None, a.get("eps", 1e-5))
    return affine_uses(find, x_hat, out, a.get("weight"), a.get("bias"), None)


@register_op_rule("rms_norm")
def rms_norm(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``F.rms_norm(x, shape, weight, eps)``: ``x_hat = x / sqrt(mean(x^2) + eps)``."""
    a = _args(("input", "normalized_shape", "weight", "eps"), args, kwargs)
    x = a["input"]
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the normalised input"
    x_hat = F.rms_norm(x.detach(), a["normalized_shape"], None, a.get("eps"))
    return affine_uses(find, x_hat, out, a.get("weight"), None, None)


@register_op_rule("group_norm")
def group_norm(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``F.group_norm(x, num_groups, weight, bias, eps)``: per-channel affine after
    normalising each sample's channel groups (per sample, so train mode too)."""
    a = _args(("input", "num_groups", "weight", "bias", "eps"), args, kwargs)
    x = a["input"]
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the normalised input"
    x_hat = F.group_norm(x.detach(), a["num_groups"], eps=a.get("eps", 1e-5))
    return affine_uses(find, x_hat, out, a.get("weight"), a.get("bias"), _channel(x, x.shape[1]))


@register_op_rule("batch_norm")
def batch_norm(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)``
    (``torch.batch_norm`` takes weight and bias first) with running statistics:
    ``x_hat = (x - running_mean) / sqrt(running_var + eps)`` per channel."""
    if len(args) >= 9:  # torch.batch_norm(input, weight, bias, mean, var, training, ...)
        names = ("input", "weight", "bias", "running_mean", "running_var", "training")
    else:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training")
    a = _args((*names, "momentum", "eps"), args, kwargs)
    x, mean, var = a["input"], a.get("running_mean"), a.get("running_var")
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the normalised input"
    if a.get("training", False) or mean is None or var is None:
        return "batch statistics (train mode or no running statistics)"
    shape = _channel(x, x.shape[1])
    eps = a.get("eps", 1e-5)
    x_hat = (x.detach() - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    return affine_uses(find, x_hat, out, a.get("weight"), a.get("bias"), shape)
