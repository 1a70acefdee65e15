"""Kernel-target alignment of a model's NTK on a whole data set: dense or matrix-free.

``ntk_alignment(model, x, y)`` returns the alignment of the traced empirical NTK ``K`` of
``model`` on ``x [P, ...]`` with labels ``y``, and its standard error. Every statistic of
:mod:`lazymeter.estimators` is a function of a few sums; matrix-free, each comes from
products with ``K`` (:class:`~lazymeter.ntk.operator.KernelOperator`), never from ``K``:

* ``<K, Y Y^T> = sum_c y_c^T K y_c = sum_{c,o} ||J_o^T y_c||^2``: reverse passes only;
* ``K 1`` (row sums) and ``1^T K 1``: one product;
* ``diag(K)`` (per-sample gradient norms): the kernel of each block of 256 points;
* ``||HKH||_F^2 = sum_i ||(HKH)_i||^2``: estimated from ``r`` rows drawn at random,
  ``K[I, :] = K E_I`` (kernel products with unit vectors, which the structured engine
  computes a block at a time), centred with the exact row sums: ``(P / r) sum_{i in I}
  ||(HKH)_i||^2``, with the standard error of a mean of ``r`` draws without replacement.
  Random-sign (Hutchinson, Hutch++) probes were tried first: at initialisation the centred
  NTK of the paper's net has a flat spectrum (about ``D`` equal eigenvalues), where they
  need many more products for the same error, and each product costs a backward and a
  forward-mode pass per probe vector. ``||K||_F^2`` follows from the exact row sums.

The label side (``Y Y^T``) is low-rank and computed exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .. import estimators as E
from ..estimators import Estimate
from ..metrics import _check_centering, _check_estimator, alignment_estimate, cka_estimate
from ..probes import targets
from .api import empirical_ntk
from .functional import OutputFn, as_inputs, deterministic, num_samples, slice_inputs
from .operator import KernelOperator

METHODS = ("auto", "dense", "matrix_free")


def _labels(y: Any, P: int) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor of labels, got {type(y).__name__}")
    if y.shape[0] != P:
        raise ValueError(f"y: has {y.shape[0]} rows but x has {P} points; they must match")
    if not y.is_floating_point() and y.dim() != 1:
        raise ValueError("y: integer labels must be class ids of shape [P]")
    Y = targets(y.detach())
    if not bool(torch.isfinite(Y).all()):
        raise ValueError("y: has NaN or Inf entries")
    if float((Y - Y.mean(0)).abs().max()) == 0.0:
        raise ValueError("y: has zero variance (constant labels); the alignment is undefined")
    return Y


def ntk_alignment(
    model: nn.Module,
    x: Any,
    y: Tensor,
    *,
    estimator: str = "unbiased",
    centering: str = "double",
    method: str = "auto",
    output_fn: OutputFn | None = None,
    dtype: torch.dtype | None = None,
    max_dense: int = 4096,
    rows: int = 256,
    se_points: int = 1000,
    seed: int = 0,
    memory_budget: int | str | None = None,
) -> Estimate:
    """Alignment of ``model``'s empirical NTK on ``x`` with labels ``y``, with its error bar.

    The quantity is :func:`lazymeter.kernel_alignment` of ``K = empirical_ntk(model, x)``
    (``estimator="unbiased"``: the U-statistic HSIC ratio, whose expectation does not depend
    on the number of points; ``"biased"`` with ``centering="double"|"rows"|"none"``: the
    plain ratios, ``"rows"`` being the paper's definition).

    Methods (``"auto"``: dense up to ``max_dense`` points, else matrix-free):

    * ``"dense"``: forms ``K [P, P]`` (``O(P^2)`` memory) and returns
      :func:`lazymeter.alignment_estimate` (jackknife standard error over the points).
    * ``"matrix_free"``: never forms ``K``; memory ``O(P + r * 4096)`` plus one block of
      activations. Cost: ``C O`` backward passes over the ``P`` points for the label terms,
      one kernel-vector product (``K 1``: a backward and a forward-mode pass per output),
      ``r`` kernel rows ``K[I, :]`` (``r P`` entries by the fastest engine), the diagonal
      blockwise, and a dense kernel on ``se_points`` points for the sampling error. Needs
      forward-mode AD rules for every op of the model.

    Standard error of the matrix-free result: ``sqrt(sampling^2 + estimator^2)``, where the
    sampling part (the points are a sample of the data distribution) is the jackknife error
    on a seeded subsample of ``se_points`` points scaled by ``sqrt(se_points / P)`` (the
    leading ``1/P`` term of a U-statistic's variance), and the estimator part is the
    row-sampling standard error of ``||HKH||_F^2`` carried through to the alignment (also in
    ``Estimate.estimator_se``; 0 for the dense method).

    Args:
        model: any ``nn.Module``; measured in eval mode (no dropout of any kind, BatchNorm
            on its running statistics, autocast off, the RNG forked), its modes restored
            after: a measurement is deterministic.
        x: ``[P, ...]`` inputs (Tensor or tuple of Tensors).
        y: ``[P]`` or ``[P, C]`` real labels, or ``[P]`` integer class ids (one-hot).
        estimator: ``"unbiased"`` or ``"biased"``.
        centering: ``"double"`` (required by the unbiased estimator), ``"rows"``, ``"none"``.
        method: ``"auto"``, ``"dense"`` or ``"matrix_free"``.
        output_fn: as in :func:`lazymeter.empirical_ntk`.
        dtype: precision of the kernel or of the products (default: as
            :func:`~lazymeter.empirical_ntk`, the model's, float32 for a float16/bfloat16
            model).
        max_dense: the largest ``P`` that ``"auto"`` computes densely.
        rows: ``r``, kernel rows sampled for ``||HKH||_F^2`` (its standard error
            ``~ 1/sqrt(r)``).
        se_points: points of the dense subsample behind the sampling error.
        seed: of the random vectors and of the subsample.
        memory_budget: bytes for one block of tangents and activations (None: from the
            device, as for :func:`~lazymeter.empirical_ntk`).
    Returns:
        :class:`~lazymeter.Estimate` ``(value, stderr, n=P, estimator, method,
        estimator_se)``.
    """
    estimator, centering = _check_estimator(estimator), _check_centering(centering)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if estimator == "unbiased" and centering != "double":
        raise ValueError(
            "centering: the unbiased estimator estimates the double-centred alignment; pass "
            "centering='double' or estimator='biased'"
        )
    for name, v in (("rows", rows), ("se_points", se_points)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 5:
            raise ValueError(f"{name}: expected an int >= 5, got {v!r}")
    xs = as_inputs(x, "x")
    P = num_samples(xs)
    Y = _labels(y, P)
    if P < E.min_points(estimator):
        raise ValueError(
            f"x: has {P} points; the {estimator} alignment needs at least {E.min_points(estimator)}"
        )
    with deterministic(model):
        dense = method == "dense" or (method == "auto" and P <= max_dense)

        def kernel(a: Any, b: Any = None) -> Tensor:
            return empirical_ntk(model, a, b, output_fn=output_fn, dtype=dtype)

        if dense:
            K = kernel(xs)
            est = alignment_estimate(K, Y.to(K.device), centering, estimator)
            return est._replace(method="dense")

        op = KernelOperator(
            model, xs, output_fn=output_fn, dtype=dtype, memory_budget=memory_budget
        )
        g = torch.Generator().manual_seed(seed)
        try:
            t2, t2_se, K1, d, quad = _matrix_free_terms(op, kernel, Y, rows, g)
        except NotImplementedError as e:  # torch's words name the op, not the way out
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"method: 'matrix_free' needs forward-mode AD (torch.func.jvp) for every "
                f"operation of the model, and one has none ({first}); pass method='dense' "
                f"(exact, a P x P kernel; up to max_dense={max_dense} points by default)"
            ) from None
        Y = _cpu64(Y)  # beside the sums (labels may live on the model's GPU)
        value = _alignment(t2, K1, d, quad, Y, estimator, centering)
        if not math.isfinite(value):
            raise ValueError(
                "x: the unbiased HSIC of the kernel with itself is not positive on these points; "
                "use more points or estimator='biased'"
            )
        lo = _alignment(max(t2 - t2_se, 0.0), K1, d, quad, Y, estimator, centering)
        hi = _alignment(t2 + t2_se, K1, d, quad, Y, estimator, centering)
        est_se = abs(hi - lo) / 2 if math.isfinite(lo) else math.inf
        # sampling error from a dense jackknife on a seeded subsample, scaled to P points
        m = min(P, se_points)
        idx = torch.randperm(P, generator=g)[:m].sort().values.to(xs[0].device)
        sub = tuple(t[idx] for t in xs) if m < P else slice_inputs(xs, 0, P)
        Ks = kernel(sub)
        sub_se = alignment_estimate(Ks, Y[idx.cpu()].to(Ks.device), centering, estimator).stderr
        samp_se = sub_se * math.sqrt(m / P)
        return Estimate(value, math.hypot(samp_se, est_se), P, estimator, "matrix_free", est_se)


def _cpu64(t: Tensor) -> Tensor:
    return t.to("cpu", torch.float64)


def _row_blocks(kernel: Any, xs: tuple[Tensor, ...], idx: Tensor, block: int = 4096) -> Any:
    """``(a, K[idx, a:a+block])`` over column blocks (memory ``len(idx) x block``, not
    ``len(idx) x P``); ``kernel(x1, x2)`` is the kernel between two input sets."""
    sub = tuple(t[idx.to(t.device)] for t in xs)
    P = num_samples(xs)
    for a in range(0, P, block):
        yield a, _cpu64(kernel(sub, slice_inputs(xs, a, min(a + block, P))))


def _matrix_free_terms(
    op: KernelOperator,
    kernel: Any,
    Y: Tensor,
    r: int,
    g: torch.Generator,
) -> tuple[float, float, Tensor, Tensor, Tensor]:
    """``(||HKH||_F^2 estimate, its standard error, K 1, diag K, [y_c^T K y_c])``, float64
    on the CPU. ``kernel(x1, x2)`` is the model's kernel between two input sets."""
    P = op.P
    K1, d = _cpu64(op.row_sums()), _cpu64(op.diagonal())
    quad = _cpu64(op.quadratic(Y.to(op.device)))
    # ||HKH||_F^2 = sum_i ||(HKH)_i||^2, estimated from r rows drawn without replacement;
    # (HKH)_ij = K_ij - c_i - c_j + cbar with c = K1 / P, cbar = 1^T K 1 / P^2 (exact)
    r = min(r, P)
    idx = torch.randperm(P, generator=g)[:r]
    c, cbar = K1 / P, K1.sum() / P**2
    sq = torch.zeros(r, dtype=torch.float64)
    for a, Kb in _row_blocks(kernel, op.xs, idx):
        sq += (Kb - c[idx, None] - c[None, a : a + Kb.shape[1]] + cbar).pow(2).sum(1)
    t2 = float(sq.mean()) * P
    # standard error of a mean of r draws without replacement from P rows
    t2_se = float(sq.std()) * P / math.sqrt(r) * math.sqrt(max(1 - r / P, 0.0)) if r > 1 else 0.0
    return t2, t2_se, K1, d, quad


def _alignment(
    t2: float, K1: Tensor, d: Tensor, quad: Tensor, Y: Tensor, estimator: str, centering: str
) -> float:
    """The alignment from the matrix-free sums, given ``t2 = ||HKH||_F^2``."""
    n = Y.shape[0]
    S = K1.sum()
    KF2 = t2 + 2 * K1.pow(2).sum() / n - S**2 / n**2  # ||K||_F^2
    KL = quad.sum()  # <K, Y Y^T>
    Ysum = Y.sum(0)
    L1 = Y @ Ysum  # row sums of Y Y^T
    ly = Y.pow(2).sum(1)
    YtY2 = (Y.T @ Y).pow(2).sum()  # ||Y Y^T||_F^2
    if estimator == "unbiased":
        Kd1, Ld1 = K1 - d, L1 - ly
        kl = E.Sums(KL - (d * ly).sum(), S - d.sum(), Ysum.pow(2).sum() - ly.sum(), Kd1 @ Ld1, n)
        kk = E.Sums(KF2 - d.pow(2).sum(), kl.SA, kl.SA, Kd1 @ Kd1, n)
        ll = E.Sums(YtY2 - ly.pow(2).sum(), kl.SB, kl.SB, Ld1 @ Ld1, n)
        den = E.hsic_u(kk) * E.hsic_u(ll)
        return float(E.hsic_u(kl) / den.sqrt()) if float(den) > 0 else math.nan
    m = Ysum / n
    # <K, Yc Yc^T> with Yc = Y - 1 m^T, from <K, Y Y^T>, Y^T K 1 and 1^T K 1
    KLc = KL - 2 * m @ (Y.T @ K1) + S * m.pow(2).sum()
    Yc = Y - m
    LcF = (Yc.T @ Yc).pow(2).sum().sqrt()
    if centering == "none":
        return float(KL / (KF2.sqrt() * YtY2.sqrt()))
    if centering == "rows":
        return float(KLc / ((KF2 - K1.pow(2).sum() / n).clamp_min(0).sqrt() * LcF))
    return float(KLc / (torch.as_tensor(t2).clamp_min(0).sqrt() * LcF))


def ntk_change(
    model: nn.Module,
    model0: nn.Module,
    x: Any,
    *,
    estimator: str = "unbiased",
    method: str = "auto",
    output_fn: OutputFn | None = None,
    dtype: torch.dtype | None = None,
    max_dense: int = 4096,
    rows: int = 256,
    seed: int = 0,
) -> dict[str, Estimate]:
    """How far ``model``'s NTK moved from ``model0``'s on ``x``: ``{"drift", "cka"}``.

    * ``drift = ||K - K0||_F / ||K0||_F`` (a plain ratio: its diagonal share depends on
      ``P``; ``estimator`` does not apply);
    * ``cka = cka(K, K0, estimator)`` (:func:`lazymeter.cka`).

    ``"dense"`` forms both kernels (jackknife standard errors over the points).
    ``"matrix_free"`` (``"auto"`` above ``max_dense`` points) reads ``rows`` random rows of
    each kernel (the same rows), centred with the exact row sums (one kernel-vector product
    per model) and diagonals: ``<HKH, HK0H>`` and the Frobenius norms are ``P / rows`` times
    their sums over the sampled rows (the unbiased CKA leaves the diagonal out of them), and
    ``stderr`` is the jackknife over the sampled rows (the estimation error only, also in
    ``estimator_se``; the points are taken as given). Memory is linear in ``P``. Both
    models are measured in eval mode (as in :func:`ntk_alignment`), their modes restored.
    """
    estimator = _check_estimator(estimator)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 5:
        raise ValueError(f"rows: expected an int >= 5, got {rows!r}")
    xs = as_inputs(x, "x")
    P = num_samples(xs)
    if P < E.min_points(estimator):
        raise ValueError(
            f"x: has {P} points; the {estimator} CKA needs at least {E.min_points(estimator)}"
        )

    def kernel(m: nn.Module, a: Any, b: Any = None) -> Tensor:
        K = empirical_ntk(m, a, b, output_fn=output_fn, dtype=dtype)
        return _cpu64(K)

    with deterministic(model), deterministic(model0):
        if method == "dense" or (method == "auto" and P <= max_dense):
            K, K0 = kernel(model, xs), kernel(model0, xs)
            dd, d0 = E.pair_sums(K - K0, K - K0), E.pair_sums(K0, K0)
            drift = float((dd[0].T / d0[0].T).sqrt())
            loo = (dd[1].T / d0[1].T).sqrt()
            return {
                "drift": Estimate(drift, E.jackknife_se(loo), P, "biased"),
                "cka": cka_estimate(K, K0, estimator),
            }
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(P, generator=g)[: min(rows, P)]
        r = idx.numel()
        exact = []  # per model: row sums / P, their mean / P, diagonal of HKH
        for m in (model, model0):
            op = KernelOperator(m, xs, output_fn=output_fn, dtype=dtype)
            c = _cpu64(op.row_sums()) / P
            exact.append((c, c.mean(), _cpu64(op.diagonal()) - 2 * c + c.mean()))
        (c, cbar, b), (c0, cbar0, b0) = exact
        # per sampled row, accumulated over column blocks (memory r x block, not r x P):
        # ||K_i - K0_i||^2, ||K0_i||^2, <C_i, C0_i>, ||C_i||^2, ||C0_i||^2 with C = HKH
        acc = torch.zeros(r, 5, dtype=torch.float64)
        blocks = zip(
            _row_blocks(lambda a, b: kernel(model, a, b), xs, idx),
            _row_blocks(lambda a, b: kernel(model0, a, b), xs, idx),
            strict=True,
        )
        for (a, R), (_, R0) in blocks:
            C = R - c[idx, None] - c[None, a : a + R.shape[1]] + cbar
            C0 = R0 - c0[idx, None] - c0[None, a : a + R.shape[1]] + cbar0
            acc += torch.stack(
                [(R - R0).pow(2).sum(1), R0.pow(2).sum(1), (C * C0).sum(1), C.pow(2).sum(1),
                 C0.pow(2).sum(1)], 1,
            )  # fmt: skip
        drift_terms = acc[:, :2]
        bi, b0i = b[idx], b0[idx]
        terms = acc[:, 2:]
        if estimator == "unbiased":
            # HSIC_u of HKH (the same value as of K) from zero-diagonal sums; its row sums are -b
            terms = terms - torch.stack([bi * b0i, bi**2, b0i**2], 1)

        def cka_of(mean_terms: Tensor) -> Tensor:
            T = mean_terms * P
            if estimator == "biased":
                return T[..., 0] / (T[..., 1] * T[..., 2]).sqrt()
            S, S0, Q, Q00, Q11 = -b.sum(), -b0.sum(), b @ b0, b @ b, b0 @ b0
            h = [
                E.hsic_u(E.Sums(T[..., 0], S, S0, Q, P)),
                E.hsic_u(E.Sums(T[..., 1], S, S, Q00, P)),
                E.hsic_u(E.Sums(T[..., 2], S0, S0, Q11, P)),
            ]
            return h[0] / (h[1] * h[2]).sqrt()

        def loo_means(t: Tensor) -> Tensor:  # [r, k] -> the r leave-one-row-out means
            return (t.sum(0) - t) / (r - 1)

        drift = float((drift_terms[:, 0].sum() / drift_terms[:, 1].sum()).sqrt())
        drift_loo = loo_means(drift_terms)
        drift_se = E.jackknife_se((drift_loo[:, 0] / drift_loo[:, 1]).sqrt()) if r > 1 else 0.0
        value = float(cka_of(terms.mean(0)))
        cka_se = E.jackknife_se(cka_of(loo_means(terms))) if r > 1 else 0.0
        if r == P:  # every row read: nothing was estimated
            drift_se = cka_se = 0.0
        return {
            "drift": Estimate(drift, drift_se, P, "biased", "matrix_free", drift_se),
            "cka": Estimate(value, cka_se, P, estimator, "matrix_free", cka_se),
        }
