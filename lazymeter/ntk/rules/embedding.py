"""``nn.Embedding``: a table lookup, i.e. a linear layer on one-hot inputs.

``J_W = sum_s g_s (x) onehot(idx_s)`` (an :class:`~lazymeter.ntk.forms.Outer` form given by
indices, so ``H H^T`` is index equality); the ``padding_idx`` row gets no gradient.
Declined: ``max_norm`` (renormalises rows inside forward) and ``scale_grad_by_freq``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..forms import Outer
from ..registry import RuleForms, register_rule


def embedding_declines(m: nn.Embedding) -> str | None:
    """Configurations the rule does not handle: ``max_norm``, ``scale_grad_by_freq``."""
    if m.max_norm is not None:
        return "max_norm renormalises the looked-up rows inside forward"
    if m.scale_grad_by_freq:
        return "scale_grad_by_freq rescales gradients by in-batch frequencies"
    return None


@register_rule(nn.Embedding, declines=embedding_declines)
def embedding(m: nn.Embedding, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """Weight as ``Outer(g [c, O, S, d], idx [c, S])`` in the table's ``[V, d]`` layout."""
    idx = args[0]
    c = idx.shape[0]
    idx = idx.reshape(c, -1)
    keep = None if m.padding_idx is None else (idx != m.padding_idx)

    def form(g: Tensor) -> Outer:
        g = g.reshape(c, g.shape[1], -1, m.embedding_dim)
        if keep is not None:  # the padding row gets no gradient
            g = g * keep[:, None, :, None].to(g.dtype)
        return Outer(g=g, idx=idx, din=m.num_embeddings, transpose=True)

    return {"weight": form}
