"""Built-in diagnostics as :class:`Quantity` objects, and the presets a meter starts from.

``LazyMeter(..., quantities=None)`` measures :func:`default`; ``quantities=default(...)``
configures that set (``centering``, ``features``, ``linearized``, ...), and
``quantities=[*lazymeter.quantities.DEFAULT, MyQuantity()]`` adds one of yours. Presets,
from cheapest to fullest (in the spirit of Cockpit's economy/business/full):

* :data:`ECONOMY`: parameter movement, kernel drift/CKA and alignment (one kernel per
  probe and measurement);
* :data:`DEFAULT`: + the kernel spectrum and the lazy (``K_0``) baseline;
* :data:`FULL`: + the linearised shadow (``meter.linearized``, ``lin_gap_*``); feature CKA
  needs layer names: add ``FeatureCKA(layers)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..sinks import tag_for
from .alignment import Alignment
from .base import Quantity
from .baseline import LazyBaseline
from .context import MeasureContext
from .features import FeatureCKA
from .function import FunctionQuantity, MetricFn
from .kernel import KernelDrift
from .layers import LayerKernels
from .linearized import LinearizedShadow
from .params import ParameterMovement
from .spectrum import Spectrum

ECONOMY: list[Quantity] = [ParameterMovement(), KernelDrift(), Alignment()]
DEFAULT: list[Quantity] = [
    ParameterMovement(),
    KernelDrift(),
    Alignment(),
    Spectrum(),
    LazyBaseline(),
]
FULL: list[Quantity] = [*DEFAULT, LinearizedShadow()]


def default(
    *,
    centering: str = "double",
    estimator: str | None = None,
    spectrum_k: int = 5,
    ridge: float = 0.0,
    max_baseline: int = 2048,
    features: Sequence[str] = (),
    metrics: Mapping[str, MetricFn] | None = None,
    linearized: bool = False,
    output_fn: Callable[[Any], Any] | None = None,
) -> list[Quantity]:
    """The built-in set, configured (what ``LazyMeter(..., quantities=None)`` measures, with
    the defaults): pass it as ``LazyMeter(..., quantities=default(centering="rows", ...))``.
    Each keyword is an option of one quantity (``centering``/``estimator``: :class:`Alignment`
    and :class:`KernelDrift`; ``spectrum_k``: :class:`Spectrum`; ``max_baseline``/``ridge``:
    :class:`LazyBaseline`'s ``max_points``/``ridge``; ``features``: :class:`FeatureCKA`;
    ``metrics``: one :class:`FunctionQuantity` each; ``linearized``:
    :class:`LinearizedShadow`); lazymeter 0.1 took them as the meter's own keywords.
    ``estimator=None``: unbiased with ``centering="double"``, biased with another
    centering."""
    if estimator is None:
        estimator = "unbiased" if centering == "double" else "biased"
    out: list[Quantity] = [
        ParameterMovement(),
        KernelDrift(estimator),
        Alignment(centering, estimator),
        Spectrum(spectrum_k),
        LazyBaseline(max_baseline, ridge),
    ]
    if features:
        out.append(FeatureCKA(features))
    out += [FunctionQuantity(name, fn) for name, fn in (metrics or {}).items()]
    if linearized:
        out.append(LinearizedShadow(output_fn))
    return out


def own_copy(q: Quantity) -> Quantity:
    """A meter's own (deep) copy of a quantity, so that a shared list such as ``DEFAULT``
    keeps no state; anything but a :class:`Quantity` is a ``TypeError``."""
    if not isinstance(q, Quantity):
        raise TypeError(
            f"quantities: expected lazymeter.Quantity objects, got {type(q).__name__}; wrap a "
            "function fn(model) -> dict as metrics={'name': fn}"
        )
    return copy.deepcopy(q)


def metric_table(quantities: Iterable[type[Quantity]] | None = None) -> str:
    """The docs' metric table (markdown) from the quantities' ``doc`` entries."""
    classes = quantities or [
        ParameterMovement, KernelDrift, Alignment, Spectrum, LazyBaseline, FeatureCKA,
        LinearizedShadow, FunctionQuantity,
    ]  # fmt: skip
    rows = ["| key | definition | quantity | TensorBoard tag |", "|---|---|---|---|"]
    for cls in classes:
        for key, meaning in cls.doc.items():
            rows.append(f"| `{key}` | {meaning} | `{cls.__name__}` | `{tag_for(key)}` |")
    return "\n".join(rows)


__all__ = [
    "DEFAULT",
    "ECONOMY",
    "FULL",
    "Alignment",
    "FeatureCKA",
    "FunctionQuantity",
    "KernelDrift",
    "LayerKernels",
    "LazyBaseline",
    "LinearizedShadow",
    "MeasureContext",
    "ParameterMovement",
    "Quantity",
    "Spectrum",
    "default",
    "metric_table",
    "own_copy",
]
