"""Many outputs: an unbiased randomized estimate of the traced NTK from ``s`` output
projections, with its standard error.

The traced kernel ``K[i, j] = sum_o <J_o(x_i), J_o(x_j)>`` costs the equivalent of one
backward pass per output ``o`` in every engine, so a language model's ``O`` logits (hundreds
to tens of thousands) cost ``O`` backward passes per block. For a random vector ``r`` with
``E[r r^T] = I`` (Rademacher signs or standard Gaussians),

    E[<r^T J(x_i), r^T J(x_j)>] = sum_o <J_o(x_i), J_o(x_j)> = K[i, j],

so the traced kernel of the projected model ``x -> R^T f(x)`` (``R [O, s]``, columns
independent) divided by ``s`` is an unbiased estimate of ``K`` costing ``s`` backward passes.
The ``s`` columns are split into ``groups`` independent groups; each group's estimate is
unbiased, and the standard error of their mean is ``std(group estimates) / sqrt(groups)``
per entry. Relative noise per entry is about ``sqrt(2 / s)`` (Rademacher: less where a
few outputs dominate), independent of ``O``.

When to use it: when ``O`` is large (``O >> s``) and the quantity of interest is a global
summary of ``K`` (its drift, alignment, CKA, spectrum's top) rather than single entries.
The exact kernel (``outputs="all"``) is the right choice when ``O`` is small (up to a few
dozen) or when untraced kernels are needed (a sketch gives traced kernels only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .cache import CACHE
from .exact import exact_ntk, kernel_dtype
from .fsdp import full_model, needs_gather
from .functional import FunctionalModel, OutputFn, as_inputs, measured

KINDS = ("rademacher", "gaussian")


@dataclass(frozen=True)
class Sketch:
    """``empirical_ntk(..., outputs=Sketch(s=64))``: the traced kernel estimated from ``s``
    random output projections (see the module docstring).

    Attributes:
        s: number of projections (backward passes per block instead of ``O``).
        kind: ``"rademacher"`` (random signs; lower variance) or ``"gaussian"``.
        groups: independent groups the projections are split into for the standard error
            (each group is one engine call; ``s`` must be a multiple of it).
        seed: of the projections (a private generator: the global RNG is untouched).
    """

    s: int = 64
    kind: str = "rademacher"
    groups: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.s, int) or self.s < 2:
            raise ValueError(f"Sketch: s must be an int >= 2, got {self.s!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Sketch: kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.groups, int) or not 2 <= self.groups <= self.s:
            raise ValueError(f"Sketch: groups must be an int in [2, s], got {self.groups!r}")
        if self.s % self.groups:
            raise ValueError(f"Sketch: s={self.s} must be a multiple of groups={self.groups}")

    def describe(self) -> str:
        """``"sketch(s=64, rademacher)"``."""
        return f"sketch(s={self.s}, {self.kind})"


class SketchedKernel(NamedTuple):
    """A sketched traced kernel: ``kernel`` ``[P1, P2]`` (unbiased), ``stderr`` (its
    standard error per entry), ``s`` and ``kind`` of the projections."""

    kernel: Tensor
    stderr: Tensor
    s: int
    kind: str

    @property
    def rel_se(self) -> float:
        """``||stderr||_F / ||kernel||_F``: the kernel's relative standard error."""
        return float(self.stderr.norm() / self.kernel.norm().clamp_min(1e-300))


class Projected:
    """``y -> flatten(output_fn(y)) @ R``: a model output projected on ``R [O, k]``."""

    def __init__(self, output_fn: OutputFn | None, R: Tensor) -> None:
        self.output_fn, self.R = output_fn, R

    def __call__(self, y: Any) -> Tensor:
        out = y if self.output_fn is None else self.output_fn(y)
        return out.reshape(out.shape[0], -1).to(self.R.dtype) @ self.R


def projections(
    model: nn.Module,
    output_fn: OutputFn | None,
    n_out: int,
    sketch: Sketch,
    like: Tensor,
) -> list[Projected]:
    """One :class:`Projected` output function per group, the same objects for the same
    model, output function and sketch (so that routes and plans keyed by the output
    function are reused between calls); ``R`` in ``like``'s dtype and device."""
    key = (id(output_fn), n_out, sketch, like.dtype, like.device)
    table = CACHE.sketches.setdefault(model, {})
    if key not in table:
        gen = torch.Generator().manual_seed(sketch.seed)
        R = torch.randn(n_out, sketch.s, generator=gen, dtype=torch.float64)
        if sketch.kind == "rademacher":
            R = R.sign()
        R = R.to(dtype=like.dtype, device=like.device)
        k = sketch.s // sketch.groups
        table[key] = [Projected(output_fn, R[:, g * k : (g + 1) * k]) for g in range(sketch.groups)]
    return table[key]


@measured
def sketched_ntk(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    sketch: Sketch | None = None,
    output_fn: OutputFn | None = None,
    **kwargs: Any,
) -> SketchedKernel:
    """The traced NTK estimated from ``sketch.s`` random output projections, with its
    standard error per entry (see the module docstring).

    Args:
        model: as for :func:`~lazymeter.empirical_ntk`.
        x1: as for :func:`~lazymeter.empirical_ntk`.
        x2: as for :func:`~lazymeter.empirical_ntk`.
        sketch: :class:`Sketch` (default ``Sketch()``: 64 Rademacher projections in 8
            groups).
        output_fn: as for :func:`~lazymeter.empirical_ntk`.
        **kwargs: ``method``, ``chunk_size``, ``memory_budget``, ``dtype`` of
            :func:`~lazymeter.empirical_ntk`, used for each group.

    Returns:
        :class:`SketchedKernel` with ``kernel`` ``[P1, P2]``. Cost: ``sketch.groups``
        kernels of ``s / groups`` outputs each, i.e. ``s`` backward passes per block
        (instead of ``O``) and ``groups`` forward passes.
    """
    if needs_gather(model):  # a collective, as empirical_ntk on a sharded model
        with full_model(model):
            return sketched_ntk(model, x1, x2, sketch=sketch, output_fn=output_fn, **kwargs)
    sketch = sketch or Sketch()
    if kwargs.get("trace_outputs", True) is not True:
        raise ValueError("sketch: estimates the traced kernel only (trace_outputs=True)")
    kwargs.pop("trace_outputs", None)
    kwargs.pop("outputs", None)
    fm = FunctionalModel(model, output_fn)
    n_out = fm.num_outputs(as_inputs(x1, "x1", fm.device))
    target = kernel_dtype(fm.dtype, kwargs.get("dtype"))
    like = torch.empty(0, dtype=target, device=fm.device)
    k = sketch.s // sketch.groups
    parts = torch.stack(
        [
            exact_ntk(model, x1, x2, output_fn=proj, **kwargs) / k
            for proj in projections(model, output_fn, n_out, sketch, like)
        ]
    )
    kernel = parts.mean(0)
    stderr = parts.std(0, unbiased=True) / math.sqrt(sketch.groups)
    return SketchedKernel(kernel, stderr, sketch.s, sketch.kind)


def check_outputs(outputs: Any) -> str | Sketch:
    """``outputs`` of :func:`~lazymeter.empirical_ntk` and the meter, validated."""
    if isinstance(outputs, Sketch) or (isinstance(outputs, str) and outputs == "all"):
        return outputs
    raise TypeError(f"outputs: expected 'all' or a lazymeter.ntk.Sketch, got {outputs!r}")
