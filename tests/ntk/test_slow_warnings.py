"""No silent long waits: a kernel predicted (from its first block) to run past
``$LAZYMETER_SLOW_SECONDS`` warns once with the estimate and the knobs, and shows a tqdm
bar on stderr; a meter with many exact outputs suggests ``Sketch(16)``."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.ntk import blocks
from lazymeter.quantities import LazyBaseline

torch.manual_seed(0)


def mlp(n_out: int = 40) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, n_out))


def slow(record: list) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, lm.SlowWarning)]


def kernel(n: int = 24, **kw) -> list[warnings.WarningMessage]:
    x = torch.randn(n, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        lm.empirical_ntk(mlp(), x, method="jacobian", chunk_size=4, **kw)
    return slow(record)


class Bars:
    """A stand-in for the ``tqdm`` module that records its bars."""

    def __init__(self) -> None:
        self.made: list[Bars.Bar] = []
        outer = self

        class Bar:
            def __init__(self, **kw) -> None:
                self.kw, self.updates, self.closed = kw, 0, False
                outer.made.append(self)

            def update(self, n: int) -> None:
                self.updates += n

            def close(self) -> None:
                self.closed = True

        self.Bar = Bar
        self.tqdm = Bar


def test_a_slow_kernel_warns_once_with_the_estimate_and_the_knobs(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0.0001")
    monkeypatch.setattr(blocks, "tqdm", None)
    found = kernel()
    assert len(found) == 1
    msg = str(found[0].message)
    assert "24 x 24" in msg and "'jacobian'" in msg and "21 blocks" in msg
    assert "will take about" in msg and "$LAZYMETER_SLOW_SECONDS" in msg
    assert "ProbeSet(max_points=" in msg
    assert "Sketch(16)" in msg and "40 outputs" in msg and "~2x" in msg
    assert found[0].filename == __file__  # the user's call, not the package's loop


def test_the_warning_names_an_engine_the_flop_model_rates_cheaper(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0.0001")
    monkeypatch.setattr(blocks, "tqdm", None)
    x = torch.randn(24, 4)
    n_out = 40
    fm = lm.ntk.FunctionalModel(mlp(n_out), None)
    costs = {
        name: lm.ntk.engines.as_engine(e, name).cost(fm, (x,), None, n_out, True)
        for name, e in lm.ntk.ENGINES.items()
    }
    found = kernel()
    cheaper = [n for n, c in costs.items() if c < costs["jacobian"] and n != "jacobian"]
    msg = str(found[0].message)
    assert ("NTKOptions(method=...)" in msg) == bool(cheaper)


def test_no_warning_below_the_threshold(monkeypatch):
    monkeypatch.delenv("LAZYMETER_SLOW_SECONDS", raising=False)
    assert blocks.slow_seconds() == blocks.SLOW_SECONDS == 30.0
    bars = Bars()
    monkeypatch.setattr(blocks, "tqdm", bars)
    assert kernel() == []
    assert bars.made == []


def test_one_block_kernels_are_not_estimated(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0")
    monkeypatch.setattr(blocks, "tqdm", None)
    assert kernel(n=4) == []


def test_a_bad_threshold_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "soon")
    assert blocks.slow_seconds() == 30.0


def test_the_progress_bar_goes_to_stderr_over_the_blocks(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0.0001")
    bars = Bars()
    monkeypatch.setattr(blocks, "tqdm", bars)
    assert len(kernel()) == 1
    (bar,) = bars.made
    assert bar.kw["file"] is sys.stderr and bar.kw["total"] == 21 and bar.kw["initial"] == 1
    assert bar.updates == 20 and bar.closed


def test_the_kernel_is_unchanged_by_the_timing(monkeypatch):
    x = torch.randn(24, 4)
    monkeypatch.setattr(blocks, "tqdm", Bars())
    monkeypatch.delenv("LAZYMETER_SLOW_SECONDS", raising=False)
    quiet = lm.empirical_ntk(mlp(), x, method="jacobian", chunk_size=4)
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0.0001")
    with pytest.warns(lm.SlowWarning):
        loud = lm.empirical_ntk(mlp(), x, method="jacobian", chunk_size=4)
    assert torch.equal(quiet, loud)


def meter_warnings(n_out: int, **kw) -> list[warnings.WarningMessage]:
    torch.manual_seed(1)
    x, y = torch.randn(12, 4), torch.randn(12, n_out)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        lm.LazyMeter(mlp(n_out), probe=(x, y), **kw)
    return slow(record)


def test_a_meter_with_many_exact_outputs_suggests_a_sketch():
    (w,) = meter_warnings(100)
    msg = str(w.message)
    assert "100 outputs" in msg and "lm.NTKOptions(outputs=lm.ntk.Sketch(16))" in msg
    assert "~6x" in msg and w.filename == __file__
    assert meter_warnings(10) == []
    sketched = lm.NTKOptions(outputs=lm.ntk.Sketch(16))
    assert [w for w in meter_warnings(100, ntk=sketched) if "Sketch(16)" in str(w.message)] == []


def test_a_slow_baseline_names_its_own_max_points(monkeypatch):
    monkeypatch.setenv("LAZYMETER_SLOW_SECONDS", "0.0001")
    monkeypatch.setattr(blocks, "tqdm", None)
    torch.manual_seed(2)
    x, y, xt, yt = torch.randn(16, 4), torch.randn(16, 3), torch.randn(16, 4), torch.randn(16, 3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        lm.LazyMeter(
            mlp(3),
            probe=lm.ProbeSet((x, y), test=(xt, yt), max_points=8),
            quantities=[LazyBaseline(max_points=16)],
            ntk=lm.NTKOptions(method="jacobian", chunk_size=4),
        )
    found = [w for w in slow(record) if "LazyBaseline(max_points=...)" in str(w.message)]
    assert len(found) == 1  # its two kernels (train, test x train) warn once
    msg = str(found[0].message)
    assert "(now 16)" in msg and "ProbeSet(max_points=" not in msg
    assert found[0].filename == __file__
