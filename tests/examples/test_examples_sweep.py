"""The alpha x eps task (paper Figure 3) and its example: the smoke run's outputs, and the
figure's claims at a small size: grokking is delayed more the lazier the start (larger
alpha), and under the authors' absolute threshold the lazy, strongly quadratic corner never
groks (its train loss vanishes while the test loss freezes above the threshold)."""

import itertools
import json
import math

import pytest
from example_scripts import load_example
from paper.harness import run
from paper.phase_diagram import TASK, PhaseDiagramConfig


def test_smoke_sweep_writes_the_heat_map_curves_runs_and_figure(tmp_path):
    out = load_example("alpha_eps_sweep").main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    saved = json.loads((tmp_path / "summary.json").read_text())
    alphas, epss = saved["alphas"], saved["eps"]
    assert len(alphas) == len(epss) == 2 and saved["threshold_kind"] == "absolute"
    # one sub-run per grid cell and per distinct curve, each in its own directory
    names = [r["name"] for r in saved["runs"]]
    assert len(names) == len(set(names)) == 4 + 4
    for name in names:
        assert (tmp_path / name / "summary.json").exists()
        assert (tmp_path / name / "history.jsonl").exists()
    by_name = {r["name"]: r for r in saved["runs"]}
    for (i, x), (j, e) in itertools.product(enumerate(alphas), enumerate(epss)):
        cell = by_name[f"grid_alpha{x:g}_eps{e:g}"]
        assert cell["config"]["alpha"] == x and cell["config"]["eps"] == e
        assert cell["config"]["threshold_kind"] == "absolute" and cell["config"]["stop_early"]
        want, got = cell["time_to_grok"]["delay"], saved["matrix"][i][j]
        assert got == want  # rows alpha, columns eps; None where it never grokked
        assert (got is None) == ([x, e] in saved["never"])
    for panel, key in (("panel_a", "alpha"), ("panel_b", "eps")):
        runs = saved[panel]["runs"]
        assert len(runs) == 2 and all(key in r for r in runs)
        assert all(len(r["step"]) == len(r["test_loss"]) > 5 for r in runs)
    curve = by_name["curve_alpha0.5_eps0.25"]["config"]
    assert curve["target"] == "square" and curve["threshold_kind"] == "relative"
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert len(out["runs"]) == 8 and "history" in out["runs"][0]


def test_paper_preset_is_the_authors_protocol():
    p = PhaseDiagramConfig.paper()
    assert (p.D, p.P, p.N, p.lr_scale, p.epochs) == (100, 550, 500, 20.0, 110_000)
    assert (p.threshold, p.threshold_kind, p.stop_early) == (0.1, "absolute", True)
    assert len(p.alphas) == len(p.eps) == 14 and p.alphas[-1] == 5.6 and p.eps[-1] == 0.28
    assert (p.curve_eps_a, p.curve_P, p.curve_target) == (0.25, 450, "square")
    assert (p.curve_lr_scale, p.curve_epochs) == (0.5, 60_000)


@pytest.fixture(scope="module")
def small_grid():
    # D=50, P=300, N=200 (the default sizes) at lr 20 N / alpha^2 (0.8 x the stability edge:
    # fewer steps, crossings within ~15% of the gradient flow's), no curves.
    cfg = PhaseDiagramConfig(
        alphas=(0.5, 1.0, 4.0), eps=(0.1, 0.3), lr_scale=20.0, epochs=4000,
        curve_alphas=(), curve_eps=(),
    )  # fmt: skip
    return run(TASK, cfg, None, progress=False, figure=False)


def test_delay_grows_with_alpha(small_grid):
    s = small_grid
    delay = [row[0] for row in s["matrix"]]  # eps = 0.1
    assert all(d is not None and math.isfinite(d) for d in delay), delay
    assert delay[0] < delay[1] < delay[2], delay
    assert delay[2] > 4 * delay[0]


def test_absolute_threshold_phase_diagram_has_its_never_groks_corner(small_grid):
    s = small_grid
    # only the laziest, most quadratic cell never gets its test loss below 0.1 ...
    assert s["never"] == [[4.0, 0.3]], s["never"]
    cell = {r["name"]: r for r in s["runs"]}["grid_alpha4_eps0.3"]
    # ... and not for lack of time: its train loss vanished, the run converged, the test
    # loss froze well above the threshold
    assert cell["stopped"] == "converged" and cell["final_step"] < 4000 * 20
    assert cell["final_train_loss"] < 1e-5 and cell["final_test_loss"] > 0.15
    # every other cell stopped because both losses crossed
    assert [r["stopped"] for r in s["runs"]].count("crossed") == 5


def test_the_phase_diagram_docstring_states_the_default_grid():
    cfg = PhaseDiagramConfig()
    a, e = cfg.alphas, cfg.eps
    said = f"the grid is {len(a)} x {len(e)} (alpha {min(a):g}..{max(a):g}, eps "
    said += f"{min(e):g}..{max(e):g})"
    assert said in " ".join(PhaseDiagramConfig.__doc__.split())
