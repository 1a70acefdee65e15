"""Student-teacher examples (paper section 6 and its appendix): smoke runs and the pieces."""

import json
import math

import pytest
import torch
from example_scripts import load_example

import lazymeter as lm
from lazymeter.tasks.results import first_step_at_or_above
from lazymeter.tasks.student_teacher import (
    ScaleConfig,
    TwoLayerNet,
    threshold_accuracy,
    train_scaled,
)


def test_student_teacher_smoke_writes_losses_accuracies_diagnostics_and_figure(tmp_path):
    summary = load_example("student_teacher").main(
        ["--smoke", "--out", str(tmp_path), "--no-progress"]
    )
    rows = lm.read_jsonl(str(tmp_path / "history.jsonl"))
    taus = (0.001, 0.01, 0.1)
    accs = {f"tau{t:g}_{s}_acc" for t in taus for s in ("train", "test")}
    required = {"step", "train_loss", "test_loss", "ntk_drift", "alignment_test"}
    required |= {"param_movement", "weight_norm"} | accs
    assert len(rows) > 5 and all(required <= set(r) for r in rows)
    assert rows[-1]["step"] == summary["config"]["steps"]  # the final state is recorded
    assert all(0 <= r[k] <= 1 for r in rows for k in accs)
    # A looser threshold counts at least as many samples as a tighter one.
    assert all(
        r["tau0.001_test_acc"] <= r["tau0.01_test_acc"] <= r["tau0.1_test_acc"] for r in rows
    )
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert [c["threshold"] for c in on_disk["crossings"]] == list(taus)
    assert {"test_step_spread", "k0_test_mse", "final_test_loss", "loss_time_to_grok"} <= set(
        on_disk
    )
    assert on_disk["initial_test_loss"] > 10  # the large init: a large random initial function
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_init_scale_smoke_writes_per_run_folders_and_relu_runs_collapse(tmp_path):
    summary = load_example("init_scale_vs_alpha").main(
        ["--smoke", "--out", str(tmp_path), "--no-progress"]
    )
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    runs = on_disk["runs"]
    assert {(r["sigma"], r["alpha"]) for r in runs} == {(1, 1), (1, 4), (2, 1), (2, 4)}
    for r in runs:
        d = tmp_path / "runs" / f"relu_sigma{r['sigma']:g}_alpha{r['alpha']:g}"
        rows = lm.read_jsonl(str(d / "history.jsonl"))
        # The summary's movement is the meter's last measurement, at the last step.
        assert rows[-1]["step"] == on_disk["config"]["steps"]
        assert rows[-1]["param_movement"] == pytest.approx(r["final_param_movement"], rel=1e-12)
        assert any(p.name.startswith("events.out.tfevents") for p in d.iterdir())
    stats = summary["collapse_movement"]["relu"]
    (group,) = [g for g in stats["groups"] if len(g["members"]) == 2]
    assert group["sigma2_alpha"] == 4
    assert group["rel_spread"] < 1e-6
    moves = [g["mean"] for g in stats["groups"]]
    assert moves == sorted(moves, reverse=True)  # lazier (larger sigma^2 alpha): less movement
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_threshold_accuracy_counts_squared_errors_strictly_below_tau_times_scale():
    target = torch.zeros(5)
    pred = torch.tensor([0.0, 0.1, -0.2, 1.0, 3.0])  # squared errors 0, .01, .04, 1, 9
    got = threshold_accuracy(pred, target, [0.02, 0.05, 1.0, 10.0])
    assert got == pytest.approx([2 / 5, 3 / 5, 3 / 5, 1.0])  # 1.0 is not < 1.0
    # scale multiplies every threshold (e.g. the target variance).
    assert threshold_accuracy(pred, target, [0.01, 0.6], scale=2.0) == pytest.approx([2 / 5, 4 / 5])
    # Only the difference matters, per element.
    assert threshold_accuracy(pred + 7, target + 7, [0.02]) == pytest.approx([2 / 5])
    with pytest.raises(ValueError, match="pred, target"):
        threshold_accuracy(pred, torch.zeros(4), [0.1])


def test_first_step_at_or_above_skips_nan_and_reports_never_as_nan():
    steps = [0, 10, 20, 30]
    assert first_step_at_or_above(steps, [0.1, math.nan, 0.5, 0.9], 0.5) == 20
    assert math.isnan(first_step_at_or_above(steps, [0.1, 0.2, 0.3, 0.4], 0.5))


def test_two_layer_relu_net_is_homogeneous_of_degree_two_in_its_init_scale():
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nets = [
        TwoLayerNet(4, 6, sigma=s, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        for s in (1.0, 1.5)
    ]
    torch.testing.assert_close(nets[1](x), 2.25 * nets[0](x))
    # Hand computation of f(x) = w2 . relu(W1 x).
    w1, w2 = nets[0].hidden.weight, nets[0].readout.weight[0]
    torch.testing.assert_close(nets[0](x), torch.relu(x @ w1.T) @ w2)


def test_equal_sigma2_alpha_gives_equal_movement_beyond_power_of_two_scalings():
    # sigma = 1.5 is not a power of two: the runs differ by rounding, not bit for bit.
    base = ScaleConfig(D=4, P=30, P_test=40, width=16, steps=40, per_decade=4, max_probe=16)
    a = train_scaled(ScaleConfig(**{**base.__dict__, "sigma": 1.5, "alpha": 1.0}))
    b = train_scaled(ScaleConfig(**{**base.__dict__, "sigma": 1.0, "alpha": 2.25}))
    c = train_scaled(ScaleConfig(**{**base.__dict__, "sigma": 1.0, "alpha": 1.0}))
    ma, mb, mc = (r["final_param_movement"] for r in (a, b, c))
    assert ma == pytest.approx(mb, rel=1e-4)
    assert a["final_test_loss"] == pytest.approx(b["final_test_loss"], rel=1e-4)
    assert mc > 1.5 * ma  # a smaller sigma^2 alpha moves further
