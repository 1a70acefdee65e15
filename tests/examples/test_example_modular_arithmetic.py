"""The modular-arithmetic MLP (Figure 2): the example script, the model, and the grokking delay."""

import json
import math

import pytest
import torch
from example_scripts import load_example

import lazymeter as lm
from lazymeter.tasks.modular import modular_addition
from lazymeter.tasks.modular_mlp import ModularMLP, ModularMLPConfig, make_optimizer, train

# Groks in ~1 s per run; train / test ~90% accuracy at ~650 / 1.5k lr-equivalent steps
# (scale 0.5) and ~2.7k / 7.5k (scale 2) of 15k.
SMALL = dict(p=13, N=50, lr_scale=10.0, steps=1500, per_decade=16, max_probe=32)


def test_example_smoke_run_writes_history_summary_events_and_figure(tmp_path):
    argv = ["--smoke", "--scales", "0.5,1", "--out", str(tmp_path), "--no-progress"]
    load_example("modular_arithmetic").main(argv)
    rows = lm.read_jsonl(str(tmp_path / "history.jsonl"))
    required = {"step", "train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"}
    required |= {"ntk_drift", "alignment_test", "param_movement"}
    assert len(rows) > 5 and all(required <= set(r) for r in rows)
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"acc_crossings", "loss_crossings", "final_test_acc", "k0_test_acc"} <= set(summary)
    assert [r["scale"] for r in summary["sweep"]] == [0.5, 1.0]
    assert (tmp_path / "scales" / "scale0.5" / "history.jsonl").exists()
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_model_is_the_papers_quadratic_mlp_and_meter_applies_the_scale():
    split = modular_addition(5, 0.8, seed=0)
    x = split.one_hot_pairs(torch.float64)
    model = ModularMLP(10, 7, 5, dtype=torch.float64)
    W1, W2 = model.layer1.weight, model.layer2.weight
    # Independent computation: y_c = sum_i W2[c, i] (sum_d W1[i, d] x_d)^2 / (D N).
    expected = torch.stack(
        [
            torch.stack([sum(W2[c, i] * (W1[i] @ xi) ** 2 for i in range(7)) for c in range(5)])
            for xi in x
        ]
    ) / (10 * 7)
    torch.testing.assert_close(model(x), expected)
    meter = lm.LazyMeter(model, alpha=1.5, center=False)
    torch.testing.assert_close(meter(x), 1.5 * expected)  # uncentred: scale * f(x)
    assert meter.scaled_lr(100.0) == pytest.approx(100.0 / 1.5**2)  # the paper's lr


def test_optimizers_use_the_scaled_learning_rates():
    model = ModularMLP(6, 4, 3)
    meter = lm.LazyMeter(model, alpha=2.0, center=False)
    lr = lambda cfg: make_optimizer(cfg, meter).param_groups[0]["lr"]  # noqa: E731
    assert lr(ModularMLPConfig(scale=2.0, lr_scale=20.0)) == pytest.approx(2000 / 4)
    momentum = ModularMLPConfig(scale=2.0, lr_scale=1.0, optimizer="momentum")
    assert lr(momentum) == pytest.approx(100 / 4 * 0.1)
    assert lr(ModularMLPConfig(scale=2.0, optimizer="adamw", adam_lr=3e-3)) == pytest.approx(1.5e-3)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(ModularMLPConfig(optimizer="lbfgs"), meter)


def test_test_accuracy_rises_after_train_accuracy_and_later_for_a_larger_scale():
    rich = train(ModularMLPConfig(**SMALL, scale=0.5), progress=False)
    lazy = train(ModularMLPConfig(**SMALL, scale=2.0), progress=False)
    for s in (rich, lazy):
        a = s["acc_crossings"]
        assert a["test_step"] > a["train_step"]  # memorise first, generalise later
        assert s["final_test_acc"] == 1.0
        assert s["final_weight_norm"] > 1.5 * s["initial_weight_norm"]  # features moved
        assert s["k0_test_acc"] < 0.2  # the lazy (initial-kernel) solution does not generalise
    assert lazy["acc_crossings"]["test_step"] > 3 * rich["acc_crossings"]["test_step"]
    assert lazy["acc_crossings"]["delay"] > rich["acc_crossings"]["delay"]
