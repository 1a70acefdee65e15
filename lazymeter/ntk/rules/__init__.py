"""Built-in structured-NTK rules, one module per layer family; importing this package
registers them in :data:`lazymeter.ntk.registry.RULES`.

* :mod:`~lazymeter.ntk.rules.linear`: ``nn.Linear``;
* :mod:`~lazymeter.ntk.rules.conv`: ``nn.Conv1d``, ``nn.Conv2d``;
* :mod:`~lazymeter.ntk.rules.conv_transpose`: ``nn.ConvTranspose1d``, ``nn.ConvTranspose2d``;
* :mod:`~lazymeter.ntk.rules.embedding`: ``nn.Embedding``;
* :mod:`~lazymeter.ntk.rules.norms`: ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm``,
  eval-mode ``nn.BatchNorm1d/2d/3d``.
"""

from . import conv, conv_transpose, embedding, linear, norms

__all__ = ["conv", "conv_transpose", "embedding", "linear", "norms"]
