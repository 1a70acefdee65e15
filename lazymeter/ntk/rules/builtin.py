"""The built-in layers' module rules: which operation each layer's forward is.

Their maths lives once, in the operator rules (:mod:`lazymeter.ntk.ops`); each rule here
is :func:`~lazymeter.ntk.rules.adapter.stands_for` that operation, so ``RULES[nn.Linear]``
keeps the :func:`~lazymeter.ntk.registry.register_rule` contract for users who build on
it. ``declines`` states in advance the configurations the operation's rule refuses, so
that :func:`~lazymeter.ntk.coverage` without inputs and
:func:`~lazymeter.ntk.explain` can say so.

==========================================  ===================================
layer                                       operation (module of its rule)
==========================================  ===================================
``nn.Linear``                               ``linear`` (products)
``nn.Conv1d``, ``nn.Conv2d``                ``conv1d``, ``conv2d`` (convolution)
``nn.ConvTranspose1d``, ``nn.ConvTranspose2d``  ``conv_transpose1d/2d`` (convolution)
``nn.Embedding``                            ``embedding`` (lookup)
``nn.LayerNorm``, ``nn.RMSNorm``            ``layer_norm``, ``rms_norm`` (norms)
``nn.GroupNorm``                            ``group_norm`` (norms)
``nn.BatchNorm1d/2d/3d`` (eval mode)        ``batch_norm`` (norms)
==========================================  ===================================
"""

from __future__ import annotations

from torch import nn

from ..registry import register_rule
from .adapter import stands_for


def embedding_declines(m: nn.Embedding) -> str | None:
    """``max_norm`` and ``scale_grad_by_freq``, which the lookup rule refuses."""
    if m.max_norm is not None:
        return "max_norm renormalises the looked-up rows inside forward"
    if m.scale_grad_by_freq:
        return "scale_grad_by_freq rescales gradients by in-batch frequencies"
    return None


def batch_norm_declines(m: nn.modules.batchnorm._BatchNorm) -> str | None:
    """Train mode (or no running statistics): each output depends on the whole batch."""
    if m.training or m.running_mean is None:
        return "normalises with batch statistics (train mode or no running stats)"
    return None


LAYERS: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.ConvTranspose1d: "conv_transpose1d",
    nn.ConvTranspose2d: "conv_transpose2d",
    nn.Embedding: "embedding",
    nn.LayerNorm: "layer_norm",
    nn.GroupNorm: "group_norm",
    nn.BatchNorm1d: "batch_norm",
    nn.BatchNorm2d: "batch_norm",
    nn.BatchNorm3d: "batch_norm",
}
if hasattr(nn, "RMSNorm"):  # torch >= 2.4
    LAYERS[nn.RMSNorm] = "rms_norm"

DECLINES = {nn.Embedding: embedding_declines} | {
    t: batch_norm_declines for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
}

for _layer, _op in LAYERS.items():
    register_rule(_layer, declines=DECLINES.get(_layer))(stands_for(_layer, _op))
