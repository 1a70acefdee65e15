"""How a meter computes its kernels: :class:`NTKOptions` (engine, blocks, memory, outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..validation import int_at_least
from .api import empirical_ntk
from .budget import resolve_budget
from .functional import OutputFn
from .sketch import Sketch, check_outputs, sketched_ntk


@dataclass(frozen=True)
class NTKOptions:
    """The kernel a meter measures with: ``LazyMeter(..., ntk=NTKOptions(...))``.

    Each kernel is :func:`~lazymeter.empirical_ntk` of the probe with these options (exact:
    ``K[i, j] = sum_o <J_o(x_i), J_o(x_j)>``, ``[P1, P2]``), or its estimate from random
    output projections when ``outputs`` is a :class:`~lazymeter.ntk.Sketch`.

    Attributes:
        method: the engine: ``"auto"`` (the cheapest applicable one for this model, probe
            and device; chosen once) or a name of :data:`lazymeter.ntk.ENGINES`
            (``"structured"``, ``"jacobian"``, ``"ntvp"``, ``"loop"``, or one registered).
        chunk_size: samples per block (None: the planner's choice within ``memory_budget``).
        memory_budget: bytes (or ``"2GiB"``) a kernel may use; None: from the device's free
            memory (``$LAZYMETER_MEMORY_BUDGET`` overrides it).
        outputs: ``"all"`` (exact kernels: one backward pass per output) or a
            :class:`~lazymeter.ntk.Sketch` (kernels estimated from ``s`` random output
            projections, for models with hundreds or more outputs; the same projections at
            every measurement, so that drift compares like with like; each row then carries
            ``ntk_sketch_rel_se``, the largest relative standard error ``||SE||_F / ||K||_F``
            of the kernels it measured).
    """

    method: str = "auto"
    chunk_size: int | None = None
    memory_budget: int | str | None = None
    outputs: str | Sketch = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.method, str):
            raise TypeError(
                f"method: expected an engine name such as 'auto', got {type(self.method).__name__}"
            )
        if self.chunk_size is not None:
            int_at_least(self.chunk_size, "chunk_size", 1)
        if self.memory_budget is not None:  # a typo is an error now, not at the first kernel
            resolve_budget(self.memory_budget, None)
        object.__setattr__(self, "outputs", check_outputs(self.outputs))

    @property
    def sketched(self) -> bool:
        """Whether kernels are estimated from output projections (:class:`Sketch`)."""
        return isinstance(self.outputs, Sketch)

    def kernel(
        self,
        model: nn.Module,
        x1: Any,
        x2: Any = None,
        *,
        output_fn: OutputFn | None = None,
        measure_mode: str = "eval",
    ) -> tuple[Tensor, float | None]:
        """``(K, rel_se)``: the kernel ``[P1, P2]`` of ``model`` between ``x1`` and ``x2``
        (default ``x1``) and, for a sketch, its relative standard error (else None)."""
        kw = {"output_fn": output_fn, "method": self.method, "chunk_size": self.chunk_size}
        kw.update(memory_budget=self.memory_budget, measure_mode=measure_mode)
        if isinstance(self.outputs, Sketch):
            found = sketched_ntk(model, x1, x2, sketch=self.outputs, **kw)
            return found.kernel, found.rel_se
        return empirical_ntk(model, x1, x2, **kw), None

    def describe(self) -> dict[str, Any]:
        """What the kernels depend on, for the run's metadata."""
        outputs = self.outputs.describe() if isinstance(self.outputs, Sketch) else self.outputs
        return {"method": self.method, "outputs": outputs}
