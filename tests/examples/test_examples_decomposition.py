"""examples/loss_decomposition.py (paper Figure 4): outputs, and the decomposition's sum
against the finite-test-set loss of the uncentred run."""

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from lazymeter.tasks.polynomial import train

# K0 is singular for N=2 (rank <= N*D < P): the lazy baseline says so; not under test here.
pytestmark = pytest.mark.filterwarnings("ignore:kernel_regression:RuntimeWarning")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "loss_decomposition.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("loss_decomposition", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_writes_outputs_and_terms_add_up(example, tmp_path):
    summary = example.main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    for name in ("history.jsonl", "summary.json", "figure.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))

    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(rows) > 5
    for r in rows:
        parts = [r[f"decomp_{k}"] for k in ("variance", "misalignment", "linear")]
        assert all(math.isfinite(p) and p >= 0 for p in parts)
        assert r["decomp_total"] == pytest.approx(sum(parts), rel=1e-12, abs=1e-15)

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert "history" not in saved and "history" in summary
    assert saved["config"]["center"] is False and saved["config"]["N"] == 2
    last = rows[-1]
    assert saved["final_step"] == last["step"]
    assert saved["decomposition_final"]["total"] == pytest.approx(last["decomp_total"])
    assert saved["decomposition_initial"]["total"] == pytest.approx(rows[0]["decomp_total"])
    gap = abs(last["test_loss"] - last["decomp_total"]) / last["decomp_total"]
    assert saved["rel_gap_final"] == pytest.approx(gap)
    assert saved["max_rel_gap"] >= saved["rel_gap_final"]


def test_decomposition_total_tracks_test_loss_within_monte_carlo_error(example):
    # The figure's run, with a large test set: the sum of the three terms is the population
    # test MSE, so the finite-test-set loss may differ from it only by Monte-Carlo error,
    # whose relative std is below MC_REL_STD / sqrt(P_test) (~2.8% here) at every row.
    P_test = 20_000
    cfg = example.config(P_test=P_test, epochs=1000)
    assert cfg.center is False and (cfg.D, cfg.N, cfg.P, cfg.eps) == (40, 2, 120, 0.25)
    hist = train(cfg, None, progress=False, figure=False)["history"]
    total = [r["decomp_total"] for r in hist]
    assert max(total) / min(total) > 10  # the terms evolve: tracking over a real change
    sigma = example.MC_REL_STD / math.sqrt(P_test)
    for r in hist:
        gap = abs(r["test_loss"] - r["decomp_total"]) / r["decomp_total"]
        assert gap < 4 * sigma, (r["step"], r["test_loss"], r["decomp_total"])
