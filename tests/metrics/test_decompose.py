"""decompose_quadratic against Monte-Carlo test losses of the model it describes."""

import copy
import math

import pytest
import torch
from paper.polynomial import PolynomialConfig, QuadraticNet, train

import lazymeter as lm


def metrics(**fns):
    """The default quantities and the metric functions ``fns``."""
    return lm.quantities.default(metrics=fns)


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
    decomp = lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3)
    meter = lm.LazyMeter(model, center=False, quantities=metrics(d=decomp))
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


# --------------------------------------------------------------------------- centred model


def trained_pair(readouts, seed=3, D=6, N=9, eps=0.7):
    """A net at initialisation and a copy moved away from it (a stand-in for training)."""
    g = torch.Generator().manual_seed(seed)
    model0 = QuadraticNet(D, N, eps, readouts=readouts, generator=g, dtype=torch.float64)
    model = copy.deepcopy(model0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    beta = torch.randn(D, generator=g, dtype=torch.float64)
    return model0, model, beta


def centred_samples(model, model0, beta, alpha, n=400_000, seed=1):
    """Per-sample error parts of g = alpha (f - f0) at x ~ N(0, I/D), with antithetic -x:
    ``err`` = g(x) - y, ``odd`` = (g(x) - g(-x))/2 (the linear part), ``even`` = the rest."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, beta.shape[0], generator=g, dtype=torch.float64) / math.sqrt(len(beta))
    y = (x @ beta) ** 2 / 2
    with torch.no_grad():
        gp = alpha * (model(x) - model0(x))
        gm = alpha * (model(-x) - model0(-x))
    return {"err": gp - y, "odd": (gp - gm) / 2, "even": (gp + gm) / 2 - y}


def mean_se(v):
    """Sample mean of ``v`` and its standard error."""
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


@pytest.mark.parametrize("readouts", [False, True], ids=["no-readouts", "readouts"])
def test_centred_terms_match_monte_carlo_of_the_centred_model(readouts):
    alpha, eps = 1.3, 0.7
    model0, model, beta = trained_pair(readouts, eps=eps)
    terms = lm.decompose_quadratic(
        model.W, beta, alpha=alpha, eps=eps, a=model.a, W0=model0.W, a0=model0.a
    )
    s = centred_samples(model, model0, beta, alpha)
    # total: E[(alpha (f - f0) - y)^2]
    mc, se = mean_se(s["err"] ** 2)
    print(f"centred total ({readouts=}): reported {terms['total']:.6f}, MC {mc:.6f} +- {se:.6f}")
    assert abs(terms["total"] - mc) < 4 * se
    assert se < 0.01 * mc  # 1% resolution
    uncentred = lm.decompose_quadratic(model.W, beta, alpha=alpha, eps=eps, a=model.a)
    assert abs(uncentred["total"] - mc) > 20 * se  # the old answer is far off
    # Each term from the model's outputs alone: linear = E[odd^2]; the even error's mean
    # squared is the variance term and its variance the misalignment term.
    mc, se = mean_se(s["odd"] ** 2)
    assert abs(terms["linear"] - mc) < 4 * se
    mc, se = mean_se(s["even"])
    assert abs(math.sqrt(terms["variance"]) - abs(mc)) < 4 * se
    mc, se = mean_se((s["even"] - s["even"].mean()) ** 2)
    assert abs(terms["misalignment"] - mc) < 4 * se


def test_centred_terms_are_those_of_the_weight_differences_quadratic_form():
    # Exact, independent of the formulas' M - M0: g(x) = alpha (f - f0) is a quadratic
    # b . x + x^T A x / 2 whose gradient b and Hessian A at 0 come from autograd.
    alpha, eps = 0.8, 0.4
    model0, model, beta = trained_pair(True, seed=5, D=4, N=7, eps=eps)
    g = lambda x: alpha * (model(x[None]) - model0(x[None]))[0]  # noqa: E731
    x0 = torch.zeros(4, dtype=torch.float64)
    b = torch.autograd.functional.jacobian(g, x0)
    A = torch.autograd.functional.hessian(g, x0)
    D = 4
    expected = {
        "variance": float((torch.trace(A) / (2 * D) - (beta**2).mean() / 2) ** 2),
        "misalignment": float(torch.linalg.matrix_norm(A - torch.outer(beta, beta)) ** 2)
        / (2 * D**2),
        "linear": float((b**2).sum()) / D,
    }
    terms = lm.decompose_quadratic(
        model.W, beta, alpha=alpha, eps=eps, a=model.a, W0=model0.W, a0=model0.a
    )
    assert {k: terms[k] for k in expected} == pytest.approx(expected, rel=1e-10)


def test_centred_at_initialisation_is_the_loss_of_the_zero_function():
    model0, _, beta = trained_pair(True)
    terms = lm.decompose_quadratic(
        model0.W, beta, alpha=2.0, eps=0.7, a=model0.a, W0=model0.W, a0=model0.a
    )
    # E[y^2] for y = (beta . x)^2 / 2, beta . x ~ N(0, |beta|^2 / D): 3 (|beta|^2/D)^2 / 4
    s2 = float((beta**2).sum()) / len(beta)
    assert terms["linear"] == 0.0
    assert terms["total"] == pytest.approx(3 * s2**2 / 4)


def test_quadratic_decomposition_on_a_centred_meter_reports_the_centred_loss():
    alpha, eps = 1.3, 0.7
    model0, moved, beta = trained_pair(True, eps=eps)
    model = copy.deepcopy(model0)
    # no centring passed: the metric takes the meter's (and its initial weights)
    decomp = lm.QuadraticDecomposition(beta, alpha=alpha, eps=eps)
    meter = lm.LazyMeter(model, alpha=alpha, center=True, quantities=metrics(d=decomp))
    with torch.no_grad():  # "train": the weights move after the meter's construction
        for p, q in zip(model.parameters(), moved.parameters(), strict=True):
            p.copy_(q)
    row = meter.measure()
    # The meter's own function alpha (f - f0), by Monte Carlo.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400_000, 6, generator=g, dtype=torch.float64) / math.sqrt(6)
    with torch.no_grad():
        mc, se = mean_se((meter(x) - (x @ beta) ** 2 / 2) ** 2)
    print(f"centred meter: reported {row['decomp_total']:.6f}, MC {mc:.6f} +- {se:.6f}")
    assert abs(row["decomp_total"] - mc) < 4 * se
    expected = lm.decompose_quadratic(
        moved.W, beta, alpha=alpha, eps=eps, a=moved.a, W0=model0.W, a0=model0.a
    )
    assert {k: row[f"decomp_{k}"] for k in expected} == pytest.approx(expected)


def test_quadratic_decomposition_refuses_a_centring_it_cannot_honour():
    beta = torch.randn(5)
    model = QuadraticNet(5, 4, 0.3)
    with pytest.raises(ValueError, match="model0.*center=True"):  # outside a meter
        lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3, center=True)(model)
    with pytest.raises(ValueError, match="model0: only used with center=True"):
        lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3, center=False, model0=model)
    with pytest.raises(TypeError, match="model0:.*`W`"):
        lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3, center=True, model0=torch.nn.ReLU())
    with pytest.raises(ValueError, match="center=False.*center=True"):
        lm.LazyMeter(
            model,
            alpha=1.0,
            center=True,
            quantities=metrics(d=lm.QuadraticDecomposition(beta, alpha=1.0, eps=0.3, center=False)),
        )


def test_quadratic_decomposition_after_a_resume_uses_the_restored_initial_weights():
    alpha, eps = 1.3, 0.7
    model0, moved, beta = trained_pair(True, eps=eps)
    model = copy.deepcopy(model0)
    metric = metrics(d=lm.QuadraticDecomposition(beta, alpha=alpha, eps=eps))
    meter = lm.LazyMeter(model, alpha=alpha, quantities=metric)
    with torch.no_grad():  # "train"
        for p, q in zip(model.parameters(), moved.parameters(), strict=True):
            p.copy_(q)
    state = meter.state_dict()
    # a new process: a freshly initialised network; the checkpoint restores it and the
    # meter's initial weights
    fresh, _, _ = trained_pair(True, seed=11, eps=eps)
    metric = metrics(d=lm.QuadraticDecomposition(beta, alpha=alpha, eps=eps))
    meter2 = lm.LazyMeter(fresh, alpha=alpha, quantities=metric)
    meter2.load_state_dict(state)
    row = meter2.measure()
    expected = lm.decompose_quadratic(
        moved.W, beta, alpha=alpha, eps=eps, a=moved.a, W0=model0.W, a0=model0.a
    )
    assert {k: row[f"decomp_{k}"] for k in expected} == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:kernel_regression:RuntimeWarning")
def test_centred_polynomial_run_decomposition_tracks_its_test_loss():
    # train(center=True, decompose=True): the meter is centred, so is the decomposition.
    P_test = 5_000
    cfg = PolynomialConfig(
        D=8, N=16, P=60, P_test=P_test, eps=0.25, epochs=300, lr_scale=2.0, seed=1, per_decade=4,
        center=True, decompose=True, linearized=False, dtype="float64", paper_points=0,
    )  # fmt: skip
    hist = train(cfg, None, progress=False, figure=False)["history"]
    sigma = 4.0 / math.sqrt(P_test)  # examples/loss_decomposition.py's MC_REL_STD bound
    for r in hist:
        gap = abs(r["test_loss"] - r["decomp_total"]) / r["decomp_total"]
        assert gap < 4 * sigma, (r["step"], r["test_loss"], r["decomp_total"])


def test_bad_initial_weights_are_rejected():
    W, beta = torch.randn(3, 4), torch.randn(4)
    with pytest.raises(ValueError, match=r"W0: .*shape \(3, 4\) like W"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, W0=torch.randn(4, 3))
    with pytest.raises(ValueError, match="W0"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, W0=torch.randn(3))
    with pytest.raises(ValueError, match=r"a0: expected readouts of shape \[3\]"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, W0=W, a0=torch.randn(4))
    with pytest.raises(ValueError, match="a0: given without W0"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, a0=torch.randn(3))
    with pytest.raises(TypeError, match="W0"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, W0=[[0.0] * 4] * 3)
    with pytest.raises(ValueError, match="W0"):
        lm.decompose_quadratic(W, beta, alpha=1.0, eps=0.1, W0=torch.full((3, 4), math.nan))
