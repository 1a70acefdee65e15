"""The run's first row is before any update, its last row is its last step, and the losses
between measurements reach ``history.jsonl`` (issue 29): as a user's loop meets them."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.history import last_value, measurements
from lazymeter.report import load_run, run_table


def build(log_dir=None, schedule=10, **kwargs):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, xt = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (24, 16))
    y, yt = torch.sin(x.sum(1)), torch.sin(xt.sum(1))
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    meter = lm.LazyMeter(
        model, alpha=2.0, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=schedule,
        log_dir=log_dir, output_fn=lambda out: out.squeeze(-1), **kwargs,
    )  # fmt: skip
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.3))
    return meter, opt, (x, y, xt, yt)


def loop(meter, opt, data, steps, explicit=None):
    """The README's loop: update, then ``meter.step`` with the losses; returns them."""
    x, y, xt, yt = data
    losses = []
    for i in range(steps):
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test = ((meter(xt) - yt) ** 2).mean().item()
        losses.append((loss.item(), test))
        kw = {} if explicit is None else {"step": explicit(i)}
        meter.step(**kw, train_loss=loss.item(), test_loss=test)
    return losses


def test_the_first_row_is_step_0_before_any_update_and_step_counts_updates_from_1():
    meter, _, _ = build(schedule=10)  # will_measure sees the schedules as step 0 leaves them
    assert meter.will_measure(0) and not meter.will_measure() and not meter.will_measure(5)
    assert meter.will_measure(10)
    meter, opt, data = build(schedule="log")
    assert meter.will_measure() and meter.will_measure(0)
    loop(meter, opt, data, 3)
    first, second = meter.history[:2]
    assert first["step"] == 0 and second["step"] == 1
    assert first["ntk_drift"] == 0.0 and first["param_movement"] == 0.0
    assert first["ntk_cka"] == pytest.approx(1.0)
    assert "train_loss" not in first  # no update yet: no loss of one
    assert second["ntk_drift"] > 0  # measured after the first update
    assert meter.last_step == 3


def test_the_initial_row_leaves_the_model_and_a_pending_graph_as_they_were():
    meter, opt, (x, y, _, _) = build()
    loss = ((meter(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    before = [p.detach().clone() for p in meter.parameters()]
    pending = ((meter(x) - y) ** 2).mean()  # a graph built before the first step()
    meter.step(train_loss=1.0)
    pending.backward()  # no "modified by an inplace operation"
    assert all(torch.equal(p, q) for p, q in zip(meter.parameters(), before, strict=True))
    assert meter.history[0]["ntk_drift"] == 0.0 and meter.last_step == 1


def test_explicit_steps_from_1_get_the_initial_row_and_from_0_after_an_update_warn():
    meter, opt, data = build(schedule=2)
    loop(meter, opt, data, 4, explicit=lambda i: i + 1)  # completed updates: 1, 2, ...
    assert [r["step"] for r in meter.history] == [0, 2, 4]
    assert meter.history[0]["ntk_drift"] == 0.0

    meter, opt, data = build(schedule=2)
    with pytest.warns(RuntimeWarning, match="no row before training.*step=epoch \\+ 1"):
        loop(meter, opt, data, 4, explicit=lambda i: i)  # meter.step(epoch) from 0
    assert [r["step"] for r in meter.history] == [0, 2]
    assert meter.history[0]["ntk_drift"] > 0  # the user's step 0: after one update
    assert "train_loss" in meter.history[0]

    # step(0) before any update (HuggingFace's on_train_begin): the first row, no warning.
    meter, opt, data = build(schedule=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = meter.step(0)
    assert row["ntk_drift"] == 0.0 and row["step"] == 0


def test_close_measures_an_unmeasured_last_step_once_and_is_cheap_after():
    calls = []

    def counted(model):
        calls.append(1)
        return {"w": float(model[0].weight.sum())}

    quantities = [lm.quantities.FunctionQuantity("counted", counted)]
    meter, opt, data = build(schedule=10, quantities=quantities)
    losses = loop(meter, opt, data, 13)
    assert [r["step"] for r in meter.history] == [0, 10] and len(calls) == 2
    meter.close()
    assert [r["step"] for r in meter.history] == [0, 10, 13] and len(calls) == 3
    assert meter.history[-1]["train_loss"] == losses[-1][0]
    meter.close()  # idempotent
    assert len(meter.history) == 3 and len(calls) == 3

    meter, opt, data = build(schedule=10, quantities=quantities)
    loop(meter, opt, data, 10)
    n = len(calls)
    meter.close()  # the last step was measured: nothing to compute
    assert len(calls) == n and [r["step"] for r in meter.history] == [0, 10]


def test_scalar_rows_reach_the_jsonl_and_close_measure_false_writes_the_last(tmp_path):
    meter, opt, data = build(tmp_path, schedule=10, sinks=[lm.TensorBoardSink(scalar_every=4)])
    assert meter.scalar_every == 4
    losses = loop(meter, opt, data, 13)
    meter.close(measure=False)
    rows = lm.read_jsonl(str(tmp_path / "history.jsonl"))
    assert [(r["step"], r.get("kind")) for r in rows] == [
        (0, None), (4, "scalars"), (8, "scalars"), (10, None), (12, "scalars"),
        (13, "scalars"),
    ]  # fmt: skip
    assert [r["step"] for r in meter.history] == [0, 10]  # the measurements only
    assert [r["step"] for r in measurements(rows)] == [0, 10]
    assert set(rows[-1]) == {"step", "train_loss", "test_loss", "kind"}  # no quantity key
    assert last_value(rows, "test_loss") == losses[-1][1]
    assert math.isnan(last_value(rows, "nope"))


def test_report_shows_the_real_final_test_loss_of_a_run_whose_last_step_was_not_measured(
    tmp_path,
):
    meter, opt, data = build(tmp_path / "run", schedule="log")
    losses = loop(meter, opt, data, 60)  # last measurement: 56
    meter.close(measure=False)
    table = run_table(load_run(str(tmp_path / "run")))
    assert table["final_test_loss"] == losses[-1][1]  # step 60's, from the last scalar row
    assert table["final_test_loss"] != meter.history[-1]["test_loss"]
    assert table["regime_final"] in ("lazy", "transitioning", "rich")

    meter, opt, data = build(tmp_path / "closed", schedule="log")
    losses = loop(meter, opt, data, 60)
    meter.close()  # measures step 60
    table = run_table(load_run(str(tmp_path / "closed")))
    assert meter.history[-1]["step"] == 60
    assert table["final_test_loss"] == losses[-1][1] == meter.history[-1]["test_loss"]


def test_plot_draws_the_losses_to_the_last_step(tmp_path):
    pytest.importorskip("matplotlib")
    meter, opt, data = build(tmp_path, schedule="log")
    loop(meter, opt, data, 60)
    for fig in (meter.plot(), lm.plot_run(str(tmp_path))):
        loss = next(ax for ax in fig.axes if ax.get_title() == "loss")
        assert max(max(line.get_xdata()) for line in loss.get_lines()) == 60
    meter.close()


def test_a_resumed_run_has_the_uninterrupted_runs_jsonl(tmp_path):
    sinks = [lm.TensorBoardSink(enabled=False, scalar_every=3)]
    meter, opt, data = build(tmp_path / "full", schedule=5, sinks=sinks)
    loop(meter, opt, data, 23)
    meter.close()

    meter, opt, data = build(tmp_path / "split", schedule=5, sinks=sinks)
    loop(meter, opt, data, 11)
    state = copy.deepcopy({"meter": meter.state_dict(), "opt": opt.state_dict()})
    loop(meter, opt, data, 4)  # then the process dies: rows past the checkpoint, no close()
    meter._log.close()
    with pytest.warns(RuntimeWarning, match="moved it to"):
        resumed, opt, data = build(tmp_path / "split", schedule=5, sinks=sinks)
    resumed.load_state_dict(state["meter"])
    opt.load_state_dict(state["opt"])
    assert resumed.last_step == 11
    loop(resumed, opt, data, 23 - 11)
    resumed.close()
    full = (tmp_path / "full" / "history.jsonl").read_bytes()
    assert (tmp_path / "split" / "history.jsonl").read_bytes() == full
    assert b'"kind": "scalars"' in full
