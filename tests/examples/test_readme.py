"""The README's code runs as written."""

import os
import re
from pathlib import Path

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
    assert any(f.startswith("events.out.tfevents") for f in os.listdir("runs/readme"))
