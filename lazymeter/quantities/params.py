"""How far the weights have moved from initialisation."""

from __future__ import annotations

from collections.abc import Mapping

from .. import metrics as M
from .base import Quantity
from .context import MeasureContext


class ParameterMovement(Quantity):
    """``param_movement = ||theta - theta0|| / ||theta0||`` and ``weight_norm = ||theta||``
    over the trainable parameters (no probe needed)."""

    name = "params"
    tags = {"param_movement": "params/movement", "weight_norm": "params/weight_norm"}
    charts = {"weights": ["param_movement", "weight_norm"]}
    doc = {
        "param_movement": "`‖θ − θ_0‖ / ‖θ_0‖` over the trainable parameters",
        "weight_norm": "`‖θ‖`",
    }

    def keys(self, ctx: MeasureContext) -> list[str]:
        return ["param_movement", "weight_norm"]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        theta = ctx.params()
        return {
            "param_movement": M.parameter_movement(theta, ctx.params0()),
            "weight_norm": M.weight_norm(theta),
        }
