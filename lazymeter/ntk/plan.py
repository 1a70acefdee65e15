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
from .forms import Dense, outer_costs, parts
from .functional import FunctionalModel, slice_inputs
from .routing import block_forms, probe, route_details, signature


def costs(
    fm: FunctionalModel, xs: tuple[Tensor, ...], *, n_out: int, trace: bool
) -> tuple[int, int, int]:
    """``(features, work, pair)`` bytes from the features of one sample: the features a
    block keeps per sample, the transient work per sample of producing them (generic
    Jacobians, ``O`` copies of the activations), and the pair intermediates per pair of
    samples. Remembered per model and input signature."""
    key = (signature(fm, xs, trace), trace, n_out)
    known = CACHE.costs.get(fm.model, {}).get(key)
    if known is not None:
        return known
    found = route_details(fm, probe(xs), n_out)
    forms, _ = block_forms(fm, slice_inputs(xs, 0, 1), n_out, found)
    itemsize = fm.dtype.itemsize
    o2 = 1 if trace else n_out**2
    n_generic = fm.n_params - sum(fm.params[n].numel() for n in found.covered)
    features = n_out * itemsize * n_generic
    work = 2 * n_out * itemsize * n_generic
    work += n_out * fm.activation_bytes(xs)  # the block is replicated O times
    pair = 0
    c_guess = 128
    every = [f for n, fs in forms.items() for f in parts(fs, fm.params[n].numel())]
    for f in every:
        if isinstance(f, Dense):
            features += f.J.numel() * itemsize
            continue
        pairwise, materialised = outer_costs(f, c_guess, trace)
        if materialised < pairwise:
            features += f.g.shape[1] * f.g.shape[3] * f.din * itemsize
        else:
            features += (f.g.numel() + (0 if f.h is None else f.h.numel())) * itemsize
            S = f.g.shape[2]
            pair = max(pair, (2 * S * S if trace else S * S + 3 * o2) * itemsize)
    CACHE.costs.setdefault(fm.model, {})[key] = (features, work, pair)
    return features, work, pair


def block_work(
    fm: FunctionalModel, xs: tuple[Tensor, ...], *, n_out: int, trace: bool, c: int
) -> int:
    """Bytes of one ``c``-sample block's transient work: its row and column features and
    their production, plus the pair intermediates (the plan's model of a block):
    ``3 c (features + work) + c^2 pair``."""
    features, work, pair = costs(fm, xs, n_out=n_out, trace=trace)
    return 3 * c * (features + work) + c * c * pair


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
    ``budget``, leaving the other half for a panel of row blocks held at once."""
    features = costs(fm, xs, n_out=n_out, trace=trace)[0]
    work = lambda c: block_work(fm, xs, n_out=n_out, trace=trace, c=c)  # noqa: E731
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
