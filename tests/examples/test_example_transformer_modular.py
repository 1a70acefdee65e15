"""examples/transformer_modular.py (the paper's transformer experiment) end to end, smoke-sized."""

import json
import math

import pytest
import torch
from example_scripts import load_example as load_script

import lazymeter as lm
from lazymeter.tasks.transformer_modular import TransformerModularConfig, train


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models: intra-op threads only add overhead (several x on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_example():
    return load_script("transformer_modular")


def test_smoke_sweep_writes_each_alphas_run_summary_and_figure(tmp_path):
    torch.set_num_threads(2)
    out = load_example().main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    assert torch.get_num_threads() == 2  # the script's one-thread setting is undone
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["alphas"] == [1.0, 4.0] and len(summary["runs"]) == 2
    required = {"step", "train_loss", "test_loss", "train_acc", "test_acc", "lr"}
    required |= {"ntk_drift", "alignment_train", "alignment_test", "param_movement"}
    for run, alpha in zip(summary["runs"], (1.0, 4.0), strict=True):
        assert run["alpha"] == alpha and "history" not in run
        # The paper's rule: the base learning rate over alpha^2.
        assert run["lr"] == pytest.approx(run["config"]["lr"] / alpha**2)
        for key in ("final_train_acc", "final_test_acc", "seconds", "k0_test_acc"):
            assert 0 <= run[key] < math.inf
        for key in ("train_acc_step", "test_acc_step"):  # a step, or null (never crossed)
            assert run[key] is None or isinstance(run[key], float)
        curve = run["curve"]
        assert curve["step"][0] == 0 and curve["step"][-1] == run["config"]["steps"]
        assert len(curve["test_acc"]) == len(curve["step"]) > 5
        run_dir = tmp_path / f"alpha{alpha:g}"
        rows = lm.read_jsonl(str(run_dir / "history.jsonl"))
        assert len(rows) > 3 and all(required <= set(r) for r in rows)
        assert rows[-1]["step"] == run["config"]["steps"]  # the final state is measured
        assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert [r["alpha"] for r in out["runs"]] == [1.0, 4.0]


def test_train_fits_and_reports_accuracy_crossings_with_sgd_controls():
    cfg = TransformerModularConfig(
        p=7, d_model=16, n_heads=4, d_mlp=32, steps=40, per_decade=2, max_probe=8, eval_every=5
    )
    s = train(cfg, progress=False)
    # AdamW at alpha=1 fits the 20 training pairs: train accuracy crosses 90% within the budget.
    assert s["final_train_acc"] == 1.0 and 0 < s["train_acc_step"] <= 40
    assert s["final_train_loss"] < s["history"][0]["train_loss"]
    c = s["curve"]
    first = next(st for st, a in zip(c["step"], c["train_acc"], strict=True) if a > 0.9)
    assert first >= s["train_acc_step"]  # the curve is sampled; the crossing is per step
    sgd = train(
        TransformerModularConfig(**{**cfg.__dict__, "optimizer": "momentum", "alpha": 2.0}),
        progress=False,
    )
    assert sgd["config"]["lr"] == 0.05 and sgd["config"]["weight_decay"] == 1e-3
    assert sgd["lr"] == pytest.approx(0.05 / 4)


def test_bad_optimizer_is_rejected():
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        train(TransformerModularConfig(p=5, steps=1, optimizer="rmsprop"), progress=False)
