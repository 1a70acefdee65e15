"""The reproduction page's generator: every figure's run, check and section, at smoke size."""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduction.py"


@pytest.fixture(scope="module")
def reproduction():
    spec = importlib.util.spec_from_file_location("reproduction", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduction"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_registered_figure_task_is_on_the_page(reproduction):
    from paper import TASKS

    on_page = {f.task for f in reproduction.FIGURES}
    assert on_page <= set(TASKS)
    runs_only = {n for n in TASKS if n.endswith("_run")}  # sub-runs of a figure's task
    assert set(TASKS) - runs_only <= on_page


def test_the_page_is_written_from_smoke_runs_and_rewritten_from_them(reproduction, tmp_path):
    out, page = tmp_path / "runs", tmp_path / "docs" / "reproduction.md"
    page.parent.mkdir()
    args = ["--out", str(out), "--page", str(page), "--preset", "smoke", "--workers", "1"]
    assert reproduction.main([*args, "--seeds", "0,1"]) == 0
    text = page.read_text()
    assert "seeds 0, 1" in text
    for fig in reproduction.FIGURES:
        assert f"{{ #{fig.key} }}" in text
        for k in (0, 1):
            summary = json.loads((out / fig.key / f"seed{k}" / "summary.json").read_text())
            assert summary["config"]["seed"] == k
            numbers, holds = fig.check(summary)  # the checks read summary.json alone
            assert numbers and holds.word in ("yes", "partly", "no")
            assert set(fig.numbers(summary)) == set(fig.numbers(json.loads(
                (out / fig.key / "seed0" / "summary.json").read_text())))  # fmt: skip
        for c in fig.controls:  # on the first seed only
            s = json.loads(
                (Path(reproduction.control_dir(str(out / fig.key), c)) / "summary.json").read_text()
            )
            assert s["config"]["seed"] == 0 and c.line(s) in text
    # Figure 2's controls are runs, not typed-in numbers
    fig2 = next(f for f in reproduction.FIGURES if f.key == "fig2")
    assert {c.name for c in fig2.controls} >= {"AdamW", "heavy-ball momentum"}
    assert "was not run for this page" in text
    before = text
    assert reproduction.main([*args, "--seeds", "0,1", "--reuse"]) == 0
    assert page.read_text() == before
    # a paper-preset run sits beside the default's numbers (here a stand-in: seed 0's summary)
    (out / "fig1" / "paper").mkdir()
    shutil.copy(out / "fig1" / "seed0" / "summary.json", out / "fig1" / "paper")
    assert reproduction.main([*args, "--seeds", "0,1", "--reuse"]) == 0
    text = page.read_text()
    assert "**The paper's protocol** (`python examples/polynomial_regression.py --full`" in text
    assert "| median (range) | `--full` |" in text and "run for fig1;" in text


def test_the_paper_preset_is_one_more_job_with_its_own_seed(reproduction, tmp_path):
    fig2 = next(f for f in reproduction.FIGURES if f.key == "fig2")
    jobs = reproduction.jobs_of(fig2, str(tmp_path), [3, 4], "default", paper=True)
    runs = [(j[1], j[2].get("seed"), os.path.basename(j[3])) for j in jobs]
    assert runs[:2] == [("default", 3, "seed3"), ("default", 4, "seed4")]
    assert {r[1] for r in runs[2:-1]} == {3} and len(runs) == 3 + len(fig2.controls)
    assert runs[-1] == ("paper", None, "paper")  # the authors' split: paper() says seed 1


def test_a_claim_over_seeds_counts_each_word_and_each_failed_part(reproduction):
    from paper.results import Verdict

    yes = Verdict({"a": True, "b": True})
    assert reproduction.over_seeds([yes] * 5) == "yes in 5 of 5 seeds"
    mixed = [yes, yes, Verdict({"a": True, "b": False}), Verdict({"a": False, "b": False})]
    assert reproduction.over_seeds(mixed) == (
        "yes in 2, partly in 1, no in 1 of 4 seeds (fails: b: fails in 2; a: fails in 1)"
    )


def test_median_and_range_say_how_many_seeds_never_reached(reproduction):
    assert reproduction.spread([100, 300, 200]) == "200 (100 to 300)"
    assert reproduction.spread([100, None, 300, float("nan")]) == (
        "200 (100 to 300); never in 2 of 4"
    )
    assert reproduction.spread([None, None]) == "never"
