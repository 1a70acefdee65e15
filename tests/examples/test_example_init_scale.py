"""Init scale vs alpha (appendix): sigma^2 alpha collapses the curves, exactly for the
homogeneous ReLU net and within a stated tolerance for the paper's polynomial net."""

import json

import pytest
import torch
from example_scripts import load_example
from paper.harness import preset, run
from paper.init_scale import RUN, TASK, InitScaleConfig, collapse_stats
from paper.student_teacher import MLP

import lazymeter as lm

GROUPS = {0.25: 1, 1.0: 2, 4.0: 2, 16.0: 1}  # smoke grid sigma {.5,1,2} x alpha {1,4}


@pytest.fixture(scope="module")
def polynomial(tmp_path_factory):
    out = tmp_path_factory.mktemp("init_scale")
    summary = load_example("init_scale_vs_alpha").main(
        ["--smoke", "--out", str(out), "--no-progress", "--threads", "1"]
    )
    return out, summary


def test_smoke_writes_per_run_folders_summary_and_figure(polynomial):
    out, summary = polynomial
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["net"] == "polynomial"
    runs = on_disk["runs"]
    assert {(r["sigma"], r["alpha"]) for r in runs} == {
        (s, a) for s in (0.5, 1.0, 2.0) for a in (1.0, 4.0)
    }
    for r in runs:
        d = out / f"polynomial_sigma{r['sigma']:g}_alpha{r['alpha']:g}"
        rows = lm.read_jsonl(str(d / "history.jsonl"))
        # The summary's movement is the meter's last measurement, at the last step.
        assert rows[-1]["step"] == on_disk["config"]["steps"]
        assert rows[-1]["param_movement"] == pytest.approx(r["final_param_movement"], rel=1e-12)
        assert any(p.name.startswith("events.out.tfevents") for p in d.iterdir())
        # the appendix's learning rate: lr_scale N / (sigma^2 alpha^2)
        cfg = on_disk["config"]
        assert r["lr"] == pytest.approx(cfg["lr_scale"] * cfg["N"] / (r["sigma"] * r["alpha"]) ** 2)
    stats = summary["collapse_movement"]
    assert {g["sigma2_alpha"]: len(g["members"]) for g in stats["groups"]} == GROUPS
    assert (out / "figure.png").stat().st_size > 10_000


def test_claim_sigma2_alpha_collapses_the_polynomial_nets_curves(polynomial):
    """Tolerance (measured at smoke size: spreads ~0.001 for movement, ~0.06 for test loss):
    within a group of equal sigma^2 alpha the final movement differs by < 3% and the final
    test loss by < 15%, while across groups they span > 5x and > 2x; sigma^2 alpha groups
    explain > 99% of the variance of log movement. A sigma that did not multiply W, or
    that entered as sigma alpha, breaks the groups by far more."""
    _, s = polynomial
    mv, tl = s["collapse_movement"], s["collapse_test_loss"]
    assert mv["max_rel_spread"] < 0.03 and mv["range"] > 5
    assert tl["max_rel_spread"] < 0.15 and tl["range"] > 2
    assert mv["r2_log"] > 0.99
    means = [g["mean"] for g in mv["groups"]]
    assert means == sorted(means, reverse=True)  # lazier (larger sigma^2 alpha): less movement


def test_relu_sanity_check_collapses_exactly():
    s = run(TASK, InitScaleConfig.smoke(net="relu"), None, progress=False, figure=False, threads=1)
    mv = s["collapse_movement"]
    assert mv["max_rel_spread"] < 1e-6 and s["collapse_test_loss"]["max_rel_spread"] < 1e-6
    assert s["trajectory_spread"] < 1e-6  # whole histories, not only end points
    assert mv["range"] > 3


def test_equal_sigma2_alpha_gives_equal_relu_movement_beyond_power_of_two_scalings():
    # sigma = 1.5 is not a power of two: the runs differ by rounding, not bit for bit.
    base = dict(net="relu", steps=40)
    a, b, c = (
        run(RUN, preset(RUN, "smoke", **base, sigma=s, alpha=al), None, progress=False, threads=1)
        for s, al in ((1.5, 1.0), (1.0, 2.25), (1.0, 1.0))
    )
    ma, mb, mc = (r["final_param_movement"] for r in (a, b, c))
    assert ma == pytest.approx(mb, rel=1e-4)
    assert a["final_test_loss"] == pytest.approx(b["final_test_loss"], rel=1e-4)
    assert mc > 1.5 * ma  # a smaller sigma^2 alpha moves further


def test_sigma_multiplies_the_polynomial_nets_initial_weights():
    a = RUN.build(preset(RUN, "smoke", sigma=1.0))
    b = RUN.build(preset(RUN, "smoke", sigma=0.5))
    torch.testing.assert_close(b.model.W, 0.5 * a.model.W)
    assert b.data["lr"] == pytest.approx(4 * a.data["lr"])  # lr ~ 1 / sigma^2


def test_two_layer_relu_net_is_homogeneous_of_degree_two_in_its_init_scale():
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    arch = dict(activation="relu", bias=False, init="normal", squeeze=True, dtype=torch.float64)
    nets = [
        MLP(4, (6,), 1, init_scale=s, generator=torch.Generator().manual_seed(1), **arch)
        for s in (1.0, 1.5)
    ]
    torch.testing.assert_close(nets[1](x), 2.25 * nets[0](x))
    w1, w2 = nets[0].layers[0].weight, nets[0].layers[1].weight[0]
    torch.testing.assert_close(nets[0](x), torch.relu(x @ w1.T) @ w2)


def test_collapse_stats_groups_equal_products_and_scores_a_perfect_collapse():
    rows = [
        {"sigma": s, "alpha": a, "sigma2_alpha": s * s * a, "v": 1 / (s * s * a)}
        for s in (1.0, 2.0)
        for a in (1.0, 4.0)
    ]
    c = collapse_stats(rows, "v")
    assert [len(g["members"]) for g in c["groups"]] == [1, 2, 1]
    assert c["max_rel_spread"] == 0 and c["r2_log"] == pytest.approx(1.0)
    assert c["slope"] == pytest.approx(-1.0)
    rows[1]["v"] *= 2  # break the (1, 4) ~ (2, 1) group
    assert collapse_stats(rows, "v")["max_rel_spread"] == pytest.approx(2 / 3)
