"""Feature learning layer by layer: CKA of activations to their values at initialisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import metrics as M
from ..ntk.functional import call_with
from .base import Quantity
from .context import MeasureContext


def activations(model: nn.Module, names: Sequence[str], x: Tensor) -> dict[str, Tensor]:
    """Outputs ``[P, d]`` (flattened) of the submodules ``names`` on ``x``, from a forward
    on copies of the buffers (BatchNorm statistics untouched) without a graph."""
    acts: dict[str, Tensor] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: acts.__setitem__(n, o if isinstance(o, Tensor) else o[0])
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            call_with(model, {}, (x,))  # on copies of the buffers
    finally:
        for h in hooks:
            h.remove()
    return {n: a.detach().reshape(a.shape[0], -1) for n, a in acts.items()}


class FeatureCKA(Quantity):
    """``feature_cka/<layer> = linear_cka(A_t, A_0)`` for each named submodule: its
    activations ``[P, d]`` on the train probe now against at initialisation.

    Args:
        layers: submodule names (``[n for n, _ in model.named_modules()]``).
    """

    name = "feature_cka"
    needs = "probe"
    tags = {"feature_cka/": "features/"}
    doc = {"feature_cka/<layer>": "`linear_cka` of a layer's activations to their values at init"}

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.initial: dict[str, Tensor] = {}

    def bind(self, model: nn.Module, alpha: float, center: bool, output_fn: Any = None) -> None:
        for name in self.layers:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(
                    f"features: the model has no submodule {name!r}; pick names from "
                    "[n for n, _ in model.named_modules()]"
                ) from None

    def setup(self, ctx: MeasureContext) -> None:
        self.initial = activations(ctx.model, self.layers, ctx.probe("train")[0])

    def keys(self, ctx: MeasureContext) -> list[str]:
        return [f"feature_cka/{n}" for n in self.layers]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for n, a in activations(ctx.model, self.layers, ctx.probe("train")[0]).items():
            a0 = self.initial[n]
            ctx.attempt(out, f"feature_cka/{n}", lambda a=a, a0=a0: M.linear_cka(a, a0))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"initial": dict(self.initial)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.initial = dict(state["initial"])
