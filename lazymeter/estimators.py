"""Biased and unbiased (U-statistic) estimators of kernel alignment and CKA, with jackknife
standard errors in ``O(P^2)`` work.

Every statistic here is a function of four sums over a pair of symmetric ``[n, n]``
matrices ``A``, ``B`` (:class:`Sums`):

* ``T = <A, B>``, ``SA = 1'A1``, ``SB = 1'B1``, ``Q = 1'AB1 = (A1).(B1)``.

The same sums with point ``i`` left out follow from per-row quantities (row sums ``r``,
``rows_i = sum_k A_ik B_ik``, the products ``A r_B`` and ``B r_A``), so all ``n``
leave-one-out replicates cost two matrix-vector products, not ``n`` recomputations:

* ``T_-i = T - 2 rows_i + A_ii B_ii``, ``SA_-i = SA - 2 rA_i + A_ii``,
* ``Q_-i = Q - (A rB)_i - (B rA)_i + rows_i - (rA_i - A_ii)(rB_i - B_ii)``.

Statistics (``n`` points):

* biased, double centred: ``<HAH, HBH> = T - 2Q/n + SA SB / n^2`` (``(n-1)^2 HSIC_b``);
* unbiased HSIC (Song et al. 2012), on ``A``, ``B`` with zeroed diagonals:
  ``HSIC_u = [T + SA SB / ((n-1)(n-2)) - 2 Q / (n-2)] / (n (n-3))``;
* "rows" (the paper's code) normalises the kernel by ``||A - 1 mean_rows(A)||_F^2 =
  T_AA - Q_AA / n``.

``HSIC_u`` is exactly invariant to adding ``g_i + g_j`` to ``A_ij`` (every such term
cancels over the distinct index tuples of the U-statistic), so kernels are double-centred
before the sums: the same number, without the cancellation of a large constant mode.

The jackknife standard error of a statistic ``theta`` is
``sqrt((n-1)/n * sum_i (theta_-i - mean theta_-)^2)`` (Efron & Stein: an upward-biased
variance estimate, so the error bar errs on the wide side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

ESTIMATORS = ("biased", "unbiased")


class Estimate(NamedTuple):
    """A number with its standard error and what it depends on.

    Attributes:
        value: the estimate on all ``n`` points.
        stderr: its standard error (jackknife over points), in the units of ``value``.
        n: the number of points (probe size) it was measured on.
        estimator: ``"biased"`` (V-statistic: depends on ``n`` through the diagonal) or
            ``"unbiased"`` (U-statistic: its expectation does not depend on ``n``).
        method: ``"dense"`` (from the ``[n, n]`` kernel) or ``"matrix_free"``
            (:func:`lazymeter.ntk_alignment` from kernel-vector products).
        estimator_se: the part of ``stderr`` due to a randomised trace estimate (0 when
            dense); the rest is the sampling error of the ``n`` points.
    """

    value: float
    stderr: float
    n: int
    estimator: str
    method: str = "dense"
    estimator_se: float = 0.0


@dataclass(frozen=True)
class Sums:
    """``T = <A,B>``, ``SA = 1'A1``, ``SB = 1'B1``, ``Q = 1'AB1`` over ``n`` points; each a
    0-d tensor (all points) or a ``[n]`` tensor (point ``i`` left out)."""

    T: Tensor
    SA: Tensor
    SB: Tensor
    Q: Tensor
    n: int


def pair_sums(A: Tensor, B: Tensor, loo: bool = True) -> tuple[Sums, Sums | None]:
    """The sums of ``A``, ``B`` (symmetric ``[n, n]``) on all points and (``loo``) leaving
    each point out."""
    n = A.shape[0]
    rA, rB, dA, dB = A.sum(1), B.sum(1), A.diagonal(), B.diagonal()
    rows = (A * B).sum(1)
    full = Sums(rows.sum(), rA.sum(), rB.sum(), rA @ rB, n)
    if not loo:
        return full, None
    left = Sums(
        full.T - 2 * rows + dA * dB,
        full.SA - 2 * rA + dA,
        full.SB - 2 * rB + dB,
        full.Q - A @ rB - B @ rA + rows - (rA - dA) * (rB - dB),
        n - 1,
    )
    return full, left


def centred_product(s: Sums) -> Tensor:
    """``<HAH, HBH> = T - 2Q/n + SA SB / n^2``."""
    return s.T - 2 * s.Q / s.n + s.SA * s.SB / s.n**2


def row_centred_norm2(s: Sums) -> Tensor:
    """``||A - 1 mean_rows(A)||_F^2 = T - Q/n`` for ``s = sums(A, A)``."""
    return s.T - s.Q / s.n


def hsic_u(s: Sums) -> Tensor:
    """Unbiased HSIC from the sums of two zero-diagonal kernels (needs ``n >= 4``)."""
    n = s.n
    return (s.T + s.SA * s.SB / ((n - 1) * (n - 2)) - 2 * s.Q / (n - 2)) / (n * (n - 3))


def zero_diagonal(A: Tensor) -> Tensor:
    return A - torch.diag_embed(A.diagonal())


def double_centre(A: Tensor) -> Tensor:
    return A - A.mean(0, keepdim=True) - A.mean(1, keepdim=True) + A.mean()


def jackknife_se(loo: Tensor) -> float:
    """``sqrt((n-1)/n * sum_i (theta_-i - mean)^2)`` of ``n`` leave-one-out values; NaN when a
    replicate is undefined (NaN)."""
    n = loo.numel()
    if not bool(torch.isfinite(loo).all()):
        return math.nan
    return float(((n - 1) / n * ((loo - loo.mean()) ** 2).sum()).sqrt())


def min_points(estimator: str) -> int:
    """Fewest points for a value and a jackknife error bar: the unbiased HSIC needs 4 points
    (5 for the leave-one-out replicates), the biased one 2 (3)."""
    return 5 if estimator == "unbiased" else 3
