"""``nn.ConvTranspose1d`` and ``nn.ConvTranspose2d``.

``y = conv_transpose(x, W)`` with ``W [Cin, Cout/G, *k]``: the gradient w.r.t. ``W``
pairs each input position ``p`` with the output-gradient patch that ``p`` wrote to,
``dW[cin, cout, k] = sum_p x[cin, p] g[cout, p * stride - padding + k * dilation]``, i.e.
``g`` unfolded with the layer's own kernel, stride, padding and dilation (positions past
the input, from ``output_padding``/``output_size``, are dropped). An
:class:`~lazymeter.ntk.forms.Outer` form with ``h = x`` and the unfolded ``g``; ``groups``
swap the roles per group (dense).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..forms import Dense, Outer
from ..registry import RuleForms, register_rule
from .conv import conv_dims


@register_rule(nn.ConvTranspose1d, nn.ConvTranspose2d)
def conv_transpose(
    m: nn.ConvTranspose1d | nn.ConvTranspose2d, args: tuple[Any, ...], out: Tensor
) -> RuleForms:
    """``dW[cin, cout, k] = sum_p x[cin, p] g[cout, p * stride - padding + k * dilation]``:
    ``g`` unfolded with the layer's kernel, stride, padding and dilation."""
    x = args[0]
    c, cin = x.shape[0], x.shape[1]
    one_d = isinstance(m, nn.ConvTranspose1d)
    spatial = (1, *x.shape[2:]) if one_d else tuple(x.shape[2:])
    k, st, dl = conv_dims(m, one_d)
    pd = (0, *m.padding) if one_d else tuple(m.padding)
    h = x.reshape(c, cin, -1).transpose(1, 2)  # [c, S_in, Cin]

    def patches(g: Tensor) -> Tensor:  # [c, O, Cout, *out] -> [c, O, S_in, Cout * k]
        no = g.shape[1]
        g2 = g.reshape(c * no, m.out_channels, *((1,) if one_d else ()), *g.shape[3:])
        u = F.unfold(g2, k, dilation=dl, padding=pd, stride=st)
        rows = [
            (o + 2 * p - d * (kk - 1) - 1) // s + 1
            for o, p, d, kk, s in zip(g2.shape[2:], pd, dl, k, st, strict=True)
        ]
        u = u.reshape(c * no, -1, *rows)[:, :, : spatial[0], : spatial[1]]
        return u.reshape(c, no, u.shape[1], -1).transpose(2, 3)

    if m.groups == 1:
        rules = {"weight": lambda g: Outer(g=patches(g), h=h, din=cin, transpose=True)}
    else:
        # Weight rows are input channels: swap the roles of ``g`` and ``h`` per group.
        def grouped(g: Tensor) -> Dense:
            u = patches(g)  # [c, O, S, Cout * k]
            G = m.groups
            u5 = u.reshape(c, u.shape[1], u.shape[2], G, -1)
            h4 = h.reshape(c, h.shape[1], G, -1)
            J = torch.einsum("isgd,iosge->iogde", h4, u5)
            return Dense(J.reshape(c, u.shape[1], -1))

        rules = {"weight": grouped}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g.reshape(c, g.shape[1], m.out_channels, -1).sum(3))
    return rules
