"""Tests for lazymeter.baselines.kernel_regression against numpy solves and hand values."""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pytest
import torch

import lazymeter as lm


def t(a, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=dtype)


def rbf(A: np.ndarray, B: np.ndarray, width: float = 1.0) -> np.ndarray:
    sq = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * width**2))


def full_rank_problem(seed: int, P: int = 8, Q: int = 5, C: int | None = None):
    """Linear-feature kernel with more features than samples (full rank, well conditioned)."""
    rng = np.random.default_rng(seed)
    d = 3 * P
    X, Xt = rng.standard_normal((P, d)), rng.standard_normal((Q, d))
    y = rng.standard_normal(P if C is None else (P, C))
    return X @ X.T, Xt @ X.T, y


@contextlib.contextmanager
def no_warnings():
    """Turn any warning inside the block into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- hand values


def test_kernel_regression_hand_values_for_scaled_identity_kernel():
    K = 2.0 * torch.eye(3, dtype=torch.float64)
    y = t([2.0, 4.0, 6.0])
    K_test = t([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # (2I)^-1 y = [1, 2, 3]
    pred = lm.kernel_regression(K, y, K_test)
    torch.testing.assert_close(pred, t([1.0, 3.0, 6.0]), rtol=0, atol=1e-12)
    # (2I + 2I)^-1 y = [0.5, 1, 1.5]
    pred = lm.kernel_regression(K, y, K_test, ridge=2.0)
    torch.testing.assert_close(pred, t([0.5, 1.5, 3.0]), rtol=0, atol=1e-12)


def test_kernel_regression_hand_values_for_two_by_two_kernel():
    # K = [[2, 1], [1, 2]], K^-1 = [[2, -1], [-1, 2]] / 3; y = [3, 0] -> coef = [2, -1].
    K = t([[2.0, 1.0], [1.0, 2.0]])
    pred = lm.kernel_regression(K, t([3.0, 0.0]), t([[1.0, 1.0], [0.0, 1.0]]))
    torch.testing.assert_close(pred, t([1.0, -1.0]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("C", [None, 1, 3])
def test_ridgeless_regression_interpolates_training_labels(C):
    K, _, y = full_rank_problem(0, C=C)
    with no_warnings():
        pred = lm.kernel_regression(t(K), t(y), t(K))
    assert pred.shape == y.shape
    np.testing.assert_allclose(pred.numpy(), y, rtol=0, atol=1e-9)


def test_ridgeless_regression_interpolates_with_rbf_kernel():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((10, 3))
    y = np.sin(X[:, 0]) + X[:, 1] ** 2
    K = rbf(X, X, width=0.7)
    assert np.linalg.cond(K) < 1e6
    with no_warnings():
        pred = lm.kernel_regression(t(K), t(y), t(K))
    np.testing.assert_allclose(pred.numpy(), y, rtol=0, atol=1e-8)


@pytest.mark.parametrize("seed", [2, 3])
def test_ridgeless_regression_matches_numpy_solve_on_test_points(seed):
    K, Kt, y = full_rank_problem(seed, C=2)
    expected = Kt @ np.linalg.solve(K, y)
    pred = lm.kernel_regression(t(K), t(y), t(Kt))
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------- ridge


@pytest.mark.parametrize("ridge", [1e-3, 0.5, 10.0])
@pytest.mark.parametrize("C", [None, 4])
def test_ridge_regression_matches_numpy_solve(ridge, C):
    K, Kt, y = full_rank_problem(4, P=9, Q=6, C=C)
    P = K.shape[0]
    expected = Kt @ np.linalg.solve(K + ridge * np.eye(P), y)
    pred = lm.kernel_regression(t(K), t(y), t(Kt), ridge=ridge)
    assert pred.shape == expected.shape
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_ridge_regression_with_rbf_kernel_matches_numpy_solve():
    rng = np.random.default_rng(5)
    X, Xt = rng.standard_normal((12, 2)), rng.standard_normal((4, 2))
    y = np.cos(X @ np.array([1.0, -2.0]))
    K, Kt = rbf(X, X), rbf(Xt, X)
    expected = Kt @ np.linalg.solve(K + 0.1 * np.eye(12), y)
    pred = lm.kernel_regression(t(K), t(y), t(Kt), ridge=0.1)
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_ridge_regularises_a_singular_kernel_without_warning():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((10, 2))
    K, y = X @ X.T, rng.standard_normal(10)
    expected = K @ np.linalg.solve(K + 0.3 * np.eye(10), y)
    with no_warnings():
        pred = lm.kernel_regression(t(K), t(y), t(K), ridge=0.3)
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-9, atol=1e-11)


def test_huge_ridge_shrinks_predictions_towards_k_test_y_over_ridge():
    K, Kt, y = full_rank_problem(7)
    ridge = 1e8
    pred = lm.kernel_regression(t(K), t(y), t(Kt), ridge=ridge)
    np.testing.assert_allclose(pred.numpy(), Kt @ y / ridge, rtol=1e-5)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("y_shape", "out_shape"), [((6,), (4,)), ((6, 1), (4, 1)), ((6, 3), (4, 3))]
)
def test_prediction_shape_follows_label_shape(y_shape, out_shape):
    rng = np.random.default_rng(8)
    X, Xt = rng.standard_normal((6, 20)), rng.standard_normal((4, 20))
    pred = lm.kernel_regression(t(X @ X.T), t(rng.standard_normal(y_shape)), t(Xt @ X.T))
    assert tuple(pred.shape) == out_shape


def test_multi_output_columns_are_independent_regressions():
    K, Kt, Y = full_rank_problem(9, C=3)
    joint = lm.kernel_regression(t(K), t(Y), t(Kt), ridge=0.2)
    for c in range(3):
        single = lm.kernel_regression(t(K), t(Y[:, c]), t(Kt), ridge=0.2)
        torch.testing.assert_close(joint[:, c], single, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- singular kernels


@pytest.mark.parametrize("C", [None, 2])
def test_singular_kernel_without_ridge_warns_and_returns_minimum_norm_solution(C):
    rng = np.random.default_rng(10)
    P, d, Q = 12, 3, 5
    X, Xt = rng.standard_normal((P, d)), rng.standard_normal((Q, d))
    K, Kt = X @ X.T, Xt @ X.T
    assert np.linalg.matrix_rank(K) == d < P
    y = rng.standard_normal(P if C is None else (P, C))  # not in the range of K
    with pytest.warns(RuntimeWarning, match="singular"):
        pred = lm.kernel_regression(t(K), t(y), t(Kt))
    expected = Kt @ np.linalg.pinv(K, rcond=1e-10, hermitian=True) @ y
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-8, atol=1e-10)
    # Independently: the minimum-norm kernel solution is least-squares regression on the
    # features, Xt @ argmin ||X w - y||.
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(pred.numpy(), Xt @ w, rtol=1e-8, atol=1e-10)


def test_singular_kernel_prediction_on_training_set_projects_labels_onto_feature_span():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((9, 2))
    y = rng.standard_normal(9)
    with pytest.warns(RuntimeWarning):
        pred = lm.kernel_regression(t(X @ X.T), t(y), t(X @ X.T))
    Qx, _ = np.linalg.qr(X)
    np.testing.assert_allclose(pred.numpy(), Qx @ (Qx.T @ y), rtol=1e-8, atol=1e-10)


def test_exactly_rank_deficient_kernel_hand_case():
    # K = [[1, 1], [1, 1]] = v v^T with v = [1, 1]; pinv(K) = K / 4.
    # y = [2, 0] -> min-norm coef = K y / 4 = [0.5, 0.5]; prediction at K_test = [1, 1]: 1.
    with pytest.warns(RuntimeWarning):
        pred = lm.kernel_regression(
            torch.ones(2, 2, dtype=torch.float64), t([2.0, 0.0]), t([[1.0, 1.0]])
        )
    torch.testing.assert_close(pred, t([1.0]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- dtypes


def test_float32_inputs_give_float32_predictions():
    K, Kt, y = full_rank_problem(12, C=2)
    f32 = torch.float32
    K32, Kt32, y32 = t(K, f32), t(Kt, f32), t(y, f32)
    pred = lm.kernel_regression(K32, y32, Kt32, ridge=0.1)
    assert pred.dtype == torch.float32
    # Solved in float64 from the float32 values: agrees to float32 rounding.
    K64, Kt64, y64 = (a.double().numpy() for a in (K32, Kt32, y32))
    expected = Kt64 @ np.linalg.solve(K64 + 0.1 * np.eye(K.shape[0]), y64)
    np.testing.assert_allclose(pred.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_float64_inputs_give_float64_predictions():
    K, Kt, y = full_rank_problem(13)
    assert lm.kernel_regression(t(K), t(y), t(Kt)).dtype == torch.float64


def test_mixed_precision_inputs_are_not_downcast():
    K, Kt, y = full_rank_problem(14)
    pred = lm.kernel_regression(t(K, torch.float32), t(y), t(Kt, torch.float32))
    assert pred.dtype == torch.float64


def test_kernel_regression_does_not_modify_inputs():
    K, Kt, y = full_rank_problem(15)
    tensors = [t(K), t(y), t(Kt)]
    before = [a.clone() for a in tensors]
    lm.kernel_regression(*tensors, ridge=0.5)
    for a, b in zip(tensors, before, strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- bad input


def _ok_inputs():
    return torch.eye(3, dtype=torch.float64), t([1.0, 2.0, 3.0]), torch.ones(2, 3)


def test_kernel_regression_rejects_non_square_train_kernel():
    _, y, Kt = _ok_inputs()
    with pytest.raises(ValueError, match=r"^K_train:"):
        lm.kernel_regression(torch.ones(3, 4, dtype=torch.float64), y, Kt)


def test_kernel_regression_rejects_labels_with_wrong_number_of_rows():
    K, _, Kt = _ok_inputs()
    with pytest.raises(ValueError, match=r"^y_train:"):
        lm.kernel_regression(K, t([1.0, 2.0]), Kt)
    with pytest.raises(ValueError, match=r"^y_train:"):
        lm.kernel_regression(K, torch.ones(3, 1, 1), Kt)


@pytest.mark.parametrize("shape", [(2, 4), (3,), (2, 3, 1)])
def test_kernel_regression_rejects_wrong_test_kernel_shape(shape):
    K, y, _ = _ok_inputs()
    with pytest.raises(ValueError, match=r"^K_test_train:"):
        lm.kernel_regression(K, y, torch.ones(shape))


@pytest.mark.parametrize("ridge", [-1e-6, -1.0, math.nan])
def test_kernel_regression_rejects_negative_or_nan_ridge(ridge):
    K, y, Kt = _ok_inputs()
    with pytest.raises(ValueError, match=r"^ridge:"):
        lm.kernel_regression(K, y, Kt, ridge=ridge)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_kernel_regression_rejects_nan_inputs(which):
    args = list(_ok_inputs())
    args[which] = args[which].clone()
    args[which].view(-1)[0] = math.nan
    name = ("K_train", "y_train", "K_test_train")[which]
    with pytest.raises(ValueError, match=rf"^{name}:"):
        lm.kernel_regression(*args)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_kernel_regression_rejects_non_tensor_inputs(which):
    args = list(_ok_inputs())
    args[which] = args[which].numpy()
    name = ("K_train", "y_train", "K_test_train")[which]
    with pytest.raises(TypeError, match=rf"^{name}:"):
        lm.kernel_regression(*args)
