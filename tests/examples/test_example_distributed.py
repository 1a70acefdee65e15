"""examples/distributed.py under a real ``torchrun`` launch: 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist
from example_scripts import EXAMPLES

import lazymeter as lm

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def launch(tmp_path, shard: str) -> str:
    out = str(tmp_path / shard)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(EXAMPLES / "distributed.py"), "--shard", shard, "--steps", "10", "--every", "5",
        "--out", out,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{shard} x2 (rank0): step 10" in done.stdout
    return out


def test_torchrun_example_measures_the_same_under_ddp_and_fsdp(tmp_path):
    runs = {shard: launch(tmp_path, shard) for shard in ("ddp", "fsdp")}
    rows = {shard: lm.read_jsonl(os.path.join(out, "history.jsonl")) for shard, out in runs.items()}
    assert [r["step"] for r in rows["fsdp"]] == [0, 5, 10] == [r["step"] for r in rows["ddp"]]
    for a, b in zip(rows["ddp"], rows["fsdp"], strict=True):
        assert a.keys() == b.keys()
        for k in a:  # float32 training: the two wrappers reduce gradients differently
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    assert rows["fsdp"][-1]["ntk_drift"] > 0
    with open(os.path.join(runs["fsdp"], "summary.json")) as f:
        summary = json.load(f)
    assert summary["shard"] == "fsdp" and summary["world"] == 2 and summary["step"] == 10
