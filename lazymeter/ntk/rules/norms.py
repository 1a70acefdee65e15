"""Normalisation layers: an elementwise affine ``y = xhat * weight + bias`` of the
normalised input ``xhat``.

Per sample, ``J_weight[d] = sum_s g_s[d] xhat_s[d]`` and ``J_bias[d] = sum_s g_s[d]`` over
positions ``s``: small, so formed explicitly (:class:`~lazymeter.ntk.forms.Dense`,
``[c, O, d]``, cost ``c O S d``). ``xhat`` is recomputed from the layer's input:
``nn.LayerNorm``, ``nn.RMSNorm`` (no centring, no bias), ``nn.GroupNorm`` (per-channel
affine over channel groups; per sample, so train mode too) and ``nn.BatchNorm1d/2d/3d``
in eval mode (running statistics; train mode is declined).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..forms import Dense
from ..registry import RuleForms, register_rule


def _pos(g: Tensor, c: int, d: int) -> Tensor:
    return g.reshape(c, g.shape[1], -1, d)


def _affine(c: int, xhat: Tensor, weight: Tensor | None, bias: Tensor | None) -> RuleForms:
    """Elementwise affine ``y = xhat * weight + bias`` broadcast over positions.
    ``xhat``: ``[c, S, d]`` with ``d`` = number of affine entries."""
    d = xhat.shape[2]
    rules: RuleForms = {}
    if weight is not None:
        rules["weight"] = lambda g: Dense(torch.einsum("iosd,isd->iod", _pos(g, c, d), xhat))
    if bias is not None:
        rules["bias"] = lambda g: Dense(_pos(g, c, d).sum(2))
    return rules


def _channels_last(c: int, C: int, rules: RuleForms) -> RuleForms:
    """Rules of a per-channel affine written for ``[c, positions, C]`` gradients, applied
    to channel-first outputs ``[c, O, C, *spatial]``."""
    return {
        k: (lambda g, fn=fn: fn(g.reshape(c, g.shape[1], C, -1).transpose(2, 3)))
        for k, fn in rules.items()
    }


@register_rule(nn.LayerNorm)
def layer_norm(m: nn.LayerNorm, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """``xhat = layer_norm(x)`` over ``normalized_shape``; ``weight`` and ``bias`` dense."""
    x = args[0]
    c = x.shape[0]
    xhat = F.layer_norm(x, m.normalized_shape, eps=m.eps)
    d = math.prod(m.normalized_shape)
    return _affine(c, xhat.reshape(c, -1, d), m.weight, getattr(m, "bias", None))


if hasattr(nn, "RMSNorm"):  # torch >= 2.4

    @register_rule(nn.RMSNorm)
    def rms_norm(m: nn.Module, args: tuple[Any, ...], out: Tensor) -> RuleForms:
        """``y = x / sqrt(mean(x^2) + eps) * weight``: an elementwise scale of the
        normalised input, like LayerNorm without centring or bias."""
        x = args[0]
        c = x.shape[0]
        xhat = F.rms_norm(x, m.normalized_shape, eps=m.eps)
        d = math.prod(m.normalized_shape)
        return _affine(c, xhat.reshape(c, -1, d), m.weight, None)


@register_rule(nn.GroupNorm)
def group_norm(m: nn.GroupNorm, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """Per-channel ``weight``/``bias`` after normalising each sample's channel groups
    (per sample, so unlike BatchNorm it has an NTK in training mode too)."""
    x = args[0]
    c, C = x.shape[0], x.shape[1]
    xhat = F.group_norm(x, m.num_groups, eps=m.eps).reshape(c, C, -1).transpose(1, 2)
    return _channels_last(c, C, _affine(c, xhat, m.weight, m.bias))


def batch_norm_declines(m: nn.modules.batchnorm._BatchNorm) -> str | None:
    """Train mode (or no running statistics): each output depends on the whole batch."""
    if m.training or m.running_mean is None:
        return "normalises with batch statistics (train mode or no running stats)"
    return None


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, declines=batch_norm_declines)
def batch_norm(m: nn.modules.batchnorm._BatchNorm, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """``xhat = (x - running_mean) / sqrt(running_var + eps)`` per channel (eval mode)."""
    x = args[0]
    c, C = x.shape[0], x.shape[1]
    shape = (1, C) + (1,) * (x.dim() - 2)
    xhat = (x - m.running_mean.reshape(shape)) / torch.sqrt(m.running_var.reshape(shape) + m.eps)
    xhat = xhat.reshape(c, C, -1).transpose(1, 2)  # [c, positions, C]
    return _channels_last(c, C, _affine(c, xhat, m.weight, m.bias))
