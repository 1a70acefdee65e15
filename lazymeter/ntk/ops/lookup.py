"""Lookups in a parameter table: ``W_E[tokens]``, ``W[:, tokens]``, ``F.embedding``,
``index_select``.

Per sample, ``y = W.index_select(k, idx)`` gives ``J_W = sum_s g_s (x) onehot(idx_s)``:
an :class:`~lazymeter.ntk.forms.Outer` form given by indices, in the layout
``[W.shape[k], rest]`` (dimension ``k`` moved first); ``H H^T`` is index equality. The
index tensor may depend on the sample (token ids) or not (``W_pos[arange(T)]``).
Refused: boolean masks, several index tensors, ``max_norm``, ``scale_grad_by_freq``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..forms import Outer
from .trace import Tracked, Use, register_op_rule


def lookup_use(
    w: Tracked, dim: int, idx: Tensor, y: Tensor, padding_idx: int | None = None
) -> Use | str:
    """The :class:`Use` of ``w`` in ``y = w.movedim(dim, 0)[idx].movedim(...)``: ``y`` has
    ``w``'s dimensions with ``dim`` replaced by ``idx``'s."""
    if idx.dtype == torch.bool or idx.is_floating_point():
        return "a boolean or floating index"
    shape = w.tensor.shape
    dim = dim % len(shape)
    V = shape[dim]
    pre, post = shape[:dim], shape[dim + 1 :]
    rest = math.prod(pre) * math.prod(post)
    index = w.index.movedim(dim, 0).reshape(-1)
    flat_idx = idx.reshape(-1) % V  # negative indices count from the end
    n_pos = flat_idx.numel()

    def build(ts: tuple[Tensor, ...], g: Tensor) -> Outer:
        c, n_out = g.shape[:2]
        ids = ts[0].reshape(c, n_pos)
        # g [c, O, *pre, *idx.shape, *post] -> [c, O, S, pre x post]
        g = g.reshape(c, n_out, math.prod(pre), n_pos, math.prod(post)).transpose(2, 3)
        g = g.reshape(c, n_out, n_pos, rest)
        if padding_idx is not None:  # the padding row gets no gradient
            g = g * (ids != padding_idx % V)[:, None, :, None].to(g.dtype)
        return Outer(g=g, idx=ids, din=V, transpose=True, index=index)

    return Use(w.name, index, (flat_idx,), build)


@register_op_rule("__getitem__")
def getitem(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``w[idx]`` or ``w[:, ..., idx]`` (full slices before one integer index tensor)."""
    w, key = find(args[0]), args[1]
    if w is None:
        return "the parameter is the index"
    keys = key if isinstance(key, tuple) else (key,)
    tensors = [k for k in keys if isinstance(k, Tensor)]
    if len(tensors) != 1:
        return "several index tensors"
    dim = next(i for i, k in enumerate(keys) if isinstance(k, Tensor))
    full = slice(None)
    if any(k != full for k in keys[:dim]) or any(k != full for k in keys[dim + 1 :]):
        return "slices other than ':' next to an index tensor"
    u = lookup_use(w, dim, tensors[0], out)
    return u if isinstance(u, str) else [u]


@register_op_rule("index_select")
def index_select(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``torch.index_select(w, dim, idx)``."""
    a = dict(zip(("input", "dim", "index"), args, strict=False)) | kwargs
    w = find(a["input"])
    if w is None or find(a["index"]) is not None:
        return "the parameter is the index"
    u = lookup_use(w, int(a["dim"]), a["index"], out)
    return u if isinstance(u, str) else [u]


@register_op_rule("embedding")
def embedding(
    args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any
) -> list[Use] | str:
    """``F.embedding(idx, W, padding_idx, max_norm, norm_type, scale_grad_by_freq)``
    (``torch.embedding(W, idx, ...)`` takes the table first)."""
    if isinstance(args[0], Tensor) and args[0].is_floating_point():  # torch.embedding order
        names = ("weight", "input", "padding_idx", "scale_grad_by_freq", "sparse")
    else:
        names = ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq")
    a = dict(zip(names, args, strict=False)) | kwargs
    if a.get("max_norm") is not None or a.get("scale_grad_by_freq"):
        return "max_norm or scale_grad_by_freq"
    w = find(a["weight"])
    if w is None:
        return "the parameter is the index"
    pad = a.get("padding_idx")
    pad = None if pad is None or pad == -1 and names[0] == "weight" else pad
    u = lookup_use(w, 0, a["input"], out, pad)
    return u if isinstance(u, str) else [u]
