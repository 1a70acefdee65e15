"""LazyMeter: wrapping, measurements against independent computations, invariance, resume."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from architectures import naive_ntk
from helpers import fit as train
from torch import nn

import lazymeter as lm

HERE = Path(__file__).parent


def mlp(D=4, width=16, out=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, width), nn.Tanh(), nn.Linear(width, out)).double()


def regression_data(P=12, Q=10, D=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, D, generator=g, dtype=torch.float64)
    xt = torch.randn(Q, D, generator=g, dtype=torch.float64)
    f = lambda v: torch.sin(v[:, 0]) + v[:, 1] * v[:, 2]  # noqa: E731
    return x, f(x), xt, f(xt)


def features(*layers):
    """The default quantities and the feature CKA of ``layers``."""
    return lm.quantities.default(features=layers)


# --- wrapping -------------------------------------------------------------------------------


def test_centred_output_is_alpha_times_change_from_initial_model():
    model = mlp()
    model0 = copy.deepcopy(model)
    x, y, _, _ = regression_data()
    meter = lm.LazyMeter(model, alpha=3.0)
    assert torch.equal(meter(x), torch.zeros(12, 1, dtype=torch.float64))
    train(meter, x, y, 5)
    torch.testing.assert_close(meter(x), 3.0 * (model(x) - model0(x)))


def test_uncentred_output_is_alpha_times_model():
    model = mlp()
    x = torch.randn(5, 4, dtype=torch.float64)
    meter = lm.LazyMeter(model, alpha=2.5, center=False)
    torch.testing.assert_close(meter(x), 2.5 * model(x))


def test_gradients_reach_only_the_user_model():
    model = mlp()
    meter = lm.LazyMeter(model, alpha=2.0)
    assert [id(p) for p in meter.parameters()] == [id(p) for p in model.parameters()]
    x = torch.randn(5, 4, dtype=torch.float64)
    meter(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert all(not b.requires_grad for b in meter.snapshot.buffers())


def test_initial_model_stays_frozen_while_training():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    x, y, _, _ = regression_data()
    meter = lm.LazyMeter(model, alpha=1.0)
    train(meter, x, y, 10)
    snap = meter.snapshot.as_dict()
    assert all(torch.equal(snap[k], v) for k, v in before.items())
    assert not all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_output_fn_and_structured_outputs_are_centred_leafwise():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2).double(), nn.Linear(3, 1).double()

        def forward(self, x):
            return {"logits": self.a(x), "aux": (self.b(x), torch.arange(len(x)))}

    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(4, 3, dtype=torch.float64)
    meter = lm.LazyMeter(model, alpha=2.0)
    out = meter(x)
    assert torch.equal(out["logits"], torch.zeros(4, 2, dtype=torch.float64))
    assert torch.equal(out["aux"][1], torch.arange(4))  # integer leaves pass through
    with torch.no_grad():
        model.a.weight.add_(1.0)
    picked = lm.LazyMeter(model, alpha=2.0, output_fn=lambda o: o["logits"], center=False)(x)
    torch.testing.assert_close(picked, 2.0 * model(x)["logits"])


def test_initial_output_is_computed_once_for_a_full_batch_and_again_after_inplace_change():
    model = mlp()
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    meter = lm.LazyMeter(model, alpha=1.0)
    x = torch.randn(6, 4, dtype=torch.float64)
    for _ in range(3):
        meter(x)
    assert len(calls) == 3 + 1  # three live forwards, one snapshot forward
    x.mul_(2.0)
    out = meter(x)
    assert len(calls) == 3 + 1 + 2  # the modified input is evaluated afresh
    with torch.no_grad():
        torch.testing.assert_close(out, model(x) - model(x))


def test_scaled_lr_divides_by_alpha_squared_for_sgd_and_alpha_for_adam():
    meter = lm.LazyMeter(mlp(), alpha=4.0)
    assert meter.scaled_lr(1.6) == pytest.approx(0.1)
    assert meter.scaled_lr(1.6, optimizer="adam") == pytest.approx(0.4)


def test_scaled_lr_makes_early_function_space_dynamics_independent_of_alpha():
    # One GD step moves the centred function by -lr/alpha^2 * alpha^2 * K * residual:
    # independent of alpha to first order, with corrections of order 1/alpha.
    x, y, _, _ = regression_data()
    outs = []
    for alpha in (100.0, 1000.0):
        meter = lm.LazyMeter(mlp(), alpha=alpha)
        train(meter, x, y, 1, lr=0.05)
        outs.append(meter(x).detach())
    assert outs[0].abs().max() > 1e-3
    torch.testing.assert_close(outs[0], outs[1], rtol=0.02, atol=1e-6)


# --- measurements against independent computations ------------------------------------------


def _hsic_u(K, L):
    """Song et al. (2012), eq. 5, written out: zeroed diagonals, ones vectors."""
    n = K.shape[0]
    Kt, Lt = K - torch.diag(K.diag()), L - torch.diag(L.diag())
    one = torch.ones(n, dtype=torch.float64)
    return (
        torch.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def _hsic_ratio(K, L):
    return float(_hsic_u(K, L) / (_hsic_u(K, K) * _hsic_u(L, L)).sqrt())


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_measurement_matches_independent_kernels_and_formulas(estimator):
    model = mlp()
    model0 = copy.deepcopy(model)
    x, y, xt, yt = regression_data()
    meter = lm.LazyMeter(
        model,
        alpha=1.0,
        probe=lm.ProbeSet((x, y), test=(xt, yt)),
        schedule=1000,
        quantities=lm.quantities.default(estimator=estimator),
    )
    train(meter, x, y, 30, lr=0.5)
    row = meter.measure()
    K, K0 = naive_ntk(model, x), naive_ntk(model0, x)
    Kt, K0t = naive_ntk(model, xt), naive_ntk(model0, xt)
    H = torch.eye(12, dtype=torch.float64) - 1 / 12
    Kc, yy = H @ K @ H, H @ torch.outer(y, y) @ H
    K0c = H @ K0 @ H
    assert row["ntk_drift"] == pytest.approx(float((K - K0).norm() / K0.norm()), rel=1e-8)
    if estimator == "biased":
        want_align = float((Kc * yy).sum() / (Kc.norm() * yy.norm()))
        want_cka = float((Kc * K0c).sum() / (Kc.norm() * K0c.norm()))
    else:
        want_align = _hsic_ratio(K, torch.outer(y, y))
        want_cka = _hsic_ratio(K, K0)
    assert row["alignment_train"] == pytest.approx(want_align, rel=1e-8)
    assert row["ntk_cka"] == pytest.approx(want_cka, rel=1e-8)
    assert row["alignment_train_se"] > 0 and row["ntk_cka_se"] > 0
    assert row["test_ntk_drift"] == pytest.approx(float((Kt - K0t).norm() / K0t.norm()), rel=1e-8)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    theta0 = torch.cat([p.detach().reshape(-1) for p in model0.parameters()])
    assert row["param_movement"] == pytest.approx(float((theta - theta0).norm() / theta0.norm()))
    assert row["weight_norm"] == pytest.approx(float(theta.norm()))
    eig = torch.linalg.eigvalsh(K).flip(0)
    assert row["spectrum_eig_1"] == pytest.approx(float(eig[0]), rel=1e-8)
    assert row["spectrum_trace"] == pytest.approx(float(K.trace()), rel=1e-8)
    assert row["alignment0_train"] == pytest.approx(meter.history[0]["alignment0_train"])


def test_lazy_baseline_is_k0_kernel_regression_on_the_full_probes():
    model = mlp()
    model0 = copy.deepcopy(model)
    x, y, xt, yt = regression_data(P=12, Q=10)
    meter = lm.LazyMeter(model, alpha=1.0, probe=lm.ProbeSet((x, y), test=(xt, yt), max_points=5))
    assert meter.probe_x.shape[0] == 5  # measurements subsample; the baseline does not
    K0, K0t = naive_ntk(model0, x), naive_ntk(model0, xt, x)
    pred = K0t @ torch.linalg.solve(K0, y)
    assert meter.baseline["k0_test_mse"] == pytest.approx(float(((pred - yt) ** 2).mean()))


def test_very_lazy_network_converges_to_the_k0_baseline():
    # alpha -> infinity: GD on the centred model is kernel regression with K0.
    D, P = 30, 8
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(P, D, generator=g).double(), torch.randn(20, D, generator=g).double()
    y, yt = torch.tanh(x[:, 0] * 2), torch.tanh(xt[:, 0] * 2)
    model = mlp(D=D, width=64)
    meter = lm.LazyMeter(model, alpha=1000.0, probe=lm.ProbeSet((x, y), test=(xt, yt)))
    lam = lm.kernel_spectrum(meter.K0, k=1)["eig_1"]
    train(meter, x, y, 1500, lr=0.9 * P / lam)
    with torch.no_grad():
        test_mse = ((meter(xt).squeeze(-1) - yt) ** 2).mean().item()
    assert test_mse == pytest.approx(meter.baseline["k0_test_mse"], rel=0.02)
    row = meter.measure()
    assert row["ntk_drift"] < 1e-2
    assert lm.regime.classify(row) == "lazy"


def test_probe_subsample_is_deterministic_and_bounded():
    x, y, _, _ = regression_data(P=40)
    a = lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), max_points=10))
    b = lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), max_points=10))
    c = lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), max_points=10, seed=5))
    assert a.probe_x.shape == (10, 4)
    assert torch.equal(a.probe_x, b.probe_x) and not torch.equal(a.probe_x, c.probe_x)
    rows = [int(torch.nonzero((x == r).all(1))[0]) for r in a.probe_x]
    assert rows == sorted(rows)


def test_integer_labels_are_one_hot_for_alignment_and_baseline():
    torch.manual_seed(0)
    x, xt = torch.randn(20, 4).double(), torch.randn(10, 4).double()
    y, yt = (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), (xt[:, 0] > 0).long()
    model = mlp(out=3)
    meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=(xt, yt)))
    Y = torch.nn.functional.one_hot(y, 3).double()
    K0 = naive_ntk(model, x)
    row = meter.measure()
    assert row["alignment_train"] == pytest.approx(lm.kernel_alignment(K0, Y, estimator="unbiased"))
    assert 0.0 <= meter.baseline["k0_test_acc"] <= 1.0


def test_feature_cka_starts_at_one_and_tracks_the_layer():
    model = mlp(width=32)
    model0 = copy.deepcopy(model)
    x, y, _, _ = regression_data(P=20)
    meter = lm.LazyMeter(model, alpha=0.5, probe=(x, y), quantities=features("1"), schedule=1000)
    assert meter.measure()["feature_cka/1"] == pytest.approx(1.0)
    train(meter, x, y, 200, lr=0.05)
    expected = lm.linear_cka(torch.tanh(model[0](x)), torch.tanh(model0[0](x)))
    assert meter.measure()["feature_cka/1"] == pytest.approx(expected, rel=1e-10)
    assert expected < 0.9999


def test_extra_metrics_are_logged_each_measurement():
    model = mlp()
    norms = {"norms": lambda m: {"w0": m[0].weight.norm()}}
    meter = lm.LazyMeter(model, quantities=lm.quantities.default(metrics=norms))
    assert meter.measure()["w0"] == pytest.approx(float(model[0].weight.detach().norm()))


# --- measurements never perturb training --------------------------------------------------


def _dropout_run(measure: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1)).double()
    x, y, xt, yt = regression_data()
    meter = lm.LazyMeter(
        model,
        probe=lm.ProbeSet((x, y), test=(xt, yt)),
        quantities=features("1"),
        schedule=1 if measure else (lambda s: False),
    )
    train(meter, x, y, 25)
    return model, meter


def test_measuring_leaves_training_bit_identical():
    measured, m1 = _dropout_run(True)
    bare, m2 = _dropout_run(False)
    # Steps 1..25 measured, and step 0 before any update in both runs (from the snapshot,
    # copied in and back out after the first update: bit for bit, the RNG untouched).
    assert len(m1.history) == 26 and [r["step"] for r in m2.history] == [0]
    for p, q in zip(measured.parameters(), bare.parameters(), strict=True):
        assert torch.equal(p, q)
    assert measured.training  # dropout stayed in training mode throughout


def test_measuring_keeps_gradients_mode_and_rng():
    model = mlp()
    x, y, _, _ = regression_data()
    meter = lm.LazyMeter(model, probe=(x, y), quantities=features("0"))
    ((meter(x).squeeze(-1) - y) ** 2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.eval()
    state = torch.get_rng_state()
    meter.measure()
    assert torch.equal(state, torch.get_rng_state())
    assert not model.training
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))


def test_batchnorm_statistics_are_untouched_by_measurements():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1)).double()
    x, y, _, _ = regression_data()
    meter = lm.LazyMeter(model.eval(), probe=(x, y), quantities=features("1"), measure_mode="as_is")
    model.train()
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(RuntimeWarning, match="could not measure ntk"):
        row = meter.measure()  # training-mode BatchNorm has no per-sample NTK: NaN, not a crash
    assert math.isnan(row["ntk_drift"]) and not math.isnan(row["feature_cka/1"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training
    model.eval()
    assert math.isfinite(meter.measure()["ntk_drift"])


def test_meter_on_a_model_without_an_ntk_warns_and_keeps_going():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)).double()
    x, y, xt, yt = regression_data()
    with pytest.warns(RuntimeWarning, match="cannot be computed"):
        meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=(xt, yt)), measure_mode="as_is")
    train(meter, x, y, 3)
    assert math.isnan(meter.measure()["ntk_drift"])
    assert math.isfinite(meter.history[-1]["param_movement"])


# --- state ------------------------------------------------------------------------------------


def test_resumed_run_continues_the_same_curves(tmp_path):
    script = str(HERE / "resume_run.py")
    full, split = tmp_path / "full", tmp_path / "split"
    ckpt = str(tmp_path / "ckpt.pt")
    run = lambda *a: subprocess.run([sys.executable, script, *a], check=True)  # noqa: E731
    run("full", str(full))
    run("first", str(split), ckpt)
    run("second", str(split), ckpt)  # a fresh process
    a = json.loads((full / "history.json").read_text())
    b = json.loads((split / "history.json").read_text())
    assert len(a) > 20 and a == b
    assert (full / "history.jsonl").read_text() == (split / "history.jsonl").read_text()


def test_state_dict_round_trip_in_process():
    x, y, xt, yt = regression_data()
    src = lm.LazyMeter(mlp(seed=0), alpha=2.0, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=3)
    train(src, x, y, 10)
    dst = lm.LazyMeter(mlp(seed=7), alpha=2.0, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=3)
    dst.load_state_dict(src.state_dict())
    assert dst.history == src.history and dst.last_step == src.last_step
    assert torch.equal(dst.K0, src.K0) and dst.baseline == src.baseline
    z = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(dst(z), src(z))
    # Steps 0 (before training) and 1..10 were measured at 0, 3, 6, 9: the schedule
    # continues with 12.
    assert [dst.step(train_loss=1.0) is None for _ in range(3)] == [True, False, True]
    assert dst.history[-1]["step"] == 12


def test_loading_a_state_saved_with_another_alpha_is_rejected():
    src, dst = lm.LazyMeter(mlp(), alpha=2.0), lm.LazyMeter(mlp(), alpha=3.0)
    with pytest.raises(ValueError, match="alpha=2.0"):
        dst.load_state_dict(src.state_dict())
