"""Sketched kernels for many outputs: unbiased (the mean over seeds converges to the exact
traced kernel), a calibrated standard error, the same projections for the same seed, clear
errors, and the meter reporting the estimator and its error bar."""

import math

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.ntk import Sketch, sketched_ntk


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 40)).double()
    return model, torch.randn(6, 5, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_the_sketch_is_unbiased_and_its_standard_error_is_calibrated(kind):
    model, x = _model()
    K = lm.empirical_ntk(model, x)
    n = 200
    runs = [sketched_ntk(model, x, sketch=Sketch(16, kind, groups=4, seed=s)) for s in range(n)]
    E = torch.stack([r.kernel for r in runs])
    S2 = torch.stack([r.stderr**2 for r in runs])
    z = (E.mean(0) - K) / (E.std(0) / math.sqrt(n))
    assert float(z.abs().max()) < 4.5  # 36 entries: no entry's mean is off by > 4.5 SE
    ratio = float((E.var(0) / S2.mean(0)).mean())  # reported SE^2 against the actual variance
    assert 0.7 < ratio < 1.4, ratio


def test_more_projections_give_a_smaller_error_and_the_same_seed_the_same_kernel():
    model, x = _model()
    K = lm.empirical_ntk(model, x)
    small = sketched_ntk(model, x, sketch=Sketch(8, groups=4))
    large = sketched_ntk(model, x, sketch=Sketch(256, groups=8))
    assert large.rel_se < small.rel_se / 2
    assert float((large.kernel - K).norm() / K.norm()) < 3 * large.rel_se
    again = lm.empirical_ntk(model, x, outputs=Sketch(256, groups=8))
    torch.testing.assert_close(again, large.kernel, rtol=0, atol=0)
    x2 = torch.randn(3, 5, dtype=torch.float64)
    assert sketched_ntk(model, x, x2).kernel.shape == (6, 3)


def test_bad_sketches_and_untraced_requests_are_refused():
    model, x = _model()
    for bad in (dict(s=1), dict(kind="sobol"), dict(s=10, groups=3), dict(groups=1)):
        with pytest.raises(ValueError, match="Sketch"):
            Sketch(**bad)
    with pytest.raises(ValueError, match="traced kernel only"):
        lm.empirical_ntk(model, x, outputs=Sketch(8, groups=2), trace_outputs=False)
    with pytest.raises(TypeError, match="outputs"):
        lm.empirical_ntk(model, x, outputs="some")


def test_the_meter_reports_the_estimator_and_its_error_bar(tmp_path):
    model, x = _model()
    y = torch.randn(6, 40, dtype=torch.float64)
    meter = lm.LazyMeter(
        model, alpha=1.0, probe=(x, y), schedule=1, log_dir=tmp_path,
        ntk=lm.NTKOptions(outputs=Sketch(32, groups=4)),
    )  # fmt: skip
    assert meter.ntk_engine["outputs"] == "sketch(s=32, rademacher)"
    row = meter.measure()
    assert 0 < row["ntk_sketch_rel_se"] < 1
    assert row["ntk_drift"] == pytest.approx(0, abs=1e-12)  # same projections as K0
    exact = lm.LazyMeter(model, alpha=1.0, probe=(x, y), schedule=1)
    assert "ntk_sketch_rel_se" not in exact.measure()
    err = float((meter.K0 - exact.K0).norm() / exact.K0.norm())
    assert err < 5 * row["ntk_sketch_rel_se"]
    with pytest.raises(TypeError, match="outputs"):
        lm.NTKOptions(outputs=16)
