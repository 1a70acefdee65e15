"""Measurements see the model in eval mode (every kind of dropout off, BatchNorm on its
running statistics) and without autocast, and leave every mode flag as it was."""

from __future__ import annotations

import math

import pytest
import torch
from architectures import naive_ntk
from integrity import ModelState
from torch import nn

import lazymeter as lm


class FunctionalDropoutAttention(nn.Module):
    """GPT-2 style: dropout passed as ``p if self.training else 0`` to the attention kernel,
    no ``nn.Dropout`` module anywhere."""

    def __init__(self, d: int = 8, heads: int = 2, p: float = 0.3) -> None:
        super().__init__()
        self.qkv, self.out, self.heads, self.p = nn.Linear(d, 3 * d), nn.Linear(d, 1), heads, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, d]
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        drop = self.p if self.training else 0.0
        a = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        return self.out(a.transpose(1, 2).reshape(B, T, d)[:, -1])


def data(shape, n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    return x, torch.randn(n, 1, generator=g, dtype=torch.float64)


def models():
    torch.manual_seed(0)
    enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    bn = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 1)
    )  # fmt: skip
    return {
        "functional_dropout_attention": (FunctionalDropoutAttention(), (4, 8), None),
        "transformer_encoder_layer": (enc, (4, 8), lambda y: y[:, -1, :1]),
        "batchnorm_cnn": (bn, (1, 6, 6), None),
    }


@pytest.mark.parametrize("name", sorted(models()))
def test_train_mode_model_has_zero_drift_before_training_and_modes_are_restored(name):
    model, shape, output_fn = models()[name]
    model = model.double().train()
    x, y = data(shape)
    meter = lm.LazyMeter(model, probe=(x, y), output_fn=output_fn, schedule=1)
    state = ModelState(model)
    a, b = meter.measure(), meter.measure()
    state.assert_same()  # every training flag (and buffer: BatchNorm statistics) as before
    assert model.training
    assert a["ntk_drift"] <= 1e-6 and b["ntk_drift"] <= 1e-6  # deterministic, = K0
    assert a["alignment_train"] == b["alignment_train"]
    # The kernel measured is the eval-mode model's, exactly.
    model.eval()
    K = lm.empirical_ntk(model, meter.probe_x, output_fn=output_fn)
    ref = naive_ntk(model, meter.probe_x, output_fn=output_fn)
    torch.testing.assert_close(K, ref, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(meter.K0, ref, rtol=1e-8, atol=1e-10)
    model.train()
    # Training steps (train mode, dropout on) then measurements: finite numbers.
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.05))
    for step in range(3):
        opt.zero_grad()
        ((meter(x) - y) ** 2).mean().backward()
        opt.step()
        row = meter.step(step)
    assert all(math.isfinite(row[k]) for k in ("ntk_drift", "alignment_train", "param_movement"))


def test_as_is_mode_keeps_the_old_behaviour_for_batchnorm_in_training():
    model, shape, _ = models()["batchnorm_cnn"]
    x, y = data(shape)
    with pytest.warns(RuntimeWarning, match="cannot be computed"):
        meter = lm.LazyMeter(model.double().train(), probe=(x, y), measure_mode="as_is")
    assert meter.K0 is None


def test_bad_measure_mode_is_rejected():
    with pytest.raises(ValueError, match="measure_mode"):
        lm.LazyMeter(nn.Linear(2, 1), measure_mode="train")


def test_kernels_inside_an_autocast_region_are_computed_in_full_precision():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3))
    x, y = torch.randn(12, 6), torch.randn(12, 3)
    ref = lm.empirical_ntk(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        K = lm.empirical_ntk(model, x)
        meter = lm.LazyMeter(model, probe=(x, y), schedule=1)
        row = meter.measure()
    assert K.dtype == torch.float32
    torch.testing.assert_close(K, ref, rtol=1e-6, atol=1e-6)
    assert row["ntk_drift"] <= 1e-6  # no bf16 noise between K_t and K_0
    torch.testing.assert_close(meter.K0, ref, rtol=1e-6, atol=1e-6)
