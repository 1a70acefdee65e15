"""The structured engine's one capture: a traced forward, perturbed, and one backward.

:func:`capture_ops` runs the model once on one sample with a
:class:`~lazymeter.ntk.ops.trace.Tracer` to find the operations that consume the
followed parameters, their operands' and output shapes (remembered per signature), then
once per block with a zero tensor ``eps_k`` added to the output of consuming operation
``k`` and one backward pass batched over the ``O`` output cotangents
(``is_grads_batched``): the gradient with respect to ``eps_k`` is ``g [c, O, *y_k.shape]``,
the gradient of every output with respect to that operation's output. Every rule runs on
one sample's tensors, shaped as in that sample's own forward (a batch of one), in either
of two ways:

* **batched** (tried first): the forward runs on the whole block as the model does, and
  the rules run after it, under one ``vmap`` over the samples, on each operand's
  per-sample slices; where an operand holds the samples is read off its shape against
  one sample's (the one dimension of size one that has the block's size, or samples
  merged with another dimension, as ``nn.MultiheadAttention``'s ``[T * c, E]``, whose
  layout the first block settles from one sample's values);
* **vmapped**: the whole forward runs per sample under ``vmap``, rules inside; for
  whatever the batched forward cannot tell apart (an operation whose output is the same
  for every sample, such as a position table looked up once) and for a user's module
  rules, which take part as one operation each (:mod:`~lazymeter.ntk.ops.modules`).

Both give the rules the same tensors, so each layer's maths is written once. Cost: one
forward and the equivalent of ``O`` backward passes per block; memory: ``g`` for each
consuming operation (``O`` times its output).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from ..cache import CACHE
from ..forms import Form
from ..functional import FunctionalModel, num_samples, slice_inputs
from ..registry import RULES, Rule
from .modules import module_operations, ruled_modules
from .trace import OP_RULES, Tracer, Use, _tensors

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
) -> tuple[Discovery, dict[str, str]]:
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
        table[key] = Discovery(
            [(y.shape, y.dtype) for y in first.outputs],
            [None if ts is None else [t.shape for t in ts] for ts in first.operands],
            refusals(first, names, reasons),
            modules,
            batched=not modules,
            samples=[
                None if ts is None else [*ts, y]
                for ts, y in zip(first.operands, first.outputs, strict=True)
            ],
        )
    found = table[key]
    return found, dict(found.notes)


@dataclass
class Discovery:
    """What one sample's traced forward found (:func:`_discover`).

    Attributes:
        shapes: each consuming operation's output shape and dtype (a batch of one).
        operands: each consuming operation's tensor operands' shapes (None for a module
            operation).
        notes: ``{name: why}`` for the parameters no rule covers.
        modules: the module operations.
        batched: whether to try the batched forward (cleared when a block needs ``vmap``).
        samples: one sample's operands and output of each consuming operation, kept
            until the first batched forward has settled the layouts of merged sample
            dimensions (:class:`Samples`).
        layouts: ``{(operation, operand or -1 for the output): inner}`` so settled.
    """

    shapes: list[tuple[torch.Size, torch.dtype]]
    operands: list[list[torch.Size] | None]
    notes: dict[str, str]
    modules: Modules
    batched: bool = True
    samples: list[list[Tensor] | None] | None = None
    layouts: dict[tuple[int, int], bool] = field(default_factory=dict)


class NeedsVmap(Exception):
    """The batched forward met an operation whose samples it cannot tell apart."""


def capture_ops(
    fm: FunctionalModel, xs: tuple[Tensor, ...], names: list[str], n_out: int
) -> tuple[dict[str, list[Form]], dict[str, str], dict[str, list[str]]]:
    """Forms of the parameters ``names`` on the block ``xs``.

    Returns ``(forms, notes, ops)``: ``forms[name]``, one form per use, for each
    parameter every use of which has a rule; ``notes[name]``, why the others have none;
    ``ops[name]``, the operations that use each covered parameter (``"rule <type>"``
    for a layer's module rule).

    Two ways to run the same rules on the same per-sample tensors: the batched forward
    (:func:`_forward_batched`, where every consuming operation's operands carry the
    batch in a dimension of size one per sample, as in an MLP, a CNN or a transformer
    layer's products), or the forward under ``vmap`` (:func:`_forward_vmapped`: any
    model, e.g. one that looks a parameter up once for all samples). The batched one is
    tried first and, once a block needs ``vmap``, not again for this signature.
    """
    found, notes = _discover(fm, xs, names)
    keep = [n for n in names if n not in notes]
    if not keep:
        return {}, notes, {}
    follow = {n: fm.params[n] for n in keep}
    ran = None
    if found.batched:
        try:
            ran = _forward_batched(fm, xs, follow, found)
        except NeedsVmap:
            found.batched, found.samples = False, None
    if ran is None:
        ran = _forward_vmapped(fm, xs, follow, found)
    out, eps, uses, aux, unbatch = ran
    c = num_samples(xs)
    jac = [unbatch(k, g) for k, g in enumerate(_pull(out, eps, n_out))]
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


#: What a forward gives :func:`capture_ops`: the outputs ``[c, O]``, the perturbations
#: (leaves of the graph, one per consuming operation), the uses, their tensors with the
#: samples first, and ``unbatch(k, grad [O, *eps_k.shape]) -> g [c, O, *y_k.shape]``.
Ran = tuple[Tensor, list[Tensor], list[Use], tuple[Tensor, ...], Callable[[int, Tensor], Tensor]]


def _pull(out: Tensor, eps: list[Tensor], n_out: int) -> list[Tensor]:
    """``grad [O, *e.shape]`` of every output with respect to each ``e`` of ``eps``: one
    backward pass batched over the ``O`` cotangents ``e_o`` of every sample at once
    (samples are independent, so each gets its own gradient); one per output where an
    operation has no batching rule."""
    c = out.shape[0]
    basis = torch.eye(n_out, dtype=out.dtype, device=out.device)
    cot = basis[:, None, :].expand(n_out, c, n_out)  # [O, c, O]: output o of every sample
    if not out.requires_grad:  # no consuming operation reaches the outputs
        grads: Sequence[Tensor | None] = [None] * len(eps)
    elif n_out == 1:
        grads = [
            None if g is None else g.unsqueeze(0)
            for g in torch.autograd.grad(out, eps, cot[0], allow_unused=True)
        ]
    else:
        try:
            grads = torch.autograd.grad(
                out, eps, cot, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
        except RuntimeError:  # an operation without a batching rule
            per = [torch.autograd.grad(out, eps, cot[o], retain_graph=True, allow_unused=True)
                   for o in range(n_out)]  # fmt: skip
            grads = [
                None if per[0][k] is None else torch.stack([p[k] for p in per])
                for k in range(len(eps))
            ]
    return [
        torch.zeros((n_out, *e.shape), dtype=e.dtype, device=e.device) if g is None else g
        for g, e in zip(grads, eps, strict=True)
    ]


def _check(t: Tracer, found: Discovery) -> None:
    if len(t.outputs) != len(found.shapes) or t.refused:
        raise RuntimeError(
            "operator rules: the forward ran a different sequence of operations on "
            "another sample (data-dependent control flow)"
        )


def _forward_vmapped(
    fm: FunctionalModel, xs: tuple[Tensor, ...], follow: dict[str, Tensor], found: Discovery
) -> Ran:
    """The forward per sample under ``vmap``, each consuming operation's rule inside it;
    ``eps_k`` (``[c, *y_k.shape]``) added to its output."""
    slots: list[list[Use]] = []

    def f(eps: list[Tensor], *x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        with Tracer(follow, eps) as t, module_operations(fm.model, t, found.modules):
            out = fm.single(fm.params, *x)
        _check(t, found)
        slots.append(t.uses)
        return out, tuple(v.detach() for u in t.uses for v in u.tensors)

    c = num_samples(xs)
    eps = [
        torch.zeros((c, *s), dtype=d, device=fm.device, requires_grad=True) for s, d in found.shapes
    ]
    with torch.enable_grad():
        out, aux = vmap(f, randomness="different")(eps, *xs)
    return out, eps, slots[-1], aux, lambda k, g: g.movedim(0, 1)


def _forward_batched(
    fm: FunctionalModel, xs: tuple[Tensor, ...], follow: dict[str, Tensor], found: Discovery
) -> Ran:
    """The forward on the whole block, each consuming operation's output perturbed as it
    runs; its rule then runs per sample, under one ``vmap`` over all of them after the
    forward, on the operands' per-sample slices (:class:`Samples`: where each operand
    holds the samples, from its shape and one sample's). Raises :class:`NeedsVmap` where
    that fails: an operation whose output is the same for every sample (a position table
    looked up once), operands shaped unlike one sample's, or samples merged with another
    dimension in a layout one sample's values do not settle."""
    c = num_samples(xs)
    calls: list[_Call] = []
    eps: list[Tensor] = []

    def defer(t: Tracer, rule: Any, name: str, args: Any, kwargs: Any, out: Tensor) -> Tensor:
        k = len(calls)
        if k >= len(found.shapes) or found.operands[k] is None:
            raise NeedsVmap("another sequence of operations")
        tensors = _tensors((args, kwargs))
        want = found.operands[k]
        if len(tensors) != len(want):  # type: ignore[arg-type]
            raise NeedsVmap(f"{name}: other operands")
        specs: list[Samples | None] = []
        for j, (a, s) in enumerate(zip(tensors, want, strict=True)):  # type: ignore[arg-type]
            if id(a) in t.tracked:
                if a.shape != s:
                    raise NeedsVmap(f"{name}: a parameter shaped otherwise")
                specs.append(None)
            else:
                specs.append(Samples.find(a, s, c, found, (k, j)))
        o = Samples.find(out, found.shapes[k][0], c, found, (k, -1))
        if o.dim is None:
            raise NeedsVmap(f"{name}: the same output for every sample")
        calls.append(_Call(rule, name, args, kwargs, tensors, specs, out.detach(), o))
        e = torch.zeros_like(out, requires_grad=True)
        eps.append(e)
        t.outputs.append(out)
        return out + e

    t = Tracer(follow, defer=defer)
    with torch.enable_grad(), t:
        out = fm.batched(fm.params, xs)
    if len(t.outputs) != len(found.shapes) or t.refused:
        raise NeedsVmap("another sequence of operations")
    if c > 1:  # every merged layout is settled: one sample's values are not needed
        found.samples = None
    uses, aux = _rules_per_sample(t, calls)
    outs = [call.out_spec for call in calls]
    return out, eps, uses, aux, lambda k, g: outs[k].unbatch(g)


@dataclass
class Samples:
    """Where a block tensor of a batched forward holds its samples, against one sample's
    tensor (a batch of one) of the same operation.

    ``dim``: the dimension (None: shared by all samples, the same shape as one sample's);
    ``size``: one sample's extent of ``dim`` (1: the samples are that dimension; more:
    they are merged with it, e.g. ``[T * c, E]`` in ``nn.MultiheadAttention``);
    ``inner``: merged as ``(size, c)`` rather than ``(c, size)``; ``new``: ``c == 1`` and
    the shapes agree (the sample dimension is added in front).
    """

    dim: int | None
    size: int = 1
    inner: bool = False
    new: bool = False
    c: int = 1

    @staticmethod
    def find(a: Tensor, one: torch.Size, c: int, found: Discovery, key: tuple[int, int]) -> Samples:
        """The spec of ``a`` (one sample's shape ``one``); a merged dimension's layout
        is settled on the first block by one sample's values (the discovery's first
        sample is this block's first) and remembered in ``found.layouts``."""
        shape = a.shape
        if shape == one:
            return Samples(0, new=True, c=c) if c == 1 else Samples(None, c=c)
        if len(shape) == len(one):
            diff = [d for d, (x, y) in enumerate(zip(shape, one, strict=True)) if x != y]
            if len(diff) == 1 and shape[diff[0]] == one[diff[0]] * c:
                d, n = diff[0], one[diff[0]]
                if n == 1:
                    return Samples(d, c=c)
                inner = found.layouts.get(key)
                if inner is None:
                    inner = _settle(a, d, n, c, found, key)
                return Samples(d, n, inner, c=c)
        raise NeedsVmap("an operand whose samples are not one dimension")

    def lift(self, t: Tensor) -> tuple[Tensor, int]:
        """``t`` as ``vmap`` takes it, and its ``in_dims`` entry."""
        assert self.dim is not None
        if self.new:
            return t.unsqueeze(0), 0
        if self.size == 1:
            return t, self.dim
        d = self.dim
        split = (self.size, self.c) if self.inner else (self.c, self.size)
        return t.unflatten(d, split), d + 1 if self.inner else d

    def restore(self, t: Tensor) -> Tensor:
        """One sample's slice as the rule saw it in one sample's forward (a batch of one)."""
        return t.unsqueeze(self.dim) if self.size == 1 and not self.new else t  # type: ignore[arg-type]

    def unbatch(self, g: Tensor) -> Tensor:
        """``grad [O, *y.shape]`` of a block output ``y`` -> ``[c, O, *one sample's y]``."""
        if self.new:
            return g.unsqueeze(0)
        t, d = self.lift(g.movedim(0, -1))  # the outputs last while the samples move first
        t = t.movedim(d, 0)
        if self.size == 1:
            t = t.unsqueeze(self.dim + 1)  # type: ignore[operator]
        return t.movedim(-1, 1)


def _settle(a: Tensor, d: int, n: int, c: int, found: Discovery, key: tuple[int, int]) -> bool:
    """Whether dimension ``d`` of ``a`` holds ``(n, c)`` (inner samples) rather than
    ``(c, n)``: the layout whose first sample matches one sample's tensor, by far."""
    if found.samples is None:
        raise NeedsVmap("a merged sample dimension met after the first block")
    one = found.samples[key[0]][key[1]]
    errs = []
    for inner in (False, True):
        split = a.detach().unflatten(d, (n, c) if inner else (c, n))
        first = split.select(d + 1 if inner else d, 0)
        errs.append(float((first - one).abs().max()) if first.shape == one.shape else math.inf)
    scale = float(one.abs().max()) + 1e-30
    inner = errs[1] < errs[0]
    if min(errs) > 1e-3 * scale or max(errs) < 100 * min(errs) + 1e-3 * scale:
        raise NeedsVmap("samples merged with another dimension in an unsettled layout")
    found.layouts[key] = inner
    return inner


@dataclass
class _Call:
    """A consuming operation of the batched forward, its rule still to run."""

    rule: Any
    name: str
    args: Any
    kwargs: Any
    tensors: list[Tensor]
    specs: list[Samples | None]  # None: a followed tensor
    out: Tensor
    out_spec: Samples


def _rules_per_sample(t: Tracer, calls: list[_Call]) -> tuple[list[Use], tuple[Tensor, ...]]:
    """Each call's rule on one sample's operands, all under one ``vmap``: the uses (their
    slots set) and their tensors with the samples first."""
    flat: list[Tensor] = []
    in_dims: list[int] = []
    for call in calls:
        for a, sp in [*zip(call.tensors, call.specs, strict=True), (call.out, call.out_spec)]:
            if sp is not None and sp.dim is not None:
                v, i = sp.lift(a.detach())
                flat.append(v)
                in_dims.append(i)
    found: list[list[Use]] = []

    def per_sample(*per: Tensor) -> tuple[Tensor, ...]:
        it = iter(per)
        found.clear()
        for call in calls:
            swap: dict[int, Tensor] = {}
            for a, sp in zip(call.tensors, call.specs, strict=True):
                if sp is not None and sp.dim is not None:
                    swap[id(a)] = sp.restore(next(it))
            y = call.out_spec.restore(next(it))
            args, kwargs = _swap((call.args, call.kwargs), swap)
            uses = call.rule(args, kwargs, t.find, y)
            if isinstance(uses, str):
                raise RuntimeError(f"operator rules: {call.name} refused another block: {uses}")
            found.append(uses)
        return tuple(v for uses in found for u in uses for v in u.tensors)

    with torch.no_grad():
        aux = vmap(per_sample, in_dims=tuple(in_dims))(*flat)
    uses = []
    for k, (call, us) in enumerate(zip(calls, found, strict=True)):
        for u in us:
            u.op, u.slot = u.op or call.name, k
        uses.extend(us)
    t.uses = uses
    return uses, aux


def _swap(obj: Any, swap: dict[int, Tensor]) -> Any:
    """``obj`` (nested tuples, lists and dicts, as :func:`_tensors` reads them) with each
    tensor of ``swap`` (by ``id``) replaced."""
    if isinstance(obj, Tensor):
        return swap.get(id(obj), obj)
    if type(obj) in (tuple, list):
        return type(obj)(_swap(v, swap) for v in obj)
    if type(obj) is dict:
        return {k: _swap(v, swap) for k, v in obj.items()}
    return obj


def _batched(t: Tensor, c: int) -> Tensor:
    # vmap's outputs keep the sample dimension where the computation put it: make each
    # one contiguous once here rather than at every pair product that reshapes it.
    return t.contiguous() if t.shape[:1] == (c,) else t.expand(c, *t.shape)
