"""benchmarks/cuda_check.py runs on the CPU with --tiny, so it cannot rot without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cuda_check_script_smoke_runs_on_cpu_and_checks_every_case():
    script = os.path.join(ROOT, "benchmarks", "cuda_check.py")
    args = ["--device", "cpu", "--tiny", "--skip-tests", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for case in ("polynomial", "mnist_mlp P=32", "mnist_mlp P=64", "transformer P=16"):
        for engine in ("structured", "jacobian"):
            for dtype in ("float32", "bfloat16"):
                assert any(
                    line.startswith(case) and f" {engine} " in line and f" {dtype} " in line
                    for line in lines
                ), (case, engine, dtype)
    assert "FAIL" not in out.stdout and lines[-1] == "cuda_check: OK"


def test_cuda_check_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        return
    script = os.path.join(ROOT, "benchmarks", "cuda_check.py")
    out = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 2 and "no CUDA device" in out.stdout
