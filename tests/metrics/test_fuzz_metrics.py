"""Hypothesis fuzzing of the public metric functions (issue #8, item 5).

Property, for every pure function of the public API: over hostile shapes (0-size, 1 x 1,
non-square, mismatched, 0-d/1-d/3-d where a matrix is expected), dtypes (float16,
bfloat16, float32, float64, int64, bool, complex64), values (normal, ~1e30, ~1e-30,
zeros, constants, NaN/Inf entries, mixed scales) and non-tensor inputs (lists, numpy
arrays, None, strings), a call either

* returns finite number(s): a float, a finite floating tensor, or a dict/dataclass of
  finite numbers (``time_to_grok``: NaN only where its docstring says "never crossed"), or
* raises ``ValueError``/``TypeError`` whose message starts with the offending argument's
  name (the project convention: "name: what is wrong; the fix").

Anything else (RuntimeError, IndexError, torch's LinAlgError, a warning other than the
documented singular-kernel one, a NaN/Inf result) fails. Where the result is defined,
the mathematical properties are checked too: alignment/CKA in [-1, 1], drift and norms
>= 0, CKA symmetric, half-precision inputs computed as exactly as their float64 values.

Examples are derandomized and not stored (``database=None``), so CI runs are reproducible;
``LAZYMETER_FUZZ_EXAMPLES=5000`` turns this into a longer randomised hunt.
"""

from __future__ import annotations

import math
import os
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import lazymeter as lm
from lazymeter.metrics import symmetric_eigvals

# LAZYMETER_FUZZ_EXAMPLES=5000 runs a longer, randomised hunt (not reproducible).
_LONG = int(os.environ.get("LAZYMETER_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG or 200,
    deadline=None,
    derandomize=not _LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int64,
    torch.bool,
    torch.complex64,
]
HALF = (torch.float16, torch.bfloat16)
# Weighted towards well-formed inputs, so that the "result is defined" branch is well
# exercised too (about half of the calls succeed).
DTYPE_DRAWS = DTYPES + [torch.float64] * 6 + [torch.float32] * 3
KINDS = [
    "normal",
    "huge",
    "tiny",
    "zeros",
    "constant",
    "integers",
    "psd",
    "nan",
    "inf",
    "mixed_scale",
    "hypothesis",
]
KIND_DRAWS = KINDS + ["normal"] * 8 + ["psd"] * 4 + ["mixed_scale"] * 2
NON_TENSORS = ["list", "numpy", "none", "str", "float"]
TOL = 1e-6


# --------------------------------------------------------------------------- the property


def outcome(fn, *args, names: tuple[str, ...], **kwargs):
    """``fn(*args, **kwargs)``, or None if it raised ValueError/TypeError naming an argument.

    Any other exception, and any warning but the documented singular-kernel one of
    ``kernel_regression``, propagates and fails the test.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "kernel_regression", RuntimeWarning)
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            head = str(e).split(":", 1)[0]
            named = [n.strip() for n in head.split(",")]
            assert named and all(n in names for n in named), (
                f"{fn.__name__}: {type(e).__name__} does not start with an argument name "
                f"{names}: {e}"
            )
            return None


def finite_float(v: object) -> float:
    assert isinstance(v, float), f"expected a float, got {type(v).__name__}: {v!r}"
    assert math.isfinite(v), v
    return v


def finite_tensor(t: object) -> torch.Tensor:
    assert isinstance(t, torch.Tensor), type(t)
    assert t.is_floating_point(), t.dtype
    assert bool(torch.isfinite(t).all()), t
    return t


# --------------------------------------------------------------------------- strategies


sizes = st.sampled_from([0, 1] + [2, 3, 4, 5, 6] * 3)  # 0 and 1 are degenerate: not always


def mostly(value: object, other: st.SearchStrategy, odds: int = 8) -> st.SearchStrategy:
    """``value`` ``odds`` times out of ``odds + 1``, else a draw from ``other``."""
    return st.sampled_from([True] * odds + [False]).flatmap(
        lambda usual: st.just(value) if usual else other
    )


any_shape = st.one_of(
    st.tuples(), st.tuples(sizes), st.tuples(sizes, sizes), st.tuples(sizes, sizes, sizes)
)


@st.composite
def values(draw, shape: tuple[int, ...], kind: str | None = None) -> np.ndarray:
    """float64 values of one hostile kind."""
    kind = kind or draw(st.sampled_from(KIND_DRAWS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape)
    if kind == "huge":
        x *= 1e30
    elif kind == "tiny":
        x *= 1e-30
    elif kind == "zeros":
        x = np.zeros(shape)
    elif kind == "constant":
        x = np.full(shape, draw(st.sampled_from([0.1, 3.0, -2.5, 1e30, 1e-30])))
    elif kind == "integers":
        x = rng.integers(-3, 4, shape).astype(float)
    elif kind == "psd" and len(shape) == 2 and shape[0] == shape[1]:
        Z = rng.standard_normal((shape[0], 3))
        x = Z @ Z.T
    elif kind in ("nan", "inf") and x.size:
        x.flat[rng.integers(x.size)] = math.nan if kind == "nan" else -math.inf
    elif kind == "mixed_scale":
        x *= 10.0 ** rng.integers(-30, 31, shape)
    elif kind == "hypothesis":
        finite = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False)
        special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 5e-324, 1e-300])
        x = draw(hnp.arrays(np.float64, shape, elements=finite | special))
    return x


@st.composite
def tensors(draw, shape, dtypes=DTYPE_DRAWS, kind: str | None = None) -> torch.Tensor:
    x = torch.from_numpy(np.array(draw(values(shape, kind)), dtype=np.float64))
    dtype = draw(st.sampled_from(dtypes))
    if not (dtype.is_floating_point or dtype.is_complex):
        x = torch.nan_to_num(x).clamp(-1e6, 1e6)  # float -> int of NaN/huge is undefined
    return x.to(dtype)


@st.composite
def inputs(draw, shape) -> object:
    """Mostly a tensor of ``shape``; sometimes a list, numpy array, None, str or float."""
    how = draw(st.sampled_from(["tensor"] * 40 + NON_TENSORS))
    if how == "tensor":
        return draw(tensors(shape))
    x = draw(values(shape))
    return {"list": x.tolist(), "numpy": x, "none": None, "str": "K", "float": 1.0}[how]


@st.composite
def kernel_shape(draw, P: int) -> tuple[int, ...]:
    """``(P, P)`` most of the time, else any shape (non-square, 1-d, 3-d, mismatched)."""
    return draw(mostly((P, P), any_shape))


def real_float64(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.float64


def same_value_in_float64(x: object) -> object:
    return x.double() if isinstance(x, torch.Tensor) and x.dtype in HALF else x


# --------------------------------------------------------------------------- kernels


@FUZZ
@given(data=st.data(), P=sizes)
def test_kernel_alignment(data, P):
    K = data.draw(inputs(data.draw(kernel_shape(P))), "K")
    y_shape = data.draw(mostly((P,), st.tuples(st.just(P), st.integers(0, 3)) | any_shape, odds=3))
    y = data.draw(inputs(y_shape), "y")
    weird = ["columns", "", "Double", None, 1]
    centering = data.draw(st.sampled_from(["double", "rows", "none"] * 4 + weird))
    out = outcome(lm.kernel_alignment, K, y, centering, names=("K", "y", "centering"))
    if out is None:
        return
    assert -1 - TOL <= finite_float(out) <= 1 + TOL
    # Half precision is computed from the exact half values, in float64: no garbage.
    assert out == lm.kernel_alignment(same_value_in_float64(K), same_value_in_float64(y), centering)


@FUZZ
@given(data=st.data(), P=sizes)
def test_cka_is_finite_in_range_and_symmetric(data, P):
    K1 = data.draw(inputs(data.draw(kernel_shape(P))), "K1")
    K2 = data.draw(inputs(data.draw(kernel_shape(P))), "K2")
    out = outcome(lm.cka, K1, K2, names=("K1", "K2"))
    if out is None:
        return
    assert -1 - TOL <= finite_float(out) <= 1 + TOL
    assert out == pytest.approx(lm.cka(K2, K1), abs=1e-12)
    assert out == lm.cka(same_value_in_float64(K1), same_value_in_float64(K2))


@FUZZ
@given(data=st.data(), P=sizes)
def test_linear_cka_is_finite_in_range_and_symmetric(data, P):
    odd = st.tuples(st.just(P), st.integers(0, 2)) | any_shape
    feature_shape = st.one_of(
        st.tuples(st.just(P), st.integers(1, 4)),
        st.tuples(st.just(P), st.integers(1, 3), st.integers(1, 3)),
    ) | mostly((P, 3), odd, odds=1)
    X1 = data.draw(inputs(data.draw(feature_shape)), "X1")
    X2 = data.draw(inputs(data.draw(feature_shape)), "X2")
    out = outcome(lm.linear_cka, X1, X2, names=("X1", "X2"))
    if out is None:
        return
    assert -TOL <= finite_float(out) <= 1 + TOL
    assert out == pytest.approx(lm.linear_cka(X2, X1), abs=1e-12)


@FUZZ
@given(data=st.data(), shape=any_shape)
def test_ntk_drift_is_finite_and_non_negative(data, shape):
    K = data.draw(inputs(shape), "K")
    K0 = data.draw(inputs(data.draw(mostly(shape, any_shape))), "K0")
    out = outcome(lm.ntk_drift, K, K0, names=("K", "K0"))
    if out is None:
        return
    assert finite_float(out) >= 0
    assert lm.ntk_drift(K0, K0) == 0.0


@FUZZ
@given(data=st.data(), P=sizes)
def test_kernel_spectrum(data, P):
    K = data.draw(inputs(data.draw(kernel_shape(P))), "K")
    k = data.draw(
        st.one_of(
            st.integers(1, 8),
            st.integers(-2, 8),
            st.just(np.int64(2)),
            st.sampled_from([True, None, "3", 2.5, math.nan]),
        ),
        "k",
    )
    out = outcome(lm.kernel_spectrum, K, k, names=("K", "k"))
    if out is None:
        return
    assert isinstance(out, dict)
    for v in out.values():
        finite_float(v)
    P = K.shape[0]  # K is square here (the draw may have replaced the (P, P) shape)
    eigs = [out[f"eig_{i + 1}"] for i in range(min(int(k), P))]
    assert set(out) == {"trace", "effective_rank"} | {f"eig_{i + 1}" for i in range(len(eigs))}
    assert eigs == sorted(eigs, reverse=True)
    # (sum l)^2 / sum l^2 <= P by Cauchy-Schwarz, for any symmetric kernel.
    assert 0 <= out["effective_rank"] <= P * (1 + TOL)


@FUZZ
@given(data=st.data(), P=sizes)
def test_center_kernel(data, P):
    K = data.draw(inputs(data.draw(kernel_shape(P))), "K")
    out = outcome(lm.center_kernel, K, names=("K",))
    if out is None:
        return
    finite_tensor(out)
    assert out.shape == K.shape
    assert out.dtype in (torch.float32, torch.float64)
    if K.dtype in (torch.float32, torch.float64):
        assert out.dtype == K.dtype  # never downcast
    # Rows and columns of H K H sum to zero (up to rounding of the output dtype).
    scale = float(K.double().abs().max()) * K.shape[0]
    tol = scale * (1e-5 if out.dtype == torch.float32 else 1e-12)
    assert float(out.double().sum(0).abs().max()) <= tol
    assert float(out.double().sum(1).abs().max()) <= tol
    if K.dtype in HALF:  # computed from the half values, not in half precision
        assert torch.equal(out, lm.center_kernel(K.float()))


@FUZZ
@given(data=st.data(), P=sizes)
def test_symmetric_eigvals(data, P):
    batched = st.tuples(st.integers(0, 2), st.just(P), st.just(P))
    shape = data.draw(st.one_of(kernel_shape(P), batched))
    K = data.draw(inputs(shape), "K")
    out = outcome(symmetric_eigvals, K, names=("K",))
    if out is None:
        return
    finite_tensor(out)
    assert out.shape == K.shape[:-1]
    assert bool((out.diff(dim=-1) >= 0).all())  # ascending


# --------------------------------------------------------------------------- parameters


@st.composite
def params(draw, shapes: list[tuple[int, ...]]) -> object:
    """The tensors of ``shapes`` in a list, dict, module or bare tensor; or junk."""
    ts = [draw(tensors(s)) for s in shapes]
    how = draw(st.sampled_from(["list", "dict", "module", "tensor", "junk"]))
    if how == "list":
        return ts
    if how == "dict":
        return {f"p{i}": t for i, t in enumerate(ts)}
    if how == "module":
        m = nn.Module()
        for i, t in enumerate(ts):
            if t.is_floating_point() or t.is_complex():
                grad = draw(st.booleans())
                m.register_parameter(f"p{i}", nn.Parameter(t, requires_grad=grad))
            else:
                m.register_buffer(f"p{i}", t)
        return m
    if how == "tensor" and ts:
        return ts[0]
    return draw(st.sampled_from([None, "theta", 3.0, [1.0, 2.0], np.ones(3), {"w": [1.0]}, []]))


small_shapes = st.lists(any_shape, min_size=0, max_size=3)


@FUZZ
@given(data=st.data(), shapes=small_shapes)
def test_parameter_movement_is_finite_and_non_negative(data, shapes):
    theta = data.draw(params(shapes), "theta")
    theta0 = data.draw(params(data.draw(mostly(shapes, small_shapes))), "theta0")
    out = outcome(lm.parameter_movement, theta, theta0, names=("theta", "theta0"))
    if out is not None:
        assert finite_float(out) >= 0


@FUZZ
@given(data=st.data(), shapes=small_shapes)
def test_weight_norm_is_finite_and_non_negative(data, shapes):
    theta = data.draw(params(shapes), "theta")
    out = outcome(lm.weight_norm, theta, names=("theta",))
    if out is not None:
        assert finite_float(out) >= 0


# --------------------------------------------------------------------------- baselines


ridges = st.one_of(
    st.sampled_from([0.0, 0.0, 1e-3, 1.0, 1e30, 0, 2, np.float32(0.5), torch.tensor(0.5)]),
    st.sampled_from([0.0, 1e-3, 1.0, 1e30, -1.0, 0, 2]),
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([None, "0", True, torch.tensor([1.0, 2.0])]),
)


@FUZZ
@given(data=st.data(), P=sizes, Q=st.integers(0, 4), C=st.integers(0, 3))
def test_kernel_regression(data, P, Q, C):
    K = data.draw(inputs(data.draw(kernel_shape(P))), "K_train")
    y_shape = data.draw(mostly((P,), mostly((P, C), any_shape, odds=3), odds=2))
    y = data.draw(inputs(y_shape), "y_train")
    Kt = data.draw(inputs(data.draw(mostly((Q, P), any_shape))), "K_test_train")
    ridge = data.draw(ridges, "ridge")
    names = ("K_train", "y_train", "K_test_train", "ridge")
    out = outcome(lm.kernel_regression, K, y, Kt, ridge=ridge, names=names)
    if out is None:
        return
    finite_tensor(out)
    assert out.shape == (Kt.shape[0],) + tuple(y.shape[1:])


# --------------------------------------------------------------------------- decomposition


scalars = st.one_of(
    st.floats(-1e6, 1e6),
    st.sampled_from([0.0, 1.0, -2.0, 1e30, 1e-30, 3, np.float32(0.5), torch.tensor(2.0)]),
    mostly(0.1, st.floats() | st.sampled_from([None, "1", True, torch.tensor([1.0, 2.0])]), 1),
)


@FUZZ
@given(data=st.data(), N=st.integers(0, 5), D=st.integers(0, 5))
def test_decompose_quadratic(data, N, D):
    W = data.draw(inputs(data.draw(mostly((N, D), any_shape))), "W")
    beta = data.draw(inputs(data.draw(mostly((D,), any_shape))), "beta")
    a = data.draw(mostly(None, inputs(data.draw(mostly((N,), any_shape))), odds=1), "a")
    alpha, eps = data.draw(scalars, "alpha"), data.draw(scalars, "eps")
    names = ("W", "beta", "a", "alpha", "eps")
    out = outcome(lm.decompose_quadratic, W, beta, alpha=alpha, eps=eps, a=a, names=names)
    if out is None:
        return
    assert set(out) == {"variance", "misalignment", "linear", "total"}
    for v in out.values():
        assert finite_float(v) >= 0
    parts = out["variance"] + out["misalignment"] + out["linear"]
    assert out["total"] == pytest.approx(parts)


# --------------------------------------------------------------------------- time to grok


def first_crossing(steps: list[float], loss: list[float], threshold: float) -> float:
    """Independent reference: first step with loss <= threshold x the first finite loss."""
    start = None
    for s, v in zip(steps, loss, strict=True):
        if not math.isfinite(v):
            continue
        start = v if start is None else start
        if v <= threshold * start:
            return s
    return math.nan


def as_floats(x: object) -> list[float]:
    if isinstance(x, torch.Tensor):
        return x.double().tolist()
    return np.asarray(x, dtype=float).tolist()


@st.composite
def curve(draw, n: int, steps: bool = False) -> object:
    n = draw(mostly(n, st.integers(0, 6)))  # sometimes mismatched
    if steps:
        floats = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False)
        xs = sorted(draw(st.lists(floats, min_size=n, max_size=n, unique=True)))
        if xs and draw(st.integers(0, 5)) == 0:  # occasionally broken
            xs[draw(st.integers(0, n - 1))] = draw(st.sampled_from([math.nan, math.inf, -1e31]))
    else:
        loss = st.floats(0, 1e6) | st.floats(0, 1e6) | st.floats()  # NaN/Inf allowed
        xs = draw(st.lists(loss, min_size=n, max_size=n))
        if draw(st.booleans()):  # a decreasing curve crosses the threshold
            xs = sorted(xs, key=lambda v: -v if math.isfinite(v) else 0.0)
    how = draw(st.sampled_from(["list"] * 6 + ["numpy", "tensor", "junk"]))
    if how == "numpy":
        return np.array(xs, dtype=np.float64)
    if how == "tensor":
        return torch.tensor(xs, dtype=torch.float64).to(draw(st.sampled_from(DTYPE_DRAWS)))
    if how == "junk":
        return draw(st.sampled_from([None, "abc", {"a": 1.0}, [[1.0, 2.0], [3.0]], [[1.0]], 3.0]))
    return xs


@FUZZ
@given(data=st.data(), n=st.integers(0, 6))
def test_time_to_grok(data, n):
    steps = data.draw(curve(n, steps=True), "steps")
    train, test = data.draw(curve(n), "train_loss"), data.draw(curve(n), "test_loss")
    threshold = data.draw(
        mostly(0.1, st.floats(0, 1) | st.floats() | st.sampled_from([True, None, "0.1"]), 1)
    )
    names = ("steps", "train_loss", "test_loss", "threshold")
    g = outcome(lm.time_to_grok, steps, train, test, threshold=threshold, names=names)
    if g is None:
        return
    s = as_floats(steps)
    want_train = first_crossing(s, as_floats(train), threshold)
    want_test = first_crossing(s, as_floats(test), threshold)
    for got, want in ((g.train_step, want_train), (g.test_step, want_test)):
        assert got == want or (math.isnan(got) and math.isnan(want))
    for v in g.as_dict().values():  # NaN is the documented "never": no Inf, ever
        assert isinstance(v, float) and not math.isinf(v)
    if math.isfinite(g.train_step) and math.isfinite(g.test_step):
        assert math.isfinite(g.delay) or abs(g.test_step - g.train_step) > 1e308
        if g.train_step > 0 and math.isnan(g.ratio):
            assert not math.isfinite(g.test_step / g.train_step)


# --------------------------------------------------------------------------- hand-picked


f64 = torch.float64
EYE = torch.eye(4, dtype=f64)
Y = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=f64)
ONES = torch.ones(4, 4, dtype=f64)
ZERO = torch.zeros(4, 4, dtype=f64)
NAN_K = torch.full((4, 4), math.nan, dtype=f64)


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "error", "prefix"),
    [
        (lm.cka, (EYE, ZERO), {}, ValueError, "K2:"),  # zero kernel: denominator 0
        (lm.cka, (ONES, EYE), {}, ValueError, "K1:"),  # constant kernel: H K H = 0
        (lm.cka, (EYE[:1, :1], EYE[:1, :1]), {}, ValueError, "K1:"),  # P = 1
        (lm.cka, (EYE.to(torch.complex64), EYE), {}, TypeError, "K1:"),
        (lm.cka, (EYE, EYE.numpy()), {}, TypeError, "K2:"),
        (lm.kernel_alignment, (EYE, torch.full((4,), 2.0)), {}, ValueError, "y:"),
        (lm.kernel_alignment, (ZERO, Y, "none"), {}, ValueError, "K:"),
        (lm.kernel_alignment, (NAN_K, Y), {}, ValueError, "K:"),
        (lm.kernel_alignment, (EYE, Y, None), {}, TypeError, "centering:"),
        (lm.kernel_alignment, (torch.zeros(0, 0), torch.zeros(0)), {}, ValueError, "K:"),
        (lm.linear_cka, (torch.ones(4, 2), torch.randn(4, 3)), {}, ValueError, "X1:"),
        (lm.linear_cka, (torch.ones(4, 0), torch.randn(4, 3)), {}, ValueError, "X1:"),
        (lm.ntk_drift, (EYE, ZERO), {}, ValueError, "K0:"),
        (lm.ntk_drift, (torch.zeros(0), torch.zeros(0)), {}, ValueError, "K0:"),
        (lm.parameter_movement, ([Y], [torch.zeros(4)]), {}, ValueError, "theta0:"),
        (lm.parameter_movement, ([Y * math.nan], [Y]), {}, ValueError, "theta:"),
        (lm.parameter_movement, (None, [Y]), {}, TypeError, "theta:"),
        (lm.weight_norm, ("abc",), {}, TypeError, "theta:"),
        (lm.weight_norm, ([Y.to(torch.complex64)],), {}, TypeError, "theta:"),
        (lm.kernel_spectrum, (EYE, 0), {}, ValueError, "k:"),
        (lm.kernel_spectrum, (EYE, 2.5), {}, TypeError, "k:"),
        (lm.kernel_spectrum, (torch.zeros(0, 0),), {}, ValueError, "K:"),
        (lm.center_kernel, ([[1.0]],), {}, TypeError, "K:"),
        (lm.center_kernel, (torch.ones(2, 3),), {}, ValueError, "K:"),
        (symmetric_eigvals, (torch.ones(3),), {}, ValueError, "K:"),
        (lm.kernel_regression, (ZERO[:0, :0], Y[:0], ZERO[:, :0]), {}, ValueError, "K_train:"),
        (lm.kernel_regression, (EYE, Y, EYE), {"ridge": math.inf}, ValueError, "ridge:"),
        (lm.kernel_regression, (EYE, Y, EYE), {"ridge": "1"}, TypeError, "ridge:"),
        (lm.decompose_quadratic, (EYE, Y), {"alpha": math.nan, "eps": 0.1}, ValueError, "alpha:"),
        (lm.decompose_quadratic, (EYE, Y), {"alpha": 1.0, "eps": "x"}, TypeError, "eps:"),
        (lm.decompose_quadratic, (EYE, [1.0] * 4), {"alpha": 1.0, "eps": 0.1}, TypeError, "beta:"),
        (lm.decompose_quadratic, (ZERO[:0], Y), {"alpha": 1.0, "eps": 0.1}, ValueError, "W:"),
        (lm.time_to_grok, ([0, math.nan], [1, 1], [1, 1]), {}, ValueError, "steps:"),
        (lm.time_to_grok, (None, [1], [1]), {}, TypeError, "steps:"),
        (lm.time_to_grok, ([0, 1], [1, 1], [1, 1]), {"threshold": "0.1"}, TypeError, "threshold:"),
    ],
)
def test_hostile_input_is_rejected_naming_the_argument(fn, args, kwargs, error, prefix):
    with pytest.raises(error, match=f"^{prefix}"):
        fn(*args, **kwargs)


def test_degenerate_but_defined_inputs_give_finite_numbers():
    assert lm.kernel_spectrum(ZERO)["effective_rank"] == 0.0  # rank of the zero matrix
    assert lm.ntk_drift(ZERO, EYE) == 1.0
    assert lm.weight_norm(nn.Linear(2, 2).requires_grad_(False)) == 0.0
    # Entries near the float64 limits: exact power-of-two rescaling, no over/underflow.
    for s in (1e-300, 1e300):
        assert lm.cka(s * EYE, s * EYE) == pytest.approx(1.0)
        assert lm.kernel_alignment(s * EYE, Y) == pytest.approx(lm.kernel_alignment(EYE, Y))
        assert lm.kernel_spectrum(s * EYE)["effective_rank"] == pytest.approx(4.0)
        assert lm.weight_norm([torch.full((4,), s, dtype=f64)]) == pytest.approx(2 * s)
    g = lm.time_to_grok([1, 2], [1.0, 1.0], [1.0, 1.0])  # never crosses: the documented NaN
    assert math.isnan(g.train_step) and math.isnan(g.ratio)
