"""The structured engine's one capture: a traced forward per sample under ``vmap``.

:func:`capture_ops` runs the model once on one sample with a
:class:`~lazymeter.ntk.ops.trace.Tracer` to find the operations that consume the
followed parameters and their output shapes, then once more per block as ``vmap(f)``
over the samples, where ``f`` adds a zero tensor ``eps_k`` to the output of consuming
operation ``k``, and one backward pass vmapped over the ``O`` output cotangents: the
gradient with respect to ``eps_k`` is ``g [c, O, *y_k.shape]``, the gradient of every
output with respect to that operation's output, and the operation's other operands come
out of ``vmap`` as auxiliary outputs.
Layers with a module rule take part as one operation each
(:mod:`~lazymeter.ntk.ops.modules`). Cost: one forward and the equivalent of ``O``
backward passes per block; memory: ``g`` for each consuming operation (``O`` times its
output).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vjp, vmap

from ..cache import CACHE
from ..forms import Dense, Form
from ..functional import FunctionalModel, num_samples, slice_inputs
from ..registry import RULES, Rule
from .modules import module_operations, ruled_modules
from .trace import OP_RULES, Tracer, Use

#: ``{module name: (registered type, rule, local parameter names it computes)}``.
Modules = dict[str, tuple[type, Rule, set[str]]]

#: Why a followed parameter got no forms although no operation refused it.
UNUSED = (
    "no traced operation used it (a parameter the forward never touches, or one used only "
    "inside a compiled or C++ operation)"
)


def trace_ops(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str], modules: Modules
) -> tuple[Tracer, dict[str, set[str]], dict[str, str]]:
    """One sample's traced forward (the first of ``xs``), following ``names``, with
    ``modules`` as module operations: the :class:`Tracer`, the parameters each module's
    rule took (``{module: locals}``) and why a module's rule took none."""
    follow = {n: fm.params[n] for n in names}
    seen: dict[str, set[str]] = {}
    notes: dict[str, str] = {}
    with torch.no_grad(), Tracer(follow) as t:
        with module_operations(fm.model, t, modules, seen, notes):
            fm.single(fm.params, *(x[0] for x in slice_inputs(xs, 0, 1)))
    return t, seen, notes


def settle_modules(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str]
) -> tuple[Tracer, Modules, dict[str, str]]:
    """The module operations of this forward and its trace: the layers with a module rule
    (:func:`~lazymeter.ntk.ops.modules.ruled_modules`), less those whose rule declined a
    call or ran without the batch dimension (traced through instead), each holding only
    the parameters its rule gives forms for; retraced until that is stable (once more
    per layer that changes, at most). Also each traced-through layer's reason."""
    modules = ruled_modules(fm.model, set(names))
    reasons: dict[str, str] = {}
    while True:
        t, seen, notes = trace_ops(fm, xs, names, modules)
        reasons.update(notes)
        settled = {m: (typ, rule, seen.get(m, local)) for m, (typ, rule, local) in modules.items()}
        settled = {m: v for m, v in settled.items() if v[2]}
        if {m: v[2] for m, v in settled.items()} == {m: v[2] for m, v in modules.items()}:
            return t, modules, reasons
        modules = settled


def refusals(t: Tracer, names: list[str], reasons: dict[str, str]) -> dict[str, str]:
    """``{name: why}`` for the followed parameters the rules do not cover; a parameter of
    a layer whose module rule was passed over says why first."""
    used = {u.name for u in t.uses}
    out = dict(t.refused)
    for n in names:
        if n not in used and n not in out:
            out[n] = UNUSED
    for n, why in out.items():
        layer = reasons.get(n.rpartition(".")[0])
        if layer is not None:
            out[n] = f"{layer}; operator rules: {why}"
    return out


def _discover(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str]
) -> tuple[list[tuple[torch.Size, torch.dtype]], dict[str, str], Modules]:
    """Each consuming operation's output shape and dtype, and the refusals, from one
    sample's traced forward; remembered per model, mode, output reduction, followed
    parameters, rule tables and per-sample input shapes (the capture checks that every
    block runs the same number of consuming operations); with the module operations."""
    key = (
        "operations",
        fm.model.training,
        id(fm.output_fn),
        tuple(names),
        tuple(sorted((k, id(v)) for k, v in OP_RULES.items())),
        tuple(sorted((id(k), id(v)) for k, v in RULES.items())),
        tuple((t.shape[1:], t.dtype, t.device) for t in xs),
    )
    table = CACHE.routes.setdefault(fm.model, {})
    if key not in table:
        first, modules, reasons = settle_modules(fm, xs, names)
        shapes = [(y.shape, y.dtype) for y in first.outputs]
        table[key] = (shapes, refusals(first, names, reasons), modules)
    shapes, notes, modules = table[key]
    return shapes, dict(notes), modules


def capture_ops(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str], n_out: int
) -> tuple[dict[str, list[Form]], dict[str, str], dict[str, list[str]]]:
    """Forms of the parameters ``names`` on the block ``xs``.

    Returns ``(forms, notes, ops)``: ``forms[name]``, one form per use, for each
    parameter every use of which has a rule; ``notes[name]``, why the others have none;
    ``ops[name]``, the operations that use each covered parameter (``"rule <type>"``
    for a layer's module rule).
    """
    shapes, notes, modules = _discover(fm, xs, names)
    keep = [n for n in names if n not in notes]
    if not keep:
        return {}, notes, {}
    follow = {n: fm.params[n] for n in keep}
    slots: list[list[Use]] = []

    def f(eps: list[Tensor], *x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        with Tracer(follow, eps) as t, module_operations(fm.model, t, modules):
            out = fm.single(fm.params, *x)
        if len(t.outputs) != len(shapes):
            raise RuntimeError(
                "operator rules: the forward ran a different sequence of operations on "
                "another sample (data-dependent control flow)"
            )
        slots.append(t.uses)
        return out, tuple(v for u in t.uses for v in u.tensors)

    c = num_samples(xs)
    # The forward is vmapped over the samples; the backward runs once on the batched
    # graph, vmapped over the O cotangents ``e_o`` of every sample at once (samples are
    # independent, so each gets its own gradient): what a batched backward with
    # is_grads_batched costs, cheaper than a per-sample jacrev nested in vmap.
    eps = [torch.zeros((c, *s), dtype=d, device=fm.device) for s, d in shapes]
    batch = vmap(f, randomness="different")
    (_, pull, aux) = vjp(lambda e: batch(e, *xs), eps, has_aux=True)
    basis = torch.eye(n_out, dtype=fm.dtype, device=fm.device)
    jac = [g.movedim(0, 1) for g in vmap(pull)(basis[:, None, :].expand(n_out, c, n_out))[0]]
    uses = slots[-1]
    forms: dict[str, list[Form]] = {}
    ops: dict[str, list[str]] = {}
    k = 0
    for u in uses:
        ts = tuple(_batched(t, c) for t in aux[k : k + len(u.tensors)])
        k += len(u.tensors)
        if u.name in follow:
            forms.setdefault(u.name, []).append(u.build(ts, jac[u.slot]))
            ops.setdefault(u.name, [])
            if u.op not in ops[u.name]:
                ops[u.name].append(u.op)
    return forms, notes, ops


def _batched(t: Tensor, c: int) -> Tensor:
    # vmap's outputs keep the sample dimension where the computation put it: make each
    # one contiguous once here rather than at every pair product that reshapes it.
    return t.contiguous() if t.shape[:1] == (c,) else t.expand(c, *t.shape)


def _contiguous(f: Form) -> Form:
    if isinstance(f, Dense):
        f.J = f.J.contiguous()
    else:
        f.g = f.g.contiguous()
        f.h = None if f.h is None else f.h.contiguous()
    return f
