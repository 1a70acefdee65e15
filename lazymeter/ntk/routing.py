"""Which parameters the structured engine's rules compute, and the exactness guard.

A trainable parameter takes its layer's rule when (statically) its module's type has a
rule along the MRO that does not decline the module's configuration and no other module
holds the parameter (tied weights), and (at run time) the layer ran as a module on
batched input, the rule did not decline the call, and the exactness guard agreed: the
rules' prediction of autograd's gradient of a fixed random combination of the outputs
matches autograd. Everything else goes to the generic Jacobian engine. The run-time
route is remembered per model and input signature in :data:`lazymeter.ntk.CACHE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .cache import CACHE
from .capture import capture
from .forms import Form, parts, predicted_grad
from .functional import FunctionalModel, OutputFn, as_inputs, measured, num_samples, slice_inputs
from .ops import OP_RULES
from .ops.capture import capture_ops
from .registry import Rule, declined, find_rule

#: Why a parameter whose layer has a rule is sent to the generic engine by the guard.
GUARD = (
    "exactness guard: the rule's gradient differs from autograd's (relative error {err:.1e}); "
    "the layer's forward is not the one its rule assumes, or the parameter is also used "
    "outside the layer"
)


@dataclass
class Route:
    """The run-time route of a model's ruled parameters on inputs of one signature.

    Attributes:
        covered: sorted names of the parameters whose kernel the rules compute.
        reasons: ``{name: why}`` for the parameters that go to the generic engine
            (a module rule declined at run time, an operation without a rule used the
            parameter, the exactness guard, ...).
        ops: ``{name: [operation, ...]}`` for the covered parameters computed by
            operator rules (:mod:`lazymeter.ntk.ops`); the others take their layer's rule.
    """

    covered: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)


def param_slots(model: nn.Module) -> dict[int, set[tuple[int, str]]]:
    """``{id(parameter): {(id(module), local name), ...}}``: the module slots holding each
    parameter, by module identity (a submodule registered under two names counts once)."""
    slots: dict[int, set[tuple[int, str]]] = {}
    for m in model.modules():
        for local, p in m._parameters.items():
            if p is not None:
                slots.setdefault(id(p), set()).add((id(m), local))
    return slots


def ruled_rules(model: nn.Module) -> dict[str, tuple[str, str, Rule]]:
    """``{param full name: (module name, local name, rule)}`` for trainable parameters of
    ruled modules (the rule found along the module type's MRO), excluding parameters held
    by more than one module slot (tied weights).

    Slots are counted by module identity, not by name: a submodule registered under two
    names (``self.fc`` and ``self.net[0]``) holds its parameters once."""
    slots = param_slots(model)
    out: dict[str, tuple[str, str, Rule]] = {}
    for mname, m in model.named_modules():
        found = find_rule(type(m))
        if found is None or declined(m) is not None:
            continue
        for local, p in m.named_parameters(recurse=False):
            full = f"{mname}.{local}" if mname else local
            if p.requires_grad and len(slots[id(p)]) == 1:
                out[full] = (mname, local, found[1])
    return out


def ruled_params(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{param full name: (module name, local name)}`` of :func:`ruled_rules`: trainable
    parameters of ruled modules, each once, tied weights excluded."""
    return {n: (mn, local) for n, (mn, local, _) in ruled_rules(model).items()}


def covered_params(fm: FunctionalModel) -> dict[str, tuple[str, str]]:
    """:func:`ruled_params` restricted to the parameters the kernel is taken over."""
    return {n: v for n, v in ruled_params(fm.model).items() if n in fm.params}


def signature(fm: FunctionalModel, xs: tuple[Tensor, ...], trace: bool) -> tuple:
    """What a remembered route or plan depends on: mode, output reduction, trainable
    parameters, the parameters the rule table covers now and the rule each one takes (a
    rule registered or removed later changes it, a subclass's own rule included) and the
    per-sample input shapes."""
    return (
        fm.model.training,
        id(fm.output_fn),
        tuple(sorted(fm.params)),
        tuple((n, r[2]) for n, r in sorted(ruled_rules(fm.model).items())),
        tuple(sorted((k, id(v)) for k, v in OP_RULES.items())),
        tuple((t.shape[1:], t.dtype, t.device) for t in xs),
    )


def validate(
    fm: FunctionalModel,
    covered: Mapping[str, Any],
    forms: dict[str, list[Form]],
    out: Tensor,
    notes: Mapping[str, str] | None = None,
) -> Route:
    """The covered parameters whose rules reproduce autograd exactly on this block.

    Exactness guard: autograd's gradient of a fixed random combination ``r [c, O]`` of the
    outputs, ``sum_{i,o} r[i, o] J_o(x_i)``, must equal the rules' prediction within
    ``1e-4`` (float32 and below) or ``1e-9`` relative to the parameter's gradient (or to a
    thousandth of the whole gradient, for a parameter whose gradient is zero up to
    round-off); a parameter that is also used
    outside its layer (or whose layer a rule declined, or never ran as a module) fails
    and is left to the generic engine, with the reason (``notes`` from
    :func:`~lazymeter.ntk.capture.capture`) in :attr:`Route.reasons`. Cost: one backward
    pass over the block."""
    notes = notes or {}
    reasons = {n: notes.get(n, "no form") for n in covered if n not in forms}
    merged = {n: parts(f, fm.params[n].numel()) for n, f in forms.items()}
    if merged:
        gen = torch.Generator(device=out.device).manual_seed(0)  # the user's RNG untouched
        r = torch.randn(out.shape, dtype=out.dtype, device=out.device, generator=gen)
        names = sorted(merged)
        named = dict(fm.model.named_parameters())
        with torch.enable_grad():
            params = [named[n] for n in names]
            # allow_unused: a layer that runs but does not reach the output (BERT's pooler
            # behind a last_hidden_state readout) has zero gradient, and zero forms.
            actual = torch.autograd.grad((out * r).sum(), params, allow_unused=True)
        actual = [
            torch.zeros_like(p) if a is None else a for a, p in zip(actual, params, strict=True)
        ]
        # A parameter whose gradient is zero up to round-off (a key bias, which softmax
        # ignores) is judged against a thousandth of the whole gradient's norm, not its
        # own: a rule error that small changes the kernel below its precision.
        floor = 1e-3 * float(torch.stack([a.norm() for a in actual]).norm())
        for n, act in zip(names, actual, strict=True):
            pred = sum(predicted_grad(f, r, act.shape) for f in merged[n])
            low = act.dtype in (torch.float16, torch.bfloat16, torch.float32)
            tol = 1e-4 if low else 1e-9
            err, scale = float((pred - act).norm()), max(float(act.norm()), floor) + 1e-30
            if err > tol * scale:
                why = GUARD.format(err=err / scale)
                reasons[n] = why + (f" ({notes[n]})" if n in notes else "")
    return Route([n for n in sorted(covered) if n not in reasons], reasons)


def block_forms(
    fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int, known: Route | None = None
) -> tuple[dict[str, list[Form]], Route]:
    """Every covered parameter's forms on the block ``xs``, and the route.

    Without ``known``: the module rules' hooked forward and backward
    (:func:`~lazymeter.ntk.capture.capture`), the operator rules' traced forward
    (:func:`~lazymeter.ntk.ops.capture.capture_ops`) for every parameter no module rule
    gave a form (raw parameters, tied weights, layers that never ran as modules), and
    the exactness guard over both. With ``known``: each covered parameter's forms by the
    route it takes, without the guard.
    """
    if known is not None:
        mod = {
            n: v for n, v in covered_params(fm).items() if n in known.covered and n not in known.ops
        }
        forms: dict[str, list[Form]] = {}
        if mod:
            forms, out, _ = capture(fm, xs, mod, n_out)
            del out
        if known.ops:
            forms.update(capture_ops(fm, xs, sorted(known.ops), n_out)[0])
        return forms, known
    covered: dict[str, Any] = dict(covered_params(fm))
    forms, out, notes = capture(fm, xs, covered, n_out)
    rest = [n for n in fm.params if n not in forms]
    ops: dict[str, list[str]] = {}
    if rest:
        # The traced forward costs the same whatever it follows, so it follows every
        # parameter: when it is needed at all (it covers some parameter no module rule
        # did), the parameters it covers take it, and the module rules' forward is kept
        # only for the others (convolutions with groups, norms without an operator rule).
        try:
            op_forms, op_notes, ops = capture_ops(fm, xs, list(fm.params), n_out)
        except (RuntimeError, NotImplementedError) as e:  # no vmap batching rule, ...
            first = (str(e).splitlines() or [type(e).__name__])[0]
            op_forms, op_notes = {}, {n: f"tracing its operations failed ({first})" for n in rest}
        if any(n in op_forms for n in rest):
            for n in list(forms):
                if n in op_forms:
                    del forms[n]
                    rest.append(n)
        else:
            op_forms, ops = {}, {}
        op_forms = {n: f for n, f in op_forms.items() if n in rest}
        op_notes = {n: why for n, why in op_notes.items() if n in rest}
        ops = {n: v for n, v in ops.items() if n in rest}
        forms.update(op_forms)
        for n in rest:
            if n in op_forms:
                notes.pop(n, None)
            elif n in notes:
                notes[n] = f"{notes[n]}; operator rules: {op_notes[n]}"
            else:
                notes[n] = op_notes[n]
        covered.update({n: None for n in rest})
    found = validate(fm, covered, forms, out, notes)
    found.ops = {n: v for n, v in ops.items() if n in found.covered}
    # A layer's weight that the guard rejected (also used outside its layer, or a layer
    # whose forward is not the one its rule assumes) may still be covered use by use.
    guarded = [n for n in found.reasons if n in forms and n not in ops]
    if guarded:
        again, more = _operator_retry(fm, xs, guarded, n_out)
        for n, fs in again.items():
            forms[n], found.ops[n] = fs, more[n]
            found.covered.append(n)
            del found.reasons[n]
        found.covered.sort()
    return {n: f for n, f in forms.items() if n in found.covered}, found


def _operator_retry(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str], n_out: int
) -> tuple[dict[str, list[Form]], dict[str, list[str]]]:
    """Operator-rule forms (and operations) of ``names`` that pass the exactness guard."""
    try:
        forms, _, ops = capture_ops(fm, xs, names, n_out)
    except (RuntimeError, NotImplementedError):
        return {}, {}
    if not forms:
        return {}, {}
    _, out, _ = capture(fm, xs, {}, n_out)
    ok = validate(fm, dict.fromkeys(forms), forms, out).covered
    return {n: forms[n] for n in ok}, {n: ops[n] for n in ok}


def route_details(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> Route:
    """The :class:`Route` on inputs shaped like ``xs``: the module rules' hooked forward
    and backward and the operator rules' traced forward on ``xs``, and the exactness
    guard, remembered per model and input signature."""
    key = signature(fm, xs, True)
    known = CACHE.routes.get(fm.model, {}).get(key)
    if known is not None:
        return known
    found = block_forms(fm, xs, n_out)[1]
    CACHE.routes.setdefault(fm.model, {})[key] = found
    return found


def route(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[str]:
    """Names of the trainable parameters whose kernel the rules compute on inputs shaped
    like ``xs`` (the rest go to the generic engine): one hooked forward and backward on
    ``xs`` and the exactness guard, remembered per model and input signature."""
    return route_details(fm, xs, n_out).covered


def probe(xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The (at most two) samples of ``xs`` that routing runs on."""
    return slice_inputs(xs, 0, min(2, num_samples(xs)))


@measured
def coverage(model: nn.Module, x: Any = None, *, output_fn: OutputFn | None = None) -> float:
    """Fraction of trainable parameter entries whose NTK the rules compute.

    With ``x`` (inputs, as for :func:`~lazymeter.empirical_ntk`): the route the structured
    engine actually takes on them: module rules, after declines at run time (a layer
    applied without the batch dimension, a configuration a rule does not handle) and the
    exactness guard, then operator rules for the rest (raw parameters, tied weights,
    weights the guard rejected). Without ``x``: the module rules' table only (the
    parameters of layers that have a rule, counted once however many names they have,
    tied weights excluded), since operator rules need a forward pass to see how each
    parameter is used. :func:`~lazymeter.ntk.explain` says, per parameter, why.
    """
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not total:
        return 0.0
    named = dict(model.named_parameters())
    if x is None:
        names = list(ruled_params(model))
    else:
        fm = FunctionalModel(model, output_fn)
        xs = as_inputs(x, "x", fm.device)
        names = route(fm, probe(xs), fm.num_outputs(xs))
    return sum(named[n].numel() for n in names) / total
