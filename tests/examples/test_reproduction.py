"""The reproduction page's generator: every figure's run, check and section, at smoke size."""

import importlib.util
import json
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
    assert reproduction.main(args) == 0
    text = page.read_text()
    for fig in reproduction.FIGURES:
        assert f"{{ #{fig.key} }}" in text
        summary = json.loads((out / fig.key / "summary.json").read_text())
        numbers, holds = fig.check(summary)  # the checks read summary.json alone
        assert numbers and holds.word in ("yes", "partly", "no")
    before = text
    assert reproduction.main([*args, "--reuse"]) == 0
    assert page.read_text() == before
