"""Checkpoints are all or nothing, history files are never overwritten without a backup,
and a meter can be deep-copied and pickled (issue 26: half-applied loads, KeyError after
deepcopy)."""

from __future__ import annotations

import copy
import io
import math
import os

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.sinks import read_jsonl


def data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.sin(x.sum(1, keepdim=True))


def mlp(seed=0, width=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1)).double()


def trained(log_dir, seed=0, steps=4, alpha=2.0):
    """A meter that measured ``steps`` steps of GD (rows in memory and on disk)."""
    x, y = data()
    model = mlp(seed)
    meter = lm.LazyMeter(model, alpha=alpha, probe=(x, y), schedule=1, log_dir=log_dir)
    opt = torch.optim.SGD(model.parameters(), lr=meter.scaled_lr(0.5))
    for _ in range(steps):
        opt.zero_grad()
        loss = ((meter(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())
    return meter


def everything(meter):
    """What a load could change: every tensor, the history, the step, the file on disk."""
    path = os.path.join(meter.log_dir, "history.jsonl")
    with open(path, "rb") as f:
        disk = f.read()
    tensors = {k: v.detach().clone() for k, v in meter.state_dict().items() if torch.is_tensor(v)}
    return tensors, [dict(r) for r in meter.history], meter.last_step, disk


def _set(sd, *path_and_value):
    *path, value = path_and_value
    d = sd["_extra_state"]
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _drop(sd, *path):
    d = sd["_extra_state"]
    for k in path[:-1]:
        d = d[k]
    del d[path[-1]]


CORRUPTIONS = {
    "another version": (lambda sd: _set(sd, "version", 99), "version 99"),
    "another alpha": (lambda sd: _set(sd, "alpha", 5.0), "alpha=5.0"),
    "a missing inner key": (lambda sd: _drop(sd, "schedule"), r"missing \['schedule'\]"),
    "a broken schedule": (lambda sd: _set(sd, "schedule", {}), "schedule cannot load"),
    "a broken quantity": (
        lambda sd: _set(sd, "quantities", 4, ("ntk.k0_baseline", {}, None)),
        "quantity 'ntk.k0_baseline' cannot load",
    ),
    "history not rows": (lambda sd: _set(sd, "history", 3), r"\['history'\]"),
    "a missing model key": (lambda sd: sd.pop("model.2.bias"), "missing keys.*model.2.bias"),
    "a stranger key": (lambda sd: sd.update({"model.9.weight": torch.ones(1)}), "unexpected"),
    "another model shape": (
        lambda sd: sd.update({"model.0.weight": torch.ones(5, 3, dtype=torch.float64)}),
        r"state_dict\['model.0.weight'\]: has shape \(5, 3\)",
    ),
    "a missing probe": (lambda sd: sd.pop("probe_x"), "missing keys.*probe_x"),
    "no meter state": (lambda sd: sd.pop("_extra_state"), "missing keys.*_extra_state"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_rejected_checkpoint_changes_nothing(case, tmp_path):
    corrupt, message = CORRUPTIONS[case]
    sd = trained(tmp_path / "a", seed=0, steps=6).state_dict()
    corrupt(sd)
    meter = trained(tmp_path / "b", seed=1, steps=3)
    drift = meter.measure()["ntk_drift"]
    before = everything(meter)
    with pytest.raises((ValueError, TypeError), match=message):
        meter.load_state_dict(sd)
    after = everything(meter)
    assert after[0].keys() == before[0].keys()
    for k, v in before[0].items():
        assert torch.equal(after[0][k], v), f"{k} changed by a rejected load"
    assert after[1:] == before[1:]  # history, last step, history.jsonl bytes
    assert meter.measure()["ntk_drift"] == drift  # measured against the same K0


def test_a_checkpoint_whose_history_lacks_rows_on_disk_moves_the_file_aside(tmp_path):
    sd = trained(tmp_path / "a", seed=0, steps=2).state_dict()
    meter = trained(tmp_path / "b", seed=0, steps=5)  # rows the checkpoint does not have
    path = os.path.join(meter.log_dir, "history.jsonl")
    mine = read_jsonl(path)
    with pytest.warns(RuntimeWarning, match="moved it to .*history.jsonl.1"):
        meter.load_state_dict(sd)
    assert read_jsonl(path + ".1") == mine
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2]  # 0: before training
    # Loading its own checkpoint again drops nothing: no second backup.
    meter.load_state_dict(meter.state_dict())
    assert not os.path.exists(path + ".2")


def test_a_deep_copied_or_pickled_meter_keeps_measuring_in_memory(tmp_path):
    meter = trained(tmp_path / "a", steps=3)
    x, y = data()
    rows = len(meter.history)
    buf = io.BytesIO()
    torch.save(meter, buf)
    buf.seek(0)
    for other in (copy.deepcopy(meter), torch.load(buf, weights_only=False)):
        assert other.model is not meter.model
        assert other.log_dir is None  # the files stay with the original
        row = other.step(train_loss=0.5)  # was KeyError: schedules keyed by id()
        assert row is not None and row["step"] == meter.last_step + 1
        assert row["ntk_drift"] == pytest.approx(meter.measure()["ntk_drift"], rel=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(other(x), meter(x))
        # the copy's Parameters are its model's: a step moves them, not the original's
        opt = torch.optim.SGD(other.parameters(), lr=0.1)
        ((other(x) - y) ** 2).mean().backward()
        opt.step()
        assert other.measure()["param_movement"] > meter.history[-1]["param_movement"]
    assert len(read_jsonl(os.path.join(meter.log_dir, "history.jsonl"))) == rows + 2


def test_a_distributed_meter_refuses_to_be_copied_with_a_clear_message():
    meter = lm.LazyMeter(mlp(), probe=data())
    meter._dist = object()  # what a DDP/FSDP meter holds: a process group's proxy
    with pytest.raises(TypeError, match="distributed meter cannot be copied or pickled"):
        copy.deepcopy(meter)
    meter._dist = None


def test_a_meter_with_a_replaced_layer_is_still_found_after_a_copy():
    model = mlp()
    meter = copy.deepcopy(lm.LazyMeter(model, probe=data()))
    assert math.isfinite(meter.measure()["param_movement"])  # its own model's objects
    meter.model[2] = nn.Linear(8, 1).double()
    with pytest.warns(RuntimeWarning, match="not the Parameter object"):
        assert math.isnan(meter.measure()["param_movement"])
