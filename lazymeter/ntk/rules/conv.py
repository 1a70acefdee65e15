"""``nn.Conv1d`` and ``nn.Conv2d``: unfolded patches of the padded input.

With ``h [c, L, Cin k]`` the patches (``L`` output positions) and ``g [c, O, L, Cout]``
the output gradients, ``J_W = sum_l g_l (x) h_l`` (an :class:`~lazymeter.ntk.forms.Outer`
form); ``groups > 1`` is a block-diagonal weight whose per-sample gradient is formed group
by group (dense, cost ``c O L Cout Cin k / G``). Zero, reflect, replicate and circular
padding, ``padding="same"``/``"valid"``, stride and dilation are handled.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..forms import Dense, Outer
from ..registry import RuleForms, register_rule


def conv_dims(m: nn.Module, one_d: bool) -> tuple[tuple[int, ...], ...]:
    """``(kernel, stride, dilation)`` of a 1-d or 2-d (transposed) convolution as 2-d tuples."""
    if one_d:
        return (1, *m.kernel_size), (1, *m.stride), (1, *m.dilation)
    return tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)


def _grouped(g: Tensor, h: Tensor, groups: int) -> Dense:
    """Per-sample Jacobian of a grouped weight ``[G * dout_g, din_g]`` (group ``k`` maps
    input block ``k`` to output block ``k``): ``J[i, o, k] = sum_s g[i, o, s, k] (x) h[i, s, k]``
    from ``g [c, O, S, dout]`` and ``h [c, S, G * din_g]``; cost ``c O S dout din_g``."""
    c, no, S, dout = g.shape
    g5 = g.reshape(c, no, S, groups, dout // groups)
    h4 = h.reshape(c, S, groups, -1)
    return Dense(torch.einsum("iosgd,isge->iogde", g5, h4).reshape(c, no, -1))


@register_rule(nn.Conv1d, nn.Conv2d)
def conv(m: nn.Conv1d | nn.Conv2d, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """Unfolded patches of the padded input (zero, reflect, replicate or circular padding,
    ``padding="same"`` included), with ``groups`` as a block-diagonal weight."""
    x = args[0]
    c = x.shape[0]
    one_d = isinstance(m, nn.Conv1d)
    pad = tuple(m._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        x = F.pad(x, pad, mode=mode)
    if one_d:
        x = x.unsqueeze(2)
    k, st, dl = conv_dims(m, one_d)
    h = F.unfold(x, k, dilation=dl, stride=st).transpose(1, 2)  # [c, L, Cin * k]
    din = h.shape[2] // m.groups

    def g4(g: Tensor) -> Tensor:  # [c, O, Cout, *spatial] -> [c, O, L, Cout]
        return g.reshape(c, g.shape[1], m.out_channels, -1).transpose(2, 3)

    if m.groups == 1:
        bias = "bias" if m.bias is not None else None
        rules = {"weight": lambda g: Outer(g=g4(g), h=h, din=din, bias=bias)}
    else:
        rules = {"weight": lambda g: _grouped(g4(g), h, m.groups)}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g.reshape(c, g.shape[1], m.out_channels, -1).sum(3))
    return rules
