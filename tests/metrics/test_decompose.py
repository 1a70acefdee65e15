"""decompose_quadratic against Monte-Carlo test losses of the model it describes."""

import math

import pytest
import torch

import lazymeter as lm
from lazymeter.tasks.polynomial import QuadraticNet


def monte_carlo_mse(model, beta, alpha, n=2_000_000, chunk=250_000, seed=0):
    """Mean and standard error of (alpha f(x) - y)^2 over x ~ N(0, I/D)."""
    g = torch.Generator().manual_seed(seed)
    D = beta.shape[0]
    total, total_sq = 0.0, 0.0
    with torch.no_grad():
        for _ in range(n // chunk):
            x = torch.randn(chunk, D, generator=g, dtype=torch.float64) / math.sqrt(D)
            err2 = (alpha * model(x) - (x @ beta) ** 2 / 2) ** 2
            total += float(err2.sum())
            total_sq += float((err2**2).sum())
    mean = total / n
    return mean, math.sqrt((total_sq / n - mean**2) / n)


@pytest.mark.parametrize("readouts", [False, True], ids=["no-readouts", "readouts"])
def test_total_equals_monte_carlo_test_loss(readouts):
    g = torch.Generator().manual_seed(3)
    D, N, alpha, eps = 6, 9, 1.3, 0.7
    model = QuadraticNet(D, N, eps, readouts=readouts, generator=g, dtype=torch.float64)
    beta = torch.randn(D, generator=g, dtype=torch.float64)
    terms = lm.decompose_quadratic(model.W, beta, alpha=alpha, eps=eps, a=model.a)
    mean, stderr = monte_carlo_mse(model, beta, alpha)
    assert abs(terms["total"] - mean) < 4 * stderr
    assert stderr < 0.01 * mean  # the check has teeth: 1% resolution
    assert terms["total"] == pytest.approx(
        terms["variance"] + terms["misalignment"] + terms["linear"]
    )


def test_terms_match_their_closed_forms_on_a_hand_case():
    # W = I (N = D = 2), a = 1: M = I/2, wbar = (1/2, 1/2).
    W, beta = torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = lm.decompose_quadratic(W, beta, alpha=2.0, eps=1.0)
    # variance: (2*1/2 * tr(I/2)/2 - mean([1, 0])/2)^2 = (0.5 - 0.25)^2
    assert t["variance"] == pytest.approx(0.0625)
    # misalignment: ||2*I/2 - e1 e1^T||_F^2 / (2*4) = ||diag(0, 1)||^2 / 8
    assert t["misalignment"] == pytest.approx(1 / 8)
    # linear: 4 * ||(1/2, 1/2)||^2 / 2
    assert t["linear"] == pytest.approx(1.0)


def test_a_perfect_quadratic_fit_has_zero_loss():
    # alpha eps M = beta beta^T with wbar = 0: W rows +-sqrt(N/(2 alpha eps)) beta-direction pairs.
    beta = torch.tensor([3.0, 4.0], dtype=torch.float64)
    alpha, eps = 1.0, 0.5
    scale = math.sqrt(2 / (alpha * eps))  # N = 2: M = (w w^T + w w^T)/2 = w w^T
    W = torch.stack([beta, -beta]) * scale / beta.norm() * beta.norm() / math.sqrt(2)
    terms = lm.decompose_quadratic(W, beta, alpha=alpha, eps=eps)
    assert terms["total"] == pytest.approx(0.0, abs=1e-12)


def test_quadratic_decomposition_as_meter_metric():
    g = torch.Generator().manual_seed(0)
    model = QuadraticNet(5, 4, 0.3, generator=g, dtype=torch.float64)
    beta = torch.randn(5, generator=g, dtype=torch.float64)
    meter = lm.LazyMeter(
        model, center=False, metrics={"d": lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3)}
    )
    row = meter.measure()
    expected = lm.decompose_quadratic(model.W, beta, alpha=1.0, eps=0.3)
    assert {k: row[f"decomp_{k}"] for k in expected} == pytest.approx(expected)
    assert lm.tag_for("decomp_total") == "lazymeter/decomposition/total"


def test_bad_shapes_are_rejected():
    W = torch.randn(3, 4)
    with pytest.raises(ValueError, match="beta"):
        lm.decompose_quadratic(W, torch.randn(3), alpha=1.0, eps=0.1)
    with pytest.raises(ValueError, match="W"):
        lm.decompose_quadratic(torch.randn(4), torch.randn(4), alpha=1.0, eps=0.1)
    with pytest.raises(ValueError, match="a:"):
        lm.decompose_quadratic(W, torch.randn(4), alpha=1.0, eps=0.1, a=torch.randn(4))
