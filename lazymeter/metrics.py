"""Kernel and parameter metrics: pure tensor functions (no state, no logging).

Notation (DESIGN.md section 3): ``H = I - 11^T/P`` the centring matrix,
``<A, B> = sum_ij A_ij B_ij``, ``||.||_F`` the Frobenius norm. Scalars are
computed in float64 (inputs are promoted, never downcast) and returned as
Python floats.

Input contract (the same for every function here): tensors must be real
``torch.Tensor``s (a list or array is a ``TypeError``: wrap it with
``torch.as_tensor``; a complex tensor is a ``TypeError``); integer, bool and
half-precision tensors are accepted and computed in float64; NaN or Inf
entries, an empty tensor or a wrong shape are a ``ValueError``. A metric
whose formula is undefined (0/0: a constant target, a constant or zero
kernel, a zero reference) raises a ``ValueError`` naming the argument; the
:class:`~lazymeter.LazyMeter` records such a measurement as NaN with one
warning, so training goes on. Every returned number is finite. Inputs are
rescaled by a power of two (exact) before the norms, so entries near the
float64 range neither overflow nor underflow.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from . import estimators as E
from .estimators import Estimate
from .threads import torch_threads
from .validation import as_float64, check_finite, check_tensor

Params = nn.Module | Mapping[str, Tensor] | Iterable[Tensor]

_CENTERINGS = ("double", "rows", "none")


def _nonempty(x: Tensor, name: str, what: str) -> None:
    if x.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(x.shape)}); pass {what}")


def _square(K: object, name: str) -> Tensor:
    K = as_float64(K, name)
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(
            f"{name}: expected a square [P, P] Gram matrix, got shape {tuple(K.shape)}; "
            "for an untraced [P, P, O, O] NTK sum the output axes first "
            "(K.diagonal(0, 2, 3).sum(-1))"
        )
    _nonempty(K, name, "a kernel over at least one sample")
    return K


def _labels(y: object, P: int, name: str) -> Tensor:
    y = as_float64(y, name)
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2:
        raise ValueError(f"{name}: expected shape [P] or [P, C], got {tuple(y.shape)}")
    if y.shape[0] != P:
        raise ValueError(
            f"{name}: has {y.shape[0]} rows but the kernel is {P} x {P}; they must match"
        )
    _nonempty(y, name, "at least one label column")
    return y


def _exponent(*xs: Tensor) -> int:
    """``e`` with ``max |x| < 2^e`` over all ``xs`` (0 if all are zero or empty)."""

    def largest(x: Tensor) -> float:  # an inf-norm reduces without an |x| temporary
        return float(
            torch.linalg.vector_norm(x, math.inf)
            if x.is_floating_point()
            else x.double().abs().max()
        )

    m = max((largest(x) for x in xs if x.numel()), default=0.0)
    return math.frexp(m)[1] if m > 0 else 0


def _times_pow2(x: Tensor, e: int) -> Tensor:
    """``x * 2^e``, exact; in two half steps so that no factor overflows (e.g. ``2^1074``)."""
    h = e // 2
    return x * 2.0**h * 2.0 ** (e - h)


def _unit(*xs: Tensor) -> tuple[Tensor, ...]:
    """``xs`` divided by one common power of two (exact), so that ``max |x|`` is in [1/2, 1)."""
    e = _exponent(*xs)
    return tuple(_times_pow2(x, -e) for x in xs)


_EPS = float(torch.finfo(torch.float64).eps)


def _negligible(centred: Tensor, raw: Tensor) -> bool:
    """True when centring left only rounding error (a constant kernel, target or feature)."""
    return float(torch.linalg.vector_norm(centred)) <= 64 * _EPS * max(raw.shape[0], 1) * float(
        torch.linalg.vector_norm(raw)
    )


def _finite(value: Tensor | float, what: str) -> float:
    out = float(value)
    if not math.isfinite(out):  # defensive: the checks above should make this unreachable
        raise ValueError(f"{what}: the result is {out}; rescale the inputs")
    return out


def _cosine(num: Tensor, den: Tensor, what: str) -> float:
    """``num / den`` clipped to [-1, 1] (a cosine; only rounding can leave that interval)."""
    if float(den) == 0.0:
        raise ValueError(f"{what}: undefined (zero norm in the denominator)")
    return min(1.0, max(-1.0, _finite(num / den, what)))


def center_kernel(K: Tensor) -> Tensor:
    """Double-centred kernel ``H K H`` (row and column means removed), ``[P, P]``.

    ``K`` is a real square tensor without NaN/Inf (``ValueError``/``TypeError``
    otherwise). The result has ``K``'s dtype, except that half-precision inputs give
    float32 and integer/bool inputs float64; it stays differentiable in ``K``.
    """
    K = check_tensor(K, "K")
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K: expected a square [P, P] Gram matrix, got shape {tuple(K.shape)}")
    _nonempty(K, "K", "a kernel over at least one sample")
    if not K.is_floating_point():
        K = K.to(torch.float64)
    elif K.dtype in (torch.float16, torch.bfloat16):
        K = K.to(torch.float32)
    check_finite(K, "K")
    # Centre K / 2^e (exact) and scale back: the means cannot overflow.
    e = _exponent(K.detach())
    U = _times_pow2(K, -e)
    Kc = _times_pow2(U - U.mean(0, keepdim=True) - U.mean(1, keepdim=True) + U.mean(), e)
    if not bool(torch.isfinite(Kc).all()):
        raise ValueError(
            f"K: the centred kernel overflows {K.dtype} (entries near its largest value); "
            "pass K.double()"
        )
    return Kc


def _relative_distance(a: Tensor, b: Tensor, metric: str, zero_b: str) -> float:
    """``||a - b|| / ||b||`` (flattened), after a common exact rescaling; ``ValueError(zero_b)``
    when ``b`` is zero at that scale."""
    a, b = _unit(a, b)
    den = torch.linalg.vector_norm(b)
    if float(den) == 0.0:
        raise ValueError(zero_b)
    return _finite(torch.linalg.vector_norm(a - b) / den, metric)


def _centre(K: Tensor) -> Tensor:
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def _constant_kernel(name: str, metric: str, what: str = "H K H") -> str:
    return (
        f"{name}: the centred kernel {what} is zero (a constant kernel, or a single sample), "
        f"so {metric} is undefined (0/0); pass a kernel that varies across at least 2 samples"
    )


def _check_estimator(estimator: object) -> str:
    if not isinstance(estimator, str) or estimator not in E.ESTIMATORS:
        raise ValueError(
            f"estimator: expected one of {E.ESTIMATORS}, got {estimator!r}; 'unbiased' is the "
            "U-statistic (its expectation does not depend on the probe size), 'biased' the "
            "plain ratio of Frobenius products (the paper's definition)"
        )
    return estimator


def _check_centering(centering: object) -> str:
    if not isinstance(centering, str):
        raise TypeError(f"centering: expected one of {_CENTERINGS}, got {type(centering).__name__}")
    if centering not in _CENTERINGS:
        raise ValueError(f"centering: expected one of {_CENTERINGS}, got {centering!r}")
    return centering


def _ratio(A: Tensor, B: Tensor, how: str, loo: bool = True) -> tuple[Tensor, Tensor | None]:
    """``<A', B'> / sqrt(<A', A'> <B', B'>)`` for the statistic ``how`` ("double", "rows",
    "none", "unbiased"), on all points (0-d) and leaving each point out (``[n]``)."""
    if how == "unbiased":
        A, B = E.zero_diagonal(E.double_centre(A)), E.zero_diagonal(E.double_centre(B))
    ab, aa, bb = E.pair_sums(A, B, loo), E.pair_sums(A, A, loo), E.pair_sums(B, B, loo)
    stat = {"unbiased": E.hsic_u, "double": E.centred_product, "rows": E.centred_product}.get(
        how, lambda s: s.T
    )
    norm_a = E.row_centred_norm2 if how == "rows" else stat
    out: list[Tensor | None] = []
    for k in (0, 1) if loo else (0,):
        den = norm_a(aa[k]) * stat(bb[k])
        # An unbiased self-HSIC at or below round-off next to the sum of squares it is made
        # of (the estimate of a positive quantity came out <= 0) leaves no ratio: NaN.
        n = aa[k].n
        scale = aa[k].T * bb[k].T / (n * max(n - 3, 1)) ** 2 if how == "unbiased" else 0
        den = torch.where(den > 1e-12 * scale, den, torch.full_like(den, math.nan))
        out.append(stat(ab[k]) / den.sqrt())
    return out[0], out[1] if loo else None


def _unbiased_value(num_den: Tensor, names: tuple[str, str], n: int, metric: str) -> float:
    if not math.isfinite(float(num_den)):
        raise ValueError(
            f"{names[0]}: the unbiased HSIC of {names[0]} or {names[1]} with itself is not "
            f"positive on {n} points (an estimate this noisy has no ratio), so the unbiased "
            f"{metric} is undefined; measure on more points or pass estimator='biased'"
        )
    return _finite(num_den, metric)


def _enough(n: int, estimator: str, metric: str, se: bool) -> None:
    need = E.min_points(estimator) - (0 if se else 1)
    if n < need:
        raise ValueError(
            f"K: has {n} points; the {estimator} {metric}"
            f"{' with a jackknife error bar' if se else ''} needs at least {need}"
        )


def kernel_alignment(
    K: Tensor, y: Tensor, centering: str = "double", estimator: str = "biased"
) -> float:
    """Kernel-target alignment of ``K [P, P]`` with labels ``y [P]`` or ``[P, C]``.

    ``estimator="biased"`` (the paper's definition; depends on ``P``, quote it with the
    probe size):

    * ``"double"`` (centred KTA, Cortes et al. 2012; equals ``cka(K, y y^T)``):
      ``<HKH, H y y^T H> / (||HKH||_F ||H y y^T H||_F)``, in [0, 1] for a PSD ``K``.
    * ``"rows"`` (the paper's code): ``Kc = K - mean_rows(K)``, ``yc = y - mean(y)``,
      ``<Kc, yc yc^T> / (||Kc||_F ||yc^T yc||_F)`` (for ``C = 1`` the last norm is
      ``||yc||^2``).
    * ``"none"``: ``<K, y y^T> / (||K||_F ||y y^T||_F)``.

    Always in [-1, 1] (a cosine). Invariant to scaling ``K`` and ``y`` by positive
    constants. Never forms ``y y^T``: ``<A, y y^T> = tr(y^T A y)`` and
    ``||y y^T||_F = ||y^T y||_F``.

    ``estimator="unbiased"`` (``centering="double"`` only; ``P >= 4``):
    ``HSIC_u(K, yy') / sqrt(HSIC_u(K, K) HSIC_u(yy', yy'))`` with the U-statistic HSIC of
    Song et al. (2012) (diagonals removed). A ratio of unbiased estimates: its expectation
    does not depend on ``P`` (up to ``O(1/P)``), about 0 for a kernel unrelated to the
    labels; it is not clipped, so on few points it can leave [-1, 1]. Its error bar:
    :func:`alignment_estimate`.

    Undefined, hence a ``ValueError`` naming the argument: a kernel whose centred form
    is zero (a constant kernel, ``P = 1``; for ``"none"`` the zero kernel), labels
    with zero variance (constant labels, ``P = 1``; for ``"none"`` all-zero labels), and an
    unbiased self-HSIC that is not positive.
    """
    centering, estimator = _check_centering(centering), _check_estimator(estimator)
    return alignment_replicates(K, y, centering, estimator, loo=False)[0]


def alignment_replicates(
    K: Tensor, y: Tensor, centering: str = "double", estimator: str = "unbiased", loo: bool = True
) -> tuple[float, Tensor | None]:
    """``(kernel_alignment(K, y, centering, estimator), [P] leave-one-out values or None)``:
    the value and the jackknife replicates behind :func:`alignment_estimate` and
    :func:`alignment_change`, from one validation and one ``O(P^2)`` pass (keep the
    replicates of ``K_0`` to get later changes' paired errors without recomputing them)."""
    centering, estimator = _check_centering(centering), _check_estimator(estimator)
    K, Y, Kc, Yc = _alignment_inputs(K, y, centering, estimator)
    _enough(K.shape[0], estimator, "kernel_alignment", se=loo)
    if estimator == "unbiased":
        full, reps = _ratio(K, Y @ Y.T, "unbiased", loo)
        return _unbiased_value(full, ("K", "y"), K.shape[0], "kernel_alignment"), reps
    num = (Yc * (Kc @ Yc)).sum()
    den = torch.linalg.matrix_norm(Kc) * torch.linalg.matrix_norm(Yc.T @ Yc)
    value = _cosine(num, den, "kernel_alignment")
    return value, _ratio(K, Y @ Y.T, centering)[1] if loo else None


def _alignment_inputs(
    K: object, y: object, centering: str, estimator: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated, rescaled ``K``, ``Y [P, C]`` and their centred forms; the undefined cases
    (a constant kernel or target) raise."""
    if estimator == "unbiased" and centering != "double":
        raise ValueError(
            f"centering: the unbiased estimator estimates the double-centred alignment; pass "
            f"centering='double' (got {centering!r}) or estimator='biased'"
        )
    K = _square(K, "K")
    Y = _labels(y, K.shape[0], "y").to(K.device)  # labels on the CPU, kernel on a GPU
    (K,), (Y,) = _unit(K), _unit(Y)
    if centering == "double":
        Kc, Yc = _centre(K), Y - Y.mean(0)
    elif centering == "rows":
        Kc, Yc = K - K.mean(0, keepdim=True), Y - Y.mean(0)
    else:
        Kc, Yc = K, Y
    if _negligible(Kc, K):
        if centering == "none":
            raise ValueError(
                "K: is zero, so kernel_alignment is undefined (0/0); pass a non-zero kernel"
            )
        what = "H K H" if centering == "double" else "K - mean_rows(K)"
        raise ValueError(_constant_kernel("K", "kernel_alignment", what))
    if _negligible(Yc, Y):
        if centering == "none":
            raise ValueError(
                "y: is all zeros, so kernel_alignment is undefined (0/0); pass non-zero labels"
            )
        raise ValueError(
            "y: has zero variance (constant labels, or a single sample), so the centred "
            "kernel_alignment is undefined (0/0); pass labels that vary across samples "
            "(or centering='none')"
        )
    return K, Y, Kc, Yc


def alignment_estimate(
    K: Tensor, y: Tensor, centering: str = "double", estimator: str = "unbiased"
) -> Estimate:
    """:func:`kernel_alignment` with its jackknife standard error over the ``P`` points.

    Returns ``Estimate(value, stderr, n=P, estimator)``; ``value`` equals
    ``kernel_alignment(K, y, centering, estimator)``. The ``P`` leave-one-out replicates
    come from row sums in ``O(P^2)`` work and memory (forms ``y y^T``), not ``O(P^3)``.
    ``stderr`` is NaN when a replicate is undefined (an unbiased self-HSIC that is not
    positive without one point). Needs ``P >= 5`` (unbiased) or ``P >= 3`` (biased).
    """
    value, loo = alignment_replicates(K, y, centering, estimator)
    return Estimate(value, E.jackknife_se(loo), int(loo.numel()), estimator)


def alignment_change(
    K: Tensor, K0: Tensor, y: Tensor, centering: str = "double", estimator: str = "unbiased"
) -> Estimate:
    """``kernel_alignment(K, y) - kernel_alignment(K0, y)`` on the same ``P`` points, with
    the paired jackknife standard error (the leave-one-out replicates of the difference).

    Both alignments see the same points, so most of their sampling noise is shared: the
    paired error of the change is much smaller than ``sqrt(se^2 + se0^2)`` (on the paper's
    Figure-1 task, about ten times smaller). ``Estimate(value, stderr, n=P, estimator)``.
    """
    if K0.shape != K.shape:
        raise ValueError(
            f"K0: shape {tuple(K0.shape)} differs from K's {tuple(K.shape)}; both kernels "
            "must be over the same points"
        )
    (a, loo), (a0, loo0) = (alignment_replicates(k, y, centering, estimator) for k in (K, K0))
    loo0 = loo0.to(loo.device)  # K0 kept elsewhere (the CPU) than K
    return Estimate(a - a0, E.jackknife_se(loo - loo0), int(loo.numel()), estimator)


def _cka_inputs(K1: object, K2: object) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    K1, K2 = _square(K1, "K1"), _square(K2, "K2").to(K1.device)  # on K1's device
    if K1.shape != K2.shape:
        raise ValueError(
            f"K2: shape {tuple(K2.shape)} differs from K1's {tuple(K1.shape)}; both kernels "
            "must be over the same samples"
        )
    (K1,), (K2,) = _unit(K1), _unit(K2)
    A, B = _centre(K1), _centre(K2)
    for name, C, K in (("K1", A, K1), ("K2", B, K2)):
        if _negligible(C, K):
            raise ValueError(_constant_kernel(name, "cka", f"H {name} H"))
    return K1, K2, A, B


def cka(K1: Tensor, K2: Tensor, estimator: str = "biased") -> float:
    """Centred kernel alignment of two Gram matrices ``[P, P]``.

    ``estimator="biased"``: ``cka(K1, K2) = <HK1H, HK2H> / (||HK1H||_F ||HK2H||_F)``;
    symmetric, in [-1, 1] (in [0, 1] for PSD kernels), 1 when ``K1 = c K2`` (``c > 0``).
    ``estimator="unbiased"`` (``P >= 4``): ``HSIC_u(K1, K2) / sqrt(HSIC_u(K1, K1)
    HSIC_u(K2, K2))`` (the "debiased CKA"): the diagonals, which dominate small probes,
    are left out, so its expectation does not depend on ``P``; not clipped to [-1, 1].
    Error bar: :func:`cka_estimate`.
    Undefined when a centred kernel is zero (a constant kernel, ``P = 1``) or an unbiased
    self-HSIC is not positive: ``ValueError`` naming ``K1`` or ``K2``.
    """
    return _cka_replicates(K1, K2, _check_estimator(estimator), loo=False)[0]


def _cka_replicates(
    K1: Tensor, K2: Tensor, estimator: str, loo: bool
) -> tuple[float, Tensor | None]:
    """``(cka(K1, K2, estimator), [P] leave-one-out values or None)`` from one validation
    and one ``O(P^2)`` pass."""
    K1, K2, A, B = _cka_inputs(K1, K2)
    n = K1.shape[0]
    _enough(n, estimator, "cka", se=loo)
    if estimator == "unbiased":
        full, reps = _ratio(K1, K2, "unbiased", loo)
        return _unbiased_value(full, ("K1", "K2"), n, "cka"), reps
    den = torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(B)
    value = _cosine((A * B).sum(), den, "cka")
    return value, _ratio(K1, K2, "double")[1] if loo else None


def cka_estimate(K1: Tensor, K2: Tensor, estimator: str = "unbiased") -> Estimate:
    """:func:`cka` with its jackknife standard error over the ``P`` points (``O(P^2)``
    work); ``Estimate(value, stderr, n=P, estimator)``. Needs ``P >= 5`` (unbiased) or
    ``P >= 3`` (biased)."""
    estimator = _check_estimator(estimator)
    value, loo = _cka_replicates(K1, K2, estimator, loo=True)
    assert loo is not None
    return Estimate(value, E.jackknife_se(loo), int(loo.numel()), estimator)


def linear_cka(X1: Tensor, X2: Tensor) -> float:
    """Linear CKA of feature matrices ``X1 [P, d1]`` and ``X2 [P, d2]``.

    ``linear_cka(X1, X2) = cka(X1 X1^T, X2 X2^T)
    = ||X1c^T X2c||_F^2 / (||X1c^T X1c||_F ||X2c^T X2c||_F)`` with ``Xc = H X``, in [0, 1].
    Uses the feature-space form (``d x d`` matrices) when it is cheaper than
    the ``P x P`` Gram form. Trailing dimensions beyond the first are flattened.
    Undefined when a centred feature matrix is zero (features constant across samples,
    ``P = 1``): ``ValueError`` naming ``X1`` or ``X2``.
    """
    X1, X2 = as_float64(X1, "X1"), as_float64(X2, "X2").to(X1.device)  # on X1's device
    for name, X in (("X1", X1), ("X2", X2)):
        if X.dim() < 2:
            raise ValueError(
                f"{name}: expected features of shape [P, d], got {tuple(X.shape)}; for one "
                f"feature per sample pass {name}[:, None]"
            )
    if X1.shape[0] != X2.shape[0]:
        raise ValueError(f"X2: has {X2.shape[0]} samples but X1 has {X1.shape[0]}; they must match")
    for name, X in (("X1", X1), ("X2", X2)):
        _nonempty(X, name, "features of at least one sample and one dimension")
    X1, X2 = X1.flatten(1), X2.flatten(1)
    (X1,), (X2,) = _unit(X1), _unit(X2)
    P, d1, d2 = X1.shape[0], X1.shape[1], X2.shape[1]
    A, B = X1 - X1.mean(0), X2 - X2.mean(0)
    for name, C, X in (("X1", A, X1), ("X2", B, X2)):
        if _negligible(C, X):
            raise ValueError(
                f"{name}: the centred features are zero (every feature is constant across "
                "samples, or a single sample), so linear_cka is undefined (0/0); pass features "
                "that vary across at least 2 samples"
            )
    if d1 * d2 + d1 * d1 + d2 * d2 <= P * (d1 + d2 + P):
        num = torch.linalg.matrix_norm(A.T @ B) ** 2
        den = torch.linalg.matrix_norm(A.T @ A) * torch.linalg.matrix_norm(B.T @ B)
    else:
        # H X X^T H = (HX)(HX)^T: the centred Gram matrices straight from centred features.
        GA, GB = A @ A.T, B @ B.T
        num = (GA * GB).sum()
        den = torch.linalg.matrix_norm(GA) * torch.linalg.matrix_norm(GB)
    return _cosine(num, den, "linear_cka")


def ntk_drift(K: Tensor, K0: Tensor) -> float:
    """Relative kernel change ``||K - K0||_F / ||K0||_F`` (any equal shapes, e.g. untraced).

    ``>= 0``; undefined for a zero ``K0`` (``ValueError`` naming ``K0``).
    """
    K, K0 = as_float64(K, "K"), as_float64(K0, "K0").to(K.device)  # on K's device
    if K.shape != K0.shape:
        raise ValueError(
            f"K: shape {tuple(K.shape)} differs from K0's {tuple(K0.shape)}; both must be "
            "measured on the same probe inputs"
        )
    _nonempty(K0, "K0", "a kernel over at least one sample")
    return _relative_distance(
        K,
        K0,
        "ntk_drift",
        "K0: is zero (or negligible next to K), so the drift relative to it is undefined; "
        "pass a non-zero initial kernel",
    )


def _named(p: object, name: str) -> dict[str, Tensor]:
    if isinstance(p, nn.Module):
        out = dict(p.named_parameters())
    elif isinstance(p, Mapping):
        out = dict(p)
    elif isinstance(p, Tensor):
        out = {"0": p}
    elif isinstance(p, Iterable) and not isinstance(p, (str, bytes)):
        out = {str(i): t for i, t in enumerate(p)}
    else:
        raise TypeError(
            f"{name}: expected a module, a dict of tensors or an iterable of tensors, "
            f"got {type(p).__name__}"
        )
    if not out or not all(isinstance(t, Tensor) for t in out.values()):
        raise TypeError(
            f"{name}: expected a module, a dict of tensors or tensors, got none usable "
            f"({'empty' if not out else 'an entry that is not a torch.Tensor'})"
        )
    return out


def _entries(tensors: Iterable[Tensor], name: str) -> list[Tensor]:
    """The tensors, detached and checked finite; not concatenated (a model's worth of float64
    copies would cost 2x its float32 size per operand)."""
    out = [check_tensor(t, name).detach() for t in tensors]
    for t in out:
        check_finite(t, name)
    return out


def _scaled_norm(tensors: Iterable[Tensor], e: int, minus: Iterable[Tensor] | None = None) -> float:
    """``||(x - y) * 2^-e||`` over all entries (``y = 0`` without ``minus``), in float64, one
    tensor at a time (exact power-of-two scaling first, so no square overflows)."""
    total = 0.0
    for x, y in zip(tensors, minus or itertools.repeat(None), strict=minus is not None):
        d = x.to(torch.float64, copy=True)  # the one float64 temporary, updated in place
        if y is not None:
            d.sub_(y.to(d.device) if y.is_floating_point() else y.to(d.device, torch.float64))
        h = -e // 2
        d.mul_(2.0**h).mul_(2.0 ** (-e - h))  # exact, as _times_pow2
        total += float(torch.linalg.vector_norm(d)) ** 2
    return math.sqrt(total)


def parameter_movement(theta: Params, theta0: Params) -> float:
    """Relative parameter change ``||theta - theta0|| / ||theta0||`` (all entries flattened).

    ``theta`` is a module (its parameters with ``requires_grad=True``), a dict
    or a list of tensors; ``theta0`` supplies the same entries by name (e.g. a
    frozen copy of the module, or a ``state_dict``) or, failing that, by position.
    ``>= 0``. Undefined (``ValueError``) for an all-zero ``theta0``, for no trainable
    entries, and for NaN/Inf parameters.
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
    a, b = _entries(now.values(), "theta"), _entries(ref_list, "theta0")
    na, nb = (sum(t.numel() for t in ts) for ts in (a, b))
    if na != nb or any(x.numel() != y.numel() for x, y in zip(a, b, strict=False)):
        raise ValueError(f"theta: has {na} entries but theta0 has {nb}; they must match")
    if na == 0:
        raise ValueError("theta: has no (trainable) entries; pass a model with parameters")
    e = _exponent(*a, *b)
    den = _scaled_norm(b, e)
    if den == 0.0:
        raise ValueError(
            "theta0: is all zeros (or negligible next to theta), so the movement relative to "
            "it is undefined; compare weight_norm(theta) instead"
        )
    return _finite(_scaled_norm(a, e, minus=b) / den, "parameter_movement")


def weight_norm(theta: Params) -> float:
    """Euclidean norm ``||theta||`` of all entries (a module: its trainable parameters).

    0.0 for a module without trainable parameters; ``ValueError`` for NaN/Inf entries.
    """
    named = _named(theta, "theta")
    if isinstance(theta, nn.Module):
        named = {k: v for k, v in named.items() if v.requires_grad}
    xs = _entries(named.values(), "theta")
    e = _exponent(*xs)
    norm = _times_pow2(torch.tensor(_scaled_norm(xs, e), dtype=torch.float64), e)
    return _finite(norm, "theta: the norm overflows float64")


def symmetric_eigvals(K: Tensor) -> Tensor:
    """Ascending eigenvalues of a symmetric matrix ``[..., P, P]`` (``torch.linalg.eigvalsh``).

    Only the lower triangle is read. The result has ``K``'s dtype, except that
    half-precision inputs are solved in float32 and integer/bool inputs in float64.
    NaN/Inf entries, a non-square ``K`` or a solver failure give a ``ValueError``.

    Small matrices (P <= 1024) on the CPU are solved on one thread: multi-threaded LAPACK
    gains nothing there and, on a loaded machine, its thread hand-offs turned a 100 x 100
    solve from ~3 ms into ~0.6 s. The thread count is restored afterwards.
    """
    K = check_tensor(K, "K")
    if K.dim() < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"K: expected a square [..., P, P] matrix, got shape {tuple(K.shape)}")
    if not K.is_floating_point():
        K = K.to(torch.float64)
    elif K.dtype in (torch.float16, torch.bfloat16):
        K = K.to(torch.float32)
    check_finite(K, "K")
    small_cpu = K.device.type == "cpu" and K.shape[-1] <= 1024
    try:
        with torch_threads(1 if small_cpu else None):
            lam = torch.linalg.eigvalsh(K)
    except torch.linalg.LinAlgError as err:
        raise ValueError(
            f"K: the symmetric eigensolver did not converge ({err}); pass K.double()"
        ) from None
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"K: its eigenvalues overflow {K.dtype}; pass K.double()")
    return lam


def kernel_spectrum(K: Tensor, k: int = 5) -> dict[str, float]:
    """Eigen-summary of a symmetric kernel ``[P, P]`` (symmetrised as ``(K + K^T) / 2``).

    Returns ``{"trace", "effective_rank", "eig_1", ..., "eig_k"}`` with
    eigenvalues in descending order (``min(k, P)`` of them) and effective rank
    ``(sum lambda)^2 / sum lambda^2`` (1 for rank one, P for a multiple of I, 0 for
    the zero kernel). ``k`` is a positive int (``TypeError``/``ValueError`` otherwise).
    """
    K = _square(K, "K")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k: expected an int number of eigenvalues, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k: expected a positive number of eigenvalues, got {k}")
    lam = symmetric_eigvals((K + K.T) / 2).flip(0)
    out = {"trace": _finite(lam.sum(), "K: its trace overflows float64")}
    (u,) = _unit(lam)  # effective rank is scale-free: no overflow in lambda^2
    s2 = (u**2).sum()
    out["effective_rank"] = _finite(u.sum() ** 2 / s2, "effective_rank") if s2 > 0 else 0.0
    for i in range(min(int(k), lam.numel())):
        out[f"eig_{i + 1}"] = float(lam[i])
    return out
