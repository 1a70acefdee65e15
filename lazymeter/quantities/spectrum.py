"""The eigen-spectrum of the NTK: trace, effective rank, top eigenvalues."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import metrics as M
from .base import Quantity
from .context import MeasureContext

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Spectrum(Quantity):
    """``spectrum_trace``, ``spectrum_effective_rank`` and ``spectrum_eig_1..k`` of the
    train-probe NTK ``K_t`` (see :func:`lazymeter.kernel_spectrum`); with
    ``TensorBoardSink(figures=True)`` a figure of the eigenvalues of ``K_t`` against ``K_0``.

    Args:
        k: how many top eigenvalues to record.
    """

    name = "ntk.spectrum"
    needs = "kernel"
    tags = {"spectrum_": "spectrum/"}
    doc = {
        "spectrum_trace": "`tr K_t`",
        "spectrum_effective_rank": "`(tr K_t)^2 / ‖K_t‖_F^2`",
        "spectrum_eig_1..k": "the `k` largest eigenvalues of `K_t` (`Spectrum(k)`)",
    }

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def keys(self, ctx: MeasureContext) -> list[str]:
        n = min(self.k, len(ctx.probe("train")[0]))
        return ["spectrum_trace", "spectrum_effective_rank"] + [
            f"spectrum_eig_{i + 1}" for i in range(n)
        ]

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        return {
            f"spectrum_{k}": v for k, v in M.kernel_spectrum(ctx.kernel("train"), self.k).items()
        }

    def figures(self, ctx: MeasureContext, row: Mapping[str, float]) -> dict[str, Figure]:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 3))
        ax = fig.subplots()
        for label, at in (("K_t", "now"), ("K_0", "init")):
            lam = M.symmetric_eigvals(ctx.kernel("train", at).double()).flip(0).cpu()
            ax.semilogy(lam.clamp_min(1e-30).numpy(), label=label)
        ax.set_xlabel("index")
        ax.set_ylabel("eigenvalue")
        ax.legend()
        fig.tight_layout()
        return {"lazymeter/figures/spectrum": fig}
