"""Block sizes of the structured engine: a memory model from one sample's features.

Per sample, the engine keeps its features (the ruled layers' forms, laid out as they
will be contracted, and ``[O, n_generic]`` Jacobian rows of the generic part) and
produces them with transient work (``O`` copies of the activations, the generic
Jacobians being built); per pair of samples, the pairwise contraction holds ``S^2``
position products. :func:`costs` measures these once per model and input signature;
:func:`block_work` is one block's transient memory; :func:`plan` picks the block size.
"""

from __future__ import annotations

from torch import Tensor

from .cache import CACHE
from .forms import Dense, Form, Outer, Tied, outer_costs, parts
from .functional import FunctionalModel, num_samples, slice_inputs
from .routing import block_forms, probe, route_details, signature


def _shape_only(f: Outer) -> Outer:
    def empty(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.new_empty(t.shape)

    return Outer(g=empty(f.g), h=empty(f.h), idx=empty(f.idx), din=f.din)  # type: ignore[arg-type]


def _one_sample(
    fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int, trace: bool
) -> tuple[int, int, list[Form]]:
    """``(fixed features, work, forms)`` of one sample: the generic part's features and
    every sample's transient work in bytes, and the ruled parameters' forms (remembered
    per model and input signature, so that each block size is only a recount)."""
    key = (signature(fm, xs, trace), trace, n_out, "one sample")
    known = CACHE.costs.get(fm.model, {}).get(key)
    if known is not None:
        return known
    found = route_details(fm, probe(xs), n_out)
    forms, _ = block_forms(fm, slice_inputs(xs, 0, 1), n_out, found)
    itemsize = fm.dtype.itemsize
    n_generic = fm.n_params - sum(fm.params[n].numel() for n in found.covered)
    fixed = n_out * itemsize * n_generic
    work = 2 * n_out * itemsize * n_generic
    work += n_out * fm.activation_bytes(xs)  # the block is replicated O times
    every = [f for n, fs in forms.items() for f in parts(fs, fm.params[n].numel())]
    # Only shapes are needed later: keep empty tensors of the same shapes.
    light: list[Form] = []
    for f in every:
        if isinstance(f, Dense):
            light.append(Dense(f.J.new_empty(f.J.shape)))
        else:  # a Tied form counts as its two forms
            light.extend(map(_shape_only, (f.lookup, f.product) if isinstance(f, Tied) else (f,)))
    CACHE.costs.setdefault(fm.model, {})[key] = (fixed, work, light)
    return fixed, work, light


def costs(
    fm: FunctionalModel, xs: tuple[Tensor, ...], *, n_out: int, trace: bool, c: int = 128
) -> tuple[int, int, int]:
    """``(features, work, pair)`` bytes from the features of one sample: the features a
    block of ``c`` samples keeps per sample (each layer laid out as the engine will
    contract it at that block size: pairwise or materialised), the transient work per
    sample of producing them (generic Jacobians, ``O`` copies of the activations), and
    the pair intermediates per pair of samples."""
    features, work, forms = _one_sample(fm, xs, n_out, trace)
    itemsize = fm.dtype.itemsize
    o2 = 1 if trace else n_out**2
    pair = 0
    for f in forms:
        if isinstance(f, Dense):
            features += f.J.numel() * itemsize
            continue
        pairwise, materialised = outer_costs(f, c, trace)
        if materialised < pairwise:
            features += f.g.shape[1] * f.g.shape[3] * f.din * itemsize
        else:
            features += (f.g.numel() + (0 if f.h is None else f.h.numel())) * itemsize
            S = f.g.shape[2]
            pair = max(pair, (2 * S * S if trace else S * S + 3 * o2) * itemsize)
    return features, work, pair


def block_work(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    *,
    n_out: int,
    trace: bool,
    c: int,
    layout: int | None = None,
    single: bool = False,
) -> int:
    """Bytes of one ``c``-sample block's transient work (the plan's model of a block): a
    row and a column block's features, the production of one of them (generic
    Jacobians, ``O`` copies of the activations) and the pair intermediates,
    ``c (2 features + work) + c^2 pair``; a ``single`` symmetric block is its own columns,
    ``c (features + work) + c^2 pair``. Features are laid out as for blocks of ``layout``
    samples (default ``c``). Measured peaks (``benchmarks/ntk_planner.py``) fall within
    0.5-2x of it."""
    features, work, pair = costs(fm, xs, n_out=n_out, trace=trace, c=layout or c)
    return c * ((1 if single else 2) * features + work) + c * c * pair


def _plan(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    *,
    n_out: int,
    trace: bool,
    budget: int,
    n_samples: int,
    layout: int,
) -> int:
    """:func:`plan` with the features laid out as for blocks of ``layout`` samples."""
    features = costs(fm, xs, n_out=n_out, trace=trace, c=layout)[0]

    def work(c: int) -> int:
        single = c >= n_samples
        return block_work(fm, xs, n_out=n_out, trace=trace, c=c, layout=layout, single=single)

    c = n_samples
    if work(c) <= budget:
        return c
    keep = n_samples * features
    while c > 1 and work(c) + keep > budget:
        c = (c + 1) // 2
    if work(c) + keep <= budget and c >= min(32, n_samples):
        return c
    c = n_samples
    while c > 1 and work(c) > budget // 2:
        c = (c + 1) // 2
    return c


def plan(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    *,
    n_out: int,
    trace: bool,
    budget: int,
    n_samples: int,
) -> int:
    """Block size: all of ``n_samples`` when one block's work fits ``budget``; else the
    largest block whose work fits beside every sample's features (which are then
    computed once and kept); else the largest block whose work takes at most half of
    ``budget``, leaving the other half for a panel of row blocks held at once.

    Whether a layer's features are contracted pairwise or materialised depends on the
    block size (materialising pays off for large blocks), and the features' size on that
    choice, so a block size fits only if it fits with its own layout: the largest of
    ``n_samples``, halved step by step, that does (:func:`_plan` at that layout allows at
    least that block) is taken."""

    def fits(c: int) -> bool:
        kw = dict(n_out=n_out, trace=trace, budget=budget, n_samples=n_samples)
        return _plan(fm, xs, layout=c, **kw) >= c

    c = n_samples
    while c > 1 and not fits(c):
        c = (c + 1) // 2
    return c


def plan_chunk(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    *,
    n_out: int,
    trace: bool,
    budget: int,
    n_samples: int,
) -> int:
    """Largest block whose row and column features and pair intermediates fit ``budget``,
    from the features of one sample (and the route each layer will take); remembered
    per model and input signature."""
    if n_samples <= 32:
        return n_samples
    key = (signature(fm, xs, trace), trace, budget, n_samples)
    known = CACHE.plans.get(fm.model, {}).get(key)
    if known is not None:
        return known
    c = plan(fm, xs, n_out=n_out, trace=trace, budget=budget, n_samples=n_samples)
    CACHE.plans.setdefault(fm.model, {})[key] = c
    return c


def peak_bytes(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    n2: int | None,
    *,
    n_out: int,
    trace: bool,
    chunk_size: int,
    budget: int,
) -> int:
    """Predicted peak bytes of a kernel in blocks of ``chunk_size`` (the returned kernel
    excluded), as the engine lays it out: one block's :func:`block_work`, plus every
    column block's features when they fit beside it, else a panel of row blocks in what
    is left of ``budget``."""
    n1 = num_samples(xs)
    n_cols = n1 if n2 is None else n2
    c = min(chunk_size, max(n1, n_cols))
    if n1 <= c and n_cols <= c:
        return block_work(fm, xs, n_out=n_out, trace=trace, c=c, single=n2 is None)
    work = block_work(fm, xs, n_out=n_out, trace=trace, c=c)
    block = c * costs(fm, xs, n_out=n_out, trace=trace, c=c)[0]
    n_blocks = -(-n_cols // c)
    if block * n_blocks + work <= budget:
        return work + block * n_blocks
    panel = min(1 + max(0, (budget - work) // max(block, 1)), -(-n1 // c))
    return work + (panel - 1) * block
