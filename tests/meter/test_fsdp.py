"""LazyMeter on a model sharded with FSDP2 ``fully_shard``: 2 CPU processes (gloo)
against one unsharded process, in float64."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

import lazymeter as lm
from lazymeter.history import measurements

sys.path.insert(0, os.path.dirname(__file__))
import fsdp_worker as W  # noqa: E402
import spawned as S  # noqa: E402

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("fsdp"))
    return root, S.spawn(W.run, root)


@pytest.mark.parametrize("kind, strategy", W.RUNS)
def test_fsdp_metrics_equal_a_single_process_run(fsdp_results, kind, strategy):
    _, results = fsdp_results
    with pytest.warns(RuntimeWarning, match="could not measure flaky"):
        ref = S.reference(W.make_model(kind), W.data(kind))
    ref.close()  # as the workers: the last step (12) measured there
    assert "ntk_drift" in ref.history[-1] and ref.history[-1]["ntk_drift"] > 0.01
    for res in results:
        hist = res[kind, strategy]["history"]
        assert [r["step"] for r in hist] == [0, 4, 8, 12]  # 0: before any update
        for row, want in zip(hist, ref.history, strict=True):
            assert row.keys() == want.keys()
            for k in want:
                assert S.same(row[k], want[k], 1e-9), (kind, row["step"], k, row[k], want[k])
    # Every rank holds rank 0's rows bit for bit; rank 0's metric failed at step 4 only.
    h0, h1 = (res[kind, strategy]["history"] for res in results)
    assert all(all(S.same(a[k], b[k], 0.0) for k in a) for a, b in zip(h0, h1, strict=True))
    assert [math.isnan(r["flaky"]) for r in h0] == [False, True, False, False]
    assert results[0][kind, strategy]["ntk_engine"] == ref.ntk_engine


@pytest.mark.parametrize("kind, strategy", W.RUNS)
def test_fsdp_parameters_stay_sharded_and_training_is_unchanged_by_measuring(
    fsdp_results, kind, strategy
):
    _, results = fsdp_results
    for res in results:
        run = res[kind, strategy]
        assert run["same_objects"] and run["same_placements"]
        assert run["dtensors"]  # the parameters and the meter's snapshot stay sharded
        for name, p in run["params"].items():
            assert torch.equal(p, run["unmeasured_params"][name]), name
        assert torch.equal(run["probe_x"], W.data(kind)[0])  # rank 0's probe
    # The trained model moved away from its initialisation (the check above has teeth).
    init = dict(W.make_model(kind).named_parameters())
    run = results[0][kind, strategy]
    assert any(not torch.equal(run["params"][n], p.detach()) for n, p in init.items())


@pytest.mark.parametrize("kind", ["mlp", "block"])
def test_empirical_ntk_of_a_sharded_model_is_the_full_models_on_every_rank(fsdp_results, kind):
    _, results = fsdp_results
    model, X = W.make_model(kind), W.data(kind)[0]
    want = lm.empirical_ntk(model, X[:5])
    want_layers = lm.empirical_ntk(model, X[:5], X[5:8], per_layer=True)
    for res in results:
        K, layers = res[kind, "rank0"]["kernels"]
        torch.testing.assert_close(K, want, rtol=1e-12, atol=1e-12)
        assert layers.keys() == want_layers.keys()
        for g in want_layers:
            torch.testing.assert_close(layers[g], want_layers[g], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, strategy", W.RUNS)
def test_fsdp_meter_resumes_from_its_state_dict(fsdp_results, kind, strategy):
    _, results = fsdp_results
    for res in results:
        row, resumed_row, history_kept = res[kind, strategy]["resumed"]
        assert history_kept
        assert row.keys() == resumed_row.keys()
        assert "ntk_drift" in row
        for k in row.keys() - {"flaky"}:  # the user metric counts its own calls
            assert S.same(row[k], resumed_row[k], 1e-12), k


@pytest.mark.parametrize("kind, strategy", W.RUNS)
def test_fsdp_only_rank_zero_writes_files(fsdp_results, kind, strategy):
    root, results = fsdp_results
    assert not os.path.exists(os.path.join(root, f"{kind}-{strategy}", "rank1"))
    rows = lm.read_jsonl(os.path.join(root, f"{kind}-{strategy}", "rank0", "history.jsonl"))
    rows = measurements(rows)  # (and a scalar row at step 10)
    assert [r["step"] for r in rows] == [r["step"] for r in results[0][kind, strategy]["history"]]


def test_fsdp_model_refuses_independent_per_rank_meters(fsdp_results):
    _, results = fsdp_results
    for res in results:
        assert "every forward is a collective" in res["independent"]


def test_fsdp_model_error_found_on_rank_zero_is_raised_on_every_rank(fsdp_results):
    _, results = fsdp_results
    for res in results:
        assert "returned dict, not a Tensor" in res["bad_output"]


def test_fsdp1_wrapper_fails_naming_fully_shard(monkeypatch):
    from lazymeter.ntk import fsdp

    class Wrapper(nn.Module):  # stands in for FullyShardedDataParallel (needs a group)
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(2, 2)

    monkeypatch.setattr(fsdp, "FSDP1", Wrapper)
    with pytest.raises(TypeError, match="fully_shard"):
        lm.LazyMeter(Wrapper())
