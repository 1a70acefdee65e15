"""Every model of the zoo: drift exactly 0 before training, the kernel equal to the naive
per-sample autograd kernel, finite metrics after a few steps, and the engine reported."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from architectures import naive_ntk
from zoo import AUTOCAST, ZOO

import lazymeter as lm
from lazymeter.ntk import ENGINES


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_meter_on_models_users_bring(name):
    model, x, y, output_fn = ZOO[name]()
    training = model.training
    meter = lm.LazyMeter(model, alpha=2.0, probe=(x, y), output_fn=output_fn, schedule=1)
    info = meter.ntk_engine
    assert info["engine"] in ENGINES, info
    assert meter.measure()["ntk_drift"] <= 1e-6  # deterministic: nothing trained yet
    assert model.training == training
    # The kernel the meter measures is the eval-mode model's: check it against the naive loop.
    model.eval()
    K = lm.empirical_ntk(model, x, output_fn=output_fn)
    ref = naive_ntk(model, x, output_fn=output_fn)
    assert float((K - ref).norm() / ref.norm()) <= 1e-6
    torch.testing.assert_close(meter.K0, ref, rtol=1e-5, atol=1e-6)
    model.train(training)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if name in AUTOCAST else None
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.1))
    for step in range(3):
        with cast or contextlib.nullcontext():
            loss = ((meter(x).float() - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with cast or contextlib.nullcontext():
            row = meter.step(step, train_loss=loss.item())
    keys = ("ntk_drift", "ntk_cka", "alignment_train", "param_movement", "spectrum_trace")
    assert all(math.isfinite(row[k]) for k in keys), {k: row[k] for k in keys}
    assert row["ntk_drift"] > 0


@pytest.mark.parametrize("name", ["gpt2_block", "lstm_seq_first"])
def test_float64_kernels_are_exact_to_1e8(name):
    model, x, _, output_fn = ZOO[name]()
    model = model.double().eval()
    x = x.double() if x.is_floating_point() else x
    K = lm.empirical_ntk(model, x, output_fn=output_fn)
    ref = naive_ntk(model, x, output_fn=output_fn)
    assert float((K - ref).norm() / ref.norm()) <= 1e-8
