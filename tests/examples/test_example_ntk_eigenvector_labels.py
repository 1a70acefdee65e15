"""NTK-eigenvector labels (paper Figure 5): the label construction and the example script."""

import json
import math

import pytest
import torch
from architectures import naive_ntk
from example_scripts import load_example as load_script

import lazymeter as lm
from lazymeter.tasks.eigenlabels import EigenLabelsConfig, eigenvector_labels, train
from lazymeter.tasks.polynomial import QuadraticNet


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


def test_unit_variance_labels_with_alpha_sqrt_n_are_the_papers_unit_norm_run():
    # Centred model, lr / alpha^2: alpha (f - f0) - sqrt(n) u = alpha (f - f0 - u) with
    # alpha = sqrt(n), so the parameter dynamics are identical and losses scale by n.
    base = dict(D=8, P=10, N=2, ks=(1, 7), epochs=30, lr_scale=2.0, linearized=False)
    ours = train(EigenLabelsConfig(**base), progress=False)
    paper = train(EigenLabelsConfig(**base, alpha=1.0, normalize="norm"), progress=False)
    assert ours["alpha"] == pytest.approx(math.sqrt(20))
    for k in ("1", "7"):
        a, b = ours["runs"][k], paper["runs"][k]
        for key in ("final_train_loss", "final_test_loss", "initial_test_loss"):
            assert a[key] == pytest.approx(20 * b[key], rel=1e-9)
        assert a["final_param_movement"] == pytest.approx(b["final_param_movement"], rel=1e-9)


def test_example_smoke_run_writes_histories_summary_events_and_figure(tmp_path):
    threads = torch.get_num_threads()
    out = load_example().main(["--smoke", "--out", str(tmp_path), "--no-progress"])
    assert torch.get_num_threads() == threads  # the script restores the thread count
    required = {
        "step",
        "train_loss",
        "test_loss",
        "lin_train_loss",
        "lin_test_loss",
        "alignment_train",
        "alignment_test",
        "ntk_drift",
        "param_movement",
    }
    summary = json.loads((tmp_path / "summary.json").read_text())
    ks = summary["config"]["ks"]
    assert len(ks) == 3 and set(summary["runs"]) == {str(k) for k in ks}
    for k in ks:
        rows = lm.read_jsonl(str(tmp_path / f"k{k}" / "history.jsonl"))
        assert len(rows) > 5 and all(required <= set(r) for r in rows)
        assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / f"k{k}").iterdir())
        run = summary["runs"][str(k)]
        assert {"train_step", "test_step", "ratio"} <= set(run["time_to_grok"])
        assert "history" not in run and run["eigenvalue"] >= 0
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    # The effect, even at this size: the aligned labels generalise, the misaligned do not.
    ratio = {k: r["final_test_loss"] / r["initial_test_loss"] for k, r in out["runs"].items()}
    first, last = str(ks[0]), str(ks[-1])
    assert ratio[first] < 0.5 and ratio[last] > 1.0
