"""``empirical_ntk``: the public entry point. It gathers a model sharded with
``fully_shard`` (:mod:`~lazymeter.ntk.fsdp`), sends a ``Sketch`` to
:mod:`~lazymeter.ntk.sketch` and an exact kernel to :mod:`~lazymeter.ntk.exact`; both of
those build on ``exact``, never on this module."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .exact import exact_ntk
from .fsdp import full_model, needs_gather
from .functional import OutputFn, measured
from .sketch import check_outputs, sketched_ntk


@measured
def empirical_ntk(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    output_fn: OutputFn | None = None,
    method: str = "auto",
    trace_outputs: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | str | None = None,
    dtype: torch.dtype | None = None,
    outputs: Any = "all",
    per_layer: bool = False,
    measure_mode: str = "eval",
) -> Tensor | dict[str, Tensor]:
    """Empirical neural tangent kernel of ``model`` between two input sets.

    ``K[i, j] = sum_o <J_o(x1_i), J_o(x2_j)>`` where ``J_o(x)`` is the gradient
    of output ``o`` w.r.t. every parameter with ``requires_grad=True``
    (outputs traced by summing, not averaging). With ``trace_outputs=False``,
    ``K[i, j, o, q] = <J_o(x1_i), J_q(x2_j)>``.

    Args:
        model: any ``nn.Module``; measured as the meter measures it (``measure_mode``),
            with its buffers as they are (nothing is updated: forwards see copies).
            Frozen parameters are constants.
        x1: ``[P1, ...]`` inputs (a Tensor, or a tuple of Tensors sharing dim 0;
            integer token ids are fine).
        x2: ``[P2, ...]`` inputs, or None for the symmetric kernel of ``x1``
            (Jacobians computed once when they fit; result exactly symmetric).
        output_fn: maps the model's batched output to a ``[B, ...]`` Tensor,
            e.g. ``lambda y: y[:, -1]`` (last position) or ``lambda y: y["logits"]``.
            Trailing dimensions are flattened into ``O`` outputs.
        method: ``"auto"`` (the applicable registered engine with the lowest estimated
            cost) or a key of :data:`lazymeter.ntk.ENGINES` (the built-in engines are
            described in the NTK engines guide).
        trace_outputs: sum over outputs (``[P1, P2]``) or keep them (``[P1, P2, O, O]``).
        chunk_size: samples per block; None lets the engine size its blocks to
            ``memory_budget`` (:meth:`~lazymeter.ntk.engines.Engine.plan_chunk`).
        memory_budget: bytes (or a size such as ``"2GiB"``) for the Jacobian blocks and
            per-layer features of one call; default ``$LAZYMETER_MEMORY_BUDGET``, else a
            fraction of what the model's device has free now (half the free GPU memory,
            a quarter of the available RAM: :mod:`lazymeter.ntk.budget`). Every engine
            sizes its blocks to it.
        dtype: precision of the Jacobians and of their sums. Default: float32 for
            float16/bfloat16 models (a half-precision sum over millions of parameters
            loses most of its digits), else the model's dtype; ``torch.float64`` on
            request. A model of another dtype is evaluated through a cast copy of its
            parameters and buffers (kept between calls, refreshed each call), at the
            model's current parameter values; floating inputs are cast alike.
        outputs: ``"all"`` (exact: every engine costs the equivalent of one backward
            pass per output, per block) or a :class:`~lazymeter.ntk.sketch.Sketch`: an
            unbiased estimate of the traced kernel from ``s`` random output projections
            (``s`` backward passes instead of ``O``; for language-model-sized outputs).
            :func:`~lazymeter.ntk.sketch.sketched_ntk` also returns its standard error.
        per_layer: return the kernel split by parameter group instead: ``{group: K_g}``
            with ``K_g[i, j] = sum_o sum_{p in g} <J_{o,p}(x1_i), J_{o,p}(x2_j)>``, one
            group per module that owns trainable parameters (named as in
            ``named_modules()``; a parameter of the root module is a group named after
            it; :func:`~lazymeter.ntk.groups.parameter_groups` lists them), so that
            ``sum_g K_g = K`` (to rounding). Each ``K_g`` has ``K``'s shape. An engine
            whose ``compute_groups`` keeps the split does it in one pass (the cost of
            ``K``, ``G`` times its memory); the default computes each group's kernel
            separately (the NTK engines guide says which does which). Exact outputs only
            (``outputs="all"``).

        measure_mode: ``"eval"`` (default: every module in eval mode for the call, so no
            dropout of any kind and BatchNorm on its running statistics) or ``"as_is"``
            (the model's own modes, ``nn.Dropout`` modules off; a train-mode BatchNorm is
            then a ``ValueError``: it has no per-sample NTK). Either way the global RNG is
            forked (left as it was), autocast is off and every flag is restored: two calls
            on the same model return the same kernel. Inside a meter's measurement the
            meter's mode holds.

    Returns:
        ``K`` on the model's device, in ``dtype`` (see above); a dict of them with
        ``per_layer=True``.

    A model sharded with ``fully_shard`` (FSDP2) is measured on its full parameters:
    the call is then a collective (every rank calls it, with the same inputs for the
    same kernel), each rank gathers the full model for its duration
    (:func:`lazymeter.fsdp.full_model`) and returns the whole kernel.
    """
    if needs_gather(model):
        with full_model(model):
            return empirical_ntk(
                model, x1, x2, output_fn=output_fn, method=method, trace_outputs=trace_outputs,
                chunk_size=chunk_size, memory_budget=memory_budget, dtype=dtype,
                outputs=outputs, per_layer=per_layer, measure_mode=measure_mode,
            )  # fmt: skip
    if not isinstance(per_layer, bool):
        raise TypeError(f"per_layer: expected True or False, got {per_layer!r}")
    if per_layer and not (isinstance(outputs, str) and outputs == "all"):
        raise ValueError(
            "per_layer: per-layer kernels are exact only; pass outputs='all' (a sketched "
            "kernel is not split by layer)"
        )
    if not (isinstance(outputs, str) and outputs == "all"):
        return sketched_ntk(
            model, x1, x2, sketch=check_outputs(outputs), output_fn=output_fn, method=method,
            trace_outputs=trace_outputs, chunk_size=chunk_size, memory_budget=memory_budget,
            dtype=dtype,
        ).kernel  # fmt: skip
    return exact_ntk(
        model, x1, x2, output_fn=output_fn, method=method, trace_outputs=trace_outputs,
        chunk_size=chunk_size, memory_budget=memory_budget, dtype=dtype, per_layer=per_layer,
        measure_mode=measure_mode,
    )  # fmt: skip
