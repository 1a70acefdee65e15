"""lm.ntk_alignment: the matrix-free path against the dense kernel, its error bar, its
memory, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from example_scripts import EXAMPLES
from paper.polynomial import QuadraticNet, make_data
from torch import nn

import lazymeter as lm

F64 = torch.float64


def _paper_net(P: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = QuadraticNet(20, 60, 0.5, generator=g, dtype=F64)
    data = make_data(20, P, 4, generator=g, dtype=F64)
    return net, data.x, data.y


def _classifier(P: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x = torch.randn(P, 5, generator=g, dtype=F64)
    return net, x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


CASES = [("unbiased", "double"), ("biased", "double"), ("biased", "rows"), ("biased", "none")]


@pytest.mark.parametrize(("estimator", "centering"), CASES)
@pytest.mark.parametrize("make", [_paper_net, _classifier], ids=["paper_net", "3_outputs"])
def test_matrix_free_with_every_row_equals_the_dense_kernel(make, estimator, centering):
    net, x, y = make(120)
    dense = lm.ntk_alignment(net, x, y, estimator=estimator, centering=centering, method="dense")
    free = lm.ntk_alignment(
        net, x, y, estimator=estimator, centering=centering, method="matrix_free", rows=120
    )
    assert (dense.method, free.method) == ("dense", "matrix_free")
    # exact up to round-off: centring a kernel with a large constant mode cancels digits,
    # and K 1 comes from autodiff products rather than from summing the same matrix
    assert free.value == pytest.approx(dense.value, rel=1e-7, abs=1e-12)
    assert free.estimator_se == 0.0  # every row read: nothing estimated
    K = lm.empirical_ntk(net, x)
    Y = y if y.is_floating_point() else nn.functional.one_hot(y).double()
    assert dense.value == pytest.approx(lm.kernel_alignment(K, Y, centering, estimator), rel=1e-12)


@pytest.mark.parametrize(("estimator", "centering"), CASES[:3])
def test_matrix_free_equals_dense_within_its_reported_error(estimator, centering):
    net, x, y = _paper_net(800)
    dense = lm.ntk_alignment(net, x, y, estimator=estimator, centering=centering, method="dense")
    z = []
    for seed in range(4):
        free = lm.ntk_alignment(
            net, x, y, estimator=estimator, centering=centering, method="matrix_free",
            rows=64, seed=seed, se_points=200,
        )  # fmt: skip
        assert 0 < free.estimator_se < free.stderr
        z.append((free.value - dense.value) / free.estimator_se)
    assert max(abs(v) for v in z) < 3, z
    # the whole error bar (sampling of the points included) is of the dense jackknife's size
    assert 0.5 < free.stderr / dense.stderr < 2


def test_auto_is_dense_up_to_max_dense_points():
    net, x, y = _paper_net(60)
    assert lm.ntk_alignment(net, x, y).method == "dense"
    assert lm.ntk_alignment(net, x, y, max_dense=50, se_points=30).method == "matrix_free"


def test_bad_arguments_raise_naming_them():
    net, x, y = _paper_net(30)
    with pytest.raises(ValueError, match="method"):
        lm.ntk_alignment(net, x, y, method="hutchinson")
    with pytest.raises(ValueError, match="centering='double'"):
        lm.ntk_alignment(net, x, y, centering="rows")
    with pytest.raises(ValueError, match="y: has 29 rows"):
        lm.ntk_alignment(net, x, y[:29])
    with pytest.raises(ValueError, match="zero variance"):
        lm.ntk_alignment(net, x, torch.ones(30, dtype=F64))
    with pytest.raises(ValueError, match="rows"):
        lm.ntk_alignment(net, x, y, method="matrix_free", rows=1)


_MEMORY = textwrap.dedent(
    """
    import json, resource, sys, torch
    import lazymeter as lm
    sys.path.insert(0, sys.argv[2])  # examples/: the paper's tasks
    from paper.polynomial import QuadraticNet, make_data
    P = int(sys.argv[1])
    g = torch.Generator().manual_seed(0)
    net = QuadraticNet(100, 500, 0.02, generator=g)  # the paper's net (float32)
    data = make_data(100, P, 10, generator=g)
    lm.ntk_alignment(net, data.x[:300], data.y[:300], method="matrix_free", se_points=100)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    est = lm.ntk_alignment(net, data.x, data.y, method="matrix_free")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mib": (peak - base) / 1024, "value": est.value}))
    """
)


def test_matrix_free_memory_stays_linear_in_the_number_of_points():
    # P = 20000: the dense float32 kernel alone would be 1.5 GiB
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY, "20000", str(EXAMPLES)],
        capture_output=True,
        text=True,
        check=True,
    )
    extra = json.loads(out.stdout.strip().splitlines()[-1])["extra_mib"]
    assert extra < 1024, f"peak memory grew by {extra:.0f} MiB"


def _moved_pair(P: int):
    import copy

    net, x, _ = _paper_net(P, seed=3)
    net0 = copy.deepcopy(net)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return net, net0, x


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_ntk_change_dense_and_every_row_match_the_kernel_metrics(estimator):
    net, net0, x = _moved_pair(150)
    K, K0 = lm.empirical_ntk(net, x), lm.empirical_ntk(net0, x)
    dense = lm.ntk_change(net, net0, x, estimator=estimator, method="dense")
    assert dense["drift"].value == pytest.approx(lm.ntk_drift(K, K0), rel=1e-10)
    assert dense["cka"].value == pytest.approx(lm.cka(K, K0, estimator), rel=1e-10)
    assert dense["cka"].stderr == pytest.approx(lm.cka_estimate(K, K0, estimator).stderr)
    full = lm.ntk_change(net, net0, x, estimator=estimator, method="matrix_free", rows=150)
    for key in ("drift", "cka"):
        assert full[key].value == pytest.approx(dense[key].value, rel=1e-9)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_ntk_change_from_sampled_rows_is_within_its_error(estimator):
    net, net0, x = _moved_pair(400)
    dense = lm.ntk_change(net, net0, x, estimator=estimator, method="dense")
    for seed in range(3):
        free = lm.ntk_change(
            net, net0, x, estimator=estimator, method="matrix_free", rows=40, seed=seed
        )
        for key in ("drift", "cka"):
            assert abs(free[key].value - dense[key].value) < 3 * free[key].stderr


def test_models_in_training_mode_are_measured_deterministically_in_eval_mode():
    # dropout and BatchNorm in training mode: every method measures the eval-mode kernel
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1)
    ).double()
    net[1].running_mean.normal_()  # running statistics unlike a batch's
    x = torch.randn(60, 4, dtype=F64)
    y = torch.sin(x[:, 0])
    net.train()
    with torch.no_grad():
        want = lm.kernel_alignment(lm.empirical_ntk(net.eval(), x), y, estimator="unbiased")
    net.train()
    dense = lm.ntk_alignment(net, x, y, method="dense")
    free = lm.ntk_alignment(net, x, y, method="matrix_free", rows=60, se_points=20)
    assert dense.value == pytest.approx(want, rel=1e-10)
    assert free.value == pytest.approx(want, rel=1e-7)
    assert lm.ntk_alignment(net, x, y, method="dense").value == dense.value
    change = lm.ntk_change(net, net, x, method="matrix_free", rows=60)
    assert change["drift"].value == 0.0 and change["cka"].value == pytest.approx(1.0)
    assert all(m.training for m in net.modules())  # the user's modes are restored
