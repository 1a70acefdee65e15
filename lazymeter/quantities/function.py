"""User metrics ``fn(model) -> {key: value}`` as quantities."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from torch import nn

from .base import Quantity
from .context import MeasureContext

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MetricFn = Callable[[nn.Module], Mapping[str, float]]


class FunctionQuantity(Quantity):
    """``fn(model) -> {key: value}`` (the meter's ``metrics={name: fn}``) as a quantity named
    ``name``. A failing call keeps the columns it returned last time (as NaN). Keys
    starting with ``decomp_`` (a test-loss decomposition such as
    :class:`~lazymeter.QuadraticDecomposition`) are logged under
    ``lazymeter/decomposition/`` and, with ``tb_figures=True``, drawn as a bar chart."""

    name = ""  # set per instance
    tags = {"decomp_": "decomposition/"}
    doc = {"decomp_<term>": "terms of a test-loss decomposition passed in `metrics=`"}

    def __init__(self, name: str, fn: MetricFn, schedule=None) -> None:
        if not callable(fn):
            raise TypeError(f"metrics: {name!r} is not callable; pass fn(model) -> dict")
        self.name, self.fn, self.schedule = name, fn, schedule  # type: ignore[misc]
        self.last_keys: list[str] = []  # for the decomposition figure

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        out = {k: float(v) for k, v in self.fn(ctx.model).items()}
        self.last_keys = list(out)
        return out

    def figures(self, ctx: MeasureContext, row: Mapping[str, float]) -> dict[str, Figure]:
        terms = {
            k[7:]: row[k] for k in self.last_keys if k.startswith("decomp_") and k != "decomp_total"
        }
        if not terms:
            return {}
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3))
        ax = fig.subplots()
        ax.bar(list(terms), list(terms.values()))
        ax.set_yscale("log")
        ax.set_title(f"decomposition at step {ctx.step}")
        fig.tight_layout()
        return {"lazymeter/figures/decomposition": fig}
