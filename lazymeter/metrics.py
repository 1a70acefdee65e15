"""Kernel and parameter metrics: pure tensor functions (no state, no logging).

Notation (DESIGN.md section 3): ``H = I - 11^T/P`` the centring matrix,
``<A, B> = sum_ij A_ij B_ij``, ``||.||_F`` the Frobenius norm. Scalars are
computed in float64 (inputs are promoted, never downcast) and returned as
Python floats. A metric whose denominator is zero (a constant target, a zero
kernel) is NaN with a ``RuntimeWarning``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .threads import torch_threads

Params = nn.Module | Mapping[str, Tensor] | Iterable[Tensor]

_CENTERINGS = ("double", "rows", "none")


def _as_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    x = x.detach()
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or Inf; a kernel or label with them has no metric")
    return x.to(torch.promote_types(x.dtype, torch.float64))


def _square(K: object, name: str) -> Tensor:
    K = _as_tensor(K, name)
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(
            f"{name}: expected a square [P, P] Gram matrix, got shape {tuple(K.shape)}; "
            "for an untraced [P, P, O, O] NTK sum the output axes first "
            "(K.diagonal(0, 2, 3).sum(-1))"
        )
    return K


def _labels(y: object, P: int, name: str) -> Tensor:
    y = _as_tensor(y, name)
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2:
        raise ValueError(f"{name}: expected shape [P] or [P, C], got {tuple(y.shape)}")
    if y.shape[0] != P:
        raise ValueError(
            f"{name}: has {y.shape[0]} rows but the kernel is {P} x {P}; they must match"
        )
    return y


_EPS = float(torch.finfo(torch.float64).eps)


def _negligible(centred: Tensor, raw: Tensor) -> bool:
    """True when centring left only rounding error (a constant kernel, target or feature)."""
    return float(torch.linalg.vector_norm(centred)) <= 64 * _EPS * max(raw.shape[0], 1) * float(
        torch.linalg.vector_norm(raw)
    )


def _ratio(num: Tensor, den: Tensor, what: str, degenerate: bool = False) -> float:
    if degenerate or float(den) == 0.0:
        warnings.warn(
            f"{what} is undefined (zero norm); recorded as NaN", RuntimeWarning, stacklevel=3
        )
        return math.nan
    return float(num / den)


def center_kernel(K: Tensor) -> Tensor:
    """Double-centred kernel ``H K H`` (row and column means removed), ``[P, P]``."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def kernel_alignment(K: Tensor, y: Tensor, centering: str = "double") -> float:
    """Kernel-target alignment of ``K [P, P]`` with labels ``y [P]`` or ``[P, C]``.

    * ``"double"`` (centred KTA, Cortes et al. 2012; equals ``cka(K, y y^T)``):
      ``<HKH, H y y^T H> / (||HKH||_F ||H y y^T H||_F)``, in [0, 1].
    * ``"rows"`` (the paper's code): ``Kc = K - mean_rows(K)``, ``yc = y - mean(y)``,
      ``<Kc, yc yc^T> / (||Kc||_F ||yc^T yc||_F)`` (for ``C = 1`` the last norm is
      ``||yc||^2``).
    * ``"none"``: ``<K, y y^T> / (||K||_F ||y y^T||_F)``.

    Invariant to scaling ``K`` and ``y`` by positive constants. Never forms
    ``y y^T``: ``<A, y y^T> = tr(y^T A y)`` and ``||y y^T||_F = ||y^T y||_F``.
    """
    if centering not in _CENTERINGS:
        raise ValueError(f"centering: expected one of {_CENTERINGS}, got {centering!r}")
    K = _square(K, "K")
    Y = _labels(y, K.shape[0], "y")
    if centering == "double":
        Kc, Yc = center_kernel(K), Y - Y.mean(0)
    elif centering == "rows":
        Kc, Yc = K - K.mean(0, keepdim=True), Y - Y.mean(0)
    else:
        Kc, Yc = K, Y
    num = (Yc * (Kc @ Yc)).sum()
    den = torch.linalg.matrix_norm(Kc) * torch.linalg.matrix_norm(Yc.T @ Yc)
    return _ratio(num, den, "kernel_alignment", _negligible(Kc, K) or _negligible(Yc, Y))


def cka(K1: Tensor, K2: Tensor) -> float:
    """Centred kernel alignment of two Gram matrices ``[P, P]``.

    ``cka(K1, K2) = <HK1H, HK2H> / (||HK1H||_F ||HK2H||_F)``; symmetric, in
    [0, 1] for PSD kernels, 1 when ``K1 = c K2`` (``c > 0``).
    """
    K1, K2 = _square(K1, "K1"), _square(K2, "K2")
    if K1.shape != K2.shape:
        raise ValueError(f"K2: shape {tuple(K2.shape)} differs from K1's {tuple(K1.shape)}")
    A, B = center_kernel(K1), center_kernel(K2)
    den = torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B)
    return _ratio((A * B).sum(), den, "cka", _negligible(A, K1) or _negligible(B, K2))


def linear_cka(X1: Tensor, X2: Tensor) -> float:
    """Linear CKA of feature matrices ``X1 [P, d1]`` and ``X2 [P, d2]``.

    ``linear_cka(X1, X2) = cka(X1 X1^T, X2 X2^T)
    = ||X1c^T X2c||_F^2 / (||X1c^T X1c||_F ||X2c^T X2c||_F)`` with ``Xc = H X``.
    Uses the feature-space form (``d x d`` matrices) when it is cheaper than
    the ``P x P`` Gram form. Trailing dimensions beyond the first are flattened.
    """
    X1, X2 = _as_tensor(X1, "X1"), _as_tensor(X2, "X2")
    for name, X in (("X1", X1), ("X2", X2)):
        if X.dim() < 2:
            raise ValueError(f"{name}: expected features of shape [P, d], got {tuple(X.shape)}")
    if X1.shape[0] != X2.shape[0]:
        raise ValueError(f"X2: has {X2.shape[0]} samples but X1 has {X1.shape[0]}; they must match")
    X1, X2 = X1.flatten(1), X2.flatten(1)
    P, d1, d2 = X1.shape[0], X1.shape[1], X2.shape[1]
    A, B = X1 - X1.mean(0), X2 - X2.mean(0)
    degenerate = _negligible(A, X1) or _negligible(B, X2)
    if d1 * d2 + d1 * d1 + d2 * d2 <= P * (d1 + d2 + P):
        num = torch.linalg.matrix_norm(A.T @ B) ** 2
        den = torch.linalg.matrix_norm(A.T @ A) * torch.linalg.matrix_norm(B.T @ B)
    else:
        # H X X^T H = (HX)(HX)^T: the centred Gram matrices straight from centred features.
        GA, GB = A @ A.T, B @ B.T
        num = (GA * GB).sum()
        den = torch.linalg.matrix_norm(GA) * torch.linalg.matrix_norm(GB)
    return _ratio(num, den, "linear_cka", degenerate)


def ntk_drift(K: Tensor, K0: Tensor) -> float:
    """Relative kernel change ``||K - K0||_F / ||K0||_F`` (any equal shapes, e.g. untraced)."""
    K, K0 = _as_tensor(K, "K"), _as_tensor(K0, "K0")
    if K.shape != K0.shape:
        raise ValueError(f"K: shape {tuple(K.shape)} differs from K0's {tuple(K0.shape)}")
    return _ratio(torch.linalg.vector_norm(K - K0), torch.linalg.vector_norm(K0), "ntk_drift")


def _named(p: Params, name: str) -> dict[str, Tensor]:
    if isinstance(p, nn.Module):
        out = dict(p.named_parameters())
    elif isinstance(p, Mapping):
        out = dict(p)
    elif isinstance(p, Tensor):
        out = {"0": p}
    else:
        out = {str(i): t for i, t in enumerate(p)}
    if not out or not all(isinstance(t, Tensor) for t in out.values()):
        raise TypeError(f"{name}: expected a module, a dict of tensors or tensors, got none usable")
    return out


def _flat(tensors: Iterable[Tensor]) -> Tensor:
    return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])


def parameter_movement(theta: Params, theta0: Params) -> float:
    """Relative parameter change ``||theta - theta0|| / ||theta0||`` (all entries flattened).

    ``theta`` is a module (its parameters with ``requires_grad=True``), a dict
    or a list of tensors; ``theta0`` supplies the same entries by name (e.g. a
    frozen copy of the module, or a ``state_dict``) or, failing that, by position.
    """
    now = _named(theta, "theta")
    if isinstance(theta, nn.Module):
        now = {k: v for k, v in now.items() if v.requires_grad}
    ref = _named(theta0, "theta0")
    if set(now) <= set(ref):
        ref_list = [ref[k] for k in now]
    elif len(now) == len(ref):
        ref_list = list(ref.values())
    else:
        raise ValueError(
            f"theta0: has {len(ref)} tensors named differently from theta's {len(now)}; pass "
            "a copy of the same model (or its state_dict)"
        )
    a, b = _flat(now.values()), _flat(ref_list)
    if a.shape != b.shape:
        raise ValueError(
            f"theta: has {a.numel()} entries but theta0 has {b.numel()}; they must match"
        )
    diff = torch.linalg.vector_norm(a - b.to(a.device))
    return _ratio(diff, torch.linalg.vector_norm(b), "parameter_movement")


def weight_norm(theta: Params) -> float:
    """Euclidean norm ``||theta||`` of all entries (a module: its trainable parameters)."""
    named = _named(theta, "theta")
    if isinstance(theta, nn.Module):
        named = {k: v for k, v in named.items() if v.requires_grad}
    return float(torch.linalg.vector_norm(_flat(named.values()))) if named else 0.0


def symmetric_eigvals(K: Tensor) -> Tensor:
    """Ascending eigenvalues of a symmetric matrix (``torch.linalg.eigvalsh``).

    Small matrices (P <= 1024) on the CPU are solved on one thread: multi-threaded LAPACK
    gains nothing there and, on a loaded machine, its thread hand-offs turned a 100 x 100
    solve from ~3 ms into ~0.6 s. The thread count is restored afterwards.
    """
    small_cpu = K.device.type == "cpu" and K.shape[-1] <= 1024
    with torch_threads(1 if small_cpu else None):
        return torch.linalg.eigvalsh(K)


def kernel_spectrum(K: Tensor, k: int = 5) -> dict[str, float]:
    """Eigen-summary of a symmetric kernel ``[P, P]``.

    Returns ``{"trace", "effective_rank", "eig_1", ..., "eig_k"}`` with
    eigenvalues in descending order and effective rank
    ``(sum lambda)^2 / sum lambda^2`` (1 for rank one, P for a multiple of I).
    """
    K = _square(K, "K")
    if k < 1:
        raise ValueError(f"k: expected a positive number of eigenvalues, got {k}")
    lam = symmetric_eigvals((K + K.T) / 2).flip(0)
    out = {"trace": float(lam.sum())}
    out["effective_rank"] = _ratio(lam.sum() ** 2, (lam**2).sum(), "effective_rank")
    for i in range(min(k, lam.numel())):
        out[f"eig_{i + 1}"] = float(lam[i])
    return out
