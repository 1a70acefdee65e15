"""Kernel drift and CKA to initialisation: how far the empirical NTK has moved."""

from __future__ import annotations

from collections.abc import Mapping

from .. import estimators as E, metrics as M
from .base import Quantity
from .context import MeasureContext


class KernelDrift(Quantity):
    """``ntk_drift = ||K_t - K_0||_F / ||K_0||_F`` and ``ntk_cka = cka(K_t, K_0, estimator)``
    with its jackknife standard error ``ntk_cka_se`` on the train probe (traced NTK,
    ``[P, P]``); ``test_ntk_drift`` likewise on the test probe.

    The default CKA estimator is the unbiased one (diagonals left out): its expectation does
    not depend on the probe size. ``ntk_drift`` is a plain ratio of Frobenius norms, whose
    diagonal share shrinks as ``1/P``: compare drifts at equal probe sizes.

    Args:
        estimator: ``"unbiased"`` or ``"biased"`` (see :func:`lazymeter.cka`).
    """

    name = "ntk"
    needs = "kernel"
    tags = {
        "ntk_drift": "ntk/drift",
        "ntk_cka": "ntk/cka_to_init",
        "ntk_cka_se": "ntk/cka_to_init_se",
        "test_ntk_drift": "ntk/test_drift",
        # written by the meter when its kernels are sketched (ntk=NTKOptions(outputs=Sketch(s)))
        "ntk_sketch_rel_se": "ntk/sketch_rel_se",
    }
    charts = {
        "kernel (drift, alignment, CKA)": [
            "ntk_drift",
            "alignment_train",
            "alignment_test",
            "ntk_cka",
        ]
    }
    doc = {
        "ntk_drift": "`‖K_t − K_0‖_F / ‖K_0‖_F`, empirical NTK of the train probe (outputs traced)",
        "ntk_cka": "`cka(K_t, K_0)` (`estimator=`, default unbiased): 1 while the kernel "
        "keeps its shape",
        "ntk_cka_se": "its jackknife standard error over the probe points",
        "test_ntk_drift": "`ntk_drift` on the test probe",
    }

    def __init__(self, estimator: str = "unbiased") -> None:
        self.estimator = M._check_estimator(estimator)

    def describe(self) -> dict[str, str]:
        """What the numbers depend on (written to the run's metadata)."""
        return {"keys": "ntk_cka", "estimator": self.estimator, "points": "probe"}

    def min_points(self) -> int:
        """The CKA estimator's fewest points for a value and its error bar (unbiased: 5)."""
        return E.min_points(self.estimator)

    def keys(self, ctx: MeasureContext) -> list[str]:
        base = ["ntk_drift", "ntk_cka", "ntk_cka_se"]
        return base + (["test_ntk_drift"] if ctx.has("test") else [])

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        K, K0 = ctx.kernel("train"), ctx.kernel("train", "init")
        out: dict[str, float] = {}
        ctx.attempt(out, "ntk_drift", lambda: M.ntk_drift(K, K0))
        held: dict[str, M.Estimate] = {}

        def cka() -> float:
            held["e"] = M.cka_estimate(K, K0, self.estimator)
            return held["e"].value

        ctx.attempt(out, "ntk_cka", cka)
        out["ntk_cka_se"] = held["e"].stderr if "e" in held else float("nan")
        if ctx.has("test"):
            Kt, Kt0 = ctx.kernel("test"), ctx.kernel("test", "init")
            ctx.attempt(out, "test_ntk_drift", lambda: M.ntk_drift(Kt, Kt0))
        return out
