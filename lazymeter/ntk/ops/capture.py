"""Operator-level forms of a block: a traced forward per sample under ``vmap``.

:func:`capture_ops` runs the model once on one sample with a
:class:`~lazymeter.ntk.ops.trace.Tracer` to find the operations that consume the
followed parameters and their output shapes, then once more per block as
``vmap(jacrev(f))`` over the samples, where ``f`` adds a zero tensor ``eps_k`` to the
output of consuming operation ``k``: the Jacobian with respect to ``eps_k`` is the
gradient ``g [c, O, *y_k.shape]`` of every output with respect to that operation's
output, and the operation's other operands come out of ``vmap`` as auxiliary outputs.
Cost: one forward and the equivalent of ``O`` backward passes per block, as for the
module rules; memory: ``g`` for each consuming operation (``O`` times its output).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from ..cache import CACHE
from ..forms import Dense, Form
from ..functional import FunctionalModel, num_samples, slice_inputs
from .trace import OP_RULES, Tracer, Use

#: Why a followed parameter got no forms although no operation refused it.
UNUSED = (
    "no traced operation used it (a parameter the forward never touches, or one used only "
    "inside a compiled or C++ operation)"
)


def trace_ops(fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str]) -> Tracer:
    """The :class:`Tracer` of one sample's forward (the first of ``xs``), following
    ``names``."""
    follow = {n: fm.params[n] for n in names}
    with torch.no_grad(), Tracer(follow) as t:
        fm.single(fm.params, *(x[0] for x in slice_inputs(xs, 0, 1)))
    return t


def refusals(t: Tracer, names: list[str]) -> dict[str, str]:
    """``{name: why}`` for the followed parameters the operator rules do not cover."""
    used = {u.name for u in t.uses}
    out = dict(t.refused)
    for n in names:
        if n not in used and n not in out:
            out[n] = UNUSED
    return out


def _discover(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str]
) -> tuple[list[tuple[torch.Size, torch.dtype]], dict[str, str]]:
    """Each consuming operation's output shape and dtype, and the refusals, from one
    sample's traced forward; remembered per model, mode, output reduction, followed
    parameters, operator rule table and per-sample input shapes (the capture checks that
    every block runs the same number of consuming operations)."""
    key = (
        "operations",
        fm.model.training,
        id(fm.output_fn),
        tuple(names),
        tuple(sorted((k, id(v)) for k, v in OP_RULES.items())),
        tuple((t.shape[1:], t.dtype, t.device) for t in xs),
    )
    table = CACHE.routes.setdefault(fm.model, {})
    if key not in table:
        first = trace_ops(fm, xs, names)
        table[key] = ([(y.shape, y.dtype) for y in first.outputs], refusals(first, names))
    shapes, notes = table[key]
    return shapes, dict(notes)


def capture_ops(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str], n_out: int
) -> tuple[dict[str, list[Form]], dict[str, str], dict[str, list[str]]]:
    """Forms of the parameters ``names`` on the block ``xs``.

    Returns ``(forms, notes, ops)``: ``forms[name]``, one form per use, for each
    parameter every use of which has a rule; ``notes[name]``, why the others have none;
    ``ops[name]``, the operations that use each covered parameter.
    """
    shapes, notes = _discover(fm, xs, names)
    keep = [n for n in names if n not in notes]
    if not keep:
        return {}, notes, {}
    follow = {n: fm.params[n] for n in keep}
    slots: list[list[Use]] = []

    def f(eps: list[Tensor], *x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        with Tracer(follow, eps) as t:
            out = fm.single(fm.params, *x)
        if len(t.outputs) != len(shapes):
            raise RuntimeError(
                "operator rules: the forward ran a different sequence of operations on "
                "another sample (data-dependent control flow)"
            )
        slots.append(t.uses)
        return out, tuple(v for u in t.uses for v in u.tensors)

    eps = [torch.zeros(s, dtype=d, device=fm.device) for s, d in shapes]
    in_dims = (None, *([0] * len(xs)))
    jac, aux = vmap(jacrev(f, has_aux=True), in_dims=in_dims, randomness="different")(eps, *xs)
    uses = slots[-1]
    c = num_samples(xs)
    forms: dict[str, list[Form]] = {}
    ops: dict[str, list[str]] = {}
    k = 0
    for u in uses:
        ts = tuple(_batched(t, c) for t in aux[k : k + len(u.tensors)])
        k += len(u.tensors)
        g = jac[u.slot]
        if n_out == 1 and g.dim() == len(shapes[u.slot][0]) + 1:
            g = g.unsqueeze(1)
        if u.name in follow:
            forms.setdefault(u.name, []).append(
                u.build(ts, g.reshape(c, n_out, *shapes[u.slot][0]))
            )
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
