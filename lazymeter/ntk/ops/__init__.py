"""Operator-level rules: the structured engine's one mechanism for a parameter's maths.

Every layer's maths lives here once: ``nn.Linear`` is ``F.linear``, ``nn.Conv2d`` is
``F.conv2d`` (grouped and depthwise included), ``nn.LayerNorm`` is ``F.layer_norm``; the
built-in module rules (:mod:`lazymeter.ntk.rules`) only say which operation a layer
stands for. The same rules cover research code that keeps raw ``nn.Parameter``\\ s and
uses them in ``einsum``, ``@``, ``addmm`` or indexing (Nanda-style and TransformerLens
transformers, HuggingFace GPT-2's ``Conv1D``, ``nn.MultiheadAttention``'s
``in_proj_weight``). This package traces
one forward pass with a :class:`~torch.overrides.TorchFunctionMode`
(:mod:`~lazymeter.ntk.ops.trace`), follows every use of each parameter through views
(``W.T``, ``W[:T]``, ``chunk``, ``reshape``, ...), and applies a rule to each operation
that consumes one (:data:`OP_RULES`, one module per family):

* :mod:`~lazymeter.ntk.ops.products`: ``F.linear``, ``matmul``/``@``, ``mm``, ``bmm``,
  ``addmm``, two-operand ``einsum``: an :class:`~lazymeter.ntk.forms.Outer` form;
* :mod:`~lazymeter.ntk.ops.lookup`: ``W[tokens]``, ``F.embedding``, ``index_select``: an
  index form (one-hot inputs);
* :mod:`~lazymeter.ntk.ops.elementwise`: ``x + b``, ``x - b``, ``x * g`` with
  broadcasting: dense forms;
* :mod:`~lazymeter.ntk.ops.norms`: ``F.layer_norm``, ``F.rms_norm``, ``F.group_norm``,
  ``F.batch_norm`` (running statistics): their weight and bias, dense forms;
* :mod:`~lazymeter.ntk.ops.convolution`: ``F.conv1d``/``F.conv2d`` and
  ``F.conv_transpose1d``/``F.conv_transpose2d``, any ``groups``: unfolded patches, an
  :class:`~lazymeter.ntk.forms.Outer` form (a dense one per group when ``groups > 1``);
* :mod:`~lazymeter.ntk.ops.modules`: a layer with a user's module rule
  (:func:`~lazymeter.ntk.register_rule`) as one operation of its own parameters.

:mod:`~lazymeter.ntk.ops.capture` runs the forward on the block (or per sample under
``vmap`` where the batched forward cannot tell the samples apart), each rule on one
sample's tensors (so no rule has to guess which dimension is the batch), and
differentiates the model's outputs with respect to each consuming operation's output
(``O`` cotangents at once, one batched backward pass). A
parameter that any operation without a rule touches (``W.exp()``, ``W / W.norm()``)
goes to the generic engine as a whole, and the exactness guard checks the rest.
"""

from __future__ import annotations

from .trace import OP_RULES, SELECTIONS, OpRule, Use, register_op_rule

# The built-in rules register themselves on import.
from . import convolution, elementwise, lookup, norms, products  # noqa: E402, F401  isort: skip

__all__ = ["OP_RULES", "SELECTIONS", "OpRule", "Use", "register_op_rule"]
