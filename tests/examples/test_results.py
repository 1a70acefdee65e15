"""The experiments' shared result helpers: crossing steps and strict-JSON summaries."""

from __future__ import annotations

import json
import math

import pytest
from paper.results import first_step_at_or_above, write_json


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"bare {name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_summary_json_has_no_bare_nan_or_infinity(tmp_path):
    path = tmp_path / "summary.json"
    write_json(str(path), {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, 3)})
    assert _strict(path.read_text()) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, 3]}


def test_first_step_at_or_above_skips_missing_values_and_can_be_strict():
    steps = [0, 10, 20, 30]
    assert first_step_at_or_above(steps, [0.1, math.nan, 0.5, 0.9], 0.5) == 20
    assert first_step_at_or_above(steps, [0.1, None, 0.5, 0.9], 0.5, strict=True) == 30
    assert math.isnan(first_step_at_or_above(steps, [0.1, 0.2, 0.3, 0.4], 0.5))
    with pytest.raises(ValueError):
        first_step_at_or_above(steps, [0.1], 0.5)  # curves of another length


def test_example_summaries_are_strict_json(tmp_path):
    from example_scripts import load_example

    load_example("polynomial_regression").main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    _strict((tmp_path / "summary.json").read_text())


def test_crossing_steps_print_never_for_a_missing_crossing():
    from paper.results import step_text

    assert [step_text(v) for v in (340, 12_100.0, None, math.nan)] == [
        "340",
        "12.1k",
        "never",
        "never",
    ]


def test_a_crossing_that_does_not_exist_prints_as_not_reached():
    from paper.results import at_epoch, reached

    assert [reached(v) for v in (340.0, None, math.nan, math.inf)] == [
        "340",
        "not reached",
        "not reached",
        "not reached",
    ]
    assert reached(3.521, ".1f", "x later") == "3.5x later"
    assert reached(None, ".4g", missing="-") == "-"
    assert reached(1200.0, ",.0f", prefix="from step ") == "from step 1,200"
    assert at_epoch(7500.0) == "at epoch 7500" and at_epoch(math.nan) == "not reached"
