"""LazyMeter(max_probe=ProbeSize(...)): the probe size chosen from a target standard error or
a time budget."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import lazymeter as lm


def _data(P: int = 600):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(P, 4, generator=g, dtype=torch.float64)
    return x, torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1)).double()


def test_choice_follows_the_square_law_of_the_standard_error():
    spec = lm.ProbeSize(target_se=0.01, pilot=64, max_points=10_000)
    P, why = spec.choose(se_pilot=0.04, seconds_pilot=0.01, available=10_000)
    assert P == 64 * 16 and "standard error" in why
    P, _ = spec.choose(se_pilot=0.005, seconds_pilot=0.01, available=10_000)
    assert P == 64  # never below the pilot
    P, why = spec.choose(se_pilot=0.04, seconds_pilot=0.01, available=500)
    assert P == 500 and "capped at 500" in why


def test_time_budget_bounds_the_choice():
    spec = lm.ProbeSize(target_se=0.001, budget_s=0.04, pilot=50, max_points=10_000)
    P, why = spec.choose(se_pilot=0.05, seconds_pilot=0.01, available=10_000)
    assert P == 100 and "s per kernel" in why  # sqrt(0.04 / 0.01) * 50


def test_meter_measures_on_the_chosen_size_and_reaches_the_target(tmp_path):
    x, y = _data()
    target = 0.03
    meter = lm.LazyMeter(
        _net(), probe=lm.ProbeSet((x, y), max_points=lm.ProbeSize(target_se=target, pilot=32)),
        log_dir=tmp_path, sinks=[lm.TensorBoardSink(enabled=False)],
    )  # fmt: skip
    P = meter.probe_x.shape[0]
    assert P == meter.probe_choice["max_probe"] and 32 <= P <= 600
    row = meter.measure()
    # at initialisation the chosen size gives about the asked-for error (within 40%)
    assert math.isfinite(row["alignment_train_se"])
    assert row["alignment_train_se"] < 1.4 * target or P == 600
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["probe_choice"]["max_probe"] == P


def test_bad_probe_size_specifications_raise():
    with pytest.raises(ValueError, match="target_se, budget_s"):
        lm.ProbeSize(target_se=None)
    with pytest.raises(ValueError, match="target_se"):
        lm.ProbeSize(target_se=-1.0)
    with pytest.raises(ValueError, match="pilot"):
        lm.ProbeSize(pilot=2)
    with pytest.raises(ValueError, match=r"ProbeSize needs a probe=\(x, y\)"):
        lm.LazyMeter(_net(), probe=lm.ProbeSet(None, max_points=lm.ProbeSize()))
