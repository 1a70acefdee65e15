"""NTK-eigenvector labels (paper Figure 5): the label construction, the task on the harness,
the example script, and the figure's claim at smoke size."""

import dataclasses
import json
import math

import pytest
import torch
from architectures import naive_ntk
from example_scripts import load_example as load_script
from paper.eigenlabels import (
    RUN,
    TASK,
    EigenLabelsConfig,
    EigenLabelsRunConfig,
    build,
    eigenvector_labels,
    make_setup,
    run_config,
    runs,
    train,
)
from paper.harness import preset, run
from paper.polynomial import QuadraticNet

import lazymeter as lm
from lazymeter.history import measurements


def load_example():
    return load_script("ntk_eigenvector_labels")


def tiny():
    g = torch.Generator().manual_seed(0)
    model = QuadraticNet(6, 3, 0.5, generator=g, dtype=torch.float64)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    return model, x


def test_labels_are_the_kth_eigenvector_of_the_centred_initial_ntk():
    model, x = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Independent kernel: one autograd.grad call per sample; explicit centring matrix.
    n = x.shape[0]
    H = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    Kc = H @ naive_ntk(model, x) @ H
    evals, evecs = torch.linalg.eigh(Kc)
    evals, evecs = evals.flip(0), evecs.flip(1)  # descending
    assert (evals[:-1] - evals[1:]).min() > 1e-6 * evals[0]  # distinct: eigenvectors unique
    for k in range(1, n):
        y = eigenvector_labels(model, x, k, normalize="norm")
        assert y.shape == (n,) and y.dtype == torch.float64
        torch.testing.assert_close(y.norm(), torch.tensor(1.0, dtype=torch.float64))
        # An eigenvector of H K0 H with the k-th largest eigenvalue...
        torch.testing.assert_close(Kc @ y, evals[k - 1] * y, atol=1e-10, rtol=0)
        torch.testing.assert_close(y @ Kc @ y, evals[k - 1], atol=1e-10, rtol=1e-9)
        assert abs(float(y @ evecs[:, k - 1])) == pytest.approx(1.0, abs=1e-9)
        # ...centred (orthogonal to the constant vector), sign fixed by its largest entry.
        assert abs(float(y.sum())) < 1e-10
        assert y[y.abs().argmax()] > 0
        # Unit variance is the same vector times sqrt(n).
        yv = eigenvector_labels(model, x, k)
        torch.testing.assert_close(yv, y * math.sqrt(n))
        assert float((yv**2).mean()) == pytest.approx(1.0)
    for k, v in model.state_dict().items():  # pure: the model is untouched
        assert torch.equal(v, before[k])


def test_the_papers_centring_subtracts_the_kernels_scalar_mean():
    # The authors' code: K0 - mean(K0), eigenvectors not centred, k = n allowed.
    model, x = tiny()
    n = x.shape[0]
    K = naive_ntk(model, x)
    Km = K - K.mean()
    evals = torch.linalg.eigvalsh(Km).flip(0)
    for k in (1, 5, n):
        y = eigenvector_labels(model, x, k, normalize="norm", centring="mean")
        torch.testing.assert_close(Km @ y, evals[k - 1] * y, atol=1e-10, rtol=0)
        assert y[y.abs().argmax()] > 0
    with pytest.raises(ValueError, match="centring"):
        eigenvector_labels(model, x, 1, centring="rows")


def test_labels_follow_input_dtype_and_reject_bad_arguments():
    model, x = tiny()
    y32 = eigenvector_labels(model.float(), x.float(), 1)
    assert y32.dtype == torch.float32
    for k in (0, 10, True, 1.0):
        with pytest.raises(ValueError, match="k: expected an int in"):
            eigenvector_labels(model, x.float(), k)
    with pytest.raises(ValueError, match="normalize"):
        eigenvector_labels(model, x.float(), 1, normalize="max")
    with pytest.raises(ValueError, match="at least 2 samples"):
        eigenvector_labels(model, x[:1].float(), 1)


def test_paper_preset_is_the_authors_figure_5_protocol():
    p = EigenLabelsConfig.paper()
    assert (p.D, p.P, p.N, p.eps) == (100, 100, 2, 0.25)
    assert p.ks == (1, 5, 70, 75, 100, 150)
    assert (p.epochs, p.lr_scale, p.alpha) == (25_000, 1.0, 1.0)
    assert (p.normalize, p.centring) == ("norm", "mean")
    # every sub-run is the one-k configuration with the same settings
    subs = runs(p)
    assert [name for name, _, _ in subs] == [f"k{k}" for k in p.ks]
    for (_, task, c), k in zip(subs, p.ks, strict=True):
        assert task is RUN and c == EigenLabelsRunConfig.paper(k=k)


def test_runs_reject_bad_indices_before_training():
    cfg = EigenLabelsConfig.smoke()
    with pytest.raises(ValueError, match=r"k: expected an int in \[1, 39\]"):
        runs(dataclasses.replace(cfg, ks=(1, 40)))
    with pytest.raises(ValueError, match="distinct"):
        runs(dataclasses.replace(cfg, ks=(1, 1)))
    with pytest.raises(ValueError, match="centring"):
        runs(dataclasses.replace(cfg, centring="rows"))


def test_each_run_rebuilds_the_same_labels_from_its_seed():
    # Sub-runs may run in other processes: the labels come from the seed alone.
    cfg = run_config(EigenLabelsConfig.smoke(), 10)
    a, b = build(cfg), build(cfg)
    pa, pb = a.meter["probe"], b.meter["probe"]
    ya, yb = pa.train[1], pb.train[1]
    assert torch.equal(ya, yb) and torch.equal(pa.test[1], pb.test[1])
    data, model0 = make_setup(cfg)
    y = eigenvector_labels(model0, data.x, 10)
    torch.testing.assert_close(torch.cat([ya, pa.test[1]]), y)
    assert a.step_unit == cfg.lr_scale and a.steps == cfg.epochs
    with pytest.raises(ValueError, match="stability edge"):
        build(dataclasses.replace(cfg, lr_scale=1000.0))


def test_unit_variance_labels_with_alpha_sqrt_n_are_the_papers_unit_norm_run():
    # Centred model, lr / alpha^2: alpha (f - f0) - sqrt(n) u = alpha (f - f0 - u) with
    # alpha = sqrt(n), so the parameter dynamics are identical and losses scale by n.
    base = dict(D=8, P=10, N=2, ks=(1, 7), epochs=30, lr_scale=2.0, linearized=False)
    ours = train(EigenLabelsConfig(**base), progress=False)
    paper = run(
        TASK, EigenLabelsConfig(**base, alpha=1.0, normalize="norm"), progress=False, threads=1
    )
    assert ours["alpha"] == pytest.approx(math.sqrt(20))
    for a, b in zip(ours["runs"], paper["runs"], strict=True):
        assert a["k"] == b["k"]
        for key in ("final_train_loss", "final_test_loss", "initial_test_loss"):
            assert a[key] == pytest.approx(20 * b[key], rel=1e-9)
        movement = a["laziness"]["param_movement"]
        assert movement == pytest.approx(b["laziness"]["param_movement"], rel=1e-9)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The example's smoke run (the task's smoke preset), once for the tests below."""
    out = tmp_path_factory.mktemp("eigenlabels")
    threads = torch.get_num_threads()
    summary = load_example().main(["--smoke", "--out", str(out), "--no-progress", "--threads", "1"])
    assert torch.get_num_threads() == threads  # the thread cap is restored
    return out, summary


def test_example_smoke_run_writes_histories_summary_events_and_figure(smoke):
    out, _ = smoke
    required = {
        "step",
        "train_loss",
        "test_loss",
        "lin_train_loss",
        "lin_test_loss",
        "lin_gap_test",
        "alignment_train",
        "alignment_test",
        "ntk_drift",
        "ntk_cka",
        "param_movement",
    }
    summary = json.loads((out / "summary.json").read_text())
    ks = summary["config"]["ks"]
    assert ks == list(EigenLabelsConfig.smoke().ks)
    assert [r["name"] for r in summary["runs"]] == [f"k{k}" for k in ks]
    assert set(summary["by_k"]) == {str(k) for k in ks}
    for k, r in zip(ks, summary["runs"], strict=True):
        rows = measurements(lm.read_jsonl(str(out / f"k{k}" / "history.jsonl")))  # no scalar rows
        assert len(rows) > 5 and all(required <= set(row) for row in rows)
        assert any(p.name.startswith("events.out.tfevents") for p in (out / f"k{k}").iterdir())
        assert r["k"] == k and "history" not in r and r["eigenvalue"] >= 0
        assert {"train_step", "test_step", "ratio"} <= set(r["time_to_grok"])
        assert set(r["laziness"]) == set(summary["laziness_max"])
    assert (out / "figure.png").stat().st_size > 10_000


def test_claim_a_misaligned_eigenvector_is_learned_later_by_a_lazy_network(smoke):
    """Figure 5 at smoke size: the higher k (the smaller its eigenvalue), the later the train
    and the test losses halve (never, for the test loss of a misaligned k), and all along the
    network is its linearisation: the delays are the initial kernel's, not feature learning."""
    _, s = smoke
    by_k = [s["by_k"][str(k)] for k in s["config"]["ks"]]
    eig = [b["eigenvalue"] for b in by_k]
    assert eig == sorted(eig, reverse=True) and eig[0] > 100 * eig[-1]
    train_half = [b["train_half"] for b in by_k]
    test_half = [b["test_half"] for b in by_k]
    assert train_half[0] < train_half[1] < train_half[2] < math.inf  # each k fitted, later
    assert test_half[0] < test_half[1]  # and generalised later,
    assert math.isnan(test_half[2])  # or never (NaN in the summary, null in summary.json)
    assert by_k[0]["test_grok"] < math.inf
    assert by_k[0]["final_test_over_start"] < 0.1 < 1 < by_k[2]["final_test_over_start"]
    # Lazy throughout, in every run: the test curves of the network and of its
    # linearisation coincide, the outputs stay close, the kernel keeps its shape.
    lazy = s["laziness_max"]
    assert lazy["lin_test_gap"] < 0.08
    assert lazy["lin_output_gap"] < 0.08
    assert lazy["kernel_change"] < 0.005
    assert lazy["param_movement"] < 0.3


def test_the_laziness_evidence_would_catch_a_rich_run():
    # The same run at alpha = 1 (5x less lazy than the smoke preset's sqrt(2P)) moves its
    # kernel and leaves its linearisation: the bounds of the claim above would fail.
    s = run(RUN, preset(RUN, "smoke", k=10, alpha=1.0), None, progress=False, threads=1)
    assert s["laziness"]["kernel_change"] > 0.02
    assert s["laziness"]["lin_output_gap"] > 0.15
    assert s["laziness"]["param_movement"] > 0.5


def test_task_is_a_multi_run_harness_task():
    assert TASK.runs is not None and TASK.build is None and RUN.build is not None
    assert preset(TASK, "smoke").ks == (1, 10, 30)
