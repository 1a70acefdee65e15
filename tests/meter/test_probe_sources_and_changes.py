"""Probes from DataLoaders, batch lists and numpy arrays; clear errors for a model changed
after the meter was built and for an alpha whose scaled learning rate is unusable."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lazymeter as lm


def data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, torch.sin(x.sum(1, keepdim=True))


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def test_a_dataloader_probe_is_its_datasets_first_points_without_touching_rng_or_iterators():
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    it = iter(loader)
    first = next(it)
    model = mlp()
    rng = torch.get_rng_state()
    baseline = lm.quantities.default(max_baseline=30)
    a = lm.LazyMeter(
        model, probe=lm.ProbeSet(loader, test=loader, max_points=16), quantities=baseline
    )
    assert torch.equal(rng, torch.get_rng_state())
    pool = (x[: lm.probes.POOL], y[: lm.probes.POOL])  # the points a meter reads
    b = lm.LazyMeter(mlp(), probe=lm.ProbeSet(pool, test=pool, max_points=16), quantities=baseline)
    assert torch.equal(a.probe_x, b.probe_x) and torch.equal(a.K0, b.K0)
    assert a.baseline == b.baseline
    assert len(list(it)) == len(loader) - 1 and first[0].shape[0] == 7  # iterator untouched


def test_a_list_of_batches_and_numpy_arrays_are_probes_too():
    x, y = data(20)
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])]
    ref = lm.LazyMeter(mlp(), probe=(x, y))
    as_list = lm.LazyMeter(mlp(), probe=batches)
    as_numpy = lm.LazyMeter(mlp(), probe=(x.double().numpy(), y.double().numpy()))
    assert torch.equal(as_list.probe_x, ref.probe_x)
    assert as_numpy.probe_x.dtype == torch.float32  # the model's dtype
    torch.testing.assert_close(as_numpy.K0, ref.K0)


def test_a_one_shot_iterator_is_refused_naming_what_to_pass():
    x, y = data()
    gen = iter(DataLoader(TensorDataset(x, y), batch_size=8))
    with pytest.raises(TypeError, match="probe: got a one-shot iterator"):
        lm.LazyMeter(mlp(), probe=gen)


def _resize(model):
    model[0] = nn.Linear(3, 5)
    model[2] = nn.Linear(5, 1)


def _same_shape(model):
    model[2] = nn.Linear(8, 1)  # same shape, new (untrained, unknown-at-init) values


@pytest.mark.parametrize(
    "replace, said",
    [
        (_resize, "parameter '0.weight' has shape \\(5, 3\\)"),
        (_same_shape, "'2.weight' is not the Parameter object"),
    ],
    ids=["resized", "same shape"],
)
def test_a_layer_replaced_after_construction_gives_nan_and_a_warning_naming_it(replace, said):
    x, y = data()
    model = mlp()
    meter = lm.LazyMeter(model, probe=(x, y))
    replace(model)
    with pytest.warns(RuntimeWarning, match=said):
        row = meter.measure()
    assert math.isnan(row["ntk_drift"]) and math.isnan(row["param_movement"])


def test_copying_the_models_parameters_in_place_is_not_a_replacement():
    x, y = data()
    model = mlp()
    meter = lm.LazyMeter(model, probe=(x, y))
    model.load_state_dict(mlp(seed=1).state_dict())  # values copied into the same objects
    row = meter.measure()
    assert row["param_movement"] > 0 and math.isfinite(row["ntk_drift"])


def test_scaled_lr_of_an_extreme_alpha_is_a_clear_error():
    meter = lm.LazyMeter(mlp(), alpha=1e-200)
    with pytest.raises(ValueError, match="alpha: lr / alpha\\^2"):
        meter.scaled_lr(1.0)
    # 1e60 is a float64 but no float32: the first SGD step would overflow the model
    with pytest.raises(ValueError, match="alpha: .*above the largest torch.float32"):
        lm.LazyMeter(mlp(), alpha=1e-30).scaled_lr(1.0)
    assert lm.LazyMeter(mlp().double(), alpha=1e-30).scaled_lr(1.0) == pytest.approx(1e60)
    with pytest.warns(RuntimeWarning, match="below the resolution of torch.float32"):
        assert lm.LazyMeter(mlp(), alpha=1e200).scaled_lr(1.0, "adam") == pytest.approx(1e-200)


def test_scaled_lr_warns_when_the_update_underflows_the_models_dtype():
    """alpha=1e8 in float32: lr/alpha^2 steps round away and training silently stalls (it
    does; float64 trains): scaled_lr says so, naming alpha and the dtype."""
    x, y = data()

    def train(dtype):
        model = mlp().to(dtype)
        meter = lm.LazyMeter(model, alpha=1e8)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            lr = meter.scaled_lr(0.1)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(20):
            opt.zero_grad()
            ((meter(x.to(dtype)) - y.to(dtype)) ** 2).mean().backward()
            opt.step()
        return float(meter.measure()["param_movement"]), [str(w.message) for w in seen]

    moved32, said32 = train(torch.float32)
    moved64, said64 = train(torch.float64)
    assert moved32 == 0.0 and moved64 > 0  # the failure the warning is about
    assert any("alpha=1e+08" in m and "torch.float32" in m for m in said32), said32
    assert not said64
