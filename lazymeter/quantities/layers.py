"""Per-layer kernels: which layers' tangent kernels move and align with the task.

The empirical NTK is a sum over parameter groups, ``K = sum_l K_l``
(:func:`lazymeter.empirical_ntk` with ``per_layer=True``; one group per module that owns
trainable parameters). Each ``K_l`` is the kernel the network would have if only that
layer trained, so its drift from initialisation and its alignment with the labels say
which layers learn features while the others stay lazy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import metrics as M
from ..layer_plots import PREFIX, plot_layer_curves
from ..ntk import empirical_ntk, parameter_groups
from .base import Quantity
from .context import MeasureContext

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The per-layer metrics, in the order they are recorded.
METRICS = ("ntk_drift", "ntk_cka", "alignment", "ntk_share")


class LayerKernels(Quantity):
    """Per-layer NTK diagnostics on the train probe, for each parameter group ``l``
    (``K_l [P, P]``, traced; ``K_l0`` at initialisation, computed once at setup):

    * ``layer/<l>/ntk_drift = ||K_l - K_l0||_F / ||K_l0||_F``;
    * ``layer/<l>/ntk_cka = cka(K_l, K_l0, estimator)``: 1 while the layer's kernel keeps
      its shape;
    * ``layer/<l>/alignment = kernel_alignment(K_l, Y, "double", estimator)``;
    * ``layer/<l>/ntk_share = tr K_l / tr K``: the layer's part of the whole kernel (the
      shares sum to 1).

    Keys are grouped per layer in TensorBoard (``lazymeter/layer/<l>/...``); with
    ``TensorBoardSink(figures=True)`` a figure of every layer's drift and CKA over the steps
    measured so far (:func:`lazymeter.layer_plots.plot_layer_curves`, which also draws them from
    ``meter.history``).

    Cost per measurement: one per-layer kernel of the probe (the structured, Jacobian and
    loop engines split the kernel in the one pass that computes it; memory ``G`` kernels
    of ``P x P``), computed apart from the meter's own kernel and always exact (not
    sketched, not sharded across ranks).

    Args:
        layers: the groups to record (names from
            :func:`lazymeter.ntk.parameter_groups`); None: every group. The kernel is
            split over every group either way (the shares stay fractions of the whole).
        estimator: ``"unbiased"`` (default) or ``"biased"``, for CKA and alignment (see
            :func:`lazymeter.cka`, :func:`lazymeter.kernel_alignment`).
        method: the engine, as in :func:`lazymeter.empirical_ntk` (``"auto"``).
        memory_budget: as in :func:`lazymeter.empirical_ntk` (None: the default).
    """

    name = "layers"
    needs = "kernel"
    tags = {PREFIX: PREFIX}
    doc = {
        "layer/<l>/ntk_drift": "`‖K_l − K_l0‖_F / ‖K_l0‖_F` of parameter group `l` "
        "(`LayerKernels()`, one group per module)",
        "layer/<l>/ntk_cka": "`cka(K_l, K_l0)` (`estimator=`, default unbiased)",
        "layer/<l>/alignment": "`kernel_alignment(K_l, Y)`, double centring (`estimator=`)",
        "layer/<l>/ntk_share": "`tr K_l / tr K`: the group's share of the whole kernel",
    }

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        estimator: str = "unbiased",
        method: str = "auto",
        memory_budget: int | str | None = None,
    ) -> None:
        if isinstance(layers, str):
            raise TypeError(f"layers: expected a list of group names or None, got {layers!r}")
        self.layers = None if layers is None else list(layers)
        self.estimator = M._check_estimator(estimator)
        self.method, self.memory_budget = method, memory_budget
        self.output_fn: Any = None
        self.K0: dict[str, Tensor] = {}
        self.curves: list[dict[str, float]] = []  # this run's rows of layer keys, for figures

    def bind(self, model: nn.Module, alpha: float, center: bool, output_fn: Any = None) -> None:
        self.output_fn = output_fn
        if self.layers is not None:
            known = parameter_groups(model)
            unknown = [n for n in self.layers if n not in known]
            if unknown:
                raise ValueError(
                    f"layers: the model has no parameter group {unknown}; pick names from "
                    f"lazymeter.ntk.parameter_groups(model): {list(known)}"
                )

    def _kernels(self, ctx: MeasureContext) -> dict[str, Tensor]:
        x = ctx.probe("train")[0]
        out = empirical_ntk(
            ctx.model, x, output_fn=self.output_fn, method=self.method,
            memory_budget=self.memory_budget, per_layer=True,
        )  # fmt: skip
        assert isinstance(out, dict)
        return out

    def _shown(self) -> list[str]:
        return list(self.K0) if self.layers is None else [n for n in self.layers if n in self.K0]

    def setup(self, ctx: MeasureContext) -> None:
        self.K0 = {k: v.detach() for k, v in self._kernels(ctx).items()}

    def keys(self, ctx: MeasureContext) -> list[str]:
        return [f"{PREFIX}{n}/{m}" for n in self._shown() for m in METRICS]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        Ks = self._kernels(ctx)
        Y = ctx.targets("train")
        total = sum(float(torch.trace(K.double())) for K in Ks.values())
        out: dict[str, float] = {}
        for n in self._shown():
            K, K0 = Ks.get(n), self.K0[n]
            if K is None:  # a group frozen since setup: its kernel is zero now
                K = torch.zeros_like(K0)
            key = f"{PREFIX}{n}/"
            ctx.attempt(out, key + "ntk_drift", lambda K=K, K0=K0: M.ntk_drift(K, K0))
            ctx.attempt(out, key + "ntk_cka", lambda K=K, K0=K0: M.cka(K, K0, self.estimator))
            ctx.attempt(
                out,
                key + "alignment",
                lambda K=K: M.kernel_alignment(K, Y, "double", self.estimator),
            )
            out[key + "ntk_share"] = float(torch.trace(K.double())) / total if total else 0.0
        self.curves.append({"step": float(ctx.step), **out})
        return out

    def figures(self, ctx: MeasureContext, row: Mapping[str, float]) -> dict[str, Figure]:
        return {"lazymeter/figures/layers": plot_layer_curves(self.curves)}

    def describe(self) -> dict[str, str]:
        """What the numbers depend on (written to the run's metadata)."""
        return {"keys": "layer/<group>/<metric>", "estimator": self.estimator, "points": "probe"}

    def state_dict(self) -> dict[str, Any]:
        # K_l0 must survive a resume: the resumed model is no longer at initialisation
        return {"K0": dict(self.K0), "curves": list(self.curves)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.K0 = dict(state.get("K0", {}))
        self.curves = list(state.get("curves", []))
