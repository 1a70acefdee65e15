"""The paper's polynomial task end to end: the example script and the grokking event."""

import json

import pytest
import torch
from example_scripts import load_example
from paper.polynomial import PolynomialConfig, QuadraticNet, make_data, train

import lazymeter as lm
from lazymeter.history import measurements

SMALL = dict(
    D=20, P=110, P_test=500, N=100, eps=0.05, epochs=2000, lr_scale=8.0, per_decade=8,
    paper_points=0,
)  # fmt: skip


def test_example_smoke_run_writes_history_summary_events_and_figure(tmp_path):
    load_example("polynomial_regression").main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    rows = measurements(lm.read_jsonl(str(tmp_path / "history.jsonl")))  # no scalar rows
    required = {
        "step",
        "train_loss",
        "test_loss",
        "lin_train_loss",
        "lin_test_loss",
        "ntk_drift",
        "alignment_train",
        "alignment_train_se",
        "alignment_test",
        "param_movement",
    }
    assert len(rows) > 5 and all(required <= set(r) for r in rows)
    # the paper's alignment on its test points, and the unbiased one there (half the rate)
    paper_keys = {"alignment_paper_test", "alignment_full_test", "alignment_full_test_se"}
    with_paper = [r for r in rows if paper_keys | {"alignment_rise_full_test"} <= set(r)]
    assert len(with_paper) > 5 and with_paper[0]["step"] == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"k0_test_mse", "final_train_loss", "final_test_loss", "time_to_grok"} <= set(summary)
    paper = summary["alignment"]["alignment_paper_test"]
    assert paper["end"] == with_paper[-1]["alignment_paper_test"] and "biased" in paper["what"]
    assert paper["init"] == rows[0]["alignment_paper_test"]
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_small_lazy_start_groks_late():
    s = train(PolynomialConfig(**SMALL, linearized=False), progress=False)
    hist, grok = s["history"], s["time_to_grok"]
    start = hist[0]["test_loss"]
    assert s["max_test_loss"] > start  # the test loss first rises...
    assert s["final_test_loss"] < 0.1 * start  # ...then falls to a small fraction of it
    assert grok["test_step"] >= 3 * grok["train_step"]  # several times later than train
    assert s["final_test_loss"] < 0.5 * s["k0_test_mse"]  # beyond the lazy (K0) solution


def test_curves_depend_on_lr_times_epochs():
    # Gradient flow: 4x the learning rate for a quarter of the epochs, same curve.
    base = dict(SMALL, linearized=False, epochs=None, per_decade=4)
    fast = train(PolynomialConfig(**{**base, "lr_scale": 4.0, "epochs": 250}), progress=False)
    slow = train(PolynomialConfig(**{**base, "lr_scale": 1.0, "epochs": 1000}), progress=False)
    assert fast["history"][-1]["step"] == slow["history"][-1]["step"] == 1000
    assert fast["final_train_loss"] == pytest.approx(slow["final_train_loss"], rel=0.03)
    assert fast["final_test_loss"] == pytest.approx(slow["final_test_loss"], rel=0.03)


def test_unstable_learning_rate_is_rejected_with_the_limit():
    with pytest.raises(ValueError, match="lr_scale: 40 puts gradient descent past"):
        train(PolynomialConfig(**{**SMALL, "lr_scale": 40.0}), progress=False)


def test_data_and_model_are_seedable_and_follow_dtype():
    a = make_data(5, 10, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = make_data(5, 10, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(a.x, b.x) and a.x.dtype == torch.float64
    torch.testing.assert_close(a.y, (a.x @ a.beta) ** 2 / 2)
    net = QuadraticNet(5, 3, 0.5, readouts=True, dtype=torch.float64)
    h = a.x @ net.W.T
    torch.testing.assert_close(net(a.x), ((h + 0.25 * h**2) * net.a).mean(-1))


def test_square_target_is_twice_the_default_on_the_same_draw():
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    half = make_data(5, 10, 7, generator=g())
    square = make_data(5, 10, 7, target="square", generator=g())
    assert torch.equal(half.x, square.x) and torch.equal(half.beta, square.beta)
    torch.testing.assert_close(square.y, (square.x @ square.beta) ** 2)
    torch.testing.assert_close(square.y_test, 2 * half.y_test)
    with pytest.raises(ValueError, match="target: expected one of"):
        make_data(5, 10, 7, target="cube")


def test_stop_early_ends_the_run_at_the_absolute_crossings():
    cfg = PolynomialConfig(
        **{**SMALL, "eps": 0.1}, linearized=False, threshold_kind="absolute", stop_early=True
    )
    s = train(cfg, progress=False)
    hist, g = s["history"], s["time_to_grok"]
    assert s["stopped"] == "crossed" and s["threshold_kind"] == "absolute"
    # the run ended at the measurement where the test loss first fell below 0.1 (absolute),
    # long before its 2000 steps (16k lr-equivalent epochs)
    assert s["final_step"] == hist[-1]["step"] == g["test_step"] < 0.5 * 2000 * 8.0
    assert hist[-1]["test_loss"] < 0.1 <= min(r["test_loss"] for r in hist[:-1])
    assert g["train_step"] == next(r["step"] for r in hist if r["train_loss"] < 0.1)
    assert g["delay"] == g["test_step"] - g["train_step"] > 0


def test_threshold_options_are_checked():
    with pytest.raises(ValueError, match="threshold_kind"):
        train(PolynomialConfig.smoke(threshold_kind="sometimes"), progress=False)
    with pytest.raises(ValueError, match="threshold: expected a fraction"):
        train(PolynomialConfig.smoke(threshold=2.0), progress=False)
