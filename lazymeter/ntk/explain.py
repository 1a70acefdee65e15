"""``explain(model, x)``: each trainable parameter's route through the structured engine.

Modelled on Opacus' ``GradSampleModule.validate``, which names each layer it cannot
handle and the fix: here every trainable parameter is listed once (aliases under one
name) with the rule that computes its kernel, or ``generic`` (the Jacobian engine) and
the reason: an operation without an operator rule used it (``tanh(W)``), no rule for its
layer's type, a module rule declines the layer's configuration or the call, or the
exactness guard found that a rule does not reproduce autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .exact import kernel_plan
from .functional import FunctionalModel, OutputFn, as_inputs, measured
from .registry import declined, find_rule
from .routing import param_slots, probe, route_details, ruled_params


@dataclass(frozen=True)
class ParamRoute:
    """One trainable parameter's route.

    Attributes:
        name: the parameter's name (the first of its names).
        aliases: its other names (a submodule registered twice, tied weights).
        layer: name of the module holding it (``""``: the model itself).
        layer_type: that module's class name.
        numel: its number of entries.
        rule: the registered type whose rule the layer's type resolves to along its MRO
            (``"Linear"`` for a subclass of ``nn.Linear``), or None when there is none.
        ruled: whether rules compute the parameter's kernel (its layer's rule, or
            operator rules; else: the generic engine).
        reason: why the parameter goes to the generic engine (None when ``ruled``).
        ops: the operations whose operator rules compute it (``("linear",)`` for an
            ``nn.Linear``'s weight, ``("einsum",)``, ``("embedding", "linear")`` for a tied
            embedding), empty when a layer's module rule does (a rule registered with
            :func:`~lazymeter.ntk.register_rule`) or it goes to the generic engine.
    """

    name: str
    aliases: tuple[str, ...]
    layer: str
    layer_type: str
    numel: int
    rule: str | None
    ruled: bool
    reason: str | None
    ops: tuple[str, ...] = ()

    @property
    def route(self) -> str:
        """``"ops <op>+<op>"``, ``"rule <type>"`` (a module rule computes it as a whole)
        or ``"generic"``."""
        if not self.ruled:
            return "generic"
        return f"ops {'+'.join(self.ops)}" if self.ops else f"rule {self.rule}"


class Explanation:
    """The routes of a model's trainable parameters (:func:`explain`); prints as a table.

    Attributes:
        rows: one :class:`ParamRoute` per trainable parameter, in ``named_parameters``
            order.
        covered: fraction of trainable entries the rules compute (equal to
            :func:`~lazymeter.ntk.coverage` on the same inputs).
        plan: how ``empirical_ntk(model, x)`` would run (:func:`~lazymeter.ntk.kernel_plan`:
            engine and why, memory budget and where it came from, block size), or None.
    """

    def __init__(self, rows: list[ParamRoute], plan: dict[str, Any] | None = None) -> None:
        self.rows = rows
        self.plan = plan
        self.total = sum(r.numel for r in rows)
        ruled = sum(r.numel for r in rows if r.ruled)
        self.covered = ruled / self.total if self.total else 0.0

    @property
    def generic(self) -> list[ParamRoute]:
        """The rows of parameters that go to the generic engine."""
        return [r for r in self.rows if not r.ruled]

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> ParamRoute:
        """The row of the parameter called ``name`` (or one of its aliases)."""
        for r in self.rows:
            if r.name == name or name in r.aliases:
                return r
        raise KeyError(f"explain: no trainable parameter named {name!r}")

    def __str__(self) -> str:
        head = ("parameter", "layer", "entries", "route", "reason")
        body = [
            (
                r.name + (f" (= {', '.join(r.aliases)})" if r.aliases else ""),
                f"{r.layer or '(model)'} ({r.layer_type})",
                str(r.numel),
                r.route,
                r.reason or "",
            )
            for r in self.rows
        ]
        widths = [max(len(row[k]) for row in [head, *body]) for k in range(4)]
        lines = []
        for row in [head, *body]:
            cells = [row[k].ljust(widths[k]) for k in range(4)]
            cells[2] = row[2].rjust(widths[2])
            lines.append("  ".join([*cells, row[4]]).rstrip())
        n_ruled = sum(r.ruled for r in self.rows)
        n_ops = sum(bool(r.ops) for r in self.rows)
        lines.append(
            f"rules compute {self.covered:.1%} of {self.total} trainable entries "
            f"({n_ruled} of {len(self.rows)} parameters: {n_ops} by operator rules); the "
            "rest goes to the generic Jacobian engine"
        )
        if self.plan is not None:
            p = self.plan
            lines.append(
                f"empirical_ntk on these inputs: engine {p['engine']!r} ({p['choice']}), blocks of "
                f"{p['chunk_size']} samples ({p['blocks']} for x), memory budget "
                f"{p['memory_budget'] / 2**20:.0f} MiB ({p['budget_source']})"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Explanation: {len(self.rows)} parameters, {self.covered:.1%} ruled>"


def _why_generic(model: nn.Module, m: nn.Module, p: Any, slots: dict) -> str:
    """The static reason a parameter of ``m`` takes no module rule (when the operator
    rules gave no reason either)."""
    found = find_rule(type(m))
    name = type(m).__name__
    if found is None:
        return (
            f"no rule for {name}; add one with @lazymeter.ntk.register_rule({name}) "
            "(see docs/extending.md)"
        )
    why = declined(m)
    if why is not None:
        return f"the rule for {found[0].__name__} declines this configuration: {why}"
    holders = slots.get(id(p), set())
    if len(holders) > 1:
        names = {id(mod): mn or "(model)" for mn, mod in model.named_modules()}
        held = sorted(f"{names.get(mid, '?')}.{local}" for mid, local in holders)
        return (
            f"tied between layers ({', '.join(held)}): a shared weight goes to the generic engine"
        )
    return "no rule computes it on these inputs"


@measured
def explain(model: nn.Module, x: Any, *, output_fn: OutputFn | None = None) -> Explanation:
    """Each trainable parameter's route through the structured engine on inputs like ``x``.

    Runs the same routing as :func:`~lazymeter.ntk.coverage` (one traced forward and
    backward on the first two samples of ``x`` and the exactness guard, remembered per
    model and input shape), so ``explain(model, x).covered == coverage(model, x)``.

    Args:
        model: any ``nn.Module`` (left untouched).
        x: inputs as for :func:`~lazymeter.empirical_ntk` (a Tensor or a tuple).
        output_fn: as for :func:`~lazymeter.empirical_ntk`.

    Returns:
        An :class:`Explanation`: ``.rows`` (one :class:`ParamRoute` per trainable
        parameter, each once), ``.covered`` (fraction of entries ruled), ``.plan`` (engine,
        memory budget and its source, block size of ``empirical_ntk(model, x)``); ``print``
        it for a table naming, for each parameter on the generic engine, why and what to do.
    """
    fm = FunctionalModel(model, output_fn)
    xs = as_inputs(x, "x", fm.device)
    found = route_details(fm, probe(xs), fm.num_outputs(xs))
    covered = set(found.covered)
    ruled = ruled_params(model)
    slots = param_slots(model)
    aliases: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    rows = []
    for name, p in model.named_parameters():
        if name not in fm.params:
            continue
        mname = name.rpartition(".")[0]
        m = model.get_submodule(mname)
        rule = find_rule(type(m))
        if name in covered:
            reason = None
        elif name not in ruled and name in found.reasons:
            reason = f"{_why_generic(model, m, p, slots)}; operator rules: {found.reasons[name]}"
        elif name in found.reasons:
            reason = found.reasons[name]
            if rule is not None and rule[0] is not type(m) and reason.startswith("exactness"):
                sub, base = type(m).__name__, rule[0].__name__
                reason += (
                    f"; {sub} inherits the rule for {base}: register one for {sub} "
                    "(see docs/extending.md)"
                )
        else:
            reason = _why_generic(model, m, p, slots)
        rows.append(
            ParamRoute(
                name=name,
                aliases=tuple(a for a in aliases[id(p)] if a != name),
                layer=mname,
                layer_type=type(m).__name__,
                numel=p.numel(),
                rule=None if rule is None else rule[0].__name__,
                ruled=name in covered,
                reason=reason,
                ops=tuple(o for o in found.ops.get(name, ()) if not o.startswith("rule ")),
            )
        )
    return Explanation(rows, kernel_plan(model, x, output_fn=output_fn))
