"""The linearised shadow model and how far the network is from it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..baselines import Linearized
from .base import Quantity
from .context import SPLITS, MeasureContext


class LinearizedShadow(Quantity):
    """Builds the network's linearisation around its initial parameters (a
    :class:`~lazymeter.Linearized`, same alpha and centring), for the user to train
    alongside with the same loss and learning rate (its own optimiser over
    ``meter.linearized.parameters()``; log its losses as ``lin_train_loss`` /
    ``lin_test_loss`` in :meth:`LazyMeter.step`), and records
    ``lin_gap_<split> = sqrt(mean((f_net(x) - f_lin(x))^2))`` on each probe: the RMS
    distance between the network's and the shadow's (alpha-scaled) outputs, 0 while
    training stays in the linear (lazy) regime (no gap without a probe). Saved in the
    meter's ``state_dict``.
    """

    name = "linearized"
    tags = {"lin_": "linearized/"}
    charts = {"losses (network, linearised)": ["lin_train_loss", "lin_test_loss"]}
    doc = {
        "lin_gap_train": "RMS distance between the network's and the linearised shadow's "
        "outputs on the train probe",
        "lin_gap_test": "the same on the test probe",
    }

    def __init__(self, output_fn: Callable[[Any], Any] | None = None) -> None:
        self.output_fn = output_fn
        self.shadow: Linearized | None = None

    def bind(
        self, model: torch.nn.Module, alpha: float, center: bool, output_fn: Any = None
    ) -> None:
        """Builds the shadow around the model's current (initial) parameters, reducing its
        output with this quantity's ``output_fn``, else the meter's."""
        if self.shadow is None:
            self.shadow = Linearized(model, alpha, center, self.output_fn or output_fn)

    def keys(self, ctx: MeasureContext) -> list[str]:
        return [f"lin_gap_{s}" for s in SPLITS if ctx.has(s)]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        if self.shadow is None:
            raise RuntimeError("linearized: the shadow was not built")
        out = {}
        for s in SPLITS:
            if ctx.has(s):
                x = ctx.probe(s)[0]
                f = ctx.output(x).to(torch.float64)
                f_lin = self.shadow(x).to(torch.float64)
                out[f"lin_gap_{s}"] = float(((f - f_lin) ** 2).mean().sqrt())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {} if self.shadow is None else {"shadow": self.shadow.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.shadow is not None and "shadow" in state:
            self.shadow.load_state_dict(state["shadow"])
