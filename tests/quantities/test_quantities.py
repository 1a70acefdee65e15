"""The Quantity contract: user quantities, their schedules and state, the presets, and
tags/docs that come from the quantities."""

from __future__ import annotations

import math
import os

import pytest
import torch
from helpers import fit as train
from torch import nn

import lazymeter as lm
from lazymeter import quantities as Q


def regression(seed: int = 0, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)).double()


class KernelTrace(lm.Quantity):
    """The docs' example: the trace of the train-probe NTK, now and at init."""

    name = "k_trace"

    def compute(self, ctx):
        return {
            "k_trace": float(ctx.kernel("train").trace()),
            "k0_trace": float(ctx.kernel("train", at="init").trace()),
        }


class CountingProbeLoss(lm.Quantity):
    """Own schedule, own state: the probe MSE of the meter's output, and a call count."""

    name = "probe_mse"
    schedule = 3

    def __init__(self):
        self.calls = 0

    def setup(self, ctx):
        self.initial = float(
            ((ctx.output(ctx.probe("train")[0]) - ctx.targets("train")) ** 2).mean()
        )

    def compute(self, ctx):
        self.calls += 1
        x, _ = ctx.probe("train")
        mse = float(((ctx.output(x) - ctx.targets("train")) ** 2).mean())
        return {"probe_mse": mse, "probe_mse0": self.initial, "calls": self.calls}

    def state_dict(self):
        return {"calls": self.calls, "initial": self.initial}

    def load_state_dict(self, state):
        self.calls, self.initial = state["calls"], state["initial"]


def test_a_user_quantity_sees_the_kernels_the_meter_measures():
    x, y = regression()
    model = mlp()
    meter = lm.LazyMeter(model, alpha=2.0, probe=(x, y), schedule=2,
                         quantities=[*Q.DEFAULT, KernelTrace()])  # fmt: skip
    K0 = lm.empirical_ntk(model, x)
    train(meter, x, y, 4, lr=0.2)  # steps count updates: the row at step 4 is after 4
    row = meter.history[-1]
    assert row["step"] == 4
    K = lm.empirical_ntk(model, x)  # independent computation on the trained model
    assert row["k_trace"] == pytest.approx(float(K.trace()), rel=1e-10)
    assert row["k0_trace"] == pytest.approx(float(K0.trace()), rel=1e-10)
    assert row["ntk_drift"] == pytest.approx(float((K - K0).norm() / K0.norm()), rel=1e-8)
    assert "k0_test_mse" not in row and "spectrum_trace" in row  # DEFAULT, no test probe


def test_a_quantity_with_its_own_schedule_and_state_resumes(tmp_path):
    x, y = regression()
    meter = lm.LazyMeter(mlp(), probe=(x, y), schedule=4,
                         quantities=[Q.ParameterMovement(), CountingProbeLoss()])  # fmt: skip
    train(meter, x, y, 6, lr=0.2)  # steps 1..6 (step k: after k updates)
    steps = {r["step"]: r for r in meter.history}
    assert sorted(steps) == [0, 3, 4, 6]  # its own (every 3) and the meter's (every 4)
    assert "probe_mse" not in steps[4] and "param_movement" not in steps[3]
    assert [steps[s]["calls"] for s in (0, 3, 6)] == [1, 2, 3]
    # Independently: the meter's output alpha (f - f0) after the last step, against y.
    with torch.no_grad():
        f = meter(x)
    assert steps[6]["probe_mse"] == pytest.approx(float(((f - y) ** 2).mean()), rel=1e-12)
    assert steps[0]["probe_mse0"] == pytest.approx(float((y**2).mean()))  # setup: f = 0
    saved = meter.state_dict()
    resumed = lm.LazyMeter(mlp(), probe=(x, y), schedule=4,
                           quantities=[Q.ParameterMovement(), CountingProbeLoss()])  # fmt: skip
    resumed.load_state_dict(saved)
    assert resumed.quantities[1].calls == 3
    train(resumed, x, y, 3, lr=0.2)  # steps 7, 8, 9
    assert [r["step"] for r in resumed.history][-2:] == [8, 9]
    assert resumed.history[-1]["calls"] == 4


def test_state_saved_with_other_quantities_is_rejected():
    x, y = regression()
    a = lm.LazyMeter(mlp(), probe=(x, y), quantities=[Q.ParameterMovement()])
    b = lm.LazyMeter(mlp(), probe=(x, y), quantities=[Q.ParameterMovement(), KernelTrace()])
    with pytest.raises(ValueError, match="quantities"):
        b.load_state_dict(a.state_dict())


def test_default_list_is_copied_per_meter():
    x, y = regression()
    xt, yt = regression(1)
    first = lm.LazyMeter(mlp(0), probe=lm.ProbeSet((x, y), test=(xt, yt)), quantities=Q.DEFAULT)
    second = lm.LazyMeter(mlp(1), probe=lm.ProbeSet((x, y), test=(xt, yt)), quantities=Q.DEFAULT)
    assert all(a is not b for a, b in zip(first.quantities, second.quantities, strict=True))
    assert first.baseline["k0_test_mse"] != second.baseline["k0_test_mse"]
    assert not Q.DEFAULT[4].results  # the shared list itself kept no state


def test_economy_preset_measures_fewer_keys_than_the_default():
    x, y = regression()
    eco = lm.LazyMeter(mlp(), probe=(x, y), quantities=Q.ECONOMY).measure()
    full = lm.LazyMeter(mlp(), probe=(x, y)).measure()
    assert set(eco) < set(full) and "ntk_drift" in eco and "spectrum_trace" not in eco


def _same_rows(a, b):
    ra, rb = a.measure(), b.measure()
    assert ra.keys() == rb.keys()
    assert all(ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])) for k in ra)


def test_default_builds_the_quantities_its_options_configure():
    x, y = regression()
    # No quantities: the default set.
    _same_rows(
        lm.LazyMeter(mlp(), probe=(x, y)),
        lm.LazyMeter(mlp(), probe=(x, y), quantities=Q.default()),
    )
    # default()'s options, each on the quantity it configures (biased with rows centring).
    own = [
        Q.ParameterMovement(), Q.KernelDrift("biased"), Q.Alignment("rows", "biased"),
        Q.Spectrum(2), Q.LazyBaseline(), Q.FeatureCKA(["0"]),
    ]  # fmt: skip
    same = Q.default(centering="rows", spectrum_k=2, features=["0"])
    _same_rows(
        lm.LazyMeter(mlp(), probe=(x, y), quantities=same),
        lm.LazyMeter(mlp(), probe=(x, y), quantities=own),
    )


def test_a_failing_quantity_records_nan_for_its_keys_and_warns_once():
    class Broken(lm.Quantity):
        name = "broken"

        def keys(self, ctx):
            return ["broken_a", "broken_b"]

        def compute(self, ctx):
            raise RuntimeError("boom")

    x, y = regression()
    meter = lm.LazyMeter(mlp(), probe=(x, y), quantities=[Q.KernelDrift(), Broken()])
    with pytest.warns(RuntimeWarning, match="could not measure broken \\(boom\\)"):
        row = meter.measure()
    assert math.isnan(row["broken_a"]) and math.isnan(row["broken_b"])
    assert math.isfinite(row["ntk_drift"])


def test_quantities_must_be_quantity_objects():
    x, y = regression()
    with pytest.raises(TypeError, match="quantities: expected lazymeter.Quantity"):
        lm.LazyMeter(mlp(), probe=(x, y), quantities=[lambda m: {}])


def test_tensorboard_tags_come_from_the_quantities():
    class Custom(lm.Quantity):
        name = "custom"
        tags = {"custom_value": "mine/value", "custom_part_": "mine/parts/"}

        def compute(self, ctx):
            return {}

    assert lm.tag_for("custom_value") == "lazymeter/mine/value"
    assert lm.tag_for("custom_part_a") == "lazymeter/mine/parts/a"
    assert lm.tag_for("ntk_drift") == "lazymeter/ntk/drift"  # KernelDrift's own table
    assert lm.tag_for("spectrum_eig_1") == "lazymeter/spectrum/eig_1"


def test_docs_metric_table_is_the_quantities_table():
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "meter.md")
    with open(docs, encoding="utf-8") as f:
        text = f.read()
    assert Q.metric_table() in text, "regenerate with: python -m lazymeter.quantities"


def test_a_quantity_failing_after_it_worked_keeps_its_last_columns_as_nan():
    class Flaky(lm.Quantity):
        name = "flaky"
        calls = 0

        def compute(self, ctx):
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("once")
            return {"flaky_a": 1.0, "flaky_b": 2.0}

    x, y = regression()
    meter = lm.LazyMeter(mlp(), probe=(x, y), quantities=[Flaky()])
    assert meter.measure()["flaky_a"] == 1.0
    with pytest.warns(RuntimeWarning, match="could not measure flaky"):
        row = meter.measure()
    assert math.isnan(row["flaky_a"]) and math.isnan(row["flaky_b"])


def test_full_preset_adds_the_linearised_shadow_with_the_meters_output_fn():
    x, y = regression()
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).double()
    meter = lm.LazyMeter(model, probe=(x, y), quantities=Q.FULL, output_fn=lambda o: o[:, :1])
    row = meter.measure()
    assert row["lin_gap_train"] == 0.0  # nothing trained: network = its linearisation
    assert meter.linearized(x).shape == (len(x), 1)
