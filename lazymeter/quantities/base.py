"""The :class:`Quantity` contract: one diagnostic, its schedule, its keys and its state.

In the spirit of Cockpit's ``Quantity``: each diagnostic owns its computation and (if it
wants) its schedule; the meter only loops. A quantity sees the run through a
:class:`~lazymeter.quantities.context.MeasureContext` and returns flat ``{key: float}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..schedules import ScheduleSpec, make_schedule
from ..sinks import register_chart, register_tags

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import nn

    from .context import MeasureContext


class Quantity:
    """One diagnostic of a :class:`~lazymeter.LazyMeter` measurement.

    Subclasses set ``name`` and implement :meth:`compute`; the rest is optional:

    * ``schedule``: when this quantity is measured (the meter's forms: an int k, ``"log"``,
      ``"log:N"``, a callable ``step -> bool``); None (default) = the meter's schedule.
      :meth:`LazyMeter.measure` measures every quantity, whatever its schedule.
    * :meth:`setup` runs once when the meter is built (the model is at initialisation):
      compute init-time references there.
    * :meth:`keys`: the keys recorded as NaN when :meth:`compute` raises (default: the
      keys it returned last time, else ``[name]``), so that a failing quantity keeps its
      columns.
    * :meth:`state_dict` / :meth:`load_state_dict`: what it keeps, saved in the meter's
      checkpoints (default: nothing).
    * :meth:`figures`: matplotlib figures for TensorBoard (``TensorBoardSink(figures=True)``).
    * Class attributes ``tags`` (``{key or key prefix ending in "_" or "/": tag}``, under
      ``lazymeter/``), ``charts`` (TensorBoard custom-scalar charts: ``{title: [keys]}``)
      and ``doc`` (``{key: meaning}``, the docs' metric table) are registered when the
      class is defined.

    A meter deep-copies the quantities it is given, so one list (``DEFAULT``) can serve
    many meters; read a meter's own instances from ``meter.quantities``.
    """

    name: ClassVar[str] = ""
    #: What it needs: "" (nothing), "probe" (a train probe) or "kernel" (a probe and the
    #: initial NTK ``K_0``). A meter without a probe leaves out quantities that need one;
    #: when ``K_0`` cannot be computed, "kernel" quantities skip setup and record NaN.
    needs: ClassVar[str] = ""
    schedule: ScheduleSpec | None = None
    tags: ClassVar[Mapping[str, str]] = {}
    charts: ClassVar[Mapping[str, list[str]]] = {}
    doc: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_tags(cls.tags)
        for title, keys in cls.charts.items():
            register_chart(title, keys)

    def bind(self, model: nn.Module, alpha: float, center: bool, output_fn: Any = None) -> None:
        """At construction, before anything is measured: raise ``ValueError``/``TypeError``
        for a configuration that cannot work with ``model`` (naming the argument and the
        fix), and build what the quantity needs from the model itself."""

    def setup(self, ctx: MeasureContext) -> None:
        """Once, at the meter's construction (init-time references)."""

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        """``{key: value}`` for this measurement."""
        raise NotImplementedError(f"{type(self).__name__}.compute")

    def keys(self, ctx: MeasureContext) -> list[str] | None:
        """Keys recorded as NaN if :meth:`compute` fails; None (the default): the keys it
        returned the last time it succeeded, else ``[name]`` (the meter remembers them)."""
        return None

    def figures(self, ctx: MeasureContext, row: Mapping[str, float]) -> dict[str, Figure]:
        """``{tag: matplotlib Figure}`` to log at a measurement
        (``TensorBoardSink(figures=True)``)."""
        return {}

    def probe_points(self) -> int:
        """Points of the whole probe this quantity reads at setup (``ctx.probe(split,
        max_points)``): the meter keeps up to the largest any quantity asks for. 0 (the
        default): only the measurement probe."""
        return 0

    def min_points(self) -> int:
        """Fewest probe points this quantity can give a number on (checked against each
        probe at the meter's construction): 3, below which a centred kernel is degenerate."""
        return 3

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def make_schedule(self):
        """This quantity's own :class:`~lazymeter.schedules.Schedule`, or None."""
        return None if self.schedule is None else make_schedule(self.schedule)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
