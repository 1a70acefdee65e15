"""Warnings raised inside measurements: torch's known harmless ones filtered by message,
any other one shown once per run (was: the same two torch warnings re-printed at every
measurement, as the ``catch_warnings`` around a measurement resets Python's once-only
registry)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.failures import HARMLESS

P = 12


class Attention(nn.Module):
    """nn.MultiheadAttention (scaled_dot_product_attention inside): torch.func.vmap has no
    batching rule for its CPU kernel (nor for its backward) and warns at every vmapped
    call."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.mha, self.head = nn.MultiheadAttention(d, 2, batch_first=True), nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mha(x, x, x, need_weights=False)[0][:, -1])


class WeightNormed(nn.Module):
    """weight_norm: no batching rule for its backward either."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(4, 8))
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc(x)))


class Recurrent(nn.Module):
    """An LSTM whose forward warns, as a user's model may (every forward, same text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = nn.LSTM(4, 6, batch_first=True), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("Recurrent: this forward warns every time", UserWarning, stacklevel=1)
        return self.out(self.rnn(x)[0][:, -1])


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "attention":
        return Attention(), torch.randn(P, 5, 8, generator=g)
    if name == "weight_norm":
        return WeightNormed(), torch.randn(P, 4, generator=g)
    return Recurrent(), torch.randn(P, 5, 4, generator=g)


def measured(name: str, times: int = 5, method: str = "auto") -> list[warnings.WarningMessage]:
    """The warnings a meter on ``name`` emits while built and measured ``times`` times,
    under Python's default filters (each location once, as a user sees them)."""
    model, x = make(name)
    y = torch.randn(P, 2, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        meter = lm.LazyMeter(
            model,
            probe=lm.ProbeSet((x, y), test=(x + 0.1, y)),
            ntk=lm.NTKOptions(method=method),
            quantities=lm.quantities.FULL,
        )
        built = len(caught)
        for _ in range(times):
            meter.measure()
    return caught[:built], caught[built:]


def torch_batching(caught):
    return [w for w in caught if "There is a performance drop" in str(w.message)]


@pytest.mark.parametrize("name", ["attention", "weight_norm"])
def test_torchs_batching_rule_warnings_are_filtered_at_construction_and_in_measurements(name):
    built, runs = measured(name, method="jacobian")  # the vmapped engine: torch warns
    assert torch_batching(built) == [] and torch_batching(runs) == []


def test_without_the_filter_torch_warns_here_and_once_per_run_not_per_measurement(monkeypatch):
    """The filter's teeth: torch does warn on this model (each measurement, twice: the
    attention and its backward), and the entries of HARMLESS are what silence it."""
    import lazymeter.failures

    monkeypatch.setattr(lazymeter.failures, "HARMLESS", [])
    built, runs = measured("attention", times=3, method="jacobian")
    raised = torch_batching(built + runs)
    assert raised, "torch no longer warns here: is the HARMLESS entry still needed?"
    assert len({str(w.message) for w in raised}) == len(raised)  # each once per run
    for w in raised:
        assert any(
            re.match(pattern, str(w.message)) and issubclass(w.category, category)
            for pattern, category in HARMLESS
        )


def test_any_other_warning_inside_measurements_is_shown_at_most_once_per_run():
    built, runs = measured("recurrent", times=5)
    mine = [w for w in runs if "this forward warns" in str(w.message)]
    assert len(mine) <= 1, [str(w.message) for w in runs]
    # ... at the place it was raised (the model's forward), not inside lazymeter
    assert all(w.filename.endswith("test_warnings.py") for w in mine)
    shown = [w for w in built + runs if "this forward warns" in str(w.message)]
    assert shown  # the user does see it
    for w in runs:  # and nothing else repeats
        same = [v for v in runs if str(v.message) == str(w.message)]
        assert len(same) == 1, str(w.message)


def test_a_user_error_filter_still_turns_a_measurement_warning_into_a_failure():
    model, x = make("recurrent")
    y = torch.randn(P, 2, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        meter = lm.LazyMeter(model, probe=(x, y), quantities=[lm.quantities.KernelDrift()])
        warnings.filterwarnings("error", message="Recurrent: this forward warns")
        row = meter.measure()
    assert row["ntk_drift"] != row["ntk_drift"]  # NaN: the warning raised, as the user asked
    assert any("could not measure ntk" in str(w.message) for w in caught)
