"""The lazy baseline: kernel regression with the initial NTK."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..baselines import kernel_regression
from ..ntk.blocks import slow_scope
from ..probes import targets
from ..validation import int_at_least
from .base import Quantity
from .context import MeasureContext


class LazyBaseline(Quantity):
    """``k0_test_mse``, ``k0_train_mse`` (and ``k0_test_acc`` for class labels): the loss
    of kernel regression with ``K_0``, ``k0(x, X) (K0 + ridge I)^-1 y``, fitted on (at
    most ``max_points`` of) the train probe and evaluated on the test probe: the function
    the network reaches when it trains in the lazy limit (alpha -> infinity). Computed
    once, at setup (needs a test probe); reported with every measurement.

    Centred, the initial function is 0 and the limit predicts ``K0(x, X) K0^-1 y``;
    uncentred, it fits the residual ``y - alpha f0`` and adds ``alpha f0``.

    Args:
        max_points: points of each probe used (a seeded subset, independent of the
            :class:`~lazymeter.ProbeSet`'s ``max_points``; the meter keeps up to this many).
        ridge: ridge of the kernel regression.
    """

    name = "ntk.k0_baseline"
    needs = "kernel"
    tags = {f"k0_{k}": f"baseline/k0_{k}" for k in ("test_mse", "test_acc", "train_mse")}
    charts = {"losses (network, linearised)": ["k0_test_mse"]}
    doc = {
        "k0_test_mse": "test MSE of kernel regression with `K_0` (the lazy limit), once",
        "k0_train_mse": "its train MSE",
        "k0_test_acc": "its test accuracy (integer class labels)",
    }

    def __init__(self, max_points: int = 2048, ridge: float = 0.0) -> None:
        self.max_points, self.ridge = int_at_least(max_points, "max_points", 3), ridge
        self.results: dict[str, float] = {}

    def probe_points(self) -> int:
        return self.max_points

    def setup(self, ctx: MeasureContext) -> None:
        if not ctx.has("test"):
            return
        (x, y) = ctx.probe("train", self.max_points)
        (xt, yt) = ctx.probe("test", self.max_points)
        Y, Yt = targets(y, ctx.num_classes), targets(yt, ctx.num_classes)
        f0, f0t = 0.0, 0.0
        if not ctx.center:
            f0, f0t = (
                ctx.alpha * ctx.initial_output(v).to(torch.float64).reshape(v.shape[0], -1)
                for v in (x, xt)
            )
        hint = f"LazyBaseline(max_points=...) (now {self.max_points}) for this baseline kernel"
        with slow_scope(hint=hint):  # a slow K0 names its own knob first
            K, Kt = ctx.ntk(x), ctx.ntk(xt, x)
        pred = f0t + kernel_regression(K, Y - f0, Kt, ridge=self.ridge)
        pred_train = f0 + kernel_regression(K, Y - f0, K, ridge=self.ridge)
        self.results["k0_test_mse"] = float(((pred - Yt) ** 2).mean())
        self.results["k0_train_mse"] = float(((pred_train - Y) ** 2).mean())
        if ctx.num_classes is not None:
            hit = (pred.argmax(1) == Yt.argmax(1)).double().mean()
            self.results["k0_test_acc"] = float(hit)

    def keys(self, ctx: MeasureContext) -> list[str]:
        return []

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        return dict(self.results)

    def state_dict(self) -> dict[str, Any]:
        return {"results": dict(self.results)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.results = dict(state["results"])
