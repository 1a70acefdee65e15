"""Kernel drift and CKA to initialisation: how far the empirical NTK has moved."""

from __future__ import annotations

from collections.abc import Mapping

from .. import metrics as M
from .base import Quantity
from .context import MeasureContext


class KernelDrift(Quantity):
    """``ntk_drift = ||K_t - K_0||_F / ||K_0||_F`` and ``ntk_cka = cka(K_t, K_0)`` on the
    train probe (traced NTK, ``[P, P]``); ``test_ntk_drift`` likewise on the test probe."""

    name = "ntk"
    needs = "kernel"
    tags = {
        "ntk_drift": "ntk/drift",
        "ntk_cka": "ntk/cka_to_init",
        "test_ntk_drift": "ntk/test_drift",
        # written by the meter when its kernels are sketched (LazyMeter(ntk_outputs=Sketch))
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
        "ntk_cka": "`cka(K_t, K_0)`: 1 while the kernel keeps its shape",
        "test_ntk_drift": "`ntk_drift` on the test probe",
    }

    def keys(self, ctx: MeasureContext) -> list[str]:
        return ["ntk_drift", "ntk_cka"] + (["test_ntk_drift"] if ctx.has("test") else [])

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        K, K0 = ctx.kernel("train"), ctx.kernel("train", "init")
        out: dict[str, float] = {}
        ctx.attempt(out, "ntk_drift", lambda: M.ntk_drift(K, K0))
        ctx.attempt(out, "ntk_cka", lambda: M.cka(K, K0))
        if ctx.has("test"):
            Kt, Kt0 = ctx.kernel("test"), ctx.kernel("test", "init")
            ctx.attempt(out, "test_ntk_drift", lambda: M.ntk_drift(Kt, Kt0))
        return out
