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
    """``fn(model) -> {key: value}`` as a quantity named ``name`` (what
    ``quantities.default(metrics={name: fn})`` builds). A ``fn`` with an
    ``on_meter_setup(*, model, center, params0)`` method receives the meter's network,
    centring and initial parameters at construction and before each measurement.
    A failing call keeps the columns it returned last time (as NaN). Keys
    starting with ``decomp_`` (a test-loss decomposition such as
    :class:`~lazymeter.QuadraticDecomposition`) are logged under
    ``lazymeter/decomposition/`` and, with ``TensorBoardSink(figures=True)``, drawn as a bar
    chart."""

    name = ""  # set per instance
    tags = {"decomp_": "decomposition/"}
    doc = {"decomp_<term>": "terms of a test-loss decomposition passed in `metrics=`"}

    def __init__(self, name: str, fn: MetricFn, schedule=None) -> None:
        if not callable(fn):
            raise TypeError(f"metrics: {name!r} is not callable; pass fn(model) -> dict")
        self.name, self.fn, self.schedule = name, fn, schedule  # type: ignore[misc]
        self.last_keys: list[str] = []  # for the decomposition figure

    def bind(self, model: nn.Module, alpha: float, center: bool, output_fn: object = None) -> None:
        if callable(getattr(self.fn, "on_meter_setup", None)):
            # at construction the model's parameters are its initial ones
            params0 = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
            self._bind(model, center, params0)

    def _bind(self, model: nn.Module, center: bool, params0: Mapping[str, object]) -> None:
        # A metric that depends on the meter's set-up (QuadraticDecomposition: the centring
        # and the initial weights) receives it, so it cannot report another model's terms;
        # again at each measurement, because a resume restores the initial weights later.
        hook = getattr(self.fn, "on_meter_setup", None)
        if callable(hook):
            hook(model=model, center=center, params0=params0)

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        if callable(getattr(self.fn, "on_meter_setup", None)):
            self._bind(ctx.model, ctx.center, ctx.params0())
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
