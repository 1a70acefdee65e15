"""``LazyMeter``'s constructor: each option on the object it configures (ProbeSet, the
quantities, NTKOptions, TensorBoardSink), and 0.1's keywords translated with a warning that
names the new spelling, giving the same numbers."""

from __future__ import annotations

import inspect
import json
import math
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.quantities import KernelDrift, LazyBaseline, ParameterMovement

D = 3


def data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def squeeze(out: torch.Tensor) -> torch.Tensor:
    return out.squeeze(-1)


def measured(meter: lm.LazyMeter) -> dict[str, float]:
    """One training step and a measurement: the numbers a spelling must not change."""
    x, y = data(20, seed=5)
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.5))
    loss = ((meter(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    meter.step(train_loss=loss.item())
    return meter.measure()


def same_rows(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-14, nan_ok=True), k


def test_the_constructor_takes_model_and_alpha_then_at_most_ten_keywords():
    params = list(inspect.signature(lm.LazyMeter).parameters.values())
    assert [p.name for p in params[:2]] == ["model", "alpha"]
    assert len(params) <= 12
    assert all(p.kind is p.KEYWORD_ONLY for p in params[2:])
    assert {"probe", "quantities", "schedule", "ntk", "log_dir", "sinks"} <= {
        p.name for p in params
    }


OLD_AND_NEW = {
    "probe options": (
        dict(probe=data(30), test_probe=data(12, 2), max_probe=10, seed=3),
        dict(probe=lm.ProbeSet(data(30), test=data(12, 2), max_points=10, seed=3)),
        "probe=ProbeSet(",
    ),
    "ntk options": (
        dict(probe=data(12), ntk_method="jacobian", ntk_chunk_size=4, memory_budget="64MiB"),
        dict(
            probe=data(12),
            ntk=lm.NTKOptions(method="jacobian", chunk_size=4, memory_budget="64MiB"),
        ),
        "ntk=NTKOptions(method='jacobian'",
    ),
    "quantity options": (
        dict(probe=data(12), test_probe=data(10, 2), centering="rows", spectrum_k=2, ridge=1e-3),
        dict(
            probe=lm.ProbeSet(data(12), test=data(10, 2)),
            quantities=lm.quantities.default(centering="rows", spectrum_k=2, ridge=1e-3),
        ),
        "quantities=lazymeter.quantities.default(centering, ridge, spectrum_k)",
    ),
    "tensorboard options": (
        dict(probe=data(12), scalar_every=3, tensorboard=False),
        dict(probe=data(12), sinks=[lm.TensorBoardSink(scalar_every=3, enabled=False)]),
        "sinks=[TensorBoardSink(scalar_every=3, enabled=False)]",
    ),
}


@pytest.mark.parametrize("case", list(OLD_AND_NEW))
def test_old_keywords_warn_with_the_new_spelling_and_measure_the_same(case):
    old, new, spelling = OLD_AND_NEW[case]
    with pytest.warns(lm.LazymeterDeprecationWarning) as caught:
        a = lm.LazyMeter(net(), 2.0, output_fn=squeeze, **old)
    (w,) = caught
    assert spelling in str(w.message)
    assert w.filename == __file__  # points at the user's line, not at lazymeter
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling is silent
        b = lm.LazyMeter(net(), 2.0, output_fn=squeeze, **new)
    same_rows(measured(a), measured(b))


def test_positional_arguments_of_0_1_still_work_with_a_warning():
    with pytest.warns(lm.LazymeterDeprecationWarning, match="by position -> by keyword"):
        a = lm.LazyMeter(net(), 2.0, True, data(12), data(10, 2), 5)
    b = lm.LazyMeter(
        net(), 2.0, center=True, probe=lm.ProbeSet(data(12), test=data(10, 2)), schedule=5
    )
    assert a.schedule.due(5) and not a.schedule.due(4)
    same_rows(measured(a), measured(b))


def test_regime_thresholds_keyword_becomes_the_meter_attribute():
    thresholds = lm.regime.RegimeThresholds(lazy_kernel=0.5)
    with pytest.warns(lm.LazymeterDeprecationWarning, match="meter.regime_thresholds"):
        meter = lm.LazyMeter(net(), 2.0, probe=data(12), regime_thresholds=thresholds)
    assert meter.regime_thresholds is thresholds


@pytest.mark.parametrize(
    "kwargs, owner",
    [
        (dict(quantities=[KernelDrift()], max_baseline=100), "quantities="),
        (dict(quantities=lm.quantities.ECONOMY, centering="rows"), "quantities="),
        (dict(ntk=lm.NTKOptions(), ntk_method="jacobian"), "NTKOptions"),
        (dict(probe=lm.ProbeSet(data(12)), max_probe=5), "ProbeSet"),
        (dict(sinks=[lm.TensorBoardSink()], scalar_every=2), "TensorBoardSink"),
    ],
)
def test_an_old_keyword_beside_the_object_that_owns_it_is_an_error_not_ignored(kwargs, owner):
    # 0.1 silently ignored e.g. max_baseline= when quantities= was given.
    kwargs.setdefault("probe", data(12))
    with pytest.raises(TypeError, match=owner):
        lm.LazyMeter(net(), 2.0, **kwargs)


class SetupPoints(lm.Quantity):
    """Records how many train points setup could read (``ctx.probe(split, max_points)``)."""

    name = "setup_points"
    needs = "kernel"

    def __init__(self, max_points: int) -> None:
        self.max_points, self.seen = max_points, 0

    def probe_points(self) -> int:
        return self.max_points

    def setup(self, ctx):
        self.seen = int(ctx.probe("train", self.max_points)[0].shape[0])

    def compute(self, ctx):
        return {"setup_points": float(self.seen)}


def test_the_measured_points_do_not_depend_on_which_quantities_are_measured():
    x, y = data(3000)
    probe = lm.ProbeSet((x, y), max_points=16)
    economy = lm.LazyMeter(net(), 2.0, probe=probe, quantities=lm.quantities.ECONOMY)
    default = lm.LazyMeter(net(), 2.0, probe=probe)
    assert torch.equal(economy.probe_x, default.probe_x)


def test_the_meter_keeps_as_many_probe_points_as_the_largest_quantity_asks_for():
    # 0.1 cut the whole probe at max(max_probe, max_baseline=2048) whatever the
    # LazyBaseline in quantities= asked for: LazyBaseline(max_points=4096) got 2048.
    x, y = data(2500)
    quantities = [LazyBaseline(max_points=4096), SetupPoints(4096)]
    meter = lm.LazyMeter(net(), 2.0, probe=lm.ProbeSet((x, y), max_points=8), quantities=quantities)
    assert meter.measure()["setup_points"] == 2500
    assert meter.probe_x.shape[0] == 8  # kernels still use max_points


def test_probe_set_checks_its_arguments_naming_them():
    with pytest.raises(ValueError, match="max_points"):
        lm.ProbeSet(data(12), max_points=2)
    with pytest.raises(TypeError, match="seed"):
        lm.ProbeSet(data(12), seed=True)
    with pytest.raises(ValueError, match="training points"):
        lm.ProbeSet(None, test=data(12))
    assert lm.ProbeSet.of(None) is None
    ps = lm.ProbeSet(data(12))
    assert lm.ProbeSet.of(ps) is ps and lm.ProbeSet.of(data(12)).max_points == 64


def test_ntk_options_check_their_arguments_at_construction():
    with pytest.raises(ValueError, match="memory budget"):
        lm.NTKOptions(memory_budget="lots")
    with pytest.raises(ValueError, match="chunk_size"):
        lm.NTKOptions(chunk_size=0)
    with pytest.raises(TypeError, match="method"):
        lm.NTKOptions(method=None)
    with pytest.raises(TypeError, match="ntk"):
        lm.LazyMeter(net(), probe=data(12), ntk={"method": "jacobian"})
    assert lm.ntk.NTKOptions is lm.NTKOptions


def test_ntk_options_give_the_kernel_and_a_sketch_its_error():
    model, (x, _) = net(), data(12)
    K, se = lm.NTKOptions(method="jacobian").kernel(model, x)
    assert se is None
    torch.testing.assert_close(K, lm.empirical_ntk(model, x, method="loop"))
    # Gaussian projections: a one-output kernel still has sampling error (signs would not).
    opts = lm.NTKOptions(outputs=lm.ntk.Sketch(s=4, kind="gaussian", groups=2))
    K_s, se_s = opts.kernel(model, x)
    assert opts.sketched and K_s.shape == K.shape and se_s > 0
    meter = lm.LazyMeter(net(), 2.0, probe=data(12), ntk=opts, quantities=[KernelDrift()])
    assert meter.measure()["ntk_sketch_rel_se"] > 0
    assert meter.ntk_engine["outputs"] == opts.outputs.describe()


def test_tensorboard_options_live_on_its_sink(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = lm.TensorBoardSink(scalar_every=2)  # writes to the meter's log_dir
    meter = lm.LazyMeter(
        net(), 2.0, probe=data(12), schedule=100, log_dir=tmp_path, sinks=[board],
        quantities=[ParameterMovement()],
    )  # fmt: skip
    for step in range(7):
        meter.step(step, train_loss=float(step))
    meter.close()
    acc = EventAccumulator(str(tmp_path)).Reload()
    steps = [e.step for e in acc.Scalars(lm.tag_for("train_loss"))]
    assert steps == [0, 2, 4, 6]  # step 0 is a measurement, then every 2
    assert meter.scalar_every == 2 and meter.wants_scalars(8) and not meter.wants_scalars(9)


def test_a_disabled_tensorboard_sink_writes_no_events_but_the_history(tmp_path):
    meter = lm.LazyMeter(
        net(), 2.0, probe=data(12), log_dir=tmp_path, sinks=[lm.TensorBoardSink(enabled=False)],
        quantities=[ParameterMovement()], schedule=1,
    )  # fmt: skip
    meter.step(train_loss=1.0)
    meter.close()
    assert not list(tmp_path.glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] == 1.0


def test_two_tensorboard_sinks_are_an_error_and_each_sink_keeps_its_own_cadence(tmp_path):
    with pytest.raises(ValueError, match="TensorBoardSinks"):
        lm.LazyMeter(net(), sinks=[lm.TensorBoardSink(), lm.TensorBoardSink()])

    class Every3:
        scalar_every = 3

        def __init__(self):
            self.steps = []

        def write_row(self, row, step):
            pass

        def write_scalars(self, values, step):
            self.steps.append(step)

        def close(self):
            pass

    sink = Every3()
    meter = lm.LazyMeter(net(), 2.0, sinks=[sink], schedule=100)
    for step in range(1, 10):
        meter.step(step, loss=1.0)
    assert sink.steps == [3, 6, 9]
    assert math.isfinite(meter.measure()["param_movement"])


def test_an_alignment_on_its_own_points_gets_them_all():
    # Alignment(points=N) reads N points at setup; 0.1 kept max(max_probe, max_baseline).
    x, y = data(2600)
    q = lm.quantities.Alignment(points=2500, splits=("train",), prefix="alignment_big")
    meter = lm.LazyMeter(net(), 2.0, probe=lm.ProbeSet((x, y), max_points=8), quantities=[q])
    meter.measure()
    assert meter.quantities[0]._own["train"][0].shape[0] == 2500


def test_a_quantity_asking_for_more_points_than_it_declared_is_an_error_not_a_smaller_set():
    class Undeclared(SetupPoints):
        def probe_points(self) -> int:
            return 0

    x, y = data(2300)  # the meter reads 2048 points unless a quantity declares more
    with pytest.raises(ValueError, match="probe_points"):
        lm.LazyMeter(
            net(), 2.0, probe=lm.ProbeSet((x, y), max_points=8), quantities=[Undeclared(2200)]
        )
    small = lm.LazyMeter(  # a probe with fewer points than asked for is not cut: no error
        net(), 2.0, probe=lm.ProbeSet(data(6), max_points=8), quantities=[Undeclared(100)]
    )
    assert small.measure()["setup_points"] == 6
