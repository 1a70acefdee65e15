"""Module rules as operations of the traced forward.

A layer whose type has a module rule (:func:`~lazymeter.ntk.registry.register_rule`,
looked up along the MRO) is, during :class:`~lazymeter.ntk.ops.trace.Tracer`'s forward,
one consuming operation of its own parameters: while it runs, the tracer does not see
their uses inside it; its inputs and output come out of ``vmap`` with the other uses'
tensors, and its rule gets them batched, ``rule(module, inputs [c, ...], output [c, ...])``,
then each parameter's form from ``g [c, O, *output.shape[1:]]``, the gradient with
respect to the layer's output. Module rules thus share the operator rules' single
capture (one traced forward and ``O`` backward passes per block) and the forms add up
with the parameter's other uses (:func:`~lazymeter.ntk.forms.parts`).

The built-in layers' rules stand for an operator rule (their ``op`` attribute,
:mod:`lazymeter.ntk.rules`): those layers are traced through, so their maths is the
operator rules'. A layer is a module operation only when it runs on one sample's batch
of one (``fm.single``); a call on something without the batch dimension (a position
table looked up once for all samples) is traced through as well, and so is a layer
whose rule declines the call (a reason string, or None) or gives no form for some of
its parameters: :func:`discover_modules` settles which, on one sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..forms import Form, Outer
from ..registry import Rule, declined, find_rule
from .trace import Tracer, Use

#: Why a layer with a rule was traced through instead: its call had no batch dimension.
UNBATCHED = (
    "the layer ran on something without the batch dimension (or its output is not a "
    "Tensor), so it has no per-sample rule"
)


def ruled_modules(model: nn.Module, names: set[str]) -> dict[str, tuple[type, Rule, set[str]]]:
    """``{module name: (registered type, rule, local names)}`` for the layers whose rule is
    a module rule (not one standing for an operator rule), not declined by their
    configuration, holding some of the parameters ``names`` directly."""
    out = {}
    for mname, m in model.named_modules():
        found = find_rule(type(m))
        if found is None or getattr(found[1], "op", None) is not None or declined(m):
            continue
        prefix = f"{mname}." if mname else ""
        local = {n for n, _ in m.named_parameters(recurse=False) if prefix + n in names}
        if local:
            out[mname] = (found[0], found[1], local)
    return out


def _batch_of_one(t: Any) -> bool:
    return isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == 1


@contextmanager
def module_operations(
    model: nn.Module,
    tracer: Tracer,
    modules: dict[str, tuple[type, Rule, set[str]]],
    seen: dict[str, set[str]] | None = None,
    notes: dict[str, str] | None = None,
) -> Iterator[None]:
    """Hooks that make each call of ``modules`` (``{name: (type, rule, locals)}``, the
    parameters its rule computes) one operation of ``tracer``.

    Discovering (``seen`` given, no ``tracer.eps``): the rule runs on the call (a batch of
    one) and ``seen[name]`` gets the locals it gave forms for (empty when it declined,
    with the reason in ``notes[name]``). Differentiating: each call is recorded as uses
    whose ``build`` runs the rule on the block's inputs and output."""
    handles = []
    for mname, (rtype, rule, local) in modules.items():
        m = model.get_submodule(mname)
        prefix = f"{mname}." if mname else ""
        stack: list[set[int] | None] = []

        def pre(mod: nn.Module, args: tuple[Any, ...], local=local, stack=stack) -> None:
            if not _batch_of_one(next((a for a in args if isinstance(a, Tensor)), None)):
                stack.append(None)
                return
            held = {id(mod._parameters[n]) for n in local} & set(tracer.tracked)
            tracer.held |= held
            stack.append(held)

        def post(
            mod: nn.Module,
            args: tuple[Any, ...],
            out: Any,
            mname=mname,
            rtype=rtype,
            rule=rule,
            local=local,
            prefix=prefix,
            stack=stack,
        ) -> Any:
            held = stack.pop()
            if held is None:
                if notes is not None:
                    notes.setdefault(mname, UNBATCHED)
                    seen[mname] = set()  # type: ignore[index]
                return None
            if not _batch_of_one(out):
                tracer.held -= held
                if notes is not None:
                    notes.setdefault(mname, UNBATCHED)
                    seen[mname] = set()  # type: ignore[index]
                return None
            covers = local
            if seen is not None:  # discovering: does the rule take this call, and what?
                given = rule(mod, tuple(_detach(a) for a in args), out.detach())
                if given is None or isinstance(given, str):
                    why = given or "the rule returned None for this call"
                    why = f"the rule for {rtype.__name__} declined: {why}"
                    notes.setdefault(mname, why)  # type: ignore[union-attr]
                    given = {}
                covers = local & set(given)
                seen[mname] = seen.get(mname, covers) & covers
            tracer.held -= held  # after the rule ran: its own operations are not uses
            uses = _uses(mod, args, out, rule, rtype, sorted(covers), prefix, tracer)
            return tracer.record(uses, out, f"rule {rtype.__name__}")

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _detach(a: Any) -> Any:
    return a.detach() if isinstance(a, Tensor) else a


def _uses(
    mod: nn.Module,
    args: tuple[Any, ...],
    out: Tensor,
    rule: Rule,
    rtype: type,
    covers: list[str],
    prefix: str,
    tracer: Tracer,
) -> list[Use]:
    """One :class:`Use` per parameter of the call; the rule runs once per block, on the
    inputs and output carried out of ``vmap`` (a per-sample batch of one becomes the
    block's batch; an input without it is the same for every sample)."""
    tensors = tuple(a.detach() for a in args if isinstance(a, Tensor)) + (out.detach(),)
    one = [_batch_of_one(t) for t in tensors]
    memo: dict[str, Any] = {}

    def batched(ts: tuple[Tensor, ...]) -> list[Tensor]:
        return [t.flatten(0, 1) if b else t[0] for t, b in zip(ts, one, strict=True)]

    def build(ts: tuple[Tensor, ...], g: Tensor, local: str) -> Form:
        if "rules" not in memo:
            *xs, y = batched(ts)
            it = iter(xs)
            inputs = tuple(next(it) if isinstance(a, Tensor) else a for a in args)
            memo["rules"] = rule(mod, inputs, y)
        rules = memo["rules"]
        if rules is None or isinstance(rules, str) or local not in rules:
            raise RuntimeError(
                f"the rule for {rtype.__name__} declined a block after taking the first "
                f"({rules or 'no form'}); register it with a static `declines` instead"
            )
        form = rules[local](g.squeeze(2))  # [c, O, 1, *rest]: the batch of one dropped
        if isinstance(form, Outer) and form.bias is not None:
            form.bias = prefix + form.bias  # a local name in the module rule's contract
        return form

    uses = []
    for local in covers:
        p = mod._parameters[local]
        found = tracer.find(p)
        if found is None:
            continue
        uses.append(
            Use(
                found.name,
                found.index.reshape(-1),
                tensors,
                lambda ts, g, local=local: build(ts, g, local),
            )
        )
    return uses
