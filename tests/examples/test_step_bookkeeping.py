"""Step bookkeeping of the paper's training loop (issue 30): the steps reported to the meter
stay strictly increasing for any learning-rate scale (``step_unit``), so runs at a scale
below 1 (the paper's Figure 3a and 4 at 0.5) finish, and every task's paper schedule
(``--full``) reaches its summary."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
from paper import TASKS
from paper.harness import load_task, preset, reported_steps, run

SCALES = (0.1, 0.5, 1.0, 2.0, 20.0, 50.0)
STEPS_FIELDS = ("epochs", "steps", "curve_epochs")  # the step counts a preset may have
LR_FIELDS = ("lr_scale", "curve_lr_scale")


def fields(task: str) -> set[str]:
    return {f.name for f in dataclasses.fields(load_task(task).config)}


def cut(task: str, cfg, steps: int):
    """``cfg`` with every step count cut to ``steps``."""
    return dataclasses.replace(cfg, **{k: steps for k in STEPS_FIELDS if k in fields(task)})


def check_history(out) -> None:
    """history.jsonl: measurement rows at strictly increasing steps, scalar rows in order."""
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    measured = [r["step"] for r in rows if r.get("kind") != "scalars"]
    assert measured[0] == 0 and all(isinstance(s, int) for s in measured)
    assert all(a < b for a, b in zip(measured, measured[1:], strict=False)), measured
    every = [r["step"] for r in rows]
    assert every == sorted(every)


def check(summary, out) -> None:
    runs = summary.get("runs")
    if runs is None:
        check_history(out)
        hist = summary["history"]
        assert "train_loss" in hist[0] and "train_loss" in hist[-1]
        return
    for r in runs:
        check(r, out / r["name"])


@pytest.mark.parametrize("unit", SCALES + (0.3, 0.7, 1.5, 2.5, 1 / 3))
@pytest.mark.parametrize("steps", [0, 1, 2, 3, 5, 60, 61, 1000])
def test_reported_steps_are_strictly_increasing_and_end_at_the_last_iteration(unit, steps):
    rep = reported_steps(steps, unit)
    its = sorted(rep)
    assert its[0] == 0 and rep[0] == 0 and its[-1] == steps
    values = [rep[i] for i in its]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    for i in its[1:-1]:  # the step is the rounded lr-equivalent count, the last update of it
        assert rep[i] == round(i * unit) and round((i + 1) * unit) != rep[i]
    if steps and round(steps * unit) > 0:
        assert rep[steps] == round(steps * unit)
    if unit >= 1:  # every update reports, as before
        assert its == list(range(steps + 1))


SINGLE = [t for t in TASKS if load_task(t).runs is None and fields(t) & set(LR_FIELDS)]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("task", SINGLE)
def test_a_run_at_any_lr_scale_finishes_with_increasing_steps(task, scale, tmp_path):
    cfg = cut(task, preset(task, "smoke", lr_scale=scale), 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a diverging run warns and stops: still a summary
        try:
            summary = run(task, cfg, str(tmp_path), progress=False, figure=False)
        except ValueError as e:  # the task refuses a rate past gradient descent's edge
            assert scale > 2 and "stability edge" in str(e)
            return
    check(summary, tmp_path)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_paper_schedule_cut_to_a_few_steps_reaches_its_summary(task, tmp_path):
    """``--full`` at smoke sizes: the paper's learning-rate scales and measurement schedule,
    a few steps, so that a crash at the end of a long run shows up in seconds."""
    paper, smoke = preset(task, "paper"), preset(task, "smoke")
    # the paper's lr scales (those a smoke-sized model stays stable at: up to 2) and rates
    keep = {
        k: getattr(paper, k)
        for k in fields(task)
        if k in LR_FIELDS and getattr(paper, k) <= 2 or "per_decade" in k
    }
    cfg = cut(task, dataclasses.replace(smoke, **keep), 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run(task, cfg, str(tmp_path), progress=False, figure=False)
    check(summary, tmp_path)
