"""Recurrent layers (every engine that claims them is exact; the others refuse clearly),
nn.MultiheadAttention in both modes, and method="auto" falling back past a failing engine."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import ENGINES, Engine, register_engine, select_method, unregister_engine


class Recurrent(nn.Module):
    """A recurrent layer read out at the last step; ``h0`` built from the input's batch."""

    def __init__(self, cell: type[nn.RNNBase], batch_first: bool, h0: bool) -> None:
        super().__init__()
        self.rnn = cell(3, 5, batch_first=batch_first)
        self.head = nn.Linear(5, 2)
        self.batch_first, self.h0 = batch_first, h0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, 3]
        seq = x if self.batch_first else x.transpose(0, 1)
        if self.h0:
            h = torch.zeros(1, x.shape[0], 5, dtype=x.dtype)
            out, _ = self.rnn(seq, (h, h) if isinstance(self.rnn, nn.LSTM) else h)
        else:
            out, _ = self.rnn(seq)
        return self.head(out[:, -1] if self.batch_first else out[-1])


CASES = [
    (cell, bf, h0)
    for cell in (nn.RNN, nn.GRU, nn.LSTM)
    for bf in (True, False)
    for h0 in (False, True)
]


@pytest.mark.parametrize(
    "cell,batch_first,h0", CASES, ids=[f"{c.__name__}-bf{b:d}-h0{h:d}" for c, b, h in CASES]
)
def test_recurrent_kernels_are_exact_and_other_engines_refuse_clearly(cell, batch_first, h0):
    torch.manual_seed(0)
    model = Recurrent(cell, batch_first, h0).double()
    x1, x2 = torch.randn(4, 6, 3).double(), torch.randn(3, 6, 3).double()
    ref = naive_ntk(model, x1, x2)
    for method in ("auto", "loop"):
        K = lm.empirical_ntk(model, x1, x2, method=method)
        torch.testing.assert_close(K, ref, rtol=1e-8, atol=1e-12)
    assert select_method(model, x1) == "loop"
    for method in ("jacobian", "ntvp", "structured"):
        with pytest.raises(ValueError, match="recurrent layer 'rnn'.*method='loop'"):
            lm.empirical_ntk(model, x1, method=method)


def test_meter_on_an_lstm_reports_its_engine_and_measures(tmp_path):
    torch.manual_seed(1)
    model = Recurrent(nn.LSTM, True, False)
    x, y = torch.randn(8, 5, 3), torch.randn(8, 2)
    meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=(x + 0.1, y)), log_dir=tmp_path)
    assert meter.ntk_engine == {"method": "auto", "engine": "loop", "outputs": "all"}
    assert '"engine": "loop"' in (tmp_path / "meta.json").read_text()
    row = meter.measure()
    assert row["ntk_drift"] <= 1e-6
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.5))
    for step in range(3):
        opt.zero_grad()
        ((meter(x) - y) ** 2).mean().backward()
        opt.step()
        meter.step(step)
    row = meter.measure()
    assert row["ntk_drift"] > 0 and all(math.isfinite(v) for v in row.values())


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_multihead_attention_in_both_modes(train):
    torch.manual_seed(2)

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            out, _ = self.mha(x, x, x, need_weights=False)
            return self.head(out[:, -1])

    model = Attn().double().train(train)
    x, y = torch.randn(6, 4, 8).double(), torch.randn(6, 1).double()
    meter = lm.LazyMeter(model, probe=(x, y))
    assert meter.measure()["ntk_drift"] <= 1e-6 and model.training == train
    assert meter.ntk_engine["engine"] in ENGINES
    model.eval()
    torch.testing.assert_close(
        lm.empirical_ntk(model, x), naive_ntk(model, x), rtol=1e-8, atol=1e-12
    )


class Failing(Engine):
    """Cheapest of all, applicable, and failing as an engine would inside torch."""

    calls = 0

    def cost(self, fm, x1, n2, n_out, trace):
        return -1.0

    def compute(self, fm, x1, x2, **kw):
        Failing.calls += 1
        raise RuntimeError("Batching rule not implemented for aten::something")


def test_auto_falls_back_past_a_failing_engine_logs_it_and_remembers(caplog):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(5, 3).double()
    register_engine("failing", Failing())
    try:
        with caplog.at_level(logging.WARNING, logger="lazymeter"):
            K = lm.empirical_ntk(model, x)
        assert "engine 'failing' failed" in caplog.text and "aten::something" in caplog.text
        torch.testing.assert_close(K, naive_ntk(model, x), rtol=1e-10, atol=1e-12)
        assert select_method(model, x) != "failing"  # the engine that worked, remembered
        lm.empirical_ntk(model, x)
        assert Failing.calls == 1  # not retried for this model and input signature
        with pytest.raises(RuntimeError, match="aten::something"):
            lm.empirical_ntk(model, x, method="failing")  # an explicit method never falls back
    finally:
        unregister_engine("failing")
        lm.ntk.clear_caches()
