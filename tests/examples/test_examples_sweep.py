"""The (alpha, eps) sweep example (paper Figure 3) runs end to end in its smoke setting."""

import itertools
import json
import math

from example_scripts import load_example as load_script


def load_example():
    return load_script("alpha_eps_sweep")


def test_smoke_sweep_writes_one_cell_per_grid_point_curves_and_figure(tmp_path):
    out = load_example().main(
        ["--smoke", "--out", str(tmp_path), "--workers", "1", "--no-progress"]
    )
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    alphas, epss = sweep["alphas"], sweep["eps"]
    assert len(alphas) == len(epss) == 2
    cells = sweep["cells"]
    assert len(cells) == len(alphas) * len(epss)
    assert {(c["alpha"], c["eps"]) for c in cells} == set(itertools.product(alphas, epss))
    for c in cells:
        grok = c["time_to_grok"]
        assert isinstance(grok, dict)
        assert {"train_step", "test_step", "delay", "ratio", "threshold"} <= set(grok)
        assert "history" not in c
        assert c["config"]["alpha"] == c["alpha"] and c["config"]["eps"] == c["eps"]
    # The heat map holds the chosen metric of each cell, rows alpha and columns eps.
    metric = sweep["metric"]
    by_cell = {(c["alpha"], c["eps"]): c["time_to_grok"][metric] for c in cells}
    for i, j in itertools.product(range(len(alphas)), range(len(epss))):
        want, got = by_cell[(alphas[i], epss[j])], sweep["matrix"][i][j]
        assert got == want or (math.isnan(got) and math.isnan(want))

    curves = json.loads((tmp_path / "curves.json").read_text())
    for panel in ("alpha_sweep", "eps_sweep"):
        runs = curves[panel]["runs"]
        assert len(runs) == 2
        assert all(len(r["step"]) == len(r["test_loss"]) > 5 for r in runs)
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    assert len(out["results"]) == len(cells) and len(out["sweep"]["cells"]) == len(cells)
