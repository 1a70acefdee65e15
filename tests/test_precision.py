"""Half-precision models: kernels are computed and accumulated in float32 (float64 on request)."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import kernel_dtype

HALF = [torch.float16, torch.bfloat16]
METHODS = ["jacobian", "ntvp", "structured"]


def model_and_inputs(dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(9, 5)
    return model.to(dtype), x.to(dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_kernel_is_float32_and_equals_the_float32_evaluation(dtype, method):
    model, x = model_and_inputs(dtype)
    K = lm.empirical_ntk(model, x, method=method)
    assert K.dtype == torch.float32
    # The kernel of the model at its (half-precision) parameter values, in float32 arithmetic.
    ref = naive_ntk(copy.deepcopy(model).float(), x.float())
    torch.testing.assert_close(K, ref, rtol=1e-5, atol=1e-6)
    assert model[0].weight.dtype == dtype  # the user's model is untouched


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_float64_kernel_on_request_equals_the_float64_evaluation(dtype, method):
    model, x = model_and_inputs(dtype)
    K = lm.empirical_ntk(model, x, method=method, dtype=torch.float64)
    assert K.dtype == torch.float64
    ref = naive_ntk(copy.deepcopy(model).double(), x.double())
    torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-12)


def test_cast_copy_follows_the_models_current_values_mode_and_frozen_flags():
    model, x = model_and_inputs(torch.bfloat16)
    K1 = lm.empirical_ntk(model, x, method="jacobian")
    with torch.no_grad():
        model[0].weight.mul_(2)
    K2 = lm.empirical_ntk(model, x, method="jacobian")
    assert not torch.equal(K1, K2)
    model[0].requires_grad_(False)
    K3 = lm.empirical_ntk(model, x, method="jacobian")
    ref = naive_ntk(copy.deepcopy(model).float(), x.float())
    torch.testing.assert_close(K3, ref, rtol=1e-5, atol=1e-6)


def test_kernel_dtype_rules_and_bad_dtype():
    assert kernel_dtype(torch.float16) == torch.float32
    assert kernel_dtype(torch.bfloat16) == torch.float32
    assert kernel_dtype(torch.float32) == torch.float32
    assert kernel_dtype(torch.float64) == torch.float64
    assert kernel_dtype(torch.float16, torch.float64) == torch.float64
    model, x = model_and_inputs(torch.float32)
    with pytest.raises(TypeError, match="dtype: expected a floating torch.dtype"):
        lm.empirical_ntk(model, x, dtype=torch.int64)


@pytest.mark.parametrize("dtype", HALF)
def test_meter_on_a_half_precision_model_measures_in_float32(dtype):
    model, x = model_and_inputs(dtype)
    y = torch.sin(x.float().sum(1, keepdim=True)).to(dtype)
    meter = lm.LazyMeter(model, alpha=2.0, probe=lm.ProbeSet((x, y), test=(x, y)), schedule=1)
    assert meter.K0.dtype == torch.float32
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.1))
    for _ in range(3):
        loss = ((meter(x).float() - y.float()) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())
    row = meter.history[-1]
    for k in ("ntk_drift", "ntk_cka", "alignment_train", "param_movement", "k0_test_mse"):
        assert math.isfinite(row[k]), k
    ref = naive_ntk(copy.deepcopy(model).float(), x.float())
    K0 = meter.K0
    drift = float((ref - K0).norm() / K0.norm())
    assert math.isclose(row["ntk_drift"], drift, rel_tol=1e-4, abs_tol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_meter_moves_cpu_probes_to_a_cuda_model_once():
    model, x = model_and_inputs(torch.float32)
    y = x.sum(1, keepdim=True)
    meter = lm.LazyMeter(model.cuda(), probe=lm.ProbeSet((x, y), test=(x, y)))
    assert meter.probe_x.device.type == "cuda" and meter.K0.device.type == "cuda"
    assert math.isfinite(meter.measure()["ntk_drift"])


@pytest.mark.parametrize("method", ["jacobian", "loop", "structured", "ntvp"])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_float32_kernels_of_many_outputs_keep_float32_precision(method, chunk_size):
    """A float32 kernel sums millions of products (100 outputs x 68k parameters here): the
    partial sums are accumulated in float64, so chunked or not it stays within ~1e-6."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 100)
    )  # fmt: skip
    x = torch.randn(12 if method == "loop" else 24, 20)
    ref = lm.empirical_ntk(model, x, dtype=torch.float64, method="structured")
    K = lm.empirical_ntk(model, x, method=method, chunk_size=chunk_size)
    assert K.dtype == torch.float32
    rel = float((K.double() - ref).norm() / ref.norm())
    diag = float(((K.double().diagonal() - ref.diagonal()).abs() / ref.diagonal()).max())
    assert rel < 1e-6 and diag < 2e-6, (rel, diag)


def test_tf32_is_off_inside_a_cuda_measurement_and_every_flag_restored():
    """cuDNN convolutions default to TF32 on recent GPUs (~1e-3 error in a float32 kernel):
    a measurement on CUDA switches it off and puts the user's flags back."""
    from lazymeter.ntk.functional import full_precision

    B = torch.backends
    before = (B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32)
    try:
        B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32 = True, True
        with full_precision(torch.device("cuda")):
            assert not B.cuda.matmul.allow_tf32 and not B.cudnn.allow_tf32
        assert B.cuda.matmul.allow_tf32 and B.cudnn.allow_tf32
        with full_precision(torch.device("cpu")):  # no TF32 on a CPU: nothing touched
            assert B.cuda.matmul.allow_tf32 and B.cudnn.allow_tf32
    finally:
        B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32 = before


def test_tf32_set_through_the_new_api_is_switched_off_and_restored_through_it():
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the legacy TF32 flags")
    code = (
        "import torch\n"
        "from lazymeter.ntk.functional import full_precision\n"
        "B = torch.backends\n"
        "B.cuda.matmul.fp32_precision = 'tf32'; B.cudnn.conv.fp32_precision = 'tf32'\n"
        "with full_precision(torch.device('cuda')):\n"
        "    assert (B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision) == ('ieee',) * 2\n"
        "assert (B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision) == ('tf32',) * 2\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_measurement_runs_in_full_precision_on_its_models_device(monkeypatch):
    from lazymeter.ntk import functional

    seen = []
    real = functional.full_precision

    def spy(device):
        seen.append(device)
        return real(device)

    monkeypatch.setattr(functional, "full_precision", spy)
    model = nn.Linear(3, 2)
    lm.empirical_ntk(model, torch.randn(4, 3))
    assert seen == [torch.device("cpu")]
