"""Test-loss decompositions: the paper's exact one for the quadratic net, and a protocol.

A *decomposition* is any callable ``model -> {name: float}`` whose values add up to
(or explain) the test loss; pass it to ``LazyMeter(metrics={"name": fn})`` and it is
logged at every measurement. :class:`QuadraticDecomposition` is the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import torch
from torch import Tensor, nn

from .validation import as_float64, real_number


class Decomposition(Protocol):
    """``fn(model) -> {term: value}`` evaluated at each LazyMeter measurement."""

    def __call__(self, model: nn.Module) -> Mapping[str, float]: ...


def decompose_quadratic(
    W: Tensor, beta: Tensor, *, alpha: float, eps: float, a: Tensor | None = None
) -> dict[str, float]:
    """Exact population test MSE of the paper's quadratic net, split in three terms.

    Model ``f(x) = alpha * mean_i a_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2`` (uncentred;
    ``a_i = 1`` when ``a`` is None), inputs ``x ~ N(0, I/D)``, target ``y = (beta . x)^2 / 2``.
    With ``M = W^T diag(a) W / N`` and ``wbar = W^T a / N``:

    * ``variance = (alpha eps/2 tr(M)/D - mean(beta^2)/2)^2`` (mismatch of the mean output);
    * ``misalignment = ||alpha eps M - beta beta^T||_F^2 / (2 D^2)`` (wrong quadratic form);
    * ``linear = alpha^2 ||wbar||^2 / D`` (power in the linear part, which the target lacks);
    * ``total`` = their sum = ``E_x[(f(x) - y)^2]`` exactly.

    Args:
        W: ``[N, D]`` first-layer weights.
        beta: ``[D]`` target direction.
        alpha: output scale, a finite real number (or a one-element tensor).
        eps: strength of the quadratic part of ``phi``, finite and real.
        a: ``[N]`` readouts, or None for all ones.
    Returns:
        ``{"variance", "misalignment", "linear", "total"}`` as finite floats (computed in
        float64; integer, bool and half-precision tensors are promoted).
    Raises:
        TypeError: a non-tensor or complex ``W``/``beta``/``a``, a non-numeric ``alpha``/``eps``.
        ValueError: wrong shapes, ``N = 0`` or ``D = 0``, NaN/Inf entries or ``alpha``/``eps``,
            or terms that overflow float64.
    """
    W64 = as_float64(W, "W")
    if W64.dim() != 2 or W64.shape[0] == 0 or W64.shape[1] == 0:
        raise ValueError(
            f"W: expected a [N, D] tensor with N, D >= 1, got shape {tuple(W64.shape)}"
        )
    N, D = W64.shape
    b = as_float64(beta, "beta").to(W64.device)
    if b.shape != (D,):
        raise ValueError(f"beta: expected shape [{D}] to match W [N, D], got {tuple(b.shape)}")
    if a is None:
        a64 = torch.ones(N, dtype=torch.float64, device=W64.device)
    else:
        a64 = as_float64(a, "a").to(W64.device)
        if a64.shape != (N,):
            raise ValueError(f"a: expected readouts of shape [{N}], got {tuple(a64.shape)}")
    alpha, eps = real_number(alpha, "alpha"), real_number(eps, "eps")
    M = (W64.T * a64) @ W64 / N
    wbar = W64.T @ a64 / N
    variance = (alpha * eps / 2 * torch.trace(M) / D - (b**2).mean() / 2) ** 2
    misalignment = torch.linalg.matrix_norm(alpha * eps * M - torch.outer(b, b)) ** 2 / (2 * D**2)
    linear = alpha * alpha * (wbar**2).sum() / D  # not alpha**2: no OverflowError
    out = {
        "variance": float(variance),
        "misalignment": float(misalignment),
        "linear": float(linear),
    }
    out["total"] = out["variance"] + out["misalignment"] + out["linear"]
    if not all(math.isfinite(v) for v in out.values()):
        raise ValueError(
            f"alpha, eps, W, beta: the loss terms overflow float64 ({out}); rescale them "
            "(the terms grow like (alpha eps |W|^2)^2 and |beta|^4)"
        )
    return out


class QuadraticDecomposition:
    """:func:`decompose_quadratic` as a LazyMeter metric: ``fn(model)`` reads ``model.W``
    (and ``model.a`` if present) and returns ``decomp_<term>`` keys."""

    def __init__(self, beta: Tensor, *, alpha: float, eps: float) -> None:
        self.beta, self.alpha, self.eps = beta, alpha, eps

    def __call__(self, model: nn.Module) -> dict[str, float]:
        W = getattr(model, "W", None)
        if W is None:
            raise TypeError(
                "model: QuadraticDecomposition needs a model with a `W` [N, D] attribute"
            )
        terms = decompose_quadratic(
            W, self.beta, alpha=self.alpha, eps=self.eps, a=getattr(model, "a", None)
        )
        return {f"decomp_{k}": v for k, v in terms.items()}
