"""Test-loss decompositions: the paper's exact one for the quadratic net, and a protocol.

A *decomposition* is any callable ``model -> {name: float}`` whose values add up to
(or explain) the test loss; pass it to
``LazyMeter(quantities=lazymeter.quantities.default(metrics={"name": fn}))`` (or as a
``FunctionQuantity("name", fn)``) and it is logged at every measurement.
:class:`QuadraticDecomposition` is the paper's.
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
    W: Tensor,
    beta: Tensor,
    *,
    alpha: float,
    eps: float,
    a: Tensor | None = None,
    W0: Tensor | None = None,
    a0: Tensor | None = None,
) -> dict[str, float]:
    """Exact population test MSE of the paper's quadratic net, split in three terms.

    Model ``g(x) = alpha * f(x)`` with ``f(x) = mean_i a_i phi(w_i . x)``,
    ``phi(h) = h + eps/2 h^2`` (``a_i = 1`` when ``a`` is None), inputs ``x ~ N(0, I/D)``,
    target ``y = (beta . x)^2 / 2``. With ``M = W^T diag(a) W / N`` and ``wbar = W^T a / N``,
    ``g(x) = alpha wbar . x + alpha eps/2 x^T M x`` and:

    * ``variance = (alpha eps/2 tr(M)/D - mean(beta^2)/2)^2`` (mismatch of the mean output);
    * ``misalignment = ||alpha eps M - beta beta^T||_F^2 / (2 D^2)`` (wrong quadratic form);
    * ``linear = alpha^2 ||wbar||^2 / D`` (power in the linear part, which the target lacks);
    * ``total`` = their sum = ``E_x[(g(x) - y)^2]`` exactly.

    Centred model (``W0`` given, as with ``LazyMeter(center=True)``): ``g(x) = alpha *
    (f(x) - f0(x))``, ``f0`` the same net with first-layer weights ``W0`` and readouts ``a0``
    (the network at initialisation). ``g`` has the same form with ``M - M0`` and
    ``wbar - wbar0`` (``M0 = W0^T diag(a0) W0 / N``, ``wbar0 = W0^T a0 / N``) in place of
    ``M`` and ``wbar``, so the same three formulas hold exactly with those differences
    (``tr(M - M0)`` in ``variance``).

    Args:
        W: ``[N, D]`` first-layer weights.
        beta: ``[D]`` target direction.
        alpha: output scale, a finite real number (or a one-element tensor).
        eps: strength of the quadratic part of ``phi``, finite and real.
        a: ``[N]`` readouts, or None for all ones.
        W0: ``[N, D]`` initial first-layer weights of a centred model, or None (uncentred).
        a0: ``[N]`` initial readouts (only with ``W0``), or None for all ones.
    Returns:
        ``{"variance", "misalignment", "linear", "total"}`` as finite floats (computed in
        float64; integer, bool and half-precision tensors are promoted).
    Raises:
        TypeError: a non-tensor or complex ``W``/``beta``/``a``/``W0``/``a0``, a non-numeric
            ``alpha``/``eps``.
        ValueError: wrong shapes (``W0`` must match ``W``), ``a0`` without ``W0``, ``N = 0``
            or ``D = 0``, NaN/Inf entries or ``alpha``/``eps``, or terms that overflow float64.
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
    a64 = _readouts(a, "a", N, W64.device)
    alpha, eps = real_number(alpha, "alpha"), real_number(eps, "eps")
    M = (W64.T * a64) @ W64 / N
    wbar = W64.T @ a64 / N
    if W0 is not None:
        W064 = as_float64(W0, "W0").to(W64.device)
        if W064.shape != W64.shape:
            raise ValueError(
                f"W0: expected the initial weights of the same net, shape {tuple(W64.shape)} "
                f"like W, got {tuple(W064.shape)}"
            )
        a064 = _readouts(a0, "a0", N, W64.device)
        M = M - (W064.T * a064) @ W064 / N
        wbar = wbar - W064.T @ a064 / N
    elif a0 is not None:
        raise ValueError("a0: given without W0; pass W0 (the initial W) for a centred model")
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


def _readouts(a: Tensor | None, name: str, N: int, device: torch.device) -> Tensor:
    """``a`` as a float64 ``[N]`` tensor on ``device`` (all ones when None)."""
    if a is None:
        return torch.ones(N, dtype=torch.float64, device=device)
    a64 = as_float64(a, name).to(device)
    if a64.shape != (N,):
        raise ValueError(f"{name}: expected readouts of shape [{N}], got {tuple(a64.shape)}")
    return a64


class QuadraticDecomposition:
    """:func:`decompose_quadratic` as a LazyMeter metric: ``fn(model)`` reads ``model.W``
    (and ``model.a`` if present) and returns ``decomp_<term>`` keys.

    Passed to a meter (``quantities=lazymeter.quantities.default(metrics={"decomp": qd})``
    with ``qd = QuadraticDecomposition(...)``), it takes the meter's centring when the
    meter is built (:meth:`on_meter_setup`): on a centred meter
    (the default) the terms are those of the trained model ``alpha * (f(x) - f0(x))``, with
    the meter's initial ``W`` (and ``a``); on an uncentred one those of ``alpha * f(x)``.
    Called on its own (no meter), it is uncentred unless ``center=True`` and ``model0``.

    Args:
        beta: ``[D]`` target direction, as in :func:`decompose_quadratic`.
        alpha: the output scale (the meter's).
        eps: strength of the quadratic part of ``phi``.
        center: None (take the meter's), or the centring to insist on: a meter whose
            centring differs is a ``ValueError`` at its construction.
        model0: with ``center=True`` outside a meter, the network before training (its
            ``W`` and ``a`` are copied at construction).
    Raises:
        ValueError: ``center=True`` without ``model0`` and without a meter; ``model0`` with
            ``center=False``; a meter whose centring differs from ``center``.
        TypeError: a ``model0`` without a ``W`` attribute.
    """

    def __init__(
        self,
        beta: Tensor,
        *,
        alpha: float,
        eps: float,
        center: bool | None = None,
        model0: nn.Module | None = None,
    ) -> None:
        self.beta, self.alpha, self.eps = beta, alpha, eps
        self.center = None if center is None else bool(center)
        self.W0: Tensor | None = None
        self.a0: Tensor | None = None
        self._given_model0 = model0 is not None
        if model0 is not None:
            if self.center is False:
                raise ValueError(
                    "model0: only used with center=True; pass center=True for a centred "
                    "meter, or drop model0"
                )
            self.center = True
            self.W0 = _weights(model0, "model0").detach().clone()
            a0 = getattr(model0, "a", None)
            self.a0 = None if a0 is None else a0.detach().clone()

    def on_meter_setup(
        self, *, model: nn.Module, center: bool, params0: Mapping[str, Tensor]
    ) -> None:
        """Called by the meter at its construction and before each measurement with its
        network, centring and initial parameters by name (after a resume: the restored
        ones); the centred terms need the initial ``W`` and ``a``."""
        if self.center is not None and self.center != bool(center):
            raise ValueError(
                f"center: QuadraticDecomposition(center={self.center}) on a meter with "
                f"center={bool(center)}; drop center= (it follows the meter) or make them agree"
            )
        self.center = bool(center)
        if self.center and not self._given_model0:
            # model.W may be a view of a named parameter (a property): find it by identity
            names = {id(p): n for n, p in model.named_parameters()}
            W, a = _weights(model, "model"), getattr(model, "a", None)
            if id(W) not in names or (a is not None and id(a) not in names):
                raise TypeError(
                    "model: the centred QuadraticDecomposition needs model.W (and model.a) to "
                    "be trainable parameters of the model, so that their initial values are known"
                )
            self.W0 = params0[names[id(W)]].detach()
            self.a0 = None if a is None else params0[names[id(a)]].detach()
        elif not self.center:
            self.W0 = self.a0 = None

    def __call__(self, model: nn.Module) -> dict[str, float]:
        if self.center and self.W0 is None:
            raise ValueError(
                "model0: center=True needs the network at initialisation: pass this metric to "
                "a LazyMeter (it takes the meter's), or QuadraticDecomposition(..., "
                "model0=model) before training"
            )
        terms = decompose_quadratic(
            _weights(model, "model"),
            self.beta,
            alpha=self.alpha,
            eps=self.eps,
            a=getattr(model, "a", None),
            W0=self.W0,
            a0=self.a0,
        )
        return {f"decomp_{k}": v for k, v in terms.items()}


def _weights(model: nn.Module, name: str) -> Tensor:
    W = getattr(model, "W", None)
    if W is None:
        raise TypeError(f"{name}: QuadraticDecomposition needs a model with a `W` [N, D] attribute")
    return W
