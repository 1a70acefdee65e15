"""The structured engine's rule registry: layer type -> rule, looked up along the MRO.

A rule gets ``(module, inputs, output)`` of one call of a layer (inputs sliced to the
block's ``c`` samples and detached) and returns, per parameter name local to the module,
a function of the output gradient ``g [c, O, *output.shape[1:]]`` giving that
parameter's per-sample Jacobian as a :class:`~lazymeter.ntk.forms.Outer` or
:class:`~lazymeter.ntk.forms.Dense` form. It may instead decline the call by returning
a string (the reason) or None; the layer's parameters then go to the generic engine.

Lookup follows ``type(module).__mro__``: a subclass of ``nn.Linear`` uses the Linear
rule. Whether that is right for the subclass (same forward) is checked at run time by
the exactness guard (:func:`lazymeter.ntk.routing.validate`), which sends a parameter
whose rule does not reproduce autograd to the generic engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .forms import Form

#: What a rule returns for one call: ``{local parameter name: g -> form}``.
RuleForms = dict[str, Callable[[Tensor], Form]]
#: A rule: ``rule(module, inputs, output) -> {local name: g -> form}``, or a reason (str)
#: or None to decline this call.
Rule = Callable[[nn.Module, tuple[Any, ...], Tensor], RuleForms | str | None]

#: Layer type -> rule. Looked up along ``type(m).__mro__`` (:func:`find_rule`).
RULES: dict[type, Rule] = {}
#: Static limits of a rule: ``DECLINES[type](module)`` names what the rule does not
#: handle in this module's configuration (its parameters then go to the generic engine),
#: or returns None. Checked before the layer runs, so coverage can say it in advance.
DECLINES: dict[type, Callable[[nn.Module], str | None]] = {}


def register_rule(
    *types: type, declines: Callable[[nn.Module], str | None] | None = None
) -> Callable[[Rule], Rule]:
    """Decorator adding a rule for the given module types (and their subclasses) to
    :data:`RULES`.

    ``declines`` (optional) returns the reason a module of these types is not covered in
    its configuration (e.g. ``Embedding(max_norm=...)``), or None. The rule itself may
    decline one call by returning a reason string or None. Registering a type again
    replaces its rule (and its ``declines``). Routes and plans remembered before are
    not reused (their cache keys include the set of ruled parameters).
    """

    def deco(fn: Rule) -> Rule:
        for t in types:
            if not isinstance(t, type):
                raise TypeError(f"register_rule: expected module types, got {t!r}")
            RULES[t] = fn
            if declines is not None:
                DECLINES[t] = declines
            else:
                DECLINES.pop(t, None)
        return fn

    return deco


def unregister_rule(*types: type) -> None:
    """Remove the rules (and ``declines``) registered for exactly these types."""
    for t in types:
        RULES.pop(t, None)
        DECLINES.pop(t, None)


def find_rule(cls: type) -> tuple[type, Rule] | None:
    """``(registered type, rule)`` for the first class of ``cls.__mro__`` with a rule, or
    None when no class in the hierarchy has one."""
    for base in cls.__mro__:
        rule = RULES.get(base)
        if rule is not None:
            return base, rule
    return None


def declined(m: nn.Module) -> str | None:
    """Why the rule found for ``type(m)`` does not cover ``m`` in its configuration
    (None: covered, or no rule)."""
    found = find_rule(type(m))
    if found is None:
        return None
    check = DECLINES.get(found[0])
    return None if check is None else check(m)
