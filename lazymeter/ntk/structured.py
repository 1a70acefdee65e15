"""Structured NTK engine: per-layer rules instead of per-sample Jacobians.

For a dense layer ``y = W h``, the per-sample gradient of output ``o`` w.r.t. ``W`` is
``sum_s g_os h_s^T`` (``s``: sequence/spatial positions, ``g``: gradient of the output
w.r.t. the layer output), so that layer's NTK block is

    K_W[i, j] = sum_o sum_{s,t} (h_is . h_jt) (g_ios . g_jot),

which is ``(H H^T) * (G G^T)`` without positions. Nothing of size ``n_params`` per
sample is formed. This is the "structured derivatives" idea of neural-tangents (Novak,
Sohl-Dickstein, Schoenholz, ICML 2022) and the per-layer trick of nngeometry/Opacus.

The engine is split by concern:

* :mod:`~lazymeter.ntk.forms`: the two forms a rule returns per parameter,
  :class:`~lazymeter.ntk.forms.Outer` (a sum of outer products, as above) and
  :class:`~lazymeter.ntk.forms.Dense` (an explicit ``[c, O, n_p]`` Jacobian, for small
  parameters such as biases and norm scales), and how pairs of them contract;
* :mod:`lazymeter.ntk.ops`: the operator rules, where each layer's maths lives (one
  module per family), and the one capture: a traced forward (on the block, or per sample
  under ``vmap``), the rules on one sample's tensors, and ``O`` backward passes give
  every consuming operation's inputs and ``g``;
* :mod:`~lazymeter.ntk.registry`: :data:`RULES` (layer type -> module rule, looked up
  along the MRO), :func:`register_rule`, the static ``declines``; a user's module rule
  is one operation of the capture (:mod:`~lazymeter.ntk.ops.modules`);
* :mod:`lazymeter.ntk.rules`: the built-in layers' module rules, each standing for the
  operation its forward is;
* :mod:`~lazymeter.ntk.routing`: which parameters take a rule (:func:`route`,
  :func:`coverage`) and the exactness guard;
* :mod:`~lazymeter.ntk.plan`: block sizes from a memory model of one sample;
* this module: the engine (:class:`StructuredEngine`, registered as ``"structured"``).

Parameters no rule covers (raw parameters in einsums, custom layers, weights shared
between layers) go through the generic Jacobian engine for those parameters alone, and
the parts add up, so the engine is exact for every model. Each call checks, on its first
block, that the rules reproduce autograd's gradient of a random output combination; a
parameter that fails (used outside its layer as well) is moved to the generic part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from . import rules  # noqa: F401 - registers the built-in rules
from .blocks import blocked_kernel, jacobian_rows
from .cache import CACHE
from .engines import (
    Engine,
    jacobian_contraction,
    ntk_vector_products,
    owners_of,
    recurrent_layers,
    refuse_recurrent,
    register_engine,
)
from .forms import (
    Dense,
    Form,
    Outer,
    Pairwise,
    Tied,
    feature_bytes,
    fold_bias,
    materialize,
    outer_costs,
    pair,
    pair_groups,
    pairwise,
    parts,
    scatter,
)
from .functional import FunctionalModel, num_samples
from .plan import block_work, peak_bytes, plan_chunk
from .registry import DECLINES, RULES, Rule, declined, find_rule, register_rule, unregister_rule
from .routing import (
    Route,
    block_forms,
    coverage,
    probe,
    route,
    route_details,
    ruled_params,
    signature,
)

__all__ = [
    "DECLINES",
    "RULES",
    "Dense",
    "Form",
    "Outer",
    "Pairwise",
    "Route",
    "Rule",
    "StructuredEngine",
    "coverage",
    "declined",
    "find_rule",
    "plan_chunk",
    "register_rule",
    "route",
    "route_details",
    "ruled_params",
    "structured",
    "unregister_rule",
]


def foldable(name: str, forms: dict[str, list[Form]], fs: list[Form]) -> str | None:
    """The bias that can be folded into the weight ``name``'s one :class:`Outer` form
    ``fs`` (``y = W h + b = [W, b] [h; 1]``): every use of the weight names it (the
    operation adds it, :attr:`Outer.bias`) and the bias has no other use."""
    if len(fs) != 1 or not isinstance(fs[0], Outer) or fs[0].h is None:
        return None
    b = fs[0].bias
    uses = forms[name]
    same = all(isinstance(f, Outer) and f.bias == b for f in uses)
    return b if b is not None and same and len(forms.get(b, ())) == len(uses) else None


def _ruled_entries(fm: FunctionalModel, x1: tuple[Tensor, ...], n_out: int) -> int:
    """Trainable entries the rules (module and operator) compute on inputs like ``x1``, as
    routed at run time on its first two samples (remembered per input signature)."""
    names = route(fm, probe(x1), n_out)
    return sum(fm.params[n].numel() for n in names)


class StructuredEngine(Engine):
    """Per-layer structured NTK (see the module docstring); exact for every model.

    Cost per block of ``c`` samples: one traced forward and ``O`` batched backward passes,
    ``c^2 S^2 (d_in + O d_out)`` per pairwise layer (or ``c O S d_out d_in`` to
    materialise it), plus the Jacobian engine's work for the parameters no rule covers.
    Memory: each ruled layer's ``H`` and ``G`` (sized by :func:`plan_chunk`); nothing of
    size ``[P, n_params]`` except ``[c, O, n_uncovered]``.
    """

    def applicable(self, fm: FunctionalModel, x1: tuple[Tensor, ...], n_out: int) -> str | None:
        """Applies when at least half of the trainable entries take a rule on these
        inputs (as routed at run time: after declines and the exactness guard); not for
        recurrent layers (its generic part runs under vmap)."""
        why = recurrent_layers(fm)
        if why is not None:
            return why
        ruled = _ruled_entries(fm, x1, n_out)
        if 2 * ruled >= fm.n_params:
            return None
        return (
            f"rules cover {ruled / fm.n_params:.0%} of the trainable entries on these inputs "
            "(needs at least 50%; lazymeter.ntk.explain(model, x) names each parameter's route)"
        )

    def cost(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        n_out: int,
        trace: bool,
    ) -> float:
        """The cheapest generic estimate (:class:`~lazymeter.ntk.engines.JacobianEngine`,
        :class:`~lazymeter.ntk.engines.NTVPEngine`) times the fraction of trainable entries
        left to the generic part: the rules' own work (one forward and ``O`` backward per
        block, the per-layer contractions) is taken to be below that. Where the engine
        applies (at least half of the entries ruled) this is at most half of any generic
        estimate, so ``auto`` takes it."""
        ruled = _ruled_entries(fm, x1, n_out)
        if ruled >= fm.n_params:
            return 0.0
        generic = min(
            jacobian_contraction.cost(fm, x1, n2, n_out, trace),
            ntk_vector_products.cost(fm, x1, n2, n_out, trace),
        )
        return (1 - ruled / fm.n_params) * generic

    def plan_chunk(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        *,
        n_out: int,
        trace: bool,
        budget: int,
        n_samples: int,
    ) -> int:
        """:func:`lazymeter.ntk.plan.plan_chunk`: the largest block whose features and
        pair intermediates fit ``budget``."""
        return plan_chunk(fm, x1, n_out=n_out, trace=trace, budget=budget, n_samples=n_samples)

    def peak_bytes(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        n2: int | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
    ) -> int:
        """:func:`lazymeter.ntk.plan.peak_bytes`: one block's work plus the features kept
        across blocks (all columns, or a panel of row blocks)."""
        return peak_bytes(
            fm, x1, n2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
        )

    def compute(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> Tensor:
        """Per-layer structured NTK (see the module docstring); exact for every model.

        With ``groups``, one pass that keeps the per-layer split: each parameter's form
        (or generic Jacobian) is contracted into its group's kernel instead of the total
        (:func:`~lazymeter.ntk.forms.pair_groups`); the cost of the whole kernel, and
        ``G`` times its kernel memory. A bias folded into its weight's form belongs to
        the same group; one in another group is not folded."""
        refuse_recurrent(fm, "structured")
        owner = None
        if groups is not None:
            owner = dict(zip(fm.params, owners_of(list(fm.params), groups), strict=True))
        key = signature(fm, x1, trace)
        state: dict[str, Any] = {"route": CACHE.routes.get(fm.model, {}).get(key)}

        def generic_part(found: Route) -> FunctionalModel | None:
            rest = [n for n in fm.params if n not in found.covered]
            return FunctionalModel(fm.model, fm.output_fn, only=rest) if rest else None

        if state["route"] is not None:
            state["generic"] = generic_part(state["route"])

        def rows(xs: tuple[Tensor, ...]):
            forms, found = block_forms(fm, xs, n_out, state["route"])
            if state["route"] is None:  # the first block routes (and is guarded)
                state["route"] = found
                CACHE.routes.setdefault(fm.model, {})[key] = found
                state["generic"] = generic_part(found)
            c = num_samples(xs)
            covered_now = set(found.covered)
            folded = set()
            merged: dict[str, list[Form]] = {}
            for n in found.covered:
                fs = parts(forms[n], fm.params[n].numel())
                b = foldable(n, forms, fs)
                if b is not None and b in covered_now and (owner is None or owner[b] == owner[n]):
                    fs = [fold_bias(fs[0])]  # type: ignore[arg-type]
                    folded.add(b)
                merged[n] = fs
            chosen, owners = [], []
            for n, fs in merged.items():
                if n in folded:
                    continue
                for f in fs:
                    owners.append(0 if owner is None else owner[n])
                    if isinstance(f, Tied):  # cross terms are traced only
                        if trace:
                            f = Tied(pairwise(f.lookup), pairwise(f.product))
                        else:
                            f = scatter(f, fm.params[n].numel())
                    elif isinstance(f, Outer):
                        pw, materialised = outer_costs(f, max(c, chunk_size), trace)
                        f = materialize(f) if materialised < pw else pairwise(f)
                    chosen.append(f)
            gfm = state["generic"]
            gen = jacobian_rows(gfm, xs, n_out) if gfm is not None else []
            if owner is not None:
                # The route is fixed after the first block, so every block lays out its
                # forms alike; the groups of the first are those of all.
                gen_owners = [] if gfm is None else [owner[n] for n in gfm.params]
                layout = (owners, gen_owners)
                if state.setdefault("owners", layout) != layout:
                    raise RuntimeError("structured: blocks laid out their forms differently")
            return chosen, gen

        n_cols = num_samples(x1 if x2 is None else x2)
        n_blocks = math.ceil(n_cols / chunk_size)

        def work() -> int:
            # Transient work of one block (its row and column features, their production,
            # the pair products) as the plan counts it; features kept across blocks come on
            # top.
            return block_work(fm, x1, n_out=n_out, trace=trace, c=chunk_size)

        def cache_all(first: Any) -> bool:
            # Keep every column block's features when all of them fit beside one block's work.
            return feature_bytes(first) * n_blocks + work() <= budget

        def panel(first: Any) -> int:
            # Otherwise hold, besides the one row block that work() counts, as many more row
            # blocks as fit the rest of the budget: each column block is then computed once
            # per panel of row blocks instead of once per row block.
            return 1 + max(0, (budget - work()) // max(feature_bytes(first), 1))

        def pair_fn(a: Any, b: Any) -> Tensor:
            if groups is None:
                return pair(a[0], b[0], (a[1], b[1]), trace)
            return pair_groups(a[0], b[0], (a[1], b[1]), trace, state["owners"], len(groups))

        return blocked_kernel(
            x1,
            x2,
            chunk_size,
            trace=trace,
            n_out=n_out,
            like=next(iter(fm.params.values())),
            row_fn=rows,
            col_fn=rows,
            pair_fn=pair_fn,
            cache_cols=cache_all,
            panel=panel,
            groups=0 if groups is None else len(groups),
        )


#: The structured engine, registered as ``"structured"``.
structured = register_engine("structured", StructuredEngine())
