"""``LayerKernels``: per-layer drift, CKA to init, alignment and kernel share, checked against
per-group kernels from ``torch.func.jacrev``; its keys, figure and resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import fit
from torch import nn
from torch.func import functional_call, jacrev

import lazymeter as lm
from lazymeter.layer_plots import layer_keys, plot_layer_curves
from lazymeter.quantities import LayerKernels
from lazymeter.sinks import tag_for


def _setup(seed=0, n=12):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 1)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.sin(2 * x[:, :1])
    return model, x, y


def _meter(model, x, y, **kw):
    qs = [lm.quantities.KernelDrift(), kw.pop("q", LayerKernels())]
    return lm.LazyMeter(model, alpha=1.0, probe=(x, y), schedule=1, quantities=qs, **kw)


def group_kernel(model, x, names):
    """``J_g J_g^T`` over the parameters ``names`` (jacrev of the batched output)."""
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    J = jacrev(lambda p: functional_call(model, p, (x,)).reshape(x.shape[0], -1))(params)
    Jg = torch.cat([J[n].reshape(x.shape[0], -1) for n in names], 1)
    return (Jg @ Jg.T).detach()


def test_before_training_every_layer_has_zero_drift_full_cka_and_shares_summing_to_one():
    model, x, y = _setup()
    row = _meter(model, x, y).measure()
    assert set(layer_keys([row])) == {"ntk_drift", "ntk_cka", "alignment", "ntk_share"}
    for g in ("0", "2"):
        assert row[f"layer/{g}/ntk_drift"] == 0.0
        assert row[f"layer/{g}/ntk_cka"] == pytest.approx(1.0, abs=1e-12)
    assert row["layer/0/ntk_share"] + row["layer/2/ntk_share"] == pytest.approx(1.0, abs=1e-12)


def test_per_layer_numbers_equal_those_of_naive_group_kernels():
    model, x, y = _setup(1)
    init = copy.deepcopy(model)
    meter = _meter(model, x, y, q=LayerKernels(estimator="biased"))
    fit(meter, x, y, 4, lr=2.0)
    row = meter.history[-1]
    groups = {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    Ks = {g: group_kernel(model, x, names) for g, names in groups.items()}
    total = sum(float(K.trace()) for K in Ks.values())
    for g, names in groups.items():
        K, K0 = Ks[g], group_kernel(init, x, names)
        drift = float((K - K0).norm() / K0.norm())
        assert row[f"layer/{g}/ntk_drift"] == pytest.approx(drift, rel=1e-9)
        H = torch.eye(len(x), dtype=K.dtype) - 1.0 / len(x)
        Kc, K0c = H @ K @ H, H @ K0 @ H
        cka = float((Kc * K0c).sum() / (Kc.norm() * K0c.norm()))
        assert row[f"layer/{g}/ntk_cka"] == pytest.approx(cka, rel=1e-9)
        Yc = H @ y @ y.T @ H
        align = float((Kc * Yc).sum() / (Kc.norm() * Yc.norm()))
        assert row[f"layer/{g}/alignment"] == pytest.approx(align, rel=1e-9)
        assert row[f"layer/{g}/ntk_share"] == pytest.approx(float(K.trace()) / total, rel=1e-9)
    assert row["layer/0/ntk_drift"] > 0 and row["layer/2/ntk_drift"] > 0


def test_a_readout_whose_inputs_do_not_move_keeps_its_kernel_while_the_hidden_layer_drifts():
    # Only the readout trains: its kernel (its inputs' Gram matrix) depends on the hidden
    # layer alone, so it stays exactly put, while the hidden layer's kernel (which carries
    # the readout weights) moves.
    model, x, y = _setup(2)
    meter = _meter(model, x, y)
    fit(meter, x, y, 4, lr=2.0, params=model[2].parameters())
    row = meter.history[-1]
    assert row["layer/2/ntk_drift"] == pytest.approx(0.0, abs=1e-12)
    assert row["layer/0/ntk_drift"] > 1e-3


def test_layer_keys_are_grouped_per_layer_in_tensorboard():
    assert tag_for("layer/blocks.0.attn/ntk_drift") == "lazymeter/layer/blocks.0.attn/ntk_drift"


def test_only_the_chosen_layers_are_recorded():
    model, x, y = _setup()
    row = _meter(model, x, y, q=LayerKernels(layers=["2"])).measure()
    assert layer_keys([row])["ntk_drift"] == ["2"]
    assert row["layer/2/ntk_share"] < 1  # a share of the whole kernel, not of the shown part


def test_an_unknown_layer_is_refused_at_construction_with_the_known_names():
    model, x, y = _setup()
    with pytest.raises(ValueError, match=r"layers: .*'9'.*\['0', '2'\]"):
        _meter(model, x, y, q=LayerKernels(layers=["9"]))


def test_the_figure_draws_one_line_per_layer_for_drift_and_cka():
    pytest.importorskip("matplotlib")
    model, x, y = _setup()
    meter = _meter(model, x, y)
    fit(meter, x, y, 3, lr=2.0)
    (q,) = [q for q in meter.quantities if isinstance(q, LayerKernels)]
    figs = q.figures(None, meter.history[-1])  # type: ignore[arg-type]
    (fig,) = figs.values()
    assert [ax.get_ylabel().split()[0] for ax in fig.axes[:2]] == ["drift", "CKA(K_l,"]
    assert all(len(ax.lines) == 2 for ax in fig.axes[:2])
    steps = fig.axes[0].lines[0].get_xdata()
    assert list(steps) == [float(r["step"]) for r in meter.history]
    # the same figure from the meter's history, one panel per asked metric
    fig2 = plot_layer_curves(meter.history, ("ntk_drift", "alignment", "ntk_share"))
    assert len(fig2.axes) == 3


def test_plotting_rows_without_layer_keys_says_which_quantity_writes_them():
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="LayerKernels"):
        plot_layer_curves([{"step": 0, "ntk_drift": 0.1}])


def test_a_resumed_meter_measures_drift_from_the_original_initial_kernels():
    model, x, y = _setup(3)
    meter = _meter(model, x, y)
    fit(meter, x, y, 3, lr=2.0)
    state = meter.state_dict()
    expected = meter.measure()
    resumed = _meter(copy.deepcopy(model), x, y)  # built at the trained weights
    resumed.load_state_dict(state)
    row = resumed.measure()
    for g in ("0", "2"):
        key = f"layer/{g}/ntk_drift"
        assert math.isfinite(row[key]) and row[key] == pytest.approx(expected[key], rel=1e-12)
