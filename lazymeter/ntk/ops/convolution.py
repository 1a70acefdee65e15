"""``F.conv1d`` / ``F.conv2d`` with a raw weight (and bias): unfolded patches.

Per sample, with ``h [L, Cin k]`` the patches of the zero-padded input (``L`` output
positions) and ``g [O, L, Cout]`` the output gradients, ``J_W = sum_l g_l (x) h_l``: an
:class:`~lazymeter.ntk.forms.Outer` form in the weight's own layout ``[Cout, Cin k]``; the
bias's Jacobian is ``g`` summed over positions. Refused: ``groups > 1`` (the module rule
for ``nn.Conv*`` handles it), a parameter as the input.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..forms import Dense, Outer
from .trace import Use, register_op_rule


def _pair(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


@register_op_rule("conv1d", "conv2d")
def conv(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``F.conv{1,2}d(x, W, b, stride, padding, dilation, groups)``, ``groups == 1``."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args, strict=False)) | kwargs
    x, w_t, b_t = a["input"], a["weight"], a.get("bias")
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the convolution's input"
    if a.get("groups", 1) != 1:
        return "groups > 1"
    nd = w_t.dim() - 2
    k = tuple(w_t.shape[2:])
    stride, dil = _pair(a.get("stride", 1), nd), _pair(a.get("dilation", 1), nd)
    padding = a.get("padding", 0)
    if padding == "valid":
        padding = 0
    if padding == "same":
        total = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
        pads = [(t // 2, t - t // 2) for t in total]
    else:
        pads = [(p, p) for p in _pair(padding, nd)]
    batched = x.dim() == nd + 2
    xb = x if batched else x.unsqueeze(0)
    flat = [p for lr in reversed(pads) for p in lr]  # F.pad: last dimension first
    if any(flat):
        xb = F.pad(xb, flat)
    if nd == 1:
        xb, k2, s2, d2 = xb.unsqueeze(2), (1, *k), (1, *stride), (1, *dil)
    else:
        k2, s2, d2 = k, stride, dil
    h = F.unfold(xb, k2, dilation=d2, stride=s2).transpose(1, 2)  # [n, L, Cin k]
    n_pos = h.shape[0] * h.shape[1]
    h = h.reshape(n_pos, -1)
    c_out = w_t.shape[0]
    spatial = math.prod(out.shape[-nd:])
    uses = []
    w = find(w_t)
    if w is not None:

        def build_w(ts: tuple[Tensor, ...], g: Tensor) -> Outer:
            c, n_out = g.shape[:2]
            g4 = g.reshape(c, n_out, -1, c_out, spatial).transpose(3, 4)
            return Outer(
                g=g4.reshape(c, n_out, n_pos, c_out),
                h=ts[0],
                din=h.shape[1],
                index=w.index.reshape(-1),
            )

        uses.append(Use(w.name, w.index.reshape(-1), (h,), build_w))
    b = find(b_t)
    if b is not None:

        def build_b(ts: tuple[Tensor, ...], g: Tensor) -> Dense:
            c, n_out = g.shape[:2]
            J = g.reshape(c, n_out, -1, c_out, spatial).sum((2, 4))
            return Dense(J, b.index.reshape(-1))

        uses.append(Use(b.name, b.index.reshape(-1), (), build_b))
    return uses
