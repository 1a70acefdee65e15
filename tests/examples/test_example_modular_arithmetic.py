"""The modular-arithmetic MLP (Figure 2): the example script, the model, the paper's scale
convention, and the grokking delay growing with alpha."""

import json
import math

import pytest
import torch
from example_scripts import load_example
from paper.cli import main
from paper.harness import preset
from paper.modular import modular_addition
from paper.modular_mlp import (
    RUN,
    TASK,
    ModularMLP,
    ModularMLPConfig,
    make_optimizer,
    runs,
    train,
)

import lazymeter as lm
from lazymeter.history import measurements

# About 2 s of one core per run (p=13: 152 train pairs); see the claim test's numbers. Tiny
# models: one torch thread (more only add overhead, several x on a busy machine).
# seed 1 (the authors' split at p=23) is the seed these small runs were measured on
SMALL = dict(
    p=13, N=50, lr_scale=10.0, steps=1500, per_decade=8, max_probe=32, scales=(), seed=1
)  # fmt: skip


def test_example_smoke_run_writes_each_scale_the_summary_and_the_figure(tmp_path):
    argv = ["--smoke", "--out", str(tmp_path), "--no-progress", "--threads", "1"]
    out = load_example("modular_arithmetic").main(argv)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["convention"] == "paper" and summary["main_run"] == "scale=1"
    assert [(r["scale"], r["alpha"]) for r in summary["sweep"]] == [(0.5, 0.25), (1.0, 1.0)]
    assert {"acc_crossings", "time_to_grok", "final_test_acc", "k0_test_acc"} <= set(summary)
    assert [r["name"] for r in out["runs"]] == ["scale=0.5", "scale=1"]
    for name in ("scale=0.5", "scale=1"):
        rows = measurements(lm.read_jsonl(str(tmp_path / name / "history.jsonl")))  # no scalar rows
        required = {"step", "train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"}
        required |= {"ntk_drift", "alignment_test", "param_movement"}
        assert len(rows) > 5 and all(required <= set(r) for r in rows)
        assert all(math.isfinite(r["train_loss"]) for r in rows)
        assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / name).iterdir())
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_cli_sweep_over_scale_gives_one_run_directory_per_scale(tmp_path):
    argv = ["sweep", "modular_mlp", "--smoke", "--steps", "20", "--scale", "0.5,1"]
    argv += ["--scales", "", "--workers", "1", "--threads", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    for label, alpha in (("scale=0.5", 0.25), ("scale=1.0", 1.0)):
        assert (tmp_path / label / "history.jsonl").exists()
        summary = json.loads((tmp_path / label / "summary.json").read_text())
        assert summary["convention"] == "paper" and summary["alpha"] == alpha
        assert summary["main_run"] == "." and len(summary["runs"]) == 1


def test_runs_are_the_sweep_and_the_main_scale_once_each():
    cfg = ModularMLPConfig(scale=1.0, scales=(2.0, 0.5, 1.0))
    subs = runs(cfg)
    assert [n for n, _, _ in subs] == ["scale=0.5", "scale=1", "scale=2"]
    assert all(c.scales == () and c.convention == "paper" for _, _, c in subs)
    # a lone run writes into the output directory itself (where lazymeter report reads it)
    assert [n for n, _, _ in runs(ModularMLPConfig(scale=3.0, scales=()))] == [""]
    assert [n for n, _, _ in runs(ModularMLPConfig(scale=3.0, scales=(3.0,)))] == [""]
    assert TASK.runs is not None and RUN.build is not None


def test_paper_preset_is_the_authors_protocol():
    cfg = preset("modular_mlp", "paper")
    assert (cfg.p, cfg.N, cfg.train_frac, cfg.lr, cfg.lr_scale, cfg.steps) == (
        23, 100, 0.9, 100.0, 1.0, 100_000
    )  # fmt: skip
    assert cfg.convention == "paper" and cfg.scales == (0.5, 1.0, 1.5, 2.0)
    assert (cfg.optimizer, cfg.weight_decay, cfg.seed) == ("sgd", 0.0, 1)
    # seed 1 is the authors' split: torch.manual_seed(1); torch.randperm(p^2), first 476 train
    torch.manual_seed(1)
    perm = torch.randperm(23 * 23)
    split = modular_addition(23, 0.9, seed=1)
    assert split.n_train == 476 and torch.equal(split.a * 23 + split.b, perm)
    with pytest.raises(ValueError, match="convention"):
        ModularMLPConfig(convention="sqrt")


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
    # The paper's convention: the output is multiplied by s twice, alpha = s^2.
    cfg = ModularMLPConfig(scale=1.5)
    meter = lm.LazyMeter(model, alpha=cfg.alpha, center=False)
    torch.testing.assert_close(meter(x), 1.5 * 1.5 * expected)  # uncentred: s * s * g(x)
    assert ModularMLPConfig(scale=1.5, convention="alpha").alpha == 1.5


def test_optimizers_use_the_scaled_learning_rates():
    model = ModularMLP(6, 4, 3)
    s = 2.0

    def lr(cfg):
        meter = lm.LazyMeter(model, alpha=cfg.alpha, center=False)
        return make_optimizer(cfg, meter).param_groups[0]["lr"]

    # the authors': lr = 100 / s^2 on MSE / s^2 (x lr_scale)
    assert lr(ModularMLPConfig(scale=s, lr_scale=20.0)) == pytest.approx(2000 / 4)
    alpha = dict(scale=s, convention="alpha")
    assert lr(ModularMLPConfig(**alpha, lr_scale=20.0)) == pytest.approx(2000 / 4)  # / alpha^2
    momentum = ModularMLPConfig(**alpha, lr_scale=1.0, optimizer="momentum")
    assert lr(momentum) == pytest.approx(100 / 4 * 0.1)
    adamw = dict(optimizer="adamw", adam_lr=3e-3)
    assert lr(ModularMLPConfig(**alpha, **adamw)) == pytest.approx(1.5e-3)  # / alpha
    assert lr(ModularMLPConfig(scale=s, **adamw)) == pytest.approx(3e-3 / 4)  # alpha = s^2
    with pytest.raises(ValueError, match="optimizer"):
        ModularMLPConfig(optimizer="lbfgs")


def test_paper_convention_at_s_is_the_alpha_convention_at_s_squared():
    # MSE / s^2 at lr / s^2 with the output times s^2 = the MSE at lr / alpha^2, alpha = s^2:
    # the same trajectory; only the reported losses differ, by the loss weight 1 / s^2.
    small = dict(SMALL, steps=200, dtype="float64")
    paper = train(ModularMLPConfig(**small, scale=1.2), progress=False, threads=1)
    other = train(
        ModularMLPConfig(**small, scale=1.44, convention="alpha"), progress=False, threads=1
    )
    assert paper["alpha"] == pytest.approx(other["alpha"]) and paper["convention"] == "paper"
    for a, b in zip(paper["history"], other["history"], strict=True):
        assert a["step"] == b["step"] and a["train_acc"] == b["train_acc"]
        assert a["weight_norm"] == pytest.approx(b["weight_norm"], rel=1e-9)
        assert a["train_loss"] * 1.44 == pytest.approx(b["train_loss"], rel=1e-9)


def test_delay_grows_with_alpha():
    # Figure 2c at small size: s = 0.7, 1, 1.4, i.e. alpha = s^2 = 0.49, 1, 1.96. Measured
    # (seed 1, lr-equivalent steps to ~90% train / test accuracy): 750 / 1.34k, 1.34k /
    # 3.17k, 3.17k / 10k; delays 590, 1.83k, 6.83k. (s = 0.5 is past GD's stability edge
    # at this p and lr_scale.)
    out = {}
    for s in (0.7, 1.0, 1.4):
        r = train(ModularMLPConfig(**SMALL, scale=s), progress=False, threads=1)
        assert r["final_train_acc"] == 1.0 and r["final_test_acc"] > 0.9
        assert r["final_weight_norm"] > 1.1 * r["initial_weight_norm"]  # features moved
        assert r["k0_test_acc"] < 0.2  # the lazy (initial-kernel) solution does not generalise
        out[r["alpha"]] = r["acc_crossings"]
    alphas = sorted(out)
    tests = [out[a]["test_step"] for a in alphas]
    delays = [out[a]["delay"] for a in alphas]
    assert all(math.isfinite(t) for t in tests), out  # every alpha groks within the budget
    assert all(out[a]["test_step"] > out[a]["train_step"] for a in alphas), out
    increasing = lambda v: all(a < b for a, b in zip(v[:-1], v[1:], strict=True))  # noqa: E731
    assert increasing(tests) and tests[-1] > 3 * tests[0], out
    assert increasing(delays) and delays[-1] > 3 * delays[0], out
