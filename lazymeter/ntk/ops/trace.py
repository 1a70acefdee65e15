"""Following a forward pass operation by operation: where each parameter is consumed.

:class:`Tracer` is a :class:`~torch.overrides.TorchFunctionMode`. It knows the trainable
parameters it follows by object identity and, for every tensor derived from one by a
*selection* (:data:`SELECTIONS`: a view, slice, transpose, reshape, chunk, ...), the flat
position in the parameter of each of its entries (the same selection applied to
``arange(numel)``). An operation that takes a followed tensor is either a selection
(its outputs are followed too), an operation with a rule in :data:`OP_RULES` (each
followed operand becomes a :class:`Use`), or anything else: the parameter is then
refused (its kernel goes to the generic engine) with the operation's name as the reason.

Rules run per sample (the capture runs the forward under ``vmap``, or batched with each
rule call vmapped over the samples), so they never have to find the batch dimension.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from ..forms import Form, positions

#: Re-dispatch a Python-level torch function with the mode active inside it (recent torch;
#: without it such functions count as operations without a rule).
_redispatch = getattr(torch.overrides, "redispatch_function", None)


@dataclass
class Tracked:
    """A followed tensor: a parameter or a selection of one.

    Attributes:
        tensor: the tensor itself (held, so that its ``id`` is not reused while tracing).
        name: the parameter's name.
        index: ``int64`` tensor of ``tensor``'s shape: each entry's flat position in the
            parameter.
    """

    tensor: Tensor
    name: str
    index: Tensor


@dataclass
class Use:
    """One operation consuming (a selection of) a parameter.

    Attributes:
        name: the parameter's name.
        index: flat position in the parameter of each entry of the form's layout.
        tensors: per-sample tensors the form is built from (the other operand, token ids),
            carried out of ``vmap`` with a leading sample dimension.
        build: ``build(tensors [c, ...], g [c, O, *y.shape]) -> Form``, where ``g`` is the
            gradient of each output with respect to the operation's output ``y``.
        op: the operation's name (for :func:`~lazymeter.ntk.explain`).
    """

    name: str
    index: Tensor
    tensors: tuple[Tensor, ...]
    build: Callable[[tuple[Tensor, ...], Tensor], Form]
    op: str = ""
    slot: int = field(default=-1, repr=False)  # which consuming operation (its output y)


#: A rule: ``rule(args, kwargs, find, out) -> [Use, ...]``, or a reason (str) to refuse.
#: ``find(obj)`` returns the :class:`Tracked` record of a followed tensor, else None.
OpRule = Callable[
    [tuple[Any, ...], dict[str, Any], Callable[[Any], "Tracked | None"], Any], "list[Use] | str"
]

#: Operation name -> rule (:func:`op_name` gives the name of a torch function or method).
OP_RULES: dict[str, OpRule] = {}

#: Operations that only select entries (views, slices, reshapes, splits): their outputs
#: are followed, with positions from the same operation applied to the index.
SELECTIONS = frozenset(
    {
        "T", "mT", "t", "transpose", "swapaxes", "swapdims", "permute", "movedim",
        "moveaxis", "view", "reshape", "view_as", "reshape_as", "flatten", "unflatten",
        "squeeze", "unsqueeze", "contiguous", "clone", "narrow", "select", "chunk",
        "split", "tensor_split", "unbind", "__getitem__", "expand", "expand_as",
        "cat", "concat", "concatenate", "stack", "to", "type_as",
    }
)  # fmt: skip
#: Selections that may take an untracked tensor (for its shape or dtype only).
_SHAPE_FROM = frozenset({"view_as", "reshape_as", "expand_as", "type_as"})


def register_op_rule(*names: str) -> Callable[[OpRule], OpRule]:
    """Decorator adding a rule for operations of these names (``"einsum"``,
    ``"__matmul__"``, ...) to :data:`OP_RULES`; registering a name again replaces it."""

    def deco(fn: OpRule) -> OpRule:
        for n in names:
            OP_RULES[n] = fn
        return fn

    return deco


def op_name(func: Any) -> str:
    """``"einsum"``, ``"__matmul__"``, or for a property such as ``W.T`` its name (``"T"``)."""
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


def _tensors(obj: Any) -> list[Tensor]:
    """The tensors in ``obj`` (nested tuples, lists and dicts), in order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for a in obj for t in _tensors(a)]
    if isinstance(obj, dict):
        return [t for a in obj.values() for t in _tensors(a)]
    return []


class Tracer(TorchFunctionMode):
    """Follow ``params`` (``{name: tensor the model sees}``) through one forward pass.

    After the pass: :attr:`uses` (the consuming operations, in order),
    :attr:`outputs` (each consuming operation's output ``y``) and :attr:`refused`
    (``{name: why}`` for parameters some operation without a rule touched). With
    ``eps`` (one tensor per consuming operation, shaped like its output), each output is
    returned as ``y + eps[k]``, so that differentiating the model's output with respect
    to ``eps[k]`` gives the gradient with respect to ``y``.
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        eps: list[Tensor] | None = None,
        defer: Callable[..., Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.tracked: dict[int, Tracked] = {}
        for name, p in params.items():
            idx = positions(p.numel(), p.device).reshape(p.shape)
            self.tracked[id(p)] = Tracked(p, name, idx)
        self.uses: list[Use] = []
        self.outputs: list[Tensor] = []
        self.refused: dict[str, str] = {}
        #: Each consuming operation's tensor operands (``_tensors`` order, detached), None
        #: for a module operation: what the batched capture checks its calls against.
        self.operands: list[list[Tensor] | None] = []
        self.eps = eps
        #: ``defer(tracer, rule, name, args, kwargs, out) -> output``: called instead of a
        #: consuming operation's rule (the batched capture runs rules after the forward).
        self.defer = defer
        #: ids of followed tensors inside a call that a module rule computes as a whole
        #: (:mod:`~lazymeter.ntk.ops.modules`): their uses there are not operations.
        self.held: set[int] = set()

    @staticmethod
    def _composite(name: str, func: Any) -> bool:
        """A torch function written in Python (so its operations can be traced) that has no
        rule of its own and is not a selection."""
        return (
            name not in OP_RULES
            and name not in SELECTIONS
            and inspect.isfunction(func)
            and (getattr(func, "__module__", "") or "").startswith("torch.")
        )

    def find(self, obj: Any) -> Tracked | None:
        return self.tracked.get(id(obj)) if isinstance(obj, Tensor) else None

    def _refuse(self, hits: list[Tracked], why: str) -> None:
        for h in hits:
            self.refused.setdefault(h.name, why)

    def _select(
        self, name: str, func: Any, args: Any, kwargs: Any, hits: list[Tracked], out: Any
    ) -> str | None:
        """Follow the outputs of a selection; a reason when it cannot be followed."""
        if len({h.name for h in hits}) > 1:
            return f"{name} joins it with another parameter"
        others = [t for t in _tensors((args, kwargs)) if id(t) not in self.tracked]
        if name == "__getitem__" and _tensors(args[1:]):
            return None  # indexing with a tensor: a lookup (rule), not a selection
        if others and name not in _SHAPE_FROM:
            return f"{name} joins it with a tensor that is not a parameter"
        outs = _tensors(out)
        if name in ("to", "type_as") and any(o.dtype != hits[0].tensor.dtype for o in outs):
            return f"{name} changes its dtype"

        def swap(a: Any) -> Any:
            t = self.find(a)
            return a if t is None else t.index

        if name in ("to", "type_as"):
            idx_out: Any = hits[0].index
        else:
            idx_out = func(*tree_map(swap, args), **tree_map(swap, kwargs))
        idxs = _tensors(idx_out)
        if len(idxs) != len(outs) or any(
            i.shape != o.shape for i, o in zip(idxs, outs, strict=True)
        ):
            return f"{name}: its positions could not be followed"
        for o, i in zip(outs, idxs, strict=True):
            if id(o) not in self.tracked:
                self.tracked[id(o)] = Tracked(o, hits[0].name, i)
        return ""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        hits = [
            self.tracked[id(a)]
            for a in _tensors((args, kwargs))
            if id(a) in self.tracked and id(a) not in self.held
        ]
        name = op_name(func)
        if hits and _redispatch is not None and self._composite(name, func):
            # A Python function over torch operations (F.multi_head_attention_forward):
            # run its body with the mode active, so each operation inside is seen.
            with self:
                return _redispatch(func, types, args, kwargs)
        out = func(*args, **kwargs)
        if not hits:
            return out
        if not _tensors(out):  # W.shape, W.size(0), W.dim(): not a use
            return out
        if name == "data" or name == "detach":  # no gradient flows: not a use either
            return out
        if name in SELECTIONS:
            why = self._select(name, func, args, kwargs, hits, out)
            if why == "":
                return out
            if why is not None:
                self._refuse(hits, why)
                return out
        rule = OP_RULES.get(name)
        if rule is None:
            self._refuse(hits, f"used by {name or repr(func)}, which has no operator rule")
            return out
        if not isinstance(out, Tensor):
            self._refuse(hits, f"{name} returns several tensors")
            return out
        if self.defer is not None:
            return self.defer(self, rule, name, args, kwargs, out)
        found = rule(args, kwargs, self.find, out)
        if isinstance(found, str):
            self._refuse(hits, f"{name}: {found}")
            return out
        missing = {h.name for h in hits} - {u.name for u in found}
        if missing:
            self._refuse(
                [h for h in hits if h.name in missing], f"{name}: no rule for this operand"
            )
        return self.record(found, out, name, [t.detach() for t in _tensors((args, kwargs))])

    def record(
        self, found: list[Use], out: Tensor, name: str, operands: list[Tensor] | None = None
    ) -> Tensor:
        """Register ``found``, the uses of one consuming operation whose output is ``out``
        (and whose tensor operands have the shapes ``operands``); returns ``out + eps`` of
        its slot when differentiating (else ``out``)."""
        slot = len(self.outputs)
        for u in found:
            u.op, u.slot = u.op or name, slot
        self.uses.extend(found)
        self.outputs.append(out)
        self.operands.append(operands)
        if self.eps is not None:
            out = out + self.eps[slot]
        return out
