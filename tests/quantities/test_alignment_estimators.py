"""The Alignment quantity: estimators, standard errors, its own point set (the paper's 1000
test points) and the paired rise, against independent computations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.quantities import Alignment

F64 = torch.float64


def _setup(P=80, Q=120):
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(P, 3, generator=g, dtype=F64), torch.randn(Q, 3, generator=g, dtype=F64)
    f = lambda v: torch.tanh(2 * v[:, 0]) + v[:, 1] * v[:, 2]  # noqa: E731
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 24), nn.Tanh(), nn.Linear(24, 1)).double()
    return net, (x, f(x)), (xt, f(xt))


def _move(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))


def test_own_points_measure_the_paper_definition_on_a_seeded_subset_of_the_whole_probe():
    net, probe, test = _setup()
    net0 = copy.deepcopy(net)
    paper = Alignment("rows", "biased", points=100, prefix="alignment_paper", splits=("test",))
    meter = lm.LazyMeter(
        net, probe=lm.ProbeSet(probe, test=test, max_points=16), quantities=[Alignment(), paper]
    )
    _move(net)
    row = meter.measure()
    assert "alignment_paper_train" not in row and meter.test_x.shape[0] == 16
    q = next(q for q in meter.quantities if q.prefix == "alignment_paper")
    x, y = q._own["test"]
    assert x.shape[0] == 100  # of the 120 test points, not of the 16-point probe
    K, K0 = lm.empirical_ntk(net, x), lm.empirical_ntk(net0, x)
    assert row["alignment_paper_test"] == pytest.approx(lm.kernel_alignment(K, y, "rows"))
    assert row["alignment0_paper_test"] == pytest.approx(lm.kernel_alignment(K0, y, "rows"))
    want = lm.alignment_change(K, K0, y, "rows", "biased")
    assert row["alignment_rise_paper_test"] == pytest.approx(want.value)
    assert row["alignment_rise_paper_test_se"] == pytest.approx(want.stderr)
    assert lm.tag_for("alignment_paper_test") == "lazymeter/ntk/alignment_paper_test"


def test_default_alignment_is_unbiased_with_its_errors_and_paired_rise():
    net, probe, test = _setup()
    net0 = copy.deepcopy(net)
    meter = lm.LazyMeter(net, probe=lm.ProbeSet(probe, test=test, max_points=40))
    _move(net)
    row = meter.measure()
    x, y = meter.probe_x, meter.probe_y
    K, K0 = lm.empirical_ntk(net, x), lm.empirical_ntk(net0, x)
    est = lm.alignment_estimate(K, y)
    assert (row["alignment_train"], row["alignment_train_se"]) == pytest.approx(tuple(est[:2]))
    rise = lm.alignment_change(K, K0, y)
    assert row["alignment_rise_train"] == pytest.approx(rise.value)
    assert row["alignment_rise_train_se"] == pytest.approx(rise.stderr)
    # the paired error is smaller than the two errors combined
    assert rise.stderr < (row["alignment_train_se"] ** 2 + row["alignment0_train_se"] ** 2) ** 0.5


def test_own_points_initial_kernel_survives_a_resume():
    net, probe, test = _setup()
    net0 = copy.deepcopy(net)
    make = lambda n: lm.LazyMeter(  # noqa: E731
        n, probe=lm.ProbeSet(probe, test=test, max_points=16),
        quantities=[Alignment(points=100, prefix="alignment_full", splits=("test",))],
    )  # fmt: skip
    meter = make(net)
    _move(net)
    state = meter.state_dict()
    fresh = copy.deepcopy(net0)
    _move(fresh)  # another network, about to be overwritten by the checkpoint
    meter2 = make(fresh)
    meter2.load_state_dict(state)
    row = meter2.measure()
    q = meter2.quantities[0]
    x, y = q._own["test"]
    want = lm.alignment_change(lm.empirical_ntk(net, x), lm.empirical_ntk(net0, x), y)
    assert row["alignment_rise_full_test"] == pytest.approx(want.value)


def test_bad_alignment_arguments_raise():
    with pytest.raises(ValueError, match="centering='double'"):
        Alignment("rows")
    with pytest.raises(ValueError, match="points"):
        Alignment(points=2)
    with pytest.raises(ValueError, match="splits"):
        Alignment(splits=("val",))
    with pytest.raises(ValueError, match="prefix"):
        Alignment(prefix="kta")
