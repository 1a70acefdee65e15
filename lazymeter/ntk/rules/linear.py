"""``nn.Linear``: ``y = h W^T + b`` over any leading dimensions.

Per sample, ``J_W = sum_s g_s (x) h_s`` (an :class:`~lazymeter.ntk.forms.Outer` form over
the ``S`` leading positions) and ``J_b = sum_s g_s`` (dense, ``[c, O, dout]``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..forms import Dense, Outer
from ..registry import RuleForms, register_rule


@register_rule(nn.Linear)
def linear(m: nn.Linear, args: tuple[Any, ...], out: Tensor) -> RuleForms:
    """Weight as ``Outer(g [c, O, S, dout], h [c, S, din])`` (bias foldable into it as an
    input column of ones), bias as ``Dense(sum_s g)``."""
    h = args[0]
    c = h.shape[0]
    h = h.reshape(c, -1, m.in_features)

    def g3(g: Tensor) -> Tensor:
        return g.reshape(c, g.shape[1], -1, m.out_features)

    bias = "bias" if m.bias is not None else None
    rules = {"weight": lambda g: Outer(g=g3(g), h=h, din=m.in_features, bias=bias)}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g3(g).sum(2))
    return rules
