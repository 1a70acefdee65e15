"""The README's code runs as written."""

import os
import re
from pathlib import Path

import lazymeter as lm
from lazymeter.history import is_scalar_row, measurements
from lazymeter.report import load_run, run_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_training_loop_snippet_runs_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    loop = next(b for b in blocks if "LazyMeter(" in b)
    assert len(loop.strip().splitlines()) <= 16
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(loop, "README.md", "exec"), namespace)  # noqa: S102
    meter = namespace["meter"]
    assert len(meter.history) > 10
    assert os.path.exists("runs/readme/history.jsonl")
    # The first row is the model before any update; step() then counts updates from 1.
    first, second = meter.history[:2]
    assert (first["step"], second["step"]) == (0, 1)
    assert first["ntk_drift"] == 0.0 and first["param_movement"] == 0.0
    assert second["ntk_drift"] > 0
    # The last row is the last update's (3000: close() measured it; the schedule's last
    # point was 2371), with the loop's final losses, in the history and in the file.
    last = meter.history[-1]
    assert last["step"] == 3000 and last["test_loss"] == namespace["test_loss"].item()
    rows = lm.read_jsonl("runs/readme/history.jsonl")
    assert rows[-1]["step"] == 3000 and rows[-1]["test_loss"] == last["test_loss"]
    assert [r["step"] for r in measurements(rows)] == [r["step"] for r in meter.history]
    assert any(is_scalar_row(r) for r in rows)  # the losses between measurements
    assert run_table(load_run("runs/readme"))["final_test_loss"] == last["test_loss"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir("runs/readme"))
