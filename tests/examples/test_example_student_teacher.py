"""Student-teacher example (paper's student-teacher section): smoke run, claim and pieces."""

import json
import math

import pytest
import torch
from example_scripts import load_example
from paper.harness import preset, run
from paper.results import first_step_at_or_above
from paper.student_teacher import (
    MLP,
    TASK,
    StudentTeacherConfig,
    make_teacher_data,
    threshold_accuracy,
)

import lazymeter as lm
from lazymeter.history import measurements

TAUS = (1e-4, 5e-4, 5e-3, 1e-2, 1e-1)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("student_teacher")
    summary = load_example("student_teacher").main(
        ["--smoke", "--out", str(out), "--no-progress", "--threads", "1"]
    )
    return out, summary


def test_smoke_writes_losses_accuracies_diagnostics_and_figure(smoke):
    out, summary = smoke
    rows = measurements(lm.read_jsonl(str(out / "history.jsonl")))  # no scalar rows
    accs = {f"tau{t:g}_{s}_acc" for t in TAUS for s in ("train", "test")}
    required = {"step", "train_loss", "test_loss", "ntk_drift", "alignment_test"}
    required |= {"param_movement", "weight_norm"} | accs
    measured = [r for r in rows if "tau0.1_test_acc" in r]
    assert len(measured) > 5 and all(required <= set(r) for r in measured)
    assert measured[-1]["step"] == summary["config"]["steps"]  # the final state is recorded
    assert all(0 <= r[k] <= 1 for r in measured for k in accs)
    # A looser threshold counts at least as many samples as a tighter one.
    keys = [f"tau{t:g}_test_acc" for t in TAUS]
    assert all(r[a] <= r[b] for r in measured for a, b in zip(keys[:-1], keys[1:], strict=True))
    on_disk = json.loads((out / "summary.json").read_text())
    assert [c["threshold"] for c in on_disk["crossings"]] == list(TAUS)
    assert {"test_step_spread", "k0_test_mse", "final_test_loss", "loss_time_to_grok"} <= set(
        on_disk
    )
    # the paper's protocol is what --full gives; the smoke run says how it differs
    assert on_disk["preset_differences"]["steps"]["paper"] == 100_000
    assert on_disk["initial_weight_norm"] > 1.5 * on_disk["final_weight_norm"]  # weight decay
    assert (out / "figure.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in out.iterdir())


def test_claim_the_threshold_sets_the_grokking_step_while_the_loss_falls_smoothly(smoke):
    """The paper's point, at smoke size: the test accuracy reaches 50% where the test loss
    passes ~tau, so its step (the apparent 'grokking step') moves with tau by orders of
    magnitude, and the apparent delay behind train accuracy is large only for small tau."""
    _, s = smoke
    c = {x["threshold"]: x for x in s["crossings"]}
    steps = [c[t]["test_step"] for t in TAUS]
    assert all(math.isfinite(v) for v in steps)
    assert steps == sorted(steps, reverse=True)  # a tighter threshold groks later...
    assert s["test_step_spread"] > 30  # ...by a large factor
    # each crossing happens where the loss passes a fixed multiple of tau
    assert all(0.3 < x["test_loss_over_threshold"] < 5 for x in s["crossings"])
    assert c[1e-4]["delay_ratio"] > 2 * c[1e-1]["delay_ratio"]  # 'grokking' only at small tau
    # the loss itself: falls by decades, no plateau that a threshold would need to explain
    assert s["final_test_loss"] < 1e-2 * s["initial_test_loss"]


def test_paper_preset_is_the_authors_notebook():
    p = StudentTeacherConfig.paper()
    assert (p.d_in, p.hidden, p.d_out, p.activation, p.bias) == (5, (100, 100), 5, "tanh", True)
    assert (p.P, p.P_test, p.init_scale, p.alpha, p.relative) == (100, 100, 2.0, 1.0, False)
    assert (p.lr, p.weight_decay, p.steps, p.thresholds) == (3e-4, 0.05, 100_000, TAUS)


def test_alpha_rescales_the_student_uncentred():
    a = run(TASK, preset(TASK, "smoke", steps=0), None, progress=False, figure=False, threads=1)
    b = run(
        TASK,
        preset(TASK, "smoke", steps=0, alpha=3.0),
        None,
        progress=False,
        figure=False,
        threads=1,
    )
    # f -> 3 f: the initial train loss of the (large, untrained) student grows
    assert b["initial_train_loss"] > 4 * a["initial_train_loss"]


def test_threshold_accuracy_averages_each_samples_error_over_outputs():
    target = torch.zeros(5)
    pred = torch.tensor([0.0, 0.1, -0.2, 1.0, 3.0])  # squared errors 0, .01, .04, 1, 9
    got = threshold_accuracy(pred, target, [0.02, 0.05, 1.0, 10.0])
    assert got == pytest.approx([2 / 5, 3 / 5, 3 / 5, 1.0])  # 1.0 is not < 1.0
    # scale multiplies every threshold (e.g. the target variance).
    assert threshold_accuracy(pred, target, [0.01, 0.6], scale=2.0) == pytest.approx([2 / 5, 4 / 5])
    # [P, d_out]: a sample's error is the mean over its outputs (the notebook's dim=1 mean)
    two = torch.tensor([[0.0, 0.2], [0.1, 0.1], [1.0, 0.0]])  # per sample .02, .01, .5
    assert threshold_accuracy(two, torch.zeros(3, 2), [0.015, 0.03]) == pytest.approx(
        [1 / 3, 2 / 3]
    )
    with pytest.raises(ValueError, match="pred, target"):
        threshold_accuracy(pred, torch.zeros(4), [0.1])


def test_first_step_at_or_above_skips_nan_and_reports_never_as_nan():
    steps = [0, 10, 20, 30]
    assert first_step_at_or_above(steps, [0.1, math.nan, 0.5, 0.9], 0.5) == 20
    assert math.isnan(first_step_at_or_above(steps, [0.1, 0.2, 0.3, 0.4], 0.5))


def test_mlp_default_init_matches_nn_linear_bounds_and_scales_every_parameter():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    one = MLP(5, (100, 100), 5, generator=g())
    two = MLP(5, (100, 100), 5, init_scale=2.0, generator=g())
    for p1, p2 in zip(one.parameters(), two.parameters(), strict=True):
        torch.testing.assert_close(p2, 2 * p1)
    # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    for layer in one.layers:
        bound = 1 / layer.in_features**0.5
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound
    x = torch.randn(7, 5)
    h = torch.tanh(one.layers[1](torch.tanh(one.layers[0](x))))
    torch.testing.assert_close(one(x), one.layers[2](h))


def test_teacher_data_are_the_teachers_outputs_and_normalise_on_request():
    teacher = MLP(5, (16,), 5, generator=torch.Generator().manual_seed(0))
    d = make_teacher_data(teacher, 20, 30, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(d.y, teacher(d.x).detach())
    assert d.scale == 1.0 and d.y_test.shape == (30, 5)
    n = make_teacher_data(
        teacher, 20, 30, normalize=True, generator=torch.Generator().manual_seed(1)
    )
    assert float(torch.cat([n.y, n.y_test]).std()) == pytest.approx(1.0, rel=1e-5)
