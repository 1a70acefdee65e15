"""A module rule that stands for operator rules: a layer's maths written once.

:func:`stands_for` turns "this layer's forward is that operation" into a module rule of
the :func:`~lazymeter.ntk.registry.register_rule` contract, ``rule(module, inputs,
output) -> {local name: g -> form}``: it runs the layer type's own forward on each sample
(a batch of one, under ``vmap``) with a :class:`~lazymeter.ntk.ops.trace.Tracer`
following the layer's parameters, and each form is the operator rule's
(:mod:`lazymeter.ntk.ops`). The structured engine itself never calls such a rule: it
traces through the layer and meets the same operation (the rule's ``op`` attribute says
which). The rule is for users who build on it, e.g. a subclass that scales
``nn.Linear``'s output (docs/extending.md). Cost: one traced forward of the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.func import vmap

from ..ops.trace import Tracer
from ..registry import Rule, RuleForms


def stands_for(base: type[nn.Module], op: str) -> Rule:
    """The module rule of layers of type ``base`` whose forward is the operation ``op``
    (an :data:`~lazymeter.ntk.ops.OP_RULES` name): ``base.forward`` traced per sample.
    Declines (a reason) where the operator rule refuses the call."""

    def rule(m: nn.Module, args: tuple[Any, ...], out: Tensor) -> RuleForms | str:
        follow = {n: p for n, p in m.named_parameters(recurse=False)}
        positions = [k for k, a in enumerate(args) if isinstance(a, Tensor)]
        found: dict[str, Tracer] = {}

        def one(*xs: Tensor) -> tuple[Tensor, ...]:
            call = list(args)
            for k, x in zip(positions, xs, strict=True):
                call[k] = x.unsqueeze(0)  # one sample as a batch of one
            with Tracer(follow) as t:
                base.forward(m, *call)
            found["t"] = t
            return tuple(v for u in t.uses for v in u.tensors)

        ts = vmap(one, randomness="different")(*(args[k] for k in positions))
        t = found["t"]
        if t.refused:
            return "; ".join(f"{n}: {why}" for n, why in t.refused.items())
        forms: RuleForms = {}
        k = 0
        for u in t.uses:
            if u.name in forms:
                return f"{op} uses {u.name!r} twice"
            forms[u.name] = _form(u.build, ts[k : k + len(u.tensors)])
            k += len(u.tensors)
        return forms

    rule.op = op  # type: ignore[attr-defined]
    rule.__name__ = rule.__qualname__ = f"{base.__name__.lower()}_as_{op}"
    rule.__doc__ = f"``{base.__name__}`` as the operator rule for ``{op}``."
    return rule


def _form(build: Callable[..., Any], ts: tuple[Tensor, ...]) -> Callable[[Tensor], Any]:
    """``g [c, O, *out.shape[1:]] -> form``: the operator rule's ``build``, whose ``g``
    is shaped like one sample's output, a batch of one."""
    return lambda g: build(ts, g.unsqueeze(2))
