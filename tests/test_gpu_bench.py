"""benchmarks/gpu_bench.py runs on the CPU with --tiny, so it cannot rot without a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_bench.py")

#: The kernel rows; with --tiny the torch.func baseline must run on every one of them.
KERNEL_ROWS = (
    "1a raw-transformer",
    "1b raw-transformer",
    "2 hf-gpt2",
    "3 cnn",
    "4 mnist-mlp",
    "5 gpt2-small-sketch",
    "6 alignment-mf",
)
COLUMNS = ("P", "O", "lm_ms", "lm_MiB", "engine", "chunk", "func_ms", "func_MiB", "err")
COLUMNS += ("floor_ms", "lm/floor")


@pytest.fixture(scope="module")
def tiny_run():
    pytest.importorskip("transformers", reason="rows 2, 5 and 7 build HF GPT-2 models")
    args = ["--device", "cpu", "--tiny", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    return out


def columns(lines: list[str], row: str) -> dict[str, str]:
    """The named columns of ``row``'s one table line (the note is left out)."""
    found = [line for line in lines if line.startswith(row + " ")]
    assert len(found) == 1, (row, found)
    fields = found[0][len(row) :].split()
    assert len(fields) >= len(COLUMNS), (row, found[0])
    return dict(zip(COLUMNS, fields, strict=False))


def test_gpu_bench_smoke_run_on_cpu_passes(tiny_run):
    assert tiny_run.returncode == 0, tiny_run.stdout + tiny_run.stderr
    lines = tiny_run.stdout.splitlines()
    assert lines[0].startswith("gpu_bench: device cpu") and "TF32 off" in lines[0]
    assert "FAIL" not in tiny_run.stdout
    assert lines[-1] == "gpu_bench: OK"


@pytest.mark.parametrize("row", KERNEL_ROWS)
def test_every_kernel_row_times_lazymeter_the_baseline_and_the_floor(tiny_run, row):
    c = columns(tiny_run.stdout.splitlines(), row)
    assert int(c["P"]) > 0 and int(c["O"]) > 0
    assert float(c["lm_ms"]) > 0
    assert c["lm_MiB"] == "n/a" or float(c["lm_MiB"]) >= 0
    assert c["engine"] and int(c["chunk"]) >= 1
    # tiny sizes fit: the torch.func kernel ran (a number, not "skipped")
    assert float(c["func_ms"]) > 0, c
    assert c["func_MiB"] == "n/a" or float(c["func_MiB"]) >= 0
    assert 0 <= float(c["err"]) < 1e-3, c  # float32 against the float64 reference
    assert float(c["floor_ms"]) > 0 and float(c["lm/floor"]) > 0


def test_the_sketch_and_alignment_rows_say_what_they_estimate(tiny_run):
    lines = tiny_run.stdout.splitlines()
    sketch = next(line for line in lines if line.startswith("5 gpt2-small-sketch "))
    assert re.search(r"O=\d+ sketched: s=\d+", sketch), sketch
    mf = next(line for line in lines if line.startswith("6 alignment-mf "))
    assert columns(lines, "6 alignment-mf")["engine"].startswith("matrix_free/")
    num = r"-?\d\.\d+e[+-]\d+"
    assert re.search(rf"alignment {num} \+- {num} \(dense {num}\)", mf), mf


def test_the_meter_overhead_row_reports_both_loops_and_their_ratio(tiny_run):
    found = [line for line in tiny_run.stdout.splitlines() if line.startswith("7 meter-overhead")]
    assert len(found) == 1, tiny_run.stdout
    m = re.search(r"bare (\S+) s +meter (\S+) s +ratio (\S+) +\((\d+) AdamW steps", found[0])
    assert m, found[0]
    bare, meter, ratio = (float(v) for v in m.groups()[:3])
    assert bare > 0 and meter > 0 and ratio == pytest.approx(meter / bare, rel=0.01, abs=0.01)
    assert re.search(r"(\d+) measurements", found[0]) and " 0 measurements" not in found[0]


def test_gpu_bench_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 2 and "no CUDA device" in out.stdout


def test_gpu_bench_rejects_an_unknown_row():
    out = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--tiny", "--rows", "9"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "--rows: unknown ['9']" in out.stderr
