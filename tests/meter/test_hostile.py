"""Hostile input to LazyMeter: a clear error at construction for what can be checked early,
NaN + one warning (and training goes on) for what happens mid-run.

Each test here is a row of the table in docs/robustness.md.
"""

from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm

D, P = 3, 12


def mlp(seed: int = 0, *layers: nn.Module) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), *layers, nn.Linear(8, 1)).double()


def data(n: int = P, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def gd(meter: lm.LazyMeter, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.1))
    for _ in range(steps):
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())


# ------------------------------------------------------------------ checked at construction
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("part", ["x", "y"])
def test_probe_with_nan_or_inf_is_rejected_at_construction(part, bad):
    x, y = data()
    (x if part == "x" else y)[3, 0] = bad
    with pytest.raises(ValueError, match=f"probe: {part} contains NaN or Inf"):
        lm.LazyMeter(mlp(), probe=(x, y))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_probe_too_small_for_centring_is_rejected_at_construction(n):
    x, y = data()
    with pytest.raises(ValueError, match="probe: needs at least 3 samples"):
        lm.LazyMeter(mlp(), probe=(x[:n], y[:n]))
    with pytest.raises(ValueError, match="test_probe: needs at least 3 samples"):
        lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), test=(x[:n], y[:n])))


@pytest.mark.parametrize("n", [3, 4])
def test_probe_too_small_for_the_unbiased_estimators_is_rejected_at_construction(n):
    """Was accepted, and then every CKA and alignment was NaN with a warning."""
    x, y = data()
    with pytest.raises(ValueError, match=f"probe: has {n} points .* needs at least 5"):
        lm.LazyMeter(mlp(), probe=(x[:n], y[:n]))
    with pytest.raises(ValueError, match=f"test_probe: has {n} points .* needs at least 5"):
        lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), test=(x[:n], y[:n])))
    # the biased estimators give a value (and an error bar) on 3 points
    biased = lm.quantities.default(estimator="biased")
    row = lm.LazyMeter(mlp(), probe=(x[:n], y[:n]), quantities=biased).measure()
    assert math.isfinite(row["alignment_train"]) and math.isfinite(row["ntk_cka"])


@pytest.mark.parametrize("labels", ["constant", "one class"])
def test_labels_with_zero_variance_are_rejected_at_construction(labels):
    x, _ = data()
    y = torch.full((P, 1), 0.7, dtype=torch.float64)
    if labels == "one class":
        y = torch.full((P,), 3)
    with pytest.raises(ValueError, match="probe: the labels y have zero variance"):
        lm.LazyMeter(mlp(), probe=(x, y))


def test_model_without_trainable_parameters_is_rejected_at_construction():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="model: has no parameters with requires_grad"):
        lm.LazyMeter(model, probe=data())


class Detached(nn.Module):
    """Forward through a non-differentiable path: the output carries no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x).detach()


class Rounded(Detached):
    def forward(self, x):
        return torch.round(self.net(x) * 4) / 4  # zero derivative almost everywhere


class ArgMax(Detached):
    def forward(self, x):
        return self.net(x).argmax(-1, keepdim=True)


@pytest.mark.parametrize(
    "cls, match",
    [
        (Detached, "does not depend differentiably.*detach"),
        (Rounded, "NTK on the probe is exactly zero.*round"),
    ],
)
def test_non_differentiable_output_is_rejected_at_construction(cls, match):
    with pytest.raises(ValueError, match=f"model: .*{match}"):
        lm.LazyMeter(cls(), probe=data())


def test_integer_output_is_rejected_at_construction():
    with pytest.raises(TypeError, match="model: returned a torch.int64 tensor"):
        lm.LazyMeter(ArgMax(), probe=data())


class DictOut(Detached):
    def forward(self, x):
        return {"logits": self.net(x)}


def test_non_tensor_output_without_output_fn_is_rejected_at_construction():
    with pytest.raises(TypeError, match="model: returned dict.*output_fn"):
        lm.LazyMeter(DictOut(), probe=data())
    meter = lm.LazyMeter(DictOut(), probe=data(), output_fn=lambda o: o["logits"])
    assert math.isfinite(meter.measure()["ntk_drift"])


class BatchMean(Detached):
    def forward(self, x):
        return self.net(x).mean(0)  # the batch dimension is gone


class BatchShaped(Detached):
    def forward(self, x):
        return self.net(x).expand(-1, x.shape[0])  # [B, B]: per-sample shape depends on B


@pytest.mark.parametrize(
    "cls, match",
    [(BatchMean, "must keep the batch dimension"), (BatchShaped, "depends on the batch")],
)
def test_output_shape_that_depends_on_the_batch_is_rejected_at_construction(cls, match):
    with pytest.raises(ValueError, match=f"model: .*{match}"):
        lm.LazyMeter(cls(), probe=data())


def test_nan_initial_output_is_rejected_at_construction():
    model = mlp()
    with torch.no_grad():
        model[0].bias[0] = math.nan
    with pytest.raises(ValueError, match="model: the initial output on the probe has NaN"):
        lm.LazyMeter(model, probe=data())


def test_unwritable_log_dir_is_rejected_at_construction(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="log_dir: cannot write to"):
        lm.LazyMeter(mlp(), probe=data(), log_dir=blocker / "run")


def test_probe_on_another_device_is_moved_once_with_a_note_in_the_log(caplog):
    x, y = data()
    meta = torch.device("meta")  # stands in for cuda here: any device but the probe's
    with caplog.at_level(logging.WARNING, logger="lazymeter"):
        px, py = lm.probes.as_probe((x, y), "probe", meta)
    assert px.device == meta and py.device == meta
    assert "probe is on cpu but the model is on meta; moved it there once" in caplog.text


# ------------------------------------------------------------------ mid-run: NaN, warn once
class Switchable(nn.Module):
    """Returns one output per sample until ``wide`` is set, then two."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()
        self.wide = False

    def forward(self, x):
        out = self.net(x)
        return torch.cat([out, 2 * out], 1) if self.wide else out


def test_output_shape_changing_mid_run_gives_nan_kernel_metrics_and_training_goes_on():
    x, y = data()
    model = Switchable()
    meter = lm.LazyMeter(model, probe=(x, y), schedule=1)
    gd(meter, x, y, 2)
    assert math.isfinite(meter.history[-1]["ntk_drift"])
    model.wide = True
    with pytest.warns(RuntimeWarning, match="could not measure ntk") as record:
        meter.measure()
        meter.measure()
    assert len([w for w in record if "could not measure ntk" in str(w.message)]) == 1
    assert math.isnan(meter.history[-1]["ntk_drift"])
    assert math.isfinite(meter.history[-1]["param_movement"])


def test_inf_parameters_mid_run_give_nan_metrics_and_training_goes_on():
    x, y = data()
    model = mlp()
    meter = lm.LazyMeter(model, probe=(x, y), schedule=1)
    gd(meter, x, y, 1)
    with torch.no_grad():
        model[2].weight.fill_(math.inf)
    with pytest.warns(RuntimeWarning):
        row = meter.measure()
    assert math.isnan(row["ntk_drift"]) and math.isnan(row["alignment_train"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gd(meter, x, y, 2)  # still steps (the loss is inf/NaN now: the user's problem)
    assert len(meter.history) == 5  # 0 (before training), 1, the measure() at 1, 2, 3


def test_singular_k0_falls_back_to_a_pseudo_inverse_with_a_warning():
    x, y = data()
    x = torch.cat([x, x])  # every point twice: K0 is singular
    y = torch.cat([y, y])
    xt, yt = data(seed=2)
    with pytest.warns(RuntimeWarning, match="singular|pseudo"):
        meter = lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), test=(xt, yt)))
    assert math.isfinite(meter.baseline["k0_test_mse"])
    row = meter.measure()
    assert math.isfinite(row["ntk_drift"]) and math.isfinite(row["alignment_train"])


def test_dropout_in_train_mode_is_switched_off_while_measuring():
    x, y = data()
    model = mlp(0, nn.Dropout(0.5))
    features = lm.quantities.default(features=["1"])
    meter = lm.LazyMeter(model, probe=(x, y), schedule=1, quantities=features)
    gd(meter, x, y, 3)
    assert model.training and model[2].training  # restored after every measurement
    a, b = meter.measure(), meter.measure()
    assert a["ntk_drift"] == b["ntk_drift"] and a["alignment_train"] == b["alignment_train"]
    model.eval()
    c = meter.measure()
    assert math.isclose(a["ntk_drift"], c["ntk_drift"], rel_tol=1e-12)
    assert math.isclose(a["feature_cka/1"], c["feature_cka/1"], rel_tol=1e-12)


def test_failing_jsonl_write_mid_run_warns_once_and_keeps_the_history(tmp_path):
    x, y = data()
    meter = lm.LazyMeter(mlp(), probe=(x, y), schedule=1, log_dir=tmp_path)
    gd(meter, x, y, 1)

    def full(row):
        raise OSError(28, "No space left on device")

    meter._log.jsonl.write = full
    with pytest.warns(RuntimeWarning, match="could not write .*No space left") as record:
        gd(meter, x, y, 3)
    assert len([w for w in record if "could not write" in str(w.message)]) == 1
    assert [r["step"] for r in meter.history] == [0, 1, 2, 3, 4]  # 0: before training
