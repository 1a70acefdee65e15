"""Schedules, the meter's step/measure loop, and its sinks (JSON lines, TensorBoard).

Also: rejection of bad input (naming the argument) and failure tolerance (a metric
that cannot be computed is NaN with one warning, and training goes on).
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.schedules import Every, LogSpaced, Predicate, make_schedule

D, P, PT = 3, 12, 10

NTK_KEYS = ["ntk_drift", "ntk_cka", "alignment_train", "alignment_test", "test_ntk_drift"]


# ---------------------------------------------------------------------------- helpers
def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def make_data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, D, generator=g, dtype=torch.float64)
    xt = torch.randn(PT, D, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1)), xt, torch.sin(xt.sum(1))


def make_meter(log_dir=None, schedule=1, **kwargs):
    model = make_model()
    x, y, xt, yt = make_data()
    meter = lm.LazyMeter(
        model,
        alpha=2.0,
        probe=lm.ProbeSet((x, y), test=(xt, yt)),
        schedule=schedule,
        log_dir=log_dir,
        output_fn=lambda out: out.squeeze(-1),
        **kwargs,
    )
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.5))
    return meter, opt, (x, y, xt, yt)


def metrics(**fns):
    """The default quantities and the metric functions ``fns``."""
    return lm.quantities.default(metrics=fns)


def train_step(meter, opt, data, *, step=None, **extra):
    """One full-batch GD step; returns (scalars passed, meter.step's return value)."""
    x, y, xt, yt = data
    loss = ((meter(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        test_loss = ((meter(xt) - yt) ** 2).mean()
    scalars = {"train_loss": loss.item(), "test_loss": test_loss.item(), **extra}
    return scalars, meter.step(step=step, **scalars)


def same(a: float, b: float) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def rows_equal(r1: list[dict], r2: list[dict]) -> bool:
    return len(r1) == len(r2) and all(
        a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        for a, b in zip(r1, r2, strict=True)
    )


def due_steps(schedule, steps) -> list[int]:
    return [s for s in steps if schedule.due(s)]


def runtime_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


# ---------------------------------------------------------------------------- schedules
def test_every_is_due_at_multiples_of_k():
    assert due_steps(Every(10), range(45)) == [0, 10, 20, 30, 40]
    assert due_steps(Every(1), range(5)) == [0, 1, 2, 3, 4]


def test_every_measures_at_first_step_at_or_after_each_planned_point_when_steps_skip():
    assert due_steps(Every(10), [0, 7, 15, 31]) == [0, 15, 31]
    # A jump over several planned points measures once, then resumes the plan after it.
    assert due_steps(Every(10), [0, 3, 55, 58, 60, 61, 70]) == [0, 55, 60, 70]


@pytest.mark.parametrize("n", [1, 3, 4, 8, 20])
def test_logspaced_due_steps_match_independent_formula(n):
    expected = {0} | {round(10 ** (j / n)) for j in range(4 * n + 1)}
    expected = sorted(s for s in expected if s <= 1000)
    assert due_steps(LogSpaced(n), range(1001)) == expected


@pytest.mark.parametrize("n", [2, 4, 8, 10])
def test_logspaced_measures_about_per_decade_times_per_decade(n):
    due = due_steps(LogSpaced(n), range(10_000))
    for lo in (10, 100, 1000):
        count = sum(lo <= s < 10 * lo for s in due)
        assert abs(count - n) <= 1, (lo, count)
    assert len(due) <= 4 * n + 1


def test_logspaced_with_skipped_steps_measures_at_first_step_at_or_after_plan():
    # Planned for per_decade=4: 0, 1, 2, 3, 6, 10, 18, 32, 56, 100, ...
    assert due_steps(LogSpaced(4), [0, 5, 7, 20, 21, 40, 100]) == [0, 5, 7, 20, 40, 100]


def test_make_schedule_accepts_int_log_callable_and_schedule():
    s = make_schedule(7)
    assert isinstance(s, Every) and s.k == 7
    s = make_schedule("log")
    assert isinstance(s, LogSpaced) and s.per_decade == 8
    s = make_schedule("log:4")
    assert isinstance(s, LogSpaced) and s.per_decade == 4
    s = make_schedule(lambda step: step % 3 == 1)
    assert isinstance(s, Predicate)
    assert due_steps(s, range(10)) == [1, 4, 7]
    own = Every(5)
    assert make_schedule(own) is own


@pytest.mark.parametrize("spec", ["every", 0, -3, "log:x", 2.5, "log:0", "", True])
def test_make_schedule_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="schedule"):
        make_schedule(spec)


@pytest.mark.parametrize("spec", [10, "log:4"])
def test_schedule_state_dict_round_trip_continues_identically(spec):
    uninterrupted = make_schedule(spec)
    first = make_schedule(spec)
    steps = list(range(0, 400, 3))
    cut = 17
    ref = due_steps(uninterrupted, steps)
    head = due_steps(first, steps[:cut])
    state = json.loads(json.dumps(first.state_dict()))  # survives a plain serialisation
    resumed = make_schedule(spec)
    resumed.load_state_dict(state)
    assert head + due_steps(resumed, steps[cut:]) == ref


# ---------------------------------------------------------------------------- step / measure
def test_step_measures_exactly_on_scheduled_steps_and_returns_the_row():
    meter, opt, data = make_meter(schedule=5)
    for s in range(1, 23):  # step 0: the meter's own row, before the first update
        _, row = train_step(meter, opt, data)
        if s % 5 == 0:
            assert row is not None and row["step"] == s
            assert row is meter.history[-1]
        else:
            assert row is None
    assert [r["step"] for r in meter.history] == [0, 5, 10, 15, 20]


def test_history_rows_carry_the_scalars_passed_at_that_step():
    meter, opt, data = make_meter(schedule=4)
    passed = {}
    for s in range(1, 13):
        scalars, _ = train_step(meter, opt, data, accuracy=s / 100)
        passed[s] = scalars
    assert [r["step"] for r in meter.history] == [0, 4, 8, 12]
    assert "train_loss" not in meter.history[0]  # before any update: no scalars yet
    for row in meter.history[1:]:
        for k in ("train_loss", "test_loss", "accuracy"):
            assert row[k] == passed[row["step"]][k]
    assert all(math.isfinite(meter.history[-1][k]) for k in NTK_KEYS + ["param_movement"])


def test_default_step_numbering_counts_from_zero():
    # Step 0 is the row before any update (the meter's own); step() counts updates from 1.
    meter, opt, data = make_meter(schedule=1)
    assert meter.last_step is None and meter.will_measure() and meter.will_measure(0)
    for s in range(1, 4):
        _, row = train_step(meter, opt, data)
        assert row["step"] == s and meter.last_step == s
    assert [r["step"] for r in meter.history] == [0, 1, 2, 3]
    assert meter.history[0]["ntk_drift"] == 0.0 and meter.history[0]["param_movement"] == 0.0


def test_explicit_step_numbers_are_used_and_default_continues_after_them():
    meter, opt, data = make_meter(schedule=5)
    returned = [train_step(meter, opt, data, step=s)[1] for s in [0, 3, 7, 12, 25]]
    assert [r is not None for r in returned] == [True, False, True, True, True]
    assert [r["step"] for r in meter.history] == [0, 7, 12, 25]
    _, row = train_step(meter, opt, data)  # no step=: previous + 1
    assert meter.last_step == 26 and row is None
    _, row = train_step(meter, opt, data, step=30)
    assert row["step"] == 30


def test_measure_forces_a_measurement_regardless_of_schedule():
    meter, opt, data = make_meter(schedule=100)
    for _ in range(3):  # steps 1..3; step 0 is the row before training
        scalars, row = train_step(meter, opt, data)
        assert row is None
    assert len(meter.history) == 1
    row = meter.measure()
    assert len(meter.history) == 2 and row is meter.history[-1]
    assert row["step"] == 3 and row["train_loss"] == scalars["train_loss"]
    assert all(math.isfinite(row[k]) for k in NTK_KEYS)
    assert row["ntk_drift"] > 0  # the model has moved since step 0


# ---------------------------------------------------------------------------- JSON lines
def test_jsonl_has_one_line_per_measurement_equal_to_history(tmp_path):
    meter, opt, data = make_meter(tmp_path, schedule=3)
    with pytest.warns(RuntimeWarning, match="accuracy"):
        for s in range(1, 10):
            train_step(meter, opt, data, accuracy=math.nan if s == 6 else 0.5)
    meter.close()  # the last step, 9, was measured: nothing more
    path = tmp_path / "history.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == len(meter.history) == 4  # no step 1..9 is a scalar row's (10)
    rows = lm.read_jsonl(str(path))
    assert rows_equal(rows, meter.history)
    assert [r["step"] for r in rows] == [0, 3, 6, 9]
    # NaN is written as null (strict JSON) and read back as NaN.
    raw = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON {c}")) for line in lines
    ]
    assert raw[2]["accuracy"] is None and math.isnan(rows[2]["accuracy"])
    assert all(r["accuracy"] == 0.5 for i, r in enumerate(rows) if i not in (0, 2))
    assert "accuracy" not in rows[0]  # step 0: before any update, no scalars


def test_jsonl_is_complete_after_each_measurement_without_close(tmp_path):
    meter, opt, data = make_meter(tmp_path, schedule=2)
    path = tmp_path / "history.jsonl"
    for _ in range(9):
        _, row = train_step(meter, opt, data)
        if row is not None:
            # Read as another process would after a crash: the file is whole already.
            text = path.read_text()
            assert text.endswith("\n")
            assert all(json.loads(line) for line in text.splitlines())
            assert rows_equal(lm.read_jsonl(str(path)), meter.history)
    assert len(meter.history) == 5


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    meter, opt, data = make_meter(tmp_path, schedule=1)
    for _ in range(3):
        train_step(meter, opt, data)
    meter.close()
    path = tmp_path / "history.jsonl"
    full = path.read_bytes()
    last_start = full.rstrip(b"\n").rfind(b"\n") + 1
    for cut in (last_start + 1, (last_start + len(full)) // 2, len(full) - 2):
        torn = tmp_path / f"torn{cut}.jsonl"
        torn.write_bytes(full[:cut])
        with pytest.warns(RuntimeWarning, match="torn last line"):
            rows = lm.read_jsonl(str(torn))
        assert rows_equal(rows, meter.history[:-1])


# ---------------------------------------------------------------------------- TensorBoard
def load_scalars(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc


def test_tensorboard_events_hold_the_measurements_and_per_step_losses(tmp_path):
    meter, opt, data = make_meter(tmp_path, schedule=4, sinks=[lm.TensorBoardSink(scalar_every=1)])
    losses = [train_step(meter, opt, data)[0]["train_loss"] for _ in range(10)]
    meter.close()
    acc = load_scalars(tmp_path)
    tags = set(acc.Tags()["scalars"])
    expected = {
        "lazymeter/ntk/drift",
        "lazymeter/ntk/alignment_train",
        "lazymeter/ntk/alignment_test",
        "lazymeter/params/movement",
        "lazymeter/loss/train",
        "lazymeter/loss/test",
        "lazymeter/baseline/k0_test_mse",
    }
    assert expected <= tags, expected - tags
    drift = acc.Scalars("lazymeter/ntk/drift")
    # 0: before any update; 10: the last step, measured by close().
    assert [e.step for e in drift] == [r["step"] for r in meter.history] == [0, 4, 8, 10]
    assert [e.value for e in drift] == pytest.approx(
        [r["ntk_drift"] for r in meter.history], rel=1e-6, abs=1e-12
    )
    train = acc.Scalars("lazymeter/loss/train")
    assert [e.step for e in train] == list(range(1, 11))  # every step, once
    assert [e.value for e in train] == pytest.approx(losses, rel=1e-6)
    k0 = acc.Scalars("lazymeter/baseline/k0_test_mse")
    assert k0[0].value == pytest.approx(meter.baseline["k0_test_mse"], rel=1e-6)


def test_scalars_are_decimated_by_scalar_every_but_kept_at_measurements(tmp_path):
    meter, opt, data = make_meter(tmp_path, schedule=4, sinks=[lm.TensorBoardSink(scalar_every=3)])
    for _ in range(10):
        train_step(meter, opt, data)
    meter.close()
    train = load_scalars(tmp_path).Scalars("lazymeter/loss/train")
    assert [e.step for e in train] == [3, 4, 6, 8, 9, 10]  # 10: the last, measured by close()


def test_user_supplied_writer_receives_the_scalars(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "user"))
    board = lm.TensorBoardSink(writer=writer, scalar_every=1)
    meter, opt, data = make_meter(schedule=2, sinks=[board])
    for _ in range(5):
        train_step(meter, opt, data)
    meter.close()
    writer.add_scalar("mine", 1.0, 0)  # the meter leaves the user's writer open
    writer.close()
    acc = load_scalars(tmp_path / "user")
    tags = set(acc.Tags()["scalars"])
    assert {"lazymeter/ntk/drift", "lazymeter/loss/train", "mine"} <= tags
    assert [e.step for e in acc.Scalars("lazymeter/ntk/drift")] == [0, 2, 4, 5]
    assert len(acc.Scalars("lazymeter/loss/train")) == 5  # steps 1..5, each once


@pytest.mark.parametrize(
    "key, tag",
    [
        ("train_loss", "lazymeter/loss/train"),
        ("test_loss", "lazymeter/loss/test"),
        ("spectrum_trace", "lazymeter/spectrum/trace"),
        ("feature_cka/layer", "lazymeter/features/layer"),
        ("foo", "lazymeter/scalars/foo"),
        ("val_acc", "lazymeter/accuracy/val"),
        ("ntk_drift", "lazymeter/ntk/drift"),
        ("param_movement", "lazymeter/params/movement"),
        ("k0_test_mse", "lazymeter/baseline/k0_test_mse"),
    ],
)
def test_tag_for_groups_keys_under_lazymeter(key, tag):
    assert lm.tag_for(key) == tag


def test_missing_tensorboard_warns_once_and_jsonl_is_still_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    meter, opt, data = make_meter(tmp_path, schedule=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            train_step(meter, opt, data)
        meter.measure()
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "pip install tensorboard" in messages[0], messages
    assert [r["step"] for r in meter.history] == [0, 2, 4, 5]
    assert all(math.isfinite(meter.history[-1][k]) for k in NTK_KEYS)
    meter.close()
    assert rows_equal(lm.read_jsonl(str(tmp_path / "history.jsonl")), meter.history)
    assert not [f for f in os.listdir(tmp_path) if "tfevents" in f]


# ---------------------------------------------------------------------------- bad input
_DATA = object()


def _build(probe=_DATA, test=_DATA, max_points=64, q=None, **kwargs):
    """A meter on ``ProbeSet(probe, test=test, max_points=...)`` (default: make_data()'s
    points) measuring ``lm.quantities.default(**q)``."""
    x, y, xt, yt = make_data()
    probes = lm.ProbeSet(
        (x, y) if probe is _DATA else probe,
        test=(xt, yt) if test is _DATA else test,
        max_points=max_points,
    )
    quantities = None if q is None else lm.quantities.default(**q)
    return lm.LazyMeter(make_model(), probe=probes, quantities=quantities, **kwargs)


X, Y, XT, YT = make_data()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"alpha": 0.0}, ValueError, "alpha"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"alpha": math.nan}, ValueError, "alpha"),
        ({"alpha": math.inf}, ValueError, "alpha"),
        ({"alpha": "10"}, TypeError, "alpha"),
        ({"alpha": True}, TypeError, "alpha"),
        ({"probe": (X[:5], Y[:4]), "test": None}, ValueError, "probe"),
        ({"probe": (X[:1], Y[:1]), "test": None}, ValueError, "probe"),
        ({"probe": X, "test": None}, TypeError, "probe"),
        ({"test": (XT[:3], YT[:2])}, ValueError, "test_probe"),
        ({"probe": (X.to("meta"), Y.to("meta"))}, ValueError, r"probe.*meta device"),
        ({"test": (XT.to("meta"), YT.to("meta"))}, ValueError, r"test_probe.*meta device"),
        ({"probe": None}, ValueError, "test_probe"),
        ({"q": {"features": ["0", "nope"]}}, ValueError, "features"),
        ({"max_points": 1}, ValueError, "max_points"),
        ({"q": {"max_baseline": 1}}, ValueError, "max_points"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_constructor_rejects_bad_input_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _build(**kwargs)


def test_step_going_backwards_is_skipped_with_one_warning_and_training_goes_on():
    meter = _build(schedule=1)
    meter.step(step=5, train_loss=1.0)
    with pytest.warns(RuntimeWarning, match="step went backwards \\(3 after 5\\)"):
        assert meter.step(step=3, train_loss=9.0) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert meter.step(step=5, train_loss=9.0) is None
    assert meter.last_step == 5  # a skipped call changes nothing
    assert [r["step"] for r in meter.history] == [0, 5]  # 0: before the first update
    row = meter.step(step=6, train_loss=2.0)
    assert meter.last_step == 6 and row["train_loss"] == 2.0
    assert [r["step"] for r in meter.history] == [0, 5, 6]


@pytest.mark.parametrize("bad", [2.0, "3", torch.tensor(3)])
def test_step_number_must_be_an_int(bad):
    meter = _build(schedule=10)
    with pytest.raises(TypeError, match="step"):
        meter.step(step=bad)
    assert meter.last_step is None


@pytest.mark.parametrize("bad", ["abc", None, [1.0], torch.tensor([1.0, 2.0]), 1j])
def test_step_rejects_a_scalar_that_is_not_a_number(bad):
    meter = _build(schedule=10)
    with pytest.raises(TypeError, match="my_metric"):
        meter.step(train_loss=0.5, my_metric=bad)


def test_step_rejects_a_numeric_string_scalar():
    # "a number (or a one-element tensor)": a str is neither, even if float() can parse it.
    meter = _build(schedule=10)
    with pytest.raises(TypeError, match="train_loss"):
        meter.step(train_loss="0.5")


def test_step_accepts_one_element_tensors_and_ints_as_scalars():
    meter = _build(schedule=1)
    row = meter.step(train_loss=torch.tensor(0.25, dtype=torch.float64), epoch=3)
    assert row["train_loss"] == 0.25 and row["epoch"] == 3.0


def test_scaled_lr_rejects_unknown_optimizer():
    meter = _build(alpha=4.0)
    assert meter.scaled_lr(1.0) == 1.0 / 16
    assert meter.scaled_lr(1.0, optimizer="adam") == 1.0 / 4
    with pytest.raises(ValueError, match="optimizer"):
        meter.scaled_lr(1.0, optimizer="rmsprop")


# ---------------------------------------------------------------------------- failure tolerance
def test_nan_train_loss_warns_once_and_is_recorded():
    meter, opt, data = make_meter(schedule=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for s in range(1, 6):
            meter.step(train_loss=math.nan if s in (2, 4) else 1.0)
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "train_loss" in messages[0], messages
    assert [r["step"] for r in meter.history] == list(range(6))
    nan = [math.isnan(r["train_loss"]) for r in meter.history[1:]]
    assert nan == [False, True, False, True, False]


def poison(model: nn.Module) -> None:
    with torch.no_grad():
        model[0].weight.fill_(math.nan)


def test_nan_parameters_give_nan_ntk_metrics_with_one_warning_and_training_continues():
    meter, opt, data = make_meter(schedule=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for s in range(1, 8):
            if s == 4:
                poison(meter.model)
            x, y, _, _ = data
            loss = ((meter(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            row = meter.step()  # no NaN scalar: any warning comes from the measurement
            assert row is not None and row["step"] == s
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "ntk" in messages[0], messages
    assert len(meter.history) == 8  # 0 (before training) to 7
    for row in meter.history[:4]:
        assert all(math.isfinite(row[k]) for k in NTK_KEYS)
    for row in meter.history[4:]:
        assert all(math.isnan(row[k]) for k in NTK_KEYS), row
        assert math.isnan(row["param_movement"])
        # Reference values measured at construction stay as they were.
        assert row["k0_test_mse"] == meter.history[0]["k0_test_mse"]
        assert row["alignment0_train"] == meter.history[0]["alignment0_train"]


def test_failed_measurement_keeps_every_column_as_nan(tmp_path):
    # DESIGN 5: a metric that cannot be computed is *recorded as NaN*. Rows (and the JSONL
    # columns) should keep the same keys before and after the model goes NaN.
    meter, opt, data = make_meter(tmp_path, schedule=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        meter.step()
        poison(meter.model)
        meter.step()
    _, before, after = meter.history  # steps 0 (before training), 1, 2
    assert before.keys() == after.keys(), sorted(set(before) ^ set(after))
    assert all(math.isnan(after[k]) for k in before if k.startswith("spectrum_"))


def _bad_metric(model):
    raise RuntimeError("boom")


def test_raising_user_metric_warns_once_and_training_continues():
    calls = []

    def good(model):
        calls.append(1)
        return {"first_weight": float(model[0].weight[0, 0])}

    meter, opt, data = make_meter(schedule=1, quantities=metrics(bad=_bad_metric, good=good))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for s in range(1, 4):
            _, row = train_step(meter, opt, data)
            assert row is not None and row["step"] == s
    messages = runtime_warnings(record)
    assert len(messages) == 1 and "bad" in messages[0] and "boom" in messages[0], messages
    assert len(meter.history) == 4 and len(calls) == 4  # 0 (before training) to 3
    for row in meter.history:
        assert all(math.isfinite(row[k]) for k in NTK_KEYS)
        assert row["first_weight"] == row["first_weight"]  # not NaN


def test_raising_user_metric_is_recorded_as_nan_in_history(tmp_path):
    state = {"n": 0}

    def flaky(model):
        state["n"] += 1
        if state["n"] > 2:
            raise RuntimeError("boom")
        return {"flaky_value": 1.0}

    meter, opt, data = make_meter(
        tmp_path, schedule=1, quantities=metrics(bad=_bad_metric, flaky=flaky)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(4):
            train_step(meter, opt, data)
    h = meter.history
    # Always failing: recorded under its name; failing later: its keys become NaN.
    assert all(math.isnan(r.get("bad", 0.0)) for r in h), [r.get("bad") for r in h]
    assert [r.get("flaky_value", 0.0) for r in h[:2]] == [1.0, 1.0]
    assert all(math.isnan(r.get("flaky_value", 0.0)) for r in h[2:]), h[2:]
