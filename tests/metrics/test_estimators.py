"""Unbiased (U-statistic) alignment and CKA, and their jackknife standard errors, checked
against literal formulas, brute-force U-statistics and simulation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import lazymeter as lm

F64 = torch.float64


def _kernel_and_labels(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    K = torch.tanh(x @ x.T) + x @ x.T + 3.0
    y = x[:, 0] ** 2 + torch.randn(n, generator=g, dtype=F64)
    return K, y


def _hsic_literal(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012), eq. 5, as written: zeroed diagonals, ones vectors."""
    n = K.shape[0]
    Kt, Lt = K - torch.diag(K.diag()), L - torch.diag(L.diag())
    one = torch.ones(n, dtype=F64)
    return (
        torch.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def _hsic_tuples(K: torch.Tensor, L: torch.Tensor) -> float:
    """The U-statistic as a mean over all ordered tuples of 4 distinct points."""
    n, total, count = K.shape[0], 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += float(K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q])
        count += 1
    return total / count


def test_unbiased_hsic_is_the_u_statistic_over_all_index_tuples() -> None:
    K, y = _kernel_and_labels(7)
    L = torch.outer(y, y)
    assert float(_hsic_literal(K, L)) == pytest.approx(_hsic_tuples(K, L), rel=1e-12)
    want = _hsic_tuples(K, L) / math.sqrt(_hsic_tuples(K, K) * _hsic_tuples(L, L))
    assert lm.kernel_alignment(K, y, estimator="unbiased") == pytest.approx(want, rel=1e-10)


def test_unbiased_alignment_and_cka_equal_the_literal_formula() -> None:
    K, y = _kernel_and_labels(40)
    Y = torch.stack([y, y.sin()], 1)
    L = Y @ Y.T
    want = _hsic_literal(K, L) / (_hsic_literal(K, K) * _hsic_literal(L, L)).sqrt()
    assert lm.kernel_alignment(K, Y, estimator="unbiased") == pytest.approx(float(want), rel=1e-10)
    K2 = torch.exp(-torch.cdist(K[:, :3], K[:, :3]))
    want = _hsic_literal(K, K2) / (_hsic_literal(K, K) * _hsic_literal(K2, K2)).sqrt()
    assert lm.cka(K, K2, estimator="unbiased") == pytest.approx(float(want), rel=1e-10)
    assert lm.cka_estimate(K2, K).value == pytest.approx(float(want), rel=1e-10)


def test_unbiased_estimates_ignore_the_diagonal_and_constant_shifts() -> None:
    K, y = _kernel_and_labels(30)
    a = lm.kernel_alignment(K, y, estimator="unbiased")
    shifted = K + 5.0 + torch.diag(torch.linspace(20.0, 100.0, 30, dtype=F64))
    assert lm.kernel_alignment(shifted, y, estimator="unbiased") == pytest.approx(a, rel=1e-9)
    # the biased estimator is moved by the same diagonal
    assert abs(lm.kernel_alignment(shifted, y) - lm.kernel_alignment(K, y)) > 0.02


def _jackknife(values: list[float]) -> float:
    v = torch.tensor(values, dtype=F64)
    n = v.numel()
    return float(((n - 1) / n * ((v - v.mean()) ** 2).sum()).sqrt())


@pytest.mark.parametrize(
    ("centering", "estimator"),
    [("double", "unbiased"), ("double", "biased"), ("rows", "biased"), ("none", "biased")],
)
def test_alignment_stderr_equals_the_jackknife_by_recomputation(
    centering: str, estimator: str
) -> None:
    K, y = _kernel_and_labels(12, seed=3)
    est = lm.alignment_estimate(K, y, centering, estimator)
    assert est.value == lm.kernel_alignment(K, y, centering, estimator)
    assert (est.n, est.estimator) == (12, estimator)
    loo = []
    for i in range(12):
        keep = [j for j in range(12) if j != i]
        loo.append(lm.kernel_alignment(K[keep][:, keep], y[keep], centering, estimator))
    assert est.stderr == pytest.approx(_jackknife(loo), rel=1e-9)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_stderr_equals_the_jackknife_by_recomputation(estimator: str) -> None:
    K, y = _kernel_and_labels(11, seed=4)
    K2 = torch.outer(y, y) + torch.eye(11, dtype=F64)
    est = lm.cka_estimate(K, K2, estimator)
    loo = []
    for i in range(11):
        keep = [j for j in range(11) if j != i]
        loo.append(lm.cka(K[keep][:, keep], K2[keep][:, keep], estimator))
    assert est.stderr == pytest.approx(_jackknife(loo), rel=1e-9)


class _Population:
    """Random-feature kernel plus a large diagonal (as the NTK of a wide net on a small
    probe) and a noisy non-linear target: a fixed population to draw probes from."""

    def __init__(self, seed: int = 0) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(64, 5, generator=self.g, dtype=F64)

    def draw(self, P: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(P, 5, generator=self.g, dtype=F64)
        f = torch.relu(x @ self.W.T)
        K = f @ f.T / 64 + 20 * torch.eye(P, dtype=F64)
        y = torch.relu(x[:, 0]) + 0.5 * x[:, 1] + 0.3 * torch.randn(P, generator=self.g, dtype=F64)
        return K, y


def _small_probe_mean(estimator: str, draws: int = 300) -> tuple[float, float, lm.Estimate]:
    pop = _Population()
    big = lm.alignment_estimate(*pop.draw(2000), estimator=estimator)
    v = torch.tensor(
        [lm.kernel_alignment(*pop.draw(64), estimator=estimator) for _ in range(draws)]
    )
    return float(v.mean()), float(v.double().std()) / math.sqrt(draws), big


def test_unbiased_alignment_expectation_does_not_depend_on_probe_size() -> None:
    mean, sem, big = _small_probe_mean("unbiased")
    assert abs(mean - big.value) <= 2 * math.hypot(sem, big.stderr), (mean, sem, big)
    # the same check catches the biased estimator's dependence on P
    mean, sem, big = _small_probe_mean("biased")
    assert abs(mean - big.value) > 3 * math.hypot(sem, big.stderr), (mean, sem, big)


def test_alignment_stderr_covers_the_population_value_about_68_percent() -> None:
    pop = _Population(seed=0)
    truth = lm.kernel_alignment(*pop.draw(4000), estimator="unbiased")
    hits = []
    for _ in range(300):
        est = lm.alignment_estimate(*pop.draw(64))
        hits.append(abs(est.value - truth) <= est.stderr)
    assert 0.60 <= sum(hits) / len(hits) <= 0.76


def test_cka_stderr_covers_the_population_value_about_68_percent() -> None:
    pop = _Population(seed=1)
    g = torch.Generator().manual_seed(5)
    V = torch.randn(5, 5, generator=g, dtype=F64)

    def pair(P: int) -> tuple[torch.Tensor, torch.Tensor]:
        K, y = pop.draw(P)
        z = torch.tanh(torch.randn(P, 5, generator=pop.g, dtype=F64) @ V)
        return K, z @ z.T + torch.outer(y, y)

    truth = lm.cka(*pair(3000), estimator="unbiased")
    hits = [abs((e := lm.cka_estimate(*pair(64))).value - truth) <= e.stderr for _ in range(200)]
    assert 0.60 <= sum(hits) / len(hits) <= 0.76


def test_bad_estimator_arguments_raise_naming_the_argument() -> None:
    K, y = _kernel_and_labels(10)
    with pytest.raises(ValueError, match="estimator"):
        lm.kernel_alignment(K, y, estimator="debiased")
    with pytest.raises(ValueError, match="centering='double'"):
        lm.kernel_alignment(K, y, "rows", estimator="unbiased")
    with pytest.raises(ValueError, match="at least 4"):
        lm.kernel_alignment(K[:3, :3], y[:3], estimator="unbiased")
    with pytest.raises(ValueError, match="at least 5"):
        lm.alignment_estimate(K[:4, :4], y[:4])
    with pytest.raises(ValueError, match="estimator"):
        lm.cka(K, K, estimator=None)  # type: ignore[arg-type]


def test_unbiased_estimate_that_has_no_ratio_raises() -> None:
    # a +-1 kernel on 4 points whose unbiased self-HSIC is 0: there is no ratio to report
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 4, generator=g, dtype=F64)
    K = torch.sign(A + A.T)
    y = torch.tensor([0.0, 1, 2, 3], dtype=F64)
    with pytest.raises(ValueError, match="not positive"):
        lm.kernel_alignment(K, y, estimator="unbiased")


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_alignment_change_stderr_is_the_paired_jackknife(estimator):
    K, y = _kernel_and_labels(12, seed=6)
    K0 = K + torch.outer(y, y) * 0.3
    est = lm.alignment_change(K, K0, y, estimator=estimator)
    want = lm.kernel_alignment(K, y, estimator=estimator)
    assert est.value == pytest.approx(want - lm.kernel_alignment(K0, y, estimator=estimator))
    loo = []
    for i in range(12):
        keep = [j for j in range(12) if j != i]
        a = lm.kernel_alignment(K[keep][:, keep], y[keep], estimator=estimator)
        loo.append(a - lm.kernel_alignment(K0[keep][:, keep], y[keep], estimator=estimator))
    assert est.stderr == pytest.approx(_jackknife(loo), rel=1e-9)
