"""The NTK engines' memo tables, owned by one object: :data:`CACHE`.

Everything the engines remember between calls lives here, keyed weakly by the model
(an entry goes when its model is garbage-collected) and, inside, by a signature of what
the remembered value depends on (mode, output reduction, trainable parameters, the rule
table's reach, per-sample input shapes). Nothing here changes a kernel: a cleared table
is refilled on the next call, at the cost of the work it saved.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import nn


class NTKCache:
    """Per-model memo tables of the NTK engines.

    Attributes:
        routes: ``model -> {signature: Route}``: which parameters the structured engine's
            rules compute, after declines and the exactness guard (one hooked forward and
            backward each, so remembered; see :func:`lazymeter.ntk.routing.route`).
        plans: ``model -> {key: chunk size}``: the structured engine's block sizes.
        costs: ``model -> {key: (features, work, forms)}``: its per-sample memory model
            (the generic part's features and the work in bytes, the shapes of the forms).
        flops: ``model -> {key: FLOPs}``: one sample's forward FLOPs (the engines' cost
            model for ``method="auto"``).
        casts: ``model -> cast copy``: the model in another dtype (``empirical_ntk(...,
            dtype=)``), refreshed in place at each call.
        methods: ``model -> {signature: engine name}``: what ``method="auto"`` ran
            successfully (after falling back past engines that failed on this model).
        tunings: ``model -> {signature: [Trial]}``: the timed trials behind an ``"auto"``
            choice (:mod:`lazymeter.ntk.tuning`), fastest first.
        sketches: ``model -> {key: [projected output functions]}``: the random output
            projections of :func:`lazymeter.ntk.sketch.sketched_ntk`, kept so that the
            routes and plans keyed by the output function are reused.
    """

    def __init__(self) -> None:
        self.routes: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.plans: weakref.WeakKeyDictionary[nn.Module, dict[Any, int]] = (
            weakref.WeakKeyDictionary()
        )
        self.costs: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.flops: weakref.WeakKeyDictionary[nn.Module, dict[Any, float]] = (
            weakref.WeakKeyDictionary()
        )
        self.casts: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
        self.methods: weakref.WeakKeyDictionary[nn.Module, dict[Any, str]] = (
            weakref.WeakKeyDictionary()
        )
        self.sketches: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.tunings: weakref.WeakKeyDictionary[nn.Module, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def tables(self) -> dict[str, weakref.WeakKeyDictionary]:
        """``{name: table}`` of every memo table."""
        return {
            "routes": self.routes,
            "plans": self.plans,
            "costs": self.costs,
            "flops": self.flops,
            "casts": self.casts,
            "sketches": self.sketches,
            "methods": self.methods,
            "tunings": self.tunings,
        }

    def clear(self, model: nn.Module | None = None) -> None:
        """Forget everything (or everything about ``model``): routes, plans, cost models,
        FLOP counts and cast copies are recomputed on the next call."""
        for table in self.tables().values():
            if model is None:
                table.clear()
            else:
                table.pop(model, None)

    def __len__(self) -> int:
        """Number of models with at least one remembered entry, summed over the tables."""
        return sum(len(t) for t in self.tables().values())


#: The process-wide memo tables of the NTK engines.
CACHE = NTKCache()


def clear_caches(model: nn.Module | None = None) -> None:
    """Forget every remembered route, plan, cost model, FLOP count and cast copy (or only
    those of ``model``). Kernels do not change; the next call redoes the work once."""
    CACHE.clear(model)
