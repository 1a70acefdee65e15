"""The meter never changes the model's state or its own initial snapshot (issue 26): a
buffer the model updates in its own forward, BatchNorm statistics of the initial model,
dropout masks of the centring forward."""

from __future__ import annotations

import torch
from architectures import Counted
from torch import nn

import lazymeter as lm


def data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True)).repeat(1, 2)


def counted(seed=0):
    torch.manual_seed(seed)
    return Counted().double()


def test_a_buffer_the_forward_updates_changes_only_by_the_users_own_forwards(tmp_path):
    """Was: a counter buffer went 5 -> 12 through construction, measure() and step()."""
    x, y = data()
    model = counted()
    meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=data(8, 1)), schedule=1)
    meter.measure()
    meter.step(train_loss=1.0)
    lm.empirical_ntk(model, x)
    for method in ("jacobian", "ntvp", "structured", "loop"):  # its own (train) mode too
        lm.empirical_ntk(model, x, method=method, measure_mode="as_is")
    lm.ntk_alignment(model, x, y[:, 0], estimator="biased")
    lm.ntk.explain(model, x)
    lm.ntk.coverage(model, x)
    assert float(model.calls) == 5.0 and not bool(model.running.any())
    meter(x)  # the user's forward: once
    assert float(model.calls) == 6.0
    assert float(meter.snapshot.as_dict()["calls"]) == 5.0  # f0's copy of it: untouched


def test_training_with_measurements_every_step_is_bit_identical_to_training_without():
    """Was 0.031 apart after 20 steps: measurements advanced the counter the output uses."""
    x, y = data()

    def train(measure: bool):
        model = counted()
        meter = lm.LazyMeter(model, alpha=2.0, probe=(x, y), schedule=1 if measure else 10**9)
        opt = torch.optim.SGD(model.parameters(), lr=meter.scaled_lr(0.2))
        for _ in range(20):
            opt.zero_grad()
            loss = ((meter(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            meter.step(train_loss=loss.item())
        return model

    a, b = train(True), train(False)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), f"{n} differs"


def test_the_initial_models_batchnorm_statistics_are_frozen():
    """Was: train-mode meter(x) calls that missed the cache updated the snapshot's running
    statistics, so the centred output in eval mode was 0.54 after 20 forwards."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    model = model.double()
    meter = lm.LazyMeter(model, alpha=3.0)
    before = {k: v.clone() for k, v in meter.snapshot.as_dict().items()}
    with torch.no_grad():
        for _ in range(20):  # fresh inputs: no cache hit
            meter(torch.randn(16, 4, dtype=torch.float64) * 2 + 1)
    for k, v in meter.snapshot.as_dict().items():
        assert torch.equal(v, before[k]), f"snapshot {k} changed"
    model.eval()
    with torch.no_grad():  # the model's statistics moved (its own forwards): f - f0 did not
        model.load_state_dict({k: before[k] for k in model.state_dict()})
        assert torch.equal(meter(torch.randn(5, 4, dtype=torch.float64)), torch.zeros(5, 1))


def test_dropout_draws_the_same_masks_for_f_and_f0_and_the_rng_as_f_alone():
    """With dropout active, f and f0 draw the same masks: the centred output is exactly 0
    at initialisation, and the run's random stream advances as by the model's forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3))
    model = model.double()
    meter = lm.LazyMeter(model, alpha=5.0)
    x = torch.randn(6, 4, dtype=torch.float64)
    rng = torch.get_rng_state()
    with torch.no_grad():
        out = meter(x)
        after = torch.get_rng_state()
        torch.set_rng_state(rng)
        model(x)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(torch.get_rng_state(), after)


class FunctionalDropout(nn.Module):
    """Dropout that is not a module (as inside GPT-2-style attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.dropout(torch.tanh(self.fc1(x)), 0.5, training=self.training)
        return self.fc2(h)


def test_functional_dropout_is_never_served_a_cached_f0_with_stale_masks():
    """A full-batch loop passes the same x every step: f0 must not come from the cache
    when f drew random numbers, or f - f0 would hold the first call's masks."""
    torch.manual_seed(0)
    meter = lm.LazyMeter(FunctionalDropout().double(), alpha=5.0)
    x = torch.randn(6, 4, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):
            out = meter(x)
            assert torch.equal(out, torch.zeros_like(out))
        meter.model.eval()  # no random numbers: f0 is cached again and still exact
        assert torch.equal(meter(x), torch.zeros(6, 3, dtype=torch.float64))
        assert meter._cache
