"""Paths that differ on a GPU (marked ``cuda``; skipped without one, run by
``benchmarks/cuda_check.py`` on a lent GPU): the budget from free device memory, labels
and kernels on different devices in the matrix-free alignment, the CUDA RNG replayed for
``f0``, buffers left untouched on the device."""

from __future__ import annotations

import pytest
import torch
from architectures import Counted
from torch import nn

import lazymeter as lm

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_the_default_budget_is_half_the_free_device_memory():
    budget, why = lm.ntk.resolve_budget(None, "cuda")
    free, _ = torch.cuda.mem_get_info()
    assert budget >= lm.ntk.budget.MIN_BUDGET and budget <= free
    assert "free on cuda" in why
    model = nn.Linear(3, 2).cuda()
    assert lm.ntk.kernel_plan(model, torch.randn(8, 3, device="cuda"))["budget_source"] == why


@pytest.mark.parametrize("labels_on", ["cpu", "cuda"])
def test_matrix_free_alignment_with_a_cuda_model_and_labels_anywhere(labels_on):
    """Was: RuntimeError (tensors on cuda:0 and cpu) in the matrix-free sums."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 1)).cuda()
    x = torch.randn(300, 5, device="cuda")
    y = torch.sin(x.sum(1)).to(labels_on)
    dense = lm.ntk_alignment(model, x, y, method="dense")
    free = lm.ntk_alignment(model, x, y, method="matrix_free", rows=300)
    assert abs(free.value - dense.value) < 1e-3


def test_f0_replays_the_cuda_rng_so_dropout_centres_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3)).cuda()
    meter = lm.LazyMeter(model, alpha=5.0)
    x = torch.randn(6, 4, device="cuda")
    state = torch.cuda.get_rng_state()
    with torch.no_grad():
        out = meter(x)
        after = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(state)
        model(x)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(torch.cuda.get_rng_state(), after)


def test_buffers_on_the_device_are_untouched_by_kernels_and_measurements():
    torch.manual_seed(0)
    model = Counted().cuda()
    x = torch.randn(8, 4, device="cuda")
    meter = lm.LazyMeter(model, probe=(x, torch.randn(8, 2, device="cuda")), schedule=1)
    meter.measure()
    lm.empirical_ntk(model, x)
    assert float(model.calls) == 5.0 and not bool(model.running.any())
