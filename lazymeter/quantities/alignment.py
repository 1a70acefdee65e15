"""Kernel-target alignment of the NTK, now and at initialisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import metrics as M
from .base import Quantity
from .context import SPLITS, MeasureContext


class Alignment(Quantity):
    """``alignment_<split> = kernel_alignment(K_t, Y, centering)`` on each probe, and the
    reference ``alignment0_<split>`` of ``K_0`` (computed once, at setup).

    Args:
        centering: ``"double"`` (centred kernel-target alignment), ``"rows"`` (the paper's
            code) or ``"none"``; see :func:`lazymeter.kernel_alignment`.
    """

    name = "ntk.alignment"
    needs = "kernel"
    tags = {f"alignment{t}_{s}": f"ntk/alignment{t}_{s}" for t in ("", "0") for s in SPLITS}
    doc = {
        "alignment_train": "`kernel_alignment(K_t, Y)` on the train probe (`centering=`)",
        "alignment_test": "the same on the test probe",
        "alignment0_train": "`kernel_alignment(K_0, Y)`: the reference at initialisation",
        "alignment0_test": "the same on the test probe",
    }

    def __init__(self, centering: str = "double") -> None:
        self.centering = centering
        self.reference: dict[str, float] = {}

    def _splits(self, ctx: MeasureContext) -> list[str]:
        return [s for s in SPLITS if ctx.has(s)]

    def setup(self, ctx: MeasureContext) -> None:
        for s in self._splits(ctx):
            K0, y = ctx.kernel(s, "init"), ctx.targets(s)
            self.reference[f"alignment0_{s}"] = M.kernel_alignment(K0, y, self.centering)

    def keys(self, ctx: MeasureContext) -> list[str]:
        return [f"alignment_{s}" for s in self._splits(ctx)]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for s in self._splits(ctx):
            K, y = ctx.kernel(s), ctx.targets(s)
            ctx.attempt(
                out, f"alignment_{s}", lambda K=K, y=y: M.kernel_alignment(K, y, self.centering)
            )
        out.update(self.reference)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"reference": dict(self.reference)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reference = dict(state["reference"])
