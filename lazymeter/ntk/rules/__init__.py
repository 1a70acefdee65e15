"""Built-in module rules; importing this package registers them in
:data:`lazymeter.ntk.registry.RULES`.

* :mod:`~lazymeter.ntk.rules.adapter`: :func:`stands_for`, a layer whose forward is one
  operation, as a module rule computed by that operation's rule;
* :mod:`~lazymeter.ntk.rules.builtin`: the table of built-in layers and their operations
  (``nn.Linear`` -> ``linear``, ``nn.Conv2d`` -> ``conv2d``, ...), and their ``declines``.
"""

from . import adapter, builtin

__all__ = ["adapter", "builtin"]
