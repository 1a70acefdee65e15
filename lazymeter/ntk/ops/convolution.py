"""Convolutions with a parameter as the weight (and bias): ``F.conv1d``/``F.conv2d`` and
``F.conv_transpose1d``/``F.conv_transpose2d``, any ``groups``.

``conv``: per sample, with ``h [L, Cin k]`` the patches of the padded input (``L``
output positions) and ``g [O, L, Cout]`` the output gradients, ``J_W = sum_l g_l (x) h_l``:
an :class:`~lazymeter.ntk.forms.Outer` form in the weight's layout ``[Cout, Cin k]``;
with ``groups = G`` the weight ``[Cout, Cin/G k]`` maps input block ``b`` to output
block ``b`` only, so ``J_W[b] = sum_l g_l[b] (x) h_l[b]`` is formed block by block
(:class:`~lazymeter.ntk.forms.Dense`, cost ``c O L Cout Cin k / G``; depthwise: ``G = Cin``).

``conv_transpose``: ``y = conv_transpose(x, W)`` with ``W [Cin, Cout/G, *k]`` pairs each
input position ``p`` with the output-gradient patch it wrote to,
``dW[cin, cout, k] = sum_p x[cin, p] g[cout, p * stride - padding + k * dilation]``:
``g`` unfolded with the layer's own kernel, stride, padding and dilation (positions past
the input, from ``output_padding``, dropped); an ``Outer`` form with ``h = x`` in the
layout ``[Cin, Cout k]``, or per group as above. The bias's Jacobian is ``g`` summed
over positions. Refused: a parameter as the input, 3-d convolutions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..forms import Dense, Form, Outer
from .trace import Use, register_op_rule


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * n


def _as_2d(*dims: tuple[int, ...]) -> list[tuple[int, ...]]:
    """1-d kernel, stride, ... as 2-d ones (a height of one), for ``F.unfold``."""
    return [d if len(d) == 2 else (1, *d) for d in dims]


def blockwise(g: Tensor, h: Tensor, groups: int, transpose: bool = False) -> Tensor:
    """Per-sample Jacobian ``[c, O, n_p]`` of a grouped weight from ``g [c, O, S, dout]``
    and ``h [c, S, din]`` (both ``G`` blocks): block ``b`` is
    ``sum_s g[:, :, s, b] (x) h[:, s, b]``, laid out ``[G, dout/G, din/G]``
    (``[G, din/G, dout/G]`` when ``transpose``); cost ``c O S dout din / G``."""
    c, no, S, dout = g.shape
    g5 = g.reshape(c, no, S, groups, dout // groups)
    h4 = h.reshape(c, S, groups, -1)
    spec = "iosgd,isge->ioged" if transpose else "iosgd,isge->iogde"
    return torch.einsum(spec, g5, h4).reshape(c, no, -1)


def _bias_use(b: Any, c_out: int, spatial: int) -> Use:
    def build_b(ts: tuple[Tensor, ...], g: Tensor) -> Dense:
        c, n_out = g.shape[:2]
        return Dense(g.reshape(c, n_out, -1, c_out, spatial).sum((2, 4)), b.index.reshape(-1))

    return Use(b.name, b.index.reshape(-1), (), build_b)


def _weight_form(
    g: Tensor, h: Tensor, din: int, groups: int, index: Tensor, bias: str | None, transpose: bool
) -> Form:
    if groups == 1:
        return Outer(g=g, h=h, din=din, index=index, bias=bias, transpose=transpose)
    return Dense(blockwise(g, h, groups, transpose), index)


@register_op_rule("conv1d", "conv2d")
def conv(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``F.conv{1,2}d(x, W, b, stride, padding, dilation, groups)``."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    a = dict(zip(names, args, strict=False)) | kwargs
    x, w_t, b_t = a["input"], a["weight"], a.get("bias")
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the convolution's input"
    groups = int(a.get("groups", 1))
    nd = w_t.dim() - 2
    k = tuple(w_t.shape[2:])
    stride, dil = _tuple(a.get("stride", 1), nd), _tuple(a.get("dilation", 1), nd)
    padding = a.get("padding", 0)
    if padding == "valid":
        padding = 0
    if padding == "same":
        total = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
        pads = [(t // 2, t - t // 2) for t in total]
    else:
        pads = [(p, p) for p in _tuple(padding, nd)]
    xb = x if x.dim() == nd + 2 else x.unsqueeze(0)
    flat = [p for lr in reversed(pads) for p in lr]  # F.pad: last dimension first
    if any(flat):
        xb = F.pad(xb, flat)
    if nd == 1:
        xb = xb.unsqueeze(2)
    k2, s2, d2 = _as_2d(k, stride, dil)
    h = F.unfold(xb, k2, dilation=d2, stride=s2).transpose(1, 2)  # [n, L, Cin k]
    n_pos = h.shape[0] * h.shape[1]
    h = h.reshape(n_pos, -1)
    c_out = w_t.shape[0]
    spatial = math.prod(out.shape[-nd:])
    uses = []
    w, b = find(w_t), find(b_t)
    if w is not None:
        index = w.index.reshape(-1)
        fold = b.name if groups == 1 and b is not None else None  # foldable bias

        def build_w(ts: tuple[Tensor, ...], g: Tensor) -> Form:
            c, n_out = g.shape[:2]
            g4 = g.reshape(c, n_out, -1, c_out, spatial).transpose(3, 4)
            g4 = g4.reshape(c, n_out, n_pos, c_out)
            return _weight_form(g4, ts[0], h.shape[1] // groups, groups, index, fold, False)

        uses.append(Use(w.name, index, (h,), build_w))
    if b is not None:
        uses.append(_bias_use(b, c_out, spatial))
    return uses


@register_op_rule("conv_transpose1d", "conv_transpose2d")
def conv_transpose(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``F.conv_transpose{1,2}d(x, W, b, stride, padding, output_padding, groups,
    dilation)``."""
    names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups")
    a = dict(zip((*names, "dilation"), args, strict=False)) | kwargs
    x, w_t, b_t = a["input"], a["weight"], a.get("bias")
    if find(x) is not None or not isinstance(x, Tensor):
        return "a parameter as the convolution's input"
    groups = int(a.get("groups", 1))
    nd = w_t.dim() - 2
    c_in, c_out = w_t.shape[0], w_t.shape[1] * groups
    k = tuple(w_t.shape[2:])
    stride, dil = _tuple(a.get("stride", 1), nd), _tuple(a.get("dilation", 1), nd)
    pad = _tuple(a.get("padding", 0), nd)
    k2, s2, d2 = _as_2d(k, stride, dil)
    p2 = pad if nd == 2 else (0, *pad)
    xb = x if x.dim() == nd + 2 else x.unsqueeze(0)
    n, in_sp = xb.shape[0], (1, *xb.shape[2:]) if nd == 1 else tuple(xb.shape[2:])
    h = xb.reshape(n, c_in, -1).transpose(1, 2).reshape(-1, c_in)  # [n S_in, Cin]
    out_sp = tuple(out.shape[-nd:])
    spatial = math.prod(out_sp)

    def patches(g: Tensor) -> Tensor:  # [c, O, n, Cout, *out] -> [c, O, n S_in, Cout k]
        c, no = g.shape[:2]
        g2 = g.reshape(c * no * n, c_out, *((1,) if nd == 1 else ()), *out_sp)
        u = F.unfold(g2, k2, dilation=d2, padding=p2, stride=s2)
        rows = [
            (o + 2 * p - d * (kk - 1) - 1) // s + 1
            for o, p, d, kk, s in zip(g2.shape[2:], p2, d2, k2, s2, strict=True)
        ]
        u = u.reshape(c * no * n, -1, *rows)[:, :, : in_sp[0], : in_sp[1]]
        u = u.reshape(c, no, n, u.shape[1], -1).transpose(3, 4)  # [c, O, n, S_in, Cout k]
        return u.reshape(c, no, -1, u.shape[-1])

    uses = []
    w, b = find(w_t), find(b_t)
    if w is not None:
        index = w.index.reshape(-1)

        def build_w(ts: tuple[Tensor, ...], g: Tensor) -> Form:
            # Weight rows are input channels: h is the input side, the unfolded g the output.
            return _weight_form(patches(g), ts[0], c_in // groups, groups, index, None, True)

        uses.append(Use(w.name, index, (h,), build_w))
    if b is not None:
        uses.append(_bias_use(b, c_out, spatial))
    return uses
