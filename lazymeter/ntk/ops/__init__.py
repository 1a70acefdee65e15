"""Operator-level rules of the structured engine: parameters used directly in operations.

Module rules (:mod:`lazymeter.ntk.rules`) see a parameter only through the layer that
owns it. Much research code keeps raw ``nn.Parameter``\\ s and uses them in ``einsum``,
``@``, ``addmm`` or indexing (Nanda-style and TransformerLens transformers, HuggingFace
GPT-2's ``Conv1D``, ``nn.MultiheadAttention``'s ``in_proj_weight``). This package traces
one forward pass with a :class:`~torch.overrides.TorchFunctionMode`
(:mod:`~lazymeter.ntk.ops.trace`), follows every use of each parameter through views
(``W.T``, ``W[:T]``, ``chunk``, ``reshape``, ...), and applies a rule to each operation
that consumes one (:data:`OP_RULES`, one module per family):

* :mod:`~lazymeter.ntk.ops.products`: ``F.linear``, ``matmul``/``@``, ``mm``, ``bmm``,
  ``addmm``, two-operand ``einsum``: an :class:`~lazymeter.ntk.forms.Outer` form;
* :mod:`~lazymeter.ntk.ops.lookup`: ``W[tokens]``, ``F.embedding``, ``index_select``: an
  index form (one-hot inputs);
* :mod:`~lazymeter.ntk.ops.elementwise`: ``x + b``, ``x - b``, ``x * g`` with broadcasting,
  ``F.layer_norm``'s weight and bias: dense forms;
* :mod:`~lazymeter.ntk.ops.convolution`: ``F.conv1d``/``F.conv2d`` (``groups == 1``):
  unfolded patches, an :class:`~lazymeter.ntk.forms.Outer` form.

:mod:`~lazymeter.ntk.ops.capture` runs the forward per sample under ``vmap`` (so no rule
has to guess which dimension is the batch) and differentiates the model's outputs with
respect to each consuming operation's output (``O`` cotangents at once, ``jacrev``). A
parameter that any operation without a rule touches (``W.exp()``, ``W / W.norm()``)
goes to the generic engine as a whole, and the exactness guard checks the rest.
"""

from __future__ import annotations

from .trace import OP_RULES, SELECTIONS, OpRule, Use, register_op_rule

# The built-in rules register themselves on import.
from . import convolution, elementwise, lookup, products  # noqa: E402, F401  isort: skip

__all__ = ["OP_RULES", "SELECTIONS", "OpRule", "Use", "register_op_rule"]
