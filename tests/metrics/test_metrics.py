"""Tests for lazymeter.metrics against independent numpy computations and hand values.

Reference formulas follow DESIGN.md section 3 and are written out with explicit
centring matrices ``H = I - 11^T / P``; nothing here calls the code under test to
produce an expected value.
"""

from __future__ import annotations

import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

import lazymeter as lm

CENTERINGS = ("double", "rows", "none")
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- references


def centring_matrix(P: int) -> np.ndarray:
    return np.eye(P) - np.ones((P, P)) / P


def frob_inner(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.sum(A * B))


def ref_cka(K1: np.ndarray, K2: np.ndarray) -> float:
    H = centring_matrix(K1.shape[0])
    A, B = H @ K1 @ H, H @ K2 @ H
    return frob_inner(A, B) / (np.linalg.norm(A, "fro") * np.linalg.norm(B, "fro"))


def ref_alignment_double(K: np.ndarray, y: np.ndarray) -> float:
    Y = y.reshape(len(y), -1)
    H = centring_matrix(K.shape[0])
    A, B = H @ K @ H, H @ Y @ Y.T @ H
    return frob_inner(A, B) / (np.linalg.norm(A, "fro") * np.linalg.norm(B, "fro"))


def ref_alignment_rows_paper(K: np.ndarray, y: np.ndarray) -> float:
    """The paper's code, verbatim in numpy (1-D labels)."""
    Kc = K - K.mean(axis=0)
    yc = y - y.mean()
    return float(yc @ Kc @ yc / (np.linalg.norm(Kc) * np.linalg.norm(yc) ** 2))


def ref_alignment_rows_matrix(K: np.ndarray, Y: np.ndarray) -> float:
    """Documented multi-output form: <Kc, Yc Yc^T> / (||Kc||_F ||Yc^T Yc||_F)."""
    Kc = K - K.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    return frob_inner(Kc, Yc @ Yc.T) / (np.linalg.norm(Kc, "fro") * np.linalg.norm(Yc.T @ Yc))


def ref_alignment_none(K: np.ndarray, y: np.ndarray) -> float:
    Y = y.reshape(len(y), -1)
    G = Y @ Y.T
    return frob_inner(K, G) / (np.linalg.norm(K, "fro") * np.linalg.norm(G, "fro"))


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def random_psd(rng: np.random.Generator, P: int, d: int) -> np.ndarray:
    X = rng.standard_normal((P, d)) + rng.standard_normal(d)  # non-zero feature means
    return X @ X.T


def random_square(rng: np.random.Generator, P: int) -> np.ndarray:
    """A generic (non-symmetric, indefinite) square matrix."""
    return rng.standard_normal((P, P)) + 0.5


# --------------------------------------------------------------------------- kernel_alignment


@pytest.mark.parametrize("seed", SEEDS)
def test_double_alignment_matches_explicit_centred_formula_for_vector_labels(seed):
    rng = np.random.default_rng(seed)
    P = 9
    K = random_psd(rng, P, 4)
    y = rng.standard_normal(P) + 2.0
    got = lm.kernel_alignment(t(K), t(y), centering="double")
    assert isinstance(got, float)
    assert got == pytest.approx(ref_alignment_double(K, y), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_double_alignment_matches_explicit_centred_formula_for_matrix_labels(seed):
    rng = np.random.default_rng(seed)
    P, C = 10, 3
    K = random_psd(rng, P, 6)
    Y = rng.standard_normal((P, C)) + np.array([1.0, -2.0, 0.5])
    got = lm.kernel_alignment(t(K), t(Y), centering="double")
    assert got == pytest.approx(ref_alignment_double(K, Y), rel=1e-10, abs=1e-12)


def test_double_alignment_is_the_default_centering():
    rng = np.random.default_rng(3)
    K, y = random_psd(rng, 7, 3), rng.standard_normal(7)
    assert lm.kernel_alignment(t(K), t(y)) == pytest.approx(ref_alignment_double(K, y), rel=1e-10)


@pytest.mark.parametrize("labels_shape", [(8,), (8, 1), (8, 3)])
def test_double_alignment_equals_cka_with_label_gram_matrix(labels_shape):
    rng = np.random.default_rng(4)
    K = random_psd(rng, 8, 5)
    y = rng.standard_normal(labels_shape) + 1.0
    Y = y.reshape(8, -1)
    expected = ref_cka(K, Y @ Y.T)
    assert lm.kernel_alignment(t(K), t(y), centering="double") == pytest.approx(expected, rel=1e-10)
    assert lm.cka(t(K), t(Y @ Y.T)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kernel", ["psd", "nonsymmetric"])
def test_rows_alignment_matches_paper_code_formula(seed, kernel):
    rng = np.random.default_rng(seed)
    P = 11
    K = random_psd(rng, P, 5) if kernel == "psd" else random_square(rng, P)
    y = rng.standard_normal(P) + 3.0
    got = lm.kernel_alignment(t(K), t(y), centering="rows")
    assert got == pytest.approx(ref_alignment_rows_paper(K, y), rel=1e-10, abs=1e-12)


def test_rows_alignment_with_single_column_labels_equals_vector_labels():
    rng = np.random.default_rng(5)
    K, y = random_psd(rng, 9, 4), rng.standard_normal(9)
    expected = ref_alignment_rows_paper(K, y)
    assert lm.kernel_alignment(t(K), t(y[:, None]), centering="rows") == pytest.approx(
        expected, rel=1e-10
    )


def test_rows_alignment_matches_documented_formula_for_matrix_labels():
    rng = np.random.default_rng(6)
    K, Y = random_psd(rng, 9, 4), rng.standard_normal((9, 2)) + 1.0
    assert lm.kernel_alignment(t(K), t(Y), centering="rows") == pytest.approx(
        ref_alignment_rows_matrix(K, Y), rel=1e-10
    )


def test_rows_alignment_differs_from_double_alignment_on_generic_kernel():
    # Guards against "rows" silently falling through to double centring.
    rng = np.random.default_rng(7)
    K, y = random_square(rng, 8), rng.standard_normal(8)
    assert abs(ref_alignment_rows_paper(K, y) - ref_alignment_double(K, y)) > 1e-3
    assert lm.kernel_alignment(t(K), t(y), centering="rows") != pytest.approx(
        ref_alignment_double(K, y), abs=1e-6
    )


@pytest.mark.parametrize("labels_shape", [(8,), (8, 3)])
def test_uncentred_alignment_matches_formula(labels_shape):
    rng = np.random.default_rng(8)
    K = random_square(rng, 8)
    y = rng.standard_normal(labels_shape) + 1.0
    got = lm.kernel_alignment(t(K), t(y), centering="none")
    assert got == pytest.approx(ref_alignment_none(K, y), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("centering", CENTERINGS)
def test_alignment_is_one_when_kernel_is_outer_product_of_zero_mean_labels(centering):
    y = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    K = np.outer(y, y)
    assert lm.kernel_alignment(t(K), t(y), centering=centering) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("centering", ["double", "none"])
def test_alignment_is_one_when_kernel_is_outer_product_of_labels(centering):
    y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0])
    assert lm.kernel_alignment(t(np.outer(y, y)), t(y), centering=centering) == pytest.approx(
        1.0, abs=1e-12
    )


def test_uncentred_alignment_is_minus_one_for_negated_label_gram():
    y = np.array([3.0, 1.0, 4.0, 1.0])
    assert lm.kernel_alignment(t(-np.outer(y, y)), t(y), centering="none") == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("centering", "expected"),
    [
        # <H, y y^T> = ||y||^2, ||H||_F = sqrt(P - 1), ||y y^T||_F = ||y||^2.
        ("double", 1 / math.sqrt(5)),
        # Kc = I - 11^T/P = H, same numbers as above.
        ("rows", 1 / math.sqrt(5)),
        # <I, y y^T> = ||y||^2, ||I||_F = sqrt(P).
        ("none", 1 / math.sqrt(6)),
    ],
)
def test_alignment_of_identity_kernel_with_zero_mean_labels_has_closed_form(centering, expected):
    y = t([1.0, -1.0, 2.0, -2.0, 3.0, -3.0])
    assert lm.kernel_alignment(torch.eye(6, dtype=torch.float64), y, centering) == pytest.approx(
        expected, rel=1e-12
    )


def test_double_alignment_ignores_label_offset_and_kernel_constant_offset():
    # H(K + c 11^T)H = HKH and H(y + b1) = Hy: both offsets must vanish exactly.
    rng = np.random.default_rng(9)
    K, y = random_psd(rng, 8, 3), rng.standard_normal(8)
    expected = ref_alignment_double(K, y)
    got = lm.kernel_alignment(t(K + 7.0), t(y - 4.0), centering="double")
    assert got == pytest.approx(expected, rel=1e-9)


def test_alignment_computes_in_float64_for_float32_and_integer_inputs():
    rng = np.random.default_rng(10)
    K32 = torch.tensor(random_psd(rng, 8, 3), dtype=torch.float32)
    y_int = torch.tensor([0, 1, 1, 0, 2, 0, 1, 2])
    expected = ref_alignment_double(K32.double().numpy(), y_int.double().numpy())
    assert lm.kernel_alignment(K32, y_int) == pytest.approx(expected, rel=1e-12)


def test_alignment_does_not_modify_inputs():
    rng = np.random.default_rng(11)
    K, y = t(random_psd(rng, 6, 2)), t(rng.standard_normal(6))
    K_before, y_before = K.clone(), y.clone()
    for centering in CENTERINGS:
        lm.kernel_alignment(K, y, centering)
    assert torch.equal(K, K_before)
    assert torch.equal(y, y_before)


# --------------------------------------------------------------------------- cka


@pytest.mark.parametrize("seed", SEEDS)
def test_cka_matches_explicit_centred_formula(seed):
    rng = np.random.default_rng(seed)
    P = 10
    K1, K2 = random_psd(rng, P, 3), random_psd(rng, P, 7)
    got = lm.cka(t(K1), t(K2))
    assert isinstance(got, float)
    assert got == pytest.approx(ref_cka(K1, K2), rel=1e-10)


def test_cka_matches_explicit_formula_for_indefinite_kernels():
    rng = np.random.default_rng(12)
    A, B = random_square(rng, 7), random_square(rng, 7)
    K1, K2 = A + A.T, B - B.T + np.diag(np.arange(7.0))
    assert lm.cka(t(K1), t(K2)) == pytest.approx(ref_cka(K1, K2), rel=1e-10, abs=1e-12)


def test_cka_is_one_for_identical_kernels_hand_case():
    assert lm.cka(torch.eye(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64)) == (
        pytest.approx(1.0)
    )


def test_cka_ignores_constant_offset_of_a_kernel():
    rng = np.random.default_rng(13)
    K1, K2 = random_psd(rng, 9, 3), random_psd(rng, 9, 4)
    assert lm.cka(t(K1 + 5.0), t(K2)) == pytest.approx(ref_cka(K1, K2), rel=1e-9)


def test_cka_of_identity_and_zero_mean_label_gram_has_closed_form():
    y = np.array([1.0, -2.0, 3.0, -2.0])  # zero mean, P = 4
    got = lm.cka(torch.eye(4, dtype=torch.float64), t(np.outer(y, y)))
    assert got == pytest.approx(1 / math.sqrt(3), rel=1e-12)


# --------------------------------------------------------------------------- linear_cka


@pytest.mark.parametrize(
    ("P", "d1", "d2"),
    [
        (60, 3, 5),  # feature dims well below P (feature-space regime)
        (5, 40, 30),  # feature dims well above P (Gram regime)
        (12, 2, 50),  # mixed
        (10, 10, 10),
    ],
)
def test_linear_cka_equals_cka_of_linear_gram_matrices(P, d1, d2):
    rng = np.random.default_rng(P + d1 + d2)
    X1 = rng.standard_normal((P, d1)) + 1.0
    X2 = rng.standard_normal((P, d2)) @ rng.standard_normal((d2, d2)) - 0.5
    expected = ref_cka(X1 @ X1.T, X2 @ X2.T)
    got = lm.linear_cka(t(X1), t(X2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("P", "shape1", "shape2"), [(40, (2, 3), (4,)), (4, (5, 6), (3, 7, 2))])
def test_linear_cka_flattens_trailing_feature_dimensions(P, shape1, shape2):
    rng = np.random.default_rng(14)
    X1 = rng.standard_normal((P, *shape1))
    X2 = rng.standard_normal((P, *shape2)) + 2.0
    F1, F2 = X1.reshape(P, -1), X2.reshape(P, -1)
    expected = ref_cka(F1 @ F1.T, F2 @ F2.T)
    assert lm.linear_cka(t(X1), t(X2)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("P", "d"), [(50, 4), (4, 50)])
def test_linear_cka_is_one_under_rotation_scaling_and_shift_of_features(P, d):
    rng = np.random.default_rng(15)
    X = rng.standard_normal((P, d))
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    assert lm.linear_cka(t(X), t(3.0 * X @ Q + 10.0)) == pytest.approx(1.0, rel=1e-9)


def test_linear_cka_is_zero_for_uncorrelated_centred_features():
    # Columns of X1 and X2 are orthogonal after centring: X1c^T X2c = 0.
    X1 = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    X2 = np.array([[1.0], [1.0], [-1.0], [-1.0]])
    assert lm.linear_cka(t(X1), t(X2)) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- ntk_drift


def test_ntk_drift_of_doubled_identity_is_one():
    eye = torch.eye(4, dtype=torch.float64)
    assert lm.ntk_drift(2 * eye, eye) == pytest.approx(1.0)


def test_ntk_drift_is_relative_to_second_argument():
    eye = torch.eye(4, dtype=torch.float64)
    # ||I - 2I|| / ||2I|| = 2 / 4.
    assert lm.ntk_drift(eye, 2 * eye) == pytest.approx(0.5)


def test_ntk_drift_hand_value_for_single_entry_change():
    K0 = 2 * torch.eye(4, dtype=torch.float64)  # ||K0||_F = 4
    K = K0.clone()
    K[0, 1] = 3.0
    assert lm.ntk_drift(K, K0) == pytest.approx(0.75)


def test_ntk_drift_of_zero_kernel_is_one():
    K0 = t(np.arange(9.0).reshape(3, 3))
    assert lm.ntk_drift(torch.zeros_like(K0), K0) == pytest.approx(1.0)


def test_ntk_drift_handles_untraced_four_dimensional_kernels():
    K0 = torch.ones(2, 2, 3, 3, dtype=torch.float64)  # ||K0||_F = 6
    K = K0.clone()
    K[1, 0, 2, 1] = 4.0  # difference of 3 in one entry
    assert lm.ntk_drift(K, K0) == pytest.approx(0.5)
    assert lm.ntk_drift(1.5 * K0, K0) == pytest.approx(0.5)


def test_ntk_drift_of_random_untraced_kernels_matches_numpy_norms():
    rng = np.random.default_rng(16)
    K0 = rng.standard_normal((3, 4, 2, 2))
    K = K0 + 0.1 * rng.standard_normal(K0.shape)
    expected = np.sqrt(np.sum((K - K0) ** 2)) / np.sqrt(np.sum(K0**2))
    assert lm.ntk_drift(t(K), t(K0)) == pytest.approx(expected, rel=1e-12)


def test_ntk_drift_is_zero_for_identical_kernels_hand_case():
    K = t(np.arange(16.0).reshape(4, 4))
    assert lm.ntk_drift(K, K.clone()) == 0.0


# --------------------------------------------------------------------------- parameters


class TwoParams(nn.Module):
    def __init__(self, w, b, frozen=None):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))
        if frozen is not None:
            self.frozen = nn.Parameter(torch.tensor(frozen, dtype=torch.float64))
            self.frozen.requires_grad_(False)
        self.register_buffer("running", torch.tensor([1000.0], dtype=torch.float64))


def test_weight_norm_hand_value_for_module_dict_and_list():
    module = TwoParams([3.0, 0.0], [4.0])
    assert lm.weight_norm(module) == pytest.approx(5.0)
    assert lm.weight_norm({"w": t([3.0, 0.0]), "b": t([4.0])}) == pytest.approx(5.0)
    assert lm.weight_norm([t([[3.0], [0.0]]), t([4.0])]) == pytest.approx(5.0)


def test_weight_norm_excludes_frozen_parameters_and_buffers_of_a_module():
    module = TwoParams([3.0, 0.0], [4.0], frozen=[100.0, 200.0])
    assert lm.weight_norm(module) == pytest.approx(5.0)


def test_weight_norm_accepts_float32_module_parameters():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 0.0]]))
        lin.bias.copy_(torch.tensor([4.0]))
    assert lm.weight_norm(lin) == pytest.approx(5.0)


def test_parameter_movement_hand_value_for_modules():
    theta0 = TwoParams([3.0, 0.0], [4.0])  # ||theta0|| = 5
    theta = TwoParams([3.0, 1.5], [6.0])  # theta - theta0 = (0, 1.5, 2), norm 2.5
    assert lm.parameter_movement(theta, theta0) == pytest.approx(0.5)


def test_parameter_movement_is_relative_to_initial_parameters():
    theta0 = TwoParams([3.0, 0.0], [4.0])
    theta = TwoParams([6.0, 0.0], [8.0])  # ||theta|| = 10, difference norm 5
    assert lm.parameter_movement(theta, theta0) == pytest.approx(1.0)
    assert lm.parameter_movement(theta0, theta) == pytest.approx(0.5)


def test_parameter_movement_accepts_dicts_lists_and_mixed_containers():
    theta0_dict = {"w": t([3.0, 0.0]), "b": t([4.0])}
    theta_dict = {"w": t([3.0, 1.5]), "b": t([6.0])}
    assert lm.parameter_movement(theta_dict, theta0_dict) == pytest.approx(0.5)
    assert lm.parameter_movement(list(theta_dict.values()), list(theta0_dict.values())) == (
        pytest.approx(0.5)
    )
    assert lm.parameter_movement(TwoParams([3.0, 1.5], [6.0]), theta0_dict) == pytest.approx(0.5)


def test_parameter_movement_matches_dict_entries_by_name_not_order():
    theta0 = {"w": t([3.0, 0.0]), "b": t([4.0])}
    theta = {"b": t([6.0]), "w": t([3.0, 1.5])}
    assert lm.parameter_movement(theta, theta0) == pytest.approx(0.5)


def test_parameter_movement_against_state_dict_with_buffers_uses_parameters_only():
    torch.manual_seed(1)
    net0 = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    with torch.no_grad():
        net0[1].running_mean.fill_(50.0)  # buffers must not enter the norms
        net[1].weight.mul_(3.0)
    a = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    b = np.concatenate([p.detach().numpy().ravel() for p in net0.parameters()])
    expected = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert lm.parameter_movement(net, net0.state_dict()) == pytest.approx(expected, rel=1e-12)


def test_parameter_movement_ignores_frozen_parameters_of_modules():
    theta0 = TwoParams([3.0, 0.0], [4.0], frozen=[1.0])
    theta = TwoParams([3.0, 1.5], [6.0], frozen=[1e6])
    assert lm.parameter_movement(theta, theta0) == pytest.approx(0.5)


def test_parameter_movement_of_real_network_matches_numpy():
    torch.manual_seed(0)
    net0 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    a = np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])
    b = np.concatenate([p.detach().numpy().ravel() for p in net0.parameters()])
    expected = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert lm.parameter_movement(net, net0) == pytest.approx(expected, rel=1e-12)
    assert lm.weight_norm(net) == pytest.approx(np.linalg.norm(a), rel=1e-12)


def test_parameter_movement_rejects_different_parameter_counts():
    with pytest.raises(ValueError, match="theta"):
        lm.parameter_movement([t([1.0, 2.0])], [t([1.0, 2.0, 3.0])])


def test_parameter_functions_reject_containers_without_tensors():
    with pytest.raises(TypeError, match="theta"):
        lm.weight_norm([])
    with pytest.raises(TypeError, match="theta0"):
        lm.parameter_movement([t([1.0])], [1.0, 2.0])


def test_parameter_movement_from_zero_initialisation_is_undefined():
    with pytest.raises(ValueError, match=r"^theta0:.*zeros"):
        lm.parameter_movement([t([1.0, 2.0])], [t([0.0, 0.0])])


# --------------------------------------------------------------------------- kernel_spectrum


def test_kernel_spectrum_of_diagonal_matrix_lists_descending_eigenvalues():
    K = torch.diag(t([1.0, 5.0, 3.0, 2.0]))
    out = lm.kernel_spectrum(K, k=3)
    assert set(out) == {"trace", "effective_rank", "eig_1", "eig_2", "eig_3"}
    assert out["eig_1"] == pytest.approx(5.0)
    assert out["eig_2"] == pytest.approx(3.0)
    assert out["eig_3"] == pytest.approx(2.0)
    assert out["trace"] == pytest.approx(11.0)
    assert out["effective_rank"] == pytest.approx(121.0 / 39.0)


def test_kernel_spectrum_with_k_larger_than_size_returns_all_eigenvalues():
    out = lm.kernel_spectrum(torch.diag(t([2.0, 7.0])), k=5)
    assert set(out) == {"trace", "effective_rank", "eig_1", "eig_2"}
    assert (out["eig_1"], out["eig_2"]) == (pytest.approx(7.0), pytest.approx(2.0))


def test_kernel_spectrum_of_rotated_diagonal_matches_known_eigenvalues():
    rng = np.random.default_rng(17)
    lam = np.array([0.5, 4.0, 2.0, 1.0, 3.0])
    Q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    out = lm.kernel_spectrum(t(Q @ np.diag(lam) @ Q.T), k=5)
    got = [out[f"eig_{i}"] for i in range(1, 6)]
    assert got == pytest.approx([4.0, 3.0, 2.0, 1.0, 0.5], rel=1e-10)
    assert out["trace"] == pytest.approx(10.5)
    assert out["effective_rank"] == pytest.approx(10.5**2 / np.sum(lam**2), rel=1e-10)


@pytest.mark.parametrize("P", [1, 4, 9])
def test_effective_rank_of_scaled_identity_equals_size(P):
    out = lm.kernel_spectrum(3.0 * torch.eye(P, dtype=torch.float64))
    assert out["effective_rank"] == pytest.approx(P)
    assert out["trace"] == pytest.approx(3.0 * P)


def test_effective_rank_of_rank_one_matrix_is_one():
    v = np.array([1.0, 2.0, -2.0, 4.0])  # ||v||^2 = 25
    out = lm.kernel_spectrum(t(np.outer(v, v)), k=2)
    assert out["effective_rank"] == pytest.approx(1.0, rel=1e-10)
    assert out["eig_1"] == pytest.approx(25.0)
    assert out["eig_2"] == pytest.approx(0.0, abs=1e-12)
    assert out["trace"] == pytest.approx(25.0)


def test_kernel_spectrum_of_zero_kernel_has_zero_effective_rank():
    out = lm.kernel_spectrum(torch.zeros(3, 3, dtype=torch.float64))
    assert out["effective_rank"] == 0.0  # the rank of the zero matrix
    assert out["trace"] == 0.0


def test_kernel_spectrum_rejects_non_positive_k():
    with pytest.raises(ValueError, match=r"^k:"):
        lm.kernel_spectrum(torch.eye(3, dtype=torch.float64), k=0)


# --------------------------------------------------------------------------- bad input


def test_alignment_rejects_non_square_kernel():
    with pytest.raises(ValueError, match=r"^K:"):
        lm.kernel_alignment(torch.zeros(3, 4, dtype=torch.float64), torch.ones(3))


def test_alignment_rejects_four_dimensional_kernel():
    with pytest.raises(ValueError, match=r"^K:"):
        lm.kernel_alignment(torch.ones(3, 3, 2, 2, dtype=torch.float64), t([1.0, 2.0, 3.0]))


def test_alignment_rejects_labels_with_wrong_number_of_rows():
    with pytest.raises(ValueError, match=r"^y:"):
        lm.kernel_alignment(torch.eye(4, dtype=torch.float64), t([1.0, 2.0, 3.0]))


def test_alignment_rejects_three_dimensional_labels():
    with pytest.raises(ValueError, match=r"^y:"):
        lm.kernel_alignment(torch.eye(2, dtype=torch.float64), torch.ones(2, 1, 1))


def test_alignment_rejects_nan_in_kernel():
    K = torch.eye(3, dtype=torch.float64)
    K[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"^K:"):
        lm.kernel_alignment(K, t([1.0, 2.0, 3.0]))


def test_alignment_rejects_inf_in_labels():
    with pytest.raises(ValueError, match=r"^y:"):
        lm.kernel_alignment(torch.eye(3, dtype=torch.float64), t([1.0, math.inf, 3.0]))


def test_alignment_rejects_unknown_centering():
    with pytest.raises(ValueError, match="centering"):
        lm.kernel_alignment(torch.eye(3, dtype=torch.float64), t([1.0, 2.0, 3.0]), "columns")


def test_alignment_rejects_non_tensor_inputs():
    with pytest.raises(TypeError, match=r"^K:"):
        lm.kernel_alignment(np.eye(3), t([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match=r"^y:"):
        lm.kernel_alignment(torch.eye(3, dtype=torch.float64), [1.0, 2.0, 3.0])


def test_cka_rejects_mismatched_kernel_shapes():
    with pytest.raises(ValueError, match="K2"):
        lm.cka(torch.eye(3, dtype=torch.float64), torch.eye(4, dtype=torch.float64))


def test_cka_rejects_non_square_kernels():
    with pytest.raises(ValueError, match=r"^K1:"):
        lm.cka(torch.ones(3, 2, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^K2:"):
        lm.cka(torch.eye(3, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64))


def test_cka_rejects_nan_and_non_tensor_kernels():
    bad = torch.eye(3, dtype=torch.float64)
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"^K2:"):
        lm.cka(torch.eye(3, dtype=torch.float64), bad)
    with pytest.raises(TypeError, match=r"^K1:"):
        lm.cka([[1.0, 0.0], [0.0, 1.0]], torch.eye(2, dtype=torch.float64))


def test_linear_cka_rejects_sample_count_mismatch():
    with pytest.raises(ValueError, match="X2"):
        lm.linear_cka(torch.ones(5, 2, dtype=torch.float64), torch.ones(6, 2, dtype=torch.float64))


def test_linear_cka_rejects_one_dimensional_features_and_non_tensors():
    with pytest.raises(ValueError, match=r"^X1:"):
        lm.linear_cka(torch.ones(5, dtype=torch.float64), torch.ones(5, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^X2:"):
        lm.linear_cka(torch.ones(5, 2, dtype=torch.float64), np.ones((5, 2)))


def test_ntk_drift_rejects_shape_mismatch_and_non_tensors():
    with pytest.raises(ValueError, match="K0"):
        lm.ntk_drift(torch.eye(3, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^K0:"):
        lm.ntk_drift(torch.eye(3, dtype=torch.float64), np.eye(3))


def test_kernel_spectrum_rejects_non_square_kernel():
    with pytest.raises(ValueError, match=r"^K:"):
        lm.kernel_spectrum(torch.ones(2, 3, dtype=torch.float64))


# --------------------------------------------------------------------------- undefined metrics


@pytest.mark.parametrize("centering", ["double", "rows"])
def test_alignment_with_constant_labels_is_undefined(centering):
    y = torch.full((6,), 3.0, dtype=torch.float64)
    K = t(random_psd(np.random.default_rng(18), 6, 3))
    with pytest.raises(ValueError, match=r"^y:.*zero variance"):
        lm.kernel_alignment(K, y, centering)


@pytest.mark.parametrize("centering", ["double", "rows"])
def test_alignment_with_constant_non_dyadic_labels_is_undefined(centering):
    # A constant target is constant whatever its value: 0.1 * ones(7) has mean 0.1 up to
    # one rounding, so y - mean(y) is rounding noise (~1e-17), not a signal. The function
    # raises ValueError as for any other constant target (the meter records NaN).
    y = torch.full((7,), 0.1, dtype=torch.float64)
    K = t(random_psd(np.random.default_rng(19), 7, 3))
    with pytest.raises(ValueError, match=r"^y:"):
        lm.kernel_alignment(K, y, centering)


def test_cka_with_constant_non_dyadic_kernel_is_undefined():
    # Same contract as above for a kernel: H (0.1 * 11^T) H = 0 exactly, so CKA is undefined.
    K1 = t(random_psd(np.random.default_rng(21), 6, 3))
    with pytest.raises(ValueError, match=r"^K2:.*cka is undefined"):
        lm.cka(K1, torch.full((6, 6), 0.1, dtype=torch.float64))


def test_uncentred_alignment_with_zero_labels_is_undefined():
    with pytest.raises(ValueError, match=r"^y:.*zeros"):
        lm.kernel_alignment(torch.eye(4, dtype=torch.float64), torch.zeros(4), "none")


def test_alignment_with_constant_kernel_is_undefined():
    with pytest.raises(ValueError, match=r"^K:.*kernel_alignment is undefined"):
        lm.kernel_alignment(torch.ones(4, 4, dtype=torch.float64), t([1.0, 2.0, 0.0, 5.0]))


def test_cka_with_constant_kernel_is_undefined():
    with pytest.raises(ValueError, match=r"^K2:"):
        lm.cka(torch.eye(4, dtype=torch.float64), torch.full((4, 4), 2.0))


@pytest.mark.parametrize("P", [20, 3])  # both computation regimes
def test_linear_cka_with_constant_features_is_undefined(P):
    X1 = t(np.arange(float(P * 4)).reshape(P, 4))
    X2 = torch.full((P, 4), 2.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^X2:.*constant"):
        lm.linear_cka(X1, X2)


def test_ntk_drift_from_zero_kernel_is_undefined():
    with pytest.raises(ValueError, match=r"^K0:.*zero"):
        lm.ntk_drift(torch.eye(3, dtype=torch.float64), torch.zeros(3, 3))


def test_well_defined_metrics_do_not_warn():
    rng = np.random.default_rng(20)
    K1, K2, y = t(random_psd(rng, 6, 2)), t(random_psd(rng, 6, 3)), t(rng.standard_normal(6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for centering in CENTERINGS:
            lm.kernel_alignment(K1, y, centering)
        lm.cka(K1, K2)
        lm.ntk_drift(K1, K2)
        lm.kernel_spectrum(K1)


# --------------------------------------------------------------------------- properties

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)
ELEMENT = st.floats(
    min_value=-10, max_value=10, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
POSITIVE = st.floats(min_value=1e-2, max_value=1e2)


def centred_norm_ok(X: np.ndarray) -> bool:
    """Features that are not (numerically) constant across samples."""
    Xc = X - X.mean(axis=0)
    return float(np.linalg.norm(Xc)) > 0.1 * (1.0 + float(np.linalg.norm(X)))


@st.composite
def feature_pair(draw):
    P = draw(st.integers(3, 7))
    X1 = draw(hnp.arrays(np.float64, (P, draw(st.integers(1, 5))), elements=ELEMENT))
    X2 = draw(hnp.arrays(np.float64, (P, draw(st.integers(1, 5))), elements=ELEMENT))
    return X1, X2


@st.composite
def kernel_and_labels(draw):
    P = draw(st.integers(3, 7))
    X = draw(hnp.arrays(np.float64, (P, draw(st.integers(1, 5))), elements=ELEMENT))
    y = draw(hnp.arrays(np.float64, (P,), elements=ELEMENT))
    return X, y


@PROPERTY_SETTINGS
@given(feature_pair())
def test_cka_is_symmetric(pair):
    X1, X2 = pair
    assume(centred_norm_ok(X1) and centred_norm_ok(X2))
    K1, K2 = t(X1 @ X1.T), t(X2 @ X2.T)
    assert lm.cka(K1, K2) == pytest.approx(lm.cka(K2, K1), abs=1e-12)


@PROPERTY_SETTINGS
@given(feature_pair())
def test_cka_lies_in_unit_interval_for_psd_kernels(pair):
    X1, X2 = pair
    assume(centred_norm_ok(X1) and centred_norm_ok(X2))
    value = lm.cka(t(X1 @ X1.T), t(X2 @ X2.T))
    assert -1e-12 <= value <= 1 + 1e-12
    assert value == pytest.approx(ref_cka(X1 @ X1.T, X2 @ X2.T), abs=1e-9)


@PROPERTY_SETTINGS
@given(feature_pair())
def test_cka_is_one_for_identical_kernels(pair):
    X1, _ = pair
    assume(centred_norm_ok(X1))
    K = t(X1 @ X1.T)
    assert lm.cka(K, K.clone()) == pytest.approx(1.0, abs=1e-10)
    assert lm.linear_cka(t(X1), t(X1)) == pytest.approx(1.0, abs=1e-10)


@PROPERTY_SETTINGS
@given(feature_pair(), POSITIVE, POSITIVE)
def test_cka_is_invariant_to_isotropic_scaling(pair, c1, c2):
    X1, X2 = pair
    assume(centred_norm_ok(X1) and centred_norm_ok(X2))
    base = lm.cka(t(X1 @ X1.T), t(X2 @ X2.T))
    assert lm.cka(t(c1 * X1 @ X1.T), t(c2 * X2 @ X2.T)) == pytest.approx(base, abs=1e-10)
    base_linear = lm.linear_cka(t(X1), t(X2))
    assert base_linear == pytest.approx(base, abs=1e-9)
    assert lm.linear_cka(t(c1 * X1), t(c2 * X2)) == pytest.approx(base_linear, abs=1e-10)


@PROPERTY_SETTINGS
@given(kernel_and_labels(), POSITIVE, POSITIVE, st.sampled_from(CENTERINGS))
def test_alignment_is_invariant_to_positive_scaling_of_kernel_and_labels(data, cK, cy, centering):
    X, y = data
    assume(centred_norm_ok(X) and centred_norm_ok(y[:, None]))
    K = X @ X.T
    base = lm.kernel_alignment(t(K), t(y), centering)
    assert lm.kernel_alignment(t(cK * K), t(cy * y), centering) == pytest.approx(base, abs=1e-10)


@PROPERTY_SETTINGS
@given(kernel_and_labels())
def test_double_alignment_lies_in_unit_interval_for_psd_kernels(data):
    X, y = data
    assume(centred_norm_ok(X) and centred_norm_ok(y[:, None]))
    K = X @ X.T
    value = lm.kernel_alignment(t(K), t(y), "double")
    assert -1e-12 <= value <= 1 + 1e-12
    assert value == pytest.approx(ref_alignment_double(K, y), abs=1e-9)


@PROPERTY_SETTINGS
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=4, max_side=4), elements=ELEMENT)
)
def test_ntk_drift_is_zero_for_identical_kernels(K0):
    assume(np.linalg.norm(K0) > 1e-3)
    assert lm.ntk_drift(t(K0), t(K0.copy())) == 0.0
