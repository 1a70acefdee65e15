"""Which parameters the structured engine's rules compute, and the exactness guard.

A trainable parameter is computed by rules when every use of it in one traced forward
(:func:`~lazymeter.ntk.ops.capture.capture_ops`) has one: an operator rule for each
operation that consumes it, or the module rule of a layer that holds it and runs as a
whole (:mod:`~lazymeter.ntk.ops.modules`), and the exactness guard agrees: the rules'
prediction of autograd's gradient of a fixed random combination of the outputs matches
autograd. Everything else goes to the generic Jacobian engine. The run-time route is
remembered per model and input signature in :data:`lazymeter.ntk.CACHE`. The static
table (:func:`ruled_params`: layers with a rule) is what :func:`coverage` reports
without inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .cache import CACHE
from .forms import Form, parts, predicted_grad
from .functional import (
    FunctionalModel,
    OutputFn,
    as_inputs,
    call_with,
    measured,
    num_samples,
    slice_inputs,
)
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
            (an operation without a rule used the parameter, a module rule declined the
            call, the exactness guard, ...).
        ops: ``{name: [operation, ...]}`` for the covered parameters: the operations
            whose rules compute them (:mod:`lazymeter.ntk.ops`), ``"rule <type>"`` for a
            layer's module rule.
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
    outside its layer in a way no rule saw) fails and is left to the generic engine; the
    reason of a parameter without forms (``notes`` from
    :func:`~lazymeter.ntk.ops.capture.capture_ops`) goes to :attr:`Route.reasons`.
    Cost: one backward pass over the block."""
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

    One capture (:func:`~lazymeter.ntk.ops.capture.capture_ops`: the traced forward, the
    operator rules and the layers' module rules as operations). Without ``known``: over
    every parameter, then the exactness guard (:func:`validate`, one more forward and
    backward). With ``known``: over its covered parameters, without the guard.
    """
    if known is not None:
        forms = capture_ops(fm, xs, known.covered, n_out)[0] if known.covered else {}
        return forms, known
    names = list(fm.params)
    try:
        forms, notes, ops = capture_ops(fm, xs, names, n_out)
    except (RuntimeError, NotImplementedError) as e:  # no vmap batching rule, ...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        forms, ops = {}, {}
        notes = {n: f"tracing its operations failed ({first})" for n in names}
    found = validate(fm, dict.fromkeys(names), forms, output(fm, xs), notes)
    found.ops = {n: v for n, v in ops.items() if n in found.covered}
    return {n: f for n, f in forms.items() if n in found.covered}, found


def output(fm: FunctionalModel, xs: tuple[Tensor, ...]) -> Tensor:
    """The model's flattened output ``[c, O]`` on ``xs`` with its own parameters, recorded
    by autograd (what :func:`validate` differentiates)."""
    with torch.enable_grad():  # on copies of the buffers: a forward never updates them
        out = call_with(fm.model, {}, xs)
        out = fm.output_fn(out) if fm.output_fn is not None else out
        return out.reshape(out.shape[0], -1)


def route_details(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> Route:
    """The :class:`Route` on inputs shaped like ``xs``: the traced forward and ``O``
    backward passes on ``xs`` (:func:`block_forms`) and the exactness guard, remembered
    per model and input signature."""
    key = signature(fm, xs, True)
    known = CACHE.routes.get(fm.model, {}).get(key)
    if known is not None:
        return known
    found = block_forms(fm, xs, n_out)[1]
    CACHE.routes.setdefault(fm.model, {})[key] = found
    return found


def route(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[str]:
    """Names of the trainable parameters whose kernel the rules compute on inputs shaped
    like ``xs`` (the rest go to the generic engine): one traced forward and backward on
    ``xs`` and the exactness guard, remembered per model and input signature."""
    return route_details(fm, xs, n_out).covered


def probe(xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The (at most two) samples of ``xs`` that routing runs on."""
    return slice_inputs(xs, 0, min(2, num_samples(xs)))


@measured
def coverage(model: nn.Module, x: Any = None, *, output_fn: OutputFn | None = None) -> float:
    """Fraction of trainable parameter entries whose NTK the rules compute.

    With ``x`` (inputs, as for :func:`~lazymeter.empirical_ntk`): the route the structured
    engine actually takes on them: every use of a parameter in the traced forward has an
    operator rule (or is a call of a layer with a module rule that takes it), and the
    exactness guard agrees. Without ``x``: the rule table only (the
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
