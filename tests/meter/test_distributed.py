"""LazyMeter under torch.distributed: 2 CPU processes (gloo) against one process."""

from __future__ import annotations

import glob
import math
import os
import sys

import pytest
import torch
import torch.distributed as dist

import lazymeter as lm
from lazymeter.history import measurements

sys.path.insert(0, os.path.dirname(__file__))
import ddp_worker as W  # noqa: E402
import spawned as S  # noqa: E402

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ddp"))
    return root, S.spawn(W.run, root)


@pytest.mark.parametrize("strategy", ["rank0", "shard"])
def test_ddp_metrics_equal_a_single_process_run(ddp_results, strategy):
    _, results = ddp_results
    with pytest.warns(RuntimeWarning, match="could not measure flaky"):
        ref = S.reference(W.make_model(seed=1), W.data(), features=["1"])
    ref.close()  # as the workers: the last step (12) measured, collectively there
    for res in results:
        hist = res[strategy]["history"]
        assert [r["step"] for r in hist] == [0, 4, 8, 12]  # 0: before any update
        assert len(hist) == len(ref.history)
        for row, want in zip(hist, ref.history, strict=True):
            assert row.keys() == want.keys()
            for k in want:
                assert S.same(row[k], want[k], 1e-9), (strategy, row["step"], k, row[k], want[k])
    # Every rank holds the very same rows (rank 0's), bit for bit.
    h0, h1 = (res[strategy]["history"] for res in results)
    assert all(all(S.same(a[k], b[k], 0.0) for k in a) for a, b in zip(h0, h1, strict=True))
    assert "ntk_drift" in ref.history[-1] and ref.history[-1]["ntk_drift"] > 0
    # Rank 0's user metric failed at step 4: NaN there on every rank, and training went on.
    assert [math.isnan(r["flaky"]) for r in h0] == [False, True, False, False]


@pytest.mark.parametrize("case", ["buffers", "perturbed"])
def test_shard_never_mixes_replicas_that_differ(ddp_results, case):
    """DDP(broadcast_buffers=False) with BatchNorm, or a perturbed replica: a checksum of
    every parameter and buffer is compared across the ranks before a shard measurement;
    the kernel metrics are NaN on every rank, with a warning on rank 0 naming the tensor
    and the fix (was: drift 0.310 against rank 0's 0.142, no warning)."""
    _, (r0, r1) = ddp_results
    for res in (r0, r1):
        row = res[f"replicas_{case}_shard"]["row"]
        assert math.isnan(row["ntk_drift"]) and math.isnan(row["alignment_train"])
        assert math.isnan(row["param_movement"])
    said = " ".join(r0[f"replicas_{case}_shard"]["warnings"])
    name = "'1.running_mean'" if case == "buffers" else "'0.weight'"
    assert f"the replicas differ ({name} on rank 1 is not rank 0's)" in said
    assert "distributed='rank0'" in said
    # rank0 measures rank 0's model alone: finite, the same row on every rank
    rows = [res["replicas_buffers_rank0"]["row"] for res in (r0, r1)]
    assert math.isfinite(rows[0]["ntk_drift"]) and rows[0] == rows[1]
    # (The worker trains before its first measure(): the meter says that row is not before
    # training; nothing else.)
    said = r0["replicas_buffers_rank0"]["warnings"]
    assert not [w for w in said if "the first row (step 0) is measured after" not in w]


def test_ddp_strategies_split_the_kernel_work_as_documented(ddp_results):
    _, (r0, r1) = ddp_results
    # rank0: rank 0 computes every kernel (4 measurements, 0, 4, 8 and the last step 12 at
    # close(), x train + test probe), rank 1 none.
    assert r0["rank0"]["kernel_rows"] == [24, 10] * 4 and r1["rank0"]["kernel_rows"] == []
    # shard: each rank computes its half of the rows of every kernel.
    assert r0["shard"]["kernel_rows"] == [12, 5] * 4 == r1["shard"]["kernel_rows"]


@pytest.mark.parametrize("strategy", ["rank0", "shard"])
def test_ddp_snapshot_and_probes_are_rank_zeros_on_every_rank(ddp_results, strategy):
    _, results = ddp_results
    init0 = dict(W.make_model(seed=1).named_parameters())
    probe0 = W.data()[0]
    for res in results:
        snap = res[strategy]["snapshot"]
        for name, p in init0.items():
            assert torch.equal(snap[name], p.detach())
        assert torch.equal(res[strategy]["probe_x"], probe0)
    for name in init0:  # and DDP kept the trained parameters in sync
        assert torch.equal(
            results[0][strategy]["params"][name], results[1][strategy]["params"][name]
        )


@pytest.mark.parametrize("strategy", ["rank0", "shard"])
def test_ddp_only_rank_zero_writes_logs(ddp_results, strategy):
    root, results = ddp_results
    log_dir = os.path.join(root, strategy)
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert len(events) == 1, events
    assert events[0].endswith(f".{results[0]['pid']}.0") or str(results[0]["pid"]) in events[0]
    rows = measurements(lm.read_jsonl(os.path.join(log_dir, "history.jsonl")))
    assert [r["step"] for r in rows] == [r["step"] for r in results[0][strategy]["history"]]


def test_lazymeter_inside_ddp_fails_naming_the_right_order(ddp_results):
    _, results = ddp_results
    for res in results:
        msg = res["wrong_order"]
        assert "LazyMeter(DistributedDataParallel(model)" in msg
        assert "not DistributedDataParallel(LazyMeter(model))" in msg


def test_distributed_argument_is_validated():
    with pytest.raises(ValueError, match="distributed: expected"):
        lm.LazyMeter(W.make_model(0), distributed="allreduce")
