"""``empirical_ntk``: the public entry point over the engine registry."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .engines import ENGINES
from .functional import FunctionalModel, OutputFn, as_inputs, num_samples

#: Bytes that the per-sample Jacobian blocks of one call may occupy when
#: ``chunk_size`` is None (override per call with ``memory_budget=``).
DEFAULT_MEMORY_BUDGET = 512 * 2**20

# Live copies per Jacobian entry: the two blocks being contracted plus the
# cotangent/gradient buffers of the vmapped backward pass.
_COPIES = 3


def auto_chunk_size(n_samples: int, n_out: int, n_params: int, itemsize: int, budget: int) -> int:
    """Largest chunk whose ``[chunk, O, n_params]`` Jacobian blocks fit in ``budget`` bytes."""
    per_sample = _COPIES * n_out * n_params * itemsize
    return int(max(1, min(n_samples, budget // max(per_sample, 1))))


def choose_method(
    fm: FunctionalModel, x1: tuple[Tensor, ...], n2: int | None, n_out: int, trace: bool
) -> str:
    """Pick the cheaper engine from a FLOP model.

    With ``F`` the forward FLOPs of one sample and ``n`` the parameter count:
    jacobian ~ ``3 F O (P1 + P2) + 2 P1 P2 O n`` (``O^2 n`` untraced);
    ntvp ~ ``3 F O P1 + 3 F O P1 P2``. The structured engine, when
    registered, is preferred by its own ``applicable`` test.
    """
    structured = ENGINES.get("structured")
    if structured is not None and getattr(structured, "applicable", lambda fm: False)(fm):
        return "structured"
    F = fm.forward_flops(x1)
    if F <= 0:
        return "jacobian"
    p1 = num_samples(x1)
    p2 = p1 if n2 is None else n2
    n = fm.n_params
    contract = 2.0 * p1 * p2 * n * n_out * (1 if trace else n_out)
    jac = 3.0 * F * n_out * (p1 + (0 if n2 is None else p2)) + contract
    ntvp = 3.0 * F * n_out * p1 * (1 + p2)
    return "jacobian" if jac <= ntvp else "ntvp"


def select_method(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    trace_outputs: bool = True,
) -> str:
    """The engine ``method="auto"`` would use for these shapes (to resolve it once for many
    calls on same-shaped inputs, as :class:`~lazymeter.LazyMeter` does)."""
    fm = FunctionalModel(model, output_fn)
    xs1 = as_inputs(x1, "x1", fm.device)
    n2 = None if x2 is None else num_samples(as_inputs(x2, "x2", fm.device))
    return choose_method(fm, xs1, n2, fm.num_outputs(xs1), trace_outputs)


def empirical_ntk(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    method: str = "auto",
    trace_outputs: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> Tensor:
    """Empirical neural tangent kernel of ``model`` between two input sets.

    ``K[i, j] = sum_o <J_o(x1_i), J_o(x2_j)>`` where ``J_o(x)`` is the gradient
    of output ``o`` w.r.t. every parameter with ``requires_grad=True``
    (outputs traced by summing, not averaging). With ``trace_outputs=False``,
    ``K[i, j, o, q] = <J_o(x1_i), J_q(x2_j)>``.

    Args:
        model: any ``nn.Module``; used in its current mode with its buffers as
            they are (nothing is updated). Frozen parameters are constants.
        x1: ``[P1, ...]`` inputs (a Tensor, or a tuple of Tensors sharing dim 0;
            integer token ids are fine).
        x2: ``[P2, ...]`` inputs, or None for the symmetric kernel of ``x1``
            (Jacobians computed once when they fit; result exactly symmetric).
        output_fn: maps the model's batched output to a ``[B, ...]`` Tensor,
            e.g. ``lambda y: y[:, -1]`` (last position) or ``lambda y: y["logits"]``.
            Trailing dimensions are flattened into ``O`` outputs.
        method: ``"auto"`` or a key of :data:`lazymeter.ntk.ENGINES`
            (``"jacobian"``: Jacobian contraction; ``"ntvp"``: NTK-vector products).
        trace_outputs: sum over outputs (``[P1, P2]``) or keep them (``[P1, P2, O, O]``).
        chunk_size: samples per block; None picks the largest block whose
            ``[chunk, O, n_params]`` Jacobians fit in ``memory_budget``.
        memory_budget: bytes for Jacobian blocks (default :data:`DEFAULT_MEMORY_BUDGET`).

    Returns:
        ``K`` on the model's device, in the model's parameter dtype.
    """
    fm = FunctionalModel(model, output_fn)
    xs1 = as_inputs(x1, "x1", fm.device)
    xs2 = None if x2 is None else as_inputs(x2, "x2", fm.device)
    if method != "auto" and method not in ENGINES:
        raise ValueError(f"method: unknown {method!r}; choose 'auto' or one of {sorted(ENGINES)}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ValueError(f"memory_budget: expected a positive number of bytes, got {memory_budget}")

    n_out = fm.num_outputs(xs1)
    if method == "auto":
        method = choose_method(
            fm, xs1, None if xs2 is None else num_samples(xs2), n_out, trace_outputs
        )
    if chunk_size is None:
        longest = max(num_samples(xs1), 0 if xs2 is None else num_samples(xs2))
        plan = getattr(ENGINES[method], "plan_chunk", None)
        if plan is not None:
            chunk_size = plan(
                fm, xs1, n_out=n_out, trace=trace_outputs, budget=budget, n_samples=longest
            )
        else:
            chunk_size = auto_chunk_size(longest, n_out, fm.n_params, fm.dtype.itemsize, budget)
            if method == "ntvp":
                # Pushing c*O tangents through c samples holds c^2 O activations (and tangents).
                per_pair = 4 * n_out * max(fm.activation_bytes(xs1), 1)
                chunk_size = max(1, min(chunk_size, math.isqrt(budget // per_pair)))
    # The kernel is a measurement: it must not record into the user's autograd graph.
    with torch.no_grad():
        return ENGINES[method](
            fm, xs1, xs2, n_out=n_out, trace=trace_outputs, chunk_size=chunk_size, budget=budget
        )
