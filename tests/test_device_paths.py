"""Every public path with the model on a device: ``"cpu"`` always, ``"cuda"`` (marked
``cuda``; skipped without a GPU, run by ``benchmarks/cuda_check.py``) where there is one;
probes on the model's device or on the CPU; models in float32, bfloat16 and float64.

Each number is checked against an independent float64 computation on the CPU of the same
model (for a bfloat16 model: of its bfloat16 values, which float64 holds exactly, since
its kernels are evaluated in float32 arithmetic): the NTK engines, per-layer and
sketched kernels, the dense and matrix-free alignment, the kernel change, the meter's
quantities (with the quadratic-net decomposition and the linearised shadow), the
HuggingFace callback and ``examples/distributed.py`` on one rank (gloo on the CPU, nccl
on a GPU). On the CPU param the device-mixing cases cannot fail (there is one device);
they are the ones the ``cuda`` param exists for.
"""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from architectures import naive_ntk
from paper.polynomial import QuadraticNet
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

import lazymeter as lm
from lazymeter.ntk import ENGINES, Sketch, kernel_dtype, parameter_groups, sketched_ntk
from lazymeter.probes import targets
from lazymeter.quantities import Alignment, LayerKernels
from lazymeter.threads import torch_threads

CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ],
)
DTYPES = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.bfloat16, id="bfloat16"),
    pytest.param(torch.float64, id="float64"),
]
#: Where the probe tensors are passed: on the model's device or on the CPU.
PROBES = ["model", "cpu"]
#: Relative Frobenius error of a kernel against the float64 reference of the same values:
#: float64 to rounding; float32 (and bfloat16 models, evaluated in float32) to float32
#: rounding. A kernel summed in bfloat16 would be off by ~1e-2.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-5}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one CPU thread (and 10x slower on oversubscribed ones)."""
    with torch_threads(1):
        yield


@pytest.fixture(params=["cpu", CUDA])
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def exact_float32():
    """TF32 off for the block (cuDNN convolutions default to TF32 on Ampere and later GPUs,
    ~1e-3 relative): the engine comparisons check the engines, not the GPU's matmul mode."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def probe_device(device: torch.device, where: str) -> torch.device:
    return device if where == "model" else torch.device("cpu")


def other_device(device: torch.device) -> torch.device:
    """A device the model is not on (the CPU for a GPU model; ``meta`` for a CPU one)."""
    return torch.device("cpu" if device.type != "cpu" else "meta")


# ------------------------------------------------------------------------------- models


class ConvNet(nn.Module):
    """Convolution, linear, layer norm: three outputs per sample of ``[1, 4, 4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1)
        return self.head(torch.tanh(self.norm(self.fc(h))))


class TokenNet(nn.Module):
    """Embedding and attention written with raw parameters (einsum, indexing: the
    structured engine's operator rules); logits ``[B, T, V]``, measured at the last token."""

    def __init__(self, vocab: int = 7, d: int = 4, T: int = 3) -> None:
        super().__init__()
        g = lambda *s: nn.Parameter(0.5 * torch.randn(*s))  # noqa: E731
        self.embed = nn.Embedding(vocab, d)
        self.pos = g(T, d)
        self.Wq, self.Wk, self.Wv, self.unembed = g(d, d), g(d, d), g(d, d), g(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        q, k, v = (torch.einsum("btd,de->bte", h, W) for W in (self.Wq, self.Wk, self.Wv))
        T = tokens.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
        att = torch.einsum("bte,bse->bts", q, k).masked_fill(~mask, float("-inf")).softmax(-1)
        h = h + torch.einsum("bts,bse->bte", att, v)
        return torch.einsum("btd,dv->btv", h, self.unembed)


def last_token(y: torch.Tensor) -> torch.Tensor:
    return y[:, -1]


def build(arch: str, dtype: torch.dtype, device: torch.device):
    """``(model, x1, x2, output_fn)`` on ``device``, floating parts in ``dtype``."""
    torch.manual_seed(0)
    if arch == "conv":
        model, x1, x2, fn = ConvNet(), torch.randn(6, 1, 4, 4), torch.randn(4, 1, 4, 4), None
    else:
        g = torch.Generator().manual_seed(1)
        x1, x2 = (torch.randint(0, 7, (n, 3), generator=g) for n in (6, 4))
        model, fn = TokenNet(), last_token
    cast = lambda t: t.to(device, dtype) if t.is_floating_point() else t.to(device)  # noqa: E731
    return model.to(device, dtype), cast(x1), cast(x2), fn


def on_cpu64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64) if t.is_floating_point() else t.detach().cpu()


def reference(model, x1, x2=None, output_fn=None, trace=True, only=None) -> torch.Tensor:
    """The float64 kernel of ``model``'s current values on the CPU, by one autograd call per
    sample and output (no lazymeter engine); over the parameters ``only`` when given."""
    m = copy.deepcopy(model).to("cpu", torch.float64).eval()
    if only is not None:
        for n, p in m.named_parameters():
            p.requires_grad_(n in only)
    x2 = None if x2 is None else on_cpu64(x2)
    return naive_ntk(m, on_cpu64(x1), x2, output_fn, trace)


def rel_err(K: torch.Tensor, ref: torch.Tensor) -> float:
    return float((on_cpu64(K) - ref).norm() / ref.norm())


def check_kernel(K, ref, model_device, dtype) -> None:
    assert K.device == model_device
    assert K.dtype == kernel_dtype(dtype)
    assert rel_err(K, ref) < TOL[dtype], rel_err(K, ref)


# ----------------------------------------------------------------------- empirical_ntk


@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ["conv", "tokens"])
def test_every_engine_on_the_device_equals_the_float64_reference(device, arch, dtype, engine):
    model, x1, x2, fn = build(arch, dtype, device)
    kw = dict(method=engine, output_fn=fn)
    check_kernel(lm.empirical_ntk(model, x1, **kw), reference(model, x1, None, fn), device, dtype)
    check_kernel(lm.empirical_ntk(model, x1, x2, **kw), reference(model, x1, x2, fn), device, dtype)
    untraced = lm.empirical_ntk(model, x1, x2, trace_outputs=False, **kw)
    check_kernel(untraced, reference(model, x1, x2, fn, trace=False), device, dtype)
    # blocks assembled on the device (a chunk smaller than the inputs)
    blocked = lm.empirical_ntk(model, x1, chunk_size=4, **kw)
    check_kernel(blocked, reference(model, x1, None, fn), device, dtype)
    assert next(model.parameters()).device == device and next(model.parameters()).dtype == dtype


@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ["conv", "tokens"])
def test_per_layer_kernels_on_the_device_equal_each_groups_reference(device, arch, dtype, engine):
    model, x1, x2, fn = build(arch, dtype, device)
    groups = parameter_groups(model)
    split = lm.empirical_ntk(model, x1, x2, method=engine, output_fn=fn, per_layer=True)
    assert list(split) == list(groups)
    for name, members in groups.items():
        ref = reference(model, x1, x2, fn, only=set(members))
        check_kernel(split[name], ref, device, dtype)
    total = sum(on_cpu64(K) for K in split.values())
    assert rel_err(total, reference(model, x1, x2, fn)) < TOL[dtype]


@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_sketched_kernel_on_the_device_is_the_cpu_float64_sketch(device, dtype, engine):
    """The projections are drawn on the CPU from the sketch's seed and moved: the same
    estimate on every device (to the dtype's rounding), unbiased for the exact kernel."""
    model, x1, x2, fn = build("tokens", dtype, device)
    sketch = Sketch(s=32, groups=4, seed=3)
    K = lm.empirical_ntk(model, x1, x2, output_fn=fn, method=engine, outputs=sketch)
    m64 = copy.deepcopy(model).to("cpu", torch.float64)
    ref = sketched_ntk(m64, x1.cpu(), x2.cpu(), sketch=sketch, output_fn=fn, method="jacobian")
    check_kernel(K, ref.kernel, device, dtype)
    found = sketched_ntk(model, x1, x2, sketch=sketch, output_fn=fn, method=engine)
    assert found.stderr.device == device
    exact = reference(model, x1, x2, fn)
    assert rel_err(found.kernel, exact) < 4 * found.rel_se  # an estimate of the traced kernel
    assert abs(found.rel_se - ref.rel_se) < 1e-4 * ref.rel_se + TOL[dtype]


def test_inputs_on_another_device_than_the_model_are_a_clear_error(device):
    model, x1, _, fn = build("conv", torch.float32, device)
    x = torch.empty(x1.shape, device=other_device(device))
    y = torch.arange(x1.shape[0], dtype=torch.float32, device=other_device(device))
    where = f"is on {x.device.type}.* but the model is on {device.type}"
    with pytest.raises(ValueError, match=where):
        lm.empirical_ntk(model, x)
    with pytest.raises(ValueError, match=where):
        lm.empirical_ntk(model, x1, x)
    with pytest.raises(ValueError, match=where):
        lm.empirical_ntk(model, x, outputs=Sketch(4, groups=2))
    if x.device.type == "meta":  # meta tensors hold no values: the checks of x come first
        return
    for method in ("dense", "matrix_free"):
        with pytest.raises(ValueError, match=where):
            lm.ntk_alignment(model, x, y, method=method)
        with pytest.raises(ValueError, match=where):
            lm.ntk_change(model, copy.deepcopy(model), x, method=method)


# ------------------------------------------------------------------ alignment and change


def alignment_data(dtype: torch.dtype, device: torch.device, labels_on: torch.device):
    torch.manual_seed(0)
    model = ConvNet().to(device, dtype)
    x = torch.randn(24, 1, 4, 4).to(device, dtype)
    y = torch.sin(3 * x.float().mean((1, 2, 3))).to(labels_on)
    return model, x, y


@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("labels_on", PROBES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ntk_alignment_dense_and_matrix_free_equal_the_float64_reference(device, dtype, labels_on):
    model, x, y = alignment_data(dtype, device, probe_device(device, labels_on))
    K = reference(model, x)
    expected = lm.alignment_estimate(K, on_cpu64(y), "double", "unbiased")
    biased = lm.kernel_alignment(K, on_cpu64(y), "rows", "biased")
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    dense = lm.ntk_alignment(model, x, y, method="dense")
    assert dense.method == "dense"
    assert dense.value == pytest.approx(expected.value, abs=tol)
    assert dense.stderr == pytest.approx(expected.stderr, abs=tol)
    # every row read and the subsample the whole set: the matrix-free sums are exact
    P = x.shape[0]
    for estimator, centering, want in (("unbiased", "double", expected.value),
                                       ("biased", "rows", biased)):  # fmt: skip
        free = lm.ntk_alignment(
            model, x, y, method="matrix_free", rows=P, se_points=P, estimator=estimator,
            centering=centering,
        )  # fmt: skip
        assert free.method == "matrix_free"
        assert free.value == pytest.approx(want, abs=tol), (estimator, free.value, want)
        assert free.estimator_se == pytest.approx(0.0, abs=tol)
    # the sampling error: the dense jackknife on the whole set (se_points = P)
    assert free.stderr == pytest.approx(lm.alignment_estimate(K, on_cpu64(y), "rows", "biased")
                                        .stderr, abs=tol)  # fmt: skip


@pytest.mark.usefixtures("exact_float32")
@pytest.mark.parametrize("dtype", DTYPES)
def test_ntk_change_dense_and_matrix_free_equal_the_float64_reference(device, dtype):
    model0, x, _ = alignment_data(dtype, device, device)
    model = copy.deepcopy(model0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_((0.3 * torch.randn(p.shape, generator=g)).to(p))
    K, K0 = reference(model, x), reference(model0, x)
    drift, cka = lm.ntk_drift(K, K0), lm.cka_estimate(K, K0, "unbiased")
    assert drift > 0.05 and cka.value < 0.999  # the models differ: the check has teeth
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    P = x.shape[0]
    for method, kw in (("dense", {}), ("matrix_free", {"rows": P})):
        found = lm.ntk_change(model, model0, x, method=method, **kw)
        assert found["drift"].method == method
        assert found["drift"].value == pytest.approx(drift, rel=tol)
        assert found["cka"].value == pytest.approx(cka.value, abs=tol)
    assert found["cka"].stderr == 0.0  # every row read
    for m in (model, model0):
        assert all(p.device == device and p.dtype == dtype for p in m.parameters())


# ----------------------------------------------------------------------------- the meter


def quadratic_task(dtype: torch.dtype, device: torch.device, probes_on: torch.device):
    """The paper's quadratic net with readouts and its data: train and test probes."""
    g = torch.Generator().manual_seed(0)
    D, N = 6, 16
    model = QuadraticNet(D, N, 0.5, readouts=True, generator=g).to(device, dtype)
    beta = torch.randn(D, generator=g)
    x, xt = (torch.randn(n, D, generator=g) / math.sqrt(D) for n in (40, 30))
    f = lambda v: (v.double() @ beta.double()) ** 2 / 2  # noqa: E731
    x, xt = x.to(dtype), xt.to(dtype)  # the model's dtype; the labels float32
    y, yt = f(x).float(), f(xt).float()
    probes = tuple(t.to(probes_on) for t in (x, y, xt, yt))
    return model, beta, probes


def assert_finite(row: dict) -> None:
    bad = {k: v for k, v in row.items() if not math.isfinite(v)}
    assert not bad, bad


def on_device(module: nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*module.parameters(), *module.buffers()])


@pytest.mark.filterwarnings("ignore:kernel_regression:RuntimeWarning")  # the K0 baseline
@pytest.mark.parametrize("probes_on", PROBES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_meter_with_every_default_quantity_decomposition_and_shadow(device, dtype, probes_on):
    alpha, eps = 1.0, 0.5
    model, beta, (x, y, xt, yt) = quadratic_task(dtype, device, probe_device(device, probes_on))
    init = copy.deepcopy(model)
    decomp = lm.QuadraticDecomposition(beta, alpha=alpha, eps=eps)
    meter = lm.LazyMeter(
        model, alpha=alpha, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=2,
        quantities=lm.quantities.default(metrics={"decomp": decomp}, linearized=True),
    )  # fmt: skip
    for t in (meter.probe_x, meter.probe_y, meter.test_x, meter.K0, meter.K0_test):
        assert t.device == device  # the probes moved once, the kernels where the model is
    assert meter.K0.dtype == kernel_dtype(dtype)
    xd, yd, xtd, ytd = (t.to(device) for t in (x, y, xt, yt))
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(2.0))
    lin_opt = torch.optim.SGD(meter.linearized.parameters(), lr=meter.scaled_lr(2.0))
    rows = []
    for _ in range(5):
        loss = ((meter(xd).float() - yd) ** 2).mean()
        lin_loss = ((meter.linearized(xd).float() - yd) ** 2).mean()
        with torch.no_grad():
            test = ((meter(xtd).float() - ytd) ** 2).mean()
        opt.zero_grad()
        lin_opt.zero_grad()
        (loss + lin_loss).backward()
        rows.append(
            meter.step(
                train_loss=loss.item(), test_loss=test.item(), lin_train_loss=lin_loss.item()
            )
        )
        opt.step()
        lin_opt.step()
    rows = [r for r in rows if r is not None]
    assert [r["step"] for r in rows] == [2, 4]  # the calls' rows; step 0 the meter's own
    assert [r["step"] for r in meter.history] == [0, 2, 4]
    expected = {"param_movement", "weight_norm", "ntk_drift", "ntk_cka", "test_ntk_drift",
                "alignment_train", "alignment_test", "alignment0_train", "spectrum_trace",
                "spectrum_eig_1", "k0_test_mse", "k0_train_mse", "decomp_total",
                "decomp_variance", "decomp_misalignment", "decomp_linear", "lin_gap_train",
                "lin_gap_test"}  # fmt: skip
    for r in rows:
        assert expected <= set(r), expected - set(r)
        assert_finite(r)
    first, last = meter.history[0], rows[-1]
    # at initialisation: nothing moved, the kernel is K0, the shadow is the network
    assert first["param_movement"] == 0.0 and first["ntk_drift"] < 1e-6
    assert first["lin_gap_train"] < 1e-6 and abs(first["alignment_rise_train"]) < 1e-6
    assert last["param_movement"] > 0.0 and last["ntk_drift"] > 1e-3 and last["lin_gap_train"] > 0
    # the numbers against float64 computations on the CPU, at init and now
    K0 = reference(init, meter.probe_x)
    Y = targets(on_cpu64(meter.probe_y))
    a0 = lm.kernel_alignment(K0, Y, "double", "unbiased")
    assert first["alignment0_train"] == pytest.approx(a0, abs=1e-5)
    now = meter.measure()
    assert_finite(now)
    K = reference(model, meter.probe_x)
    assert now["ntk_drift"] == pytest.approx(lm.ntk_drift(K, K0), rel=1e-4)
    assert now["spectrum_trace"] == pytest.approx(float(K.trace()), rel=1e-5)
    assert now["alignment_train"] == pytest.approx(
        lm.kernel_alignment(K, Y, "double", "unbiased"), abs=1e-5
    )
    assert now["param_movement"] == pytest.approx(lm.parameter_movement(model, init), rel=1e-9)
    terms = lm.decompose_quadratic(
        on_cpu64(model.W), beta, alpha=alpha, eps=eps, a=on_cpu64(model.a),
        W0=on_cpu64(init.W), a0=on_cpu64(init.a),
    )  # fmt: skip
    for k, v in terms.items():
        assert now[f"decomp_{k}"] == pytest.approx(v, rel=1e-9)
    # the model, the snapshot and the shadow stayed where they were
    assert on_device(model, device) and on_device(meter, device)
    assert on_device(meter.linearized, device)
    assert all(p.dtype == dtype for p in model.parameters())


def quantity_tensors(meter: lm.LazyMeter) -> list[torch.Tensor]:
    """The tensors the meter's quantities keep outside modules (references, own points)."""
    out = []
    for q in meter.quantities:
        for v in vars(q).values():
            if not isinstance(v, nn.Module):
                out += [t for t in tree_leaves(v) if isinstance(t, torch.Tensor)]
    return out


@pytest.mark.filterwarnings("ignore:kernel_regression:RuntimeWarning")  # the K0 baseline
def test_quantities_follow_the_meter_to_the_device_and_into_a_resumed_meter(device):
    """``meter.to(device)`` (as the HF callback does when the Trainer moves the model
    after the meter was built) and ``.double()`` convert what the quantities keep (K0 per
    layer, initial activations, the alignment's leave-one-out values and own points) as
    they convert the model; a checkpoint loaded onto the CPU first puts them beside the
    model. Left behind on the CPU, every later measurement would mix devices and those
    quantities record NaN. (On the CPU param only the dtype half can fail.)"""
    model, _, (x, y, xt, yt) = quadratic_task(torch.float32, *[torch.device("cpu")] * 2)
    quantities = [
        *lm.quantities.default(features=["hidden"]),
        Alignment(points=20, prefix="alignment_own"),
        LayerKernels(),
    ]
    meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=(xt, yt)), quantities=quantities)
    kept = quantity_tensors(meter)
    assert len(kept) >= 8 and {t.dtype for t in kept} >= {torch.float32}
    meter.to(device).double()
    assert on_device(model, device) and meter.probe_x.device == device
    kept = quantity_tensors(meter)
    assert all(t.device == device and t.dtype == torch.float64 for t in kept)
    xd, yd = x.to(device, torch.float64), y.to(device, torch.float64)
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(2.0))
    for _ in range(3):
        loss = ((meter(xd) - yd) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    row = meter.measure()
    assert_finite(row)
    for key in ("alignment_rise_train_se", "alignment_own_train", "alignment_rise_own_train_se",
                "feature_cka/hidden", "layer/hidden/ntk_drift", "layer/a/ntk_cka"):  # fmt: skip
        assert key in row, key
    assert row["layer/hidden/ntk_drift"] > 0 and row["feature_cka/hidden"] < 1.0
    # a checkpoint read onto the CPU (torch.load(..., map_location="cpu")), then resumed
    state = tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, meter.state_dict())
    model2, _, _ = quadratic_task(torch.float64, device, device)
    quantities2 = [*lm.quantities.default(features=["hidden"]), Alignment(points=20,
                   prefix="alignment_own"), LayerKernels()]  # fmt: skip
    test2 = (xt.to(device).double(), yt.to(device).double())
    meter2 = lm.LazyMeter(model2, probe=lm.ProbeSet((xd, yd), test=test2), quantities=quantities2)
    meter2.load_state_dict(state)
    assert all(t.device == device for t in quantity_tensors(meter2))
    again = meter2.measure()
    assert_finite(again)
    for k in ("alignment_rise_train_se", "alignment_rise_own_train", "layer/hidden/ntk_drift"):
        assert again[k] == pytest.approx(row[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("dtype", DTYPES)
def test_metric_functions_take_their_second_argument_on_another_device(device, dtype):
    """Kernels on the model's device, labels and reference kernels wherever the user keeps
    them (the CPU): the metrics follow the first argument's device."""
    model, x, y = alignment_data(dtype, device, torch.device("cpu"))
    K = lm.empirical_ntk(model, x)
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)
    K1 = lm.empirical_ntk(model, x)
    K0, Kc, Y = on_cpu64(K), on_cpu64(K1), on_cpu64(y)
    assert lm.kernel_alignment(K1, y) == pytest.approx(lm.kernel_alignment(Kc, Y), abs=1e-9)
    est = lm.alignment_estimate(K1, y)
    assert est.value == pytest.approx(lm.alignment_estimate(Kc, Y).value, abs=1e-9)
    change = lm.alignment_change(K1, K0, y)
    assert change.value == pytest.approx(lm.alignment_change(Kc, K0, Y).value, abs=1e-9)
    assert lm.cka(K1, K0) == pytest.approx(lm.cka(Kc, K0), abs=1e-9)
    assert lm.cka_estimate(K1, K0).value == pytest.approx(lm.cka_estimate(Kc, K0).value, abs=1e-9)
    assert lm.ntk_drift(K1, K0) == pytest.approx(lm.ntk_drift(Kc, K0), rel=1e-9)
    Kt = lm.empirical_ntk(model, x[:5], x)
    pred = lm.kernel_regression(K1, y, Kt, ridge=1e-3)
    assert pred.device == device
    ref = lm.kernel_regression(Kc, Y, on_cpu64(Kt), ridge=1e-3)
    assert rel_err(pred, ref) < (1e-9 if dtype == torch.float64 else 1e-4)
    X = torch.randn(24, 5, dtype=torch.float64)
    assert lm.linear_cka(X.to(device), X**2) == pytest.approx(lm.linear_cka(X, X**2), abs=1e-12)


# ------------------------------------------------------------------- HuggingFace callback

VOCAB, T = 50, 8


@pytest.mark.parametrize("probes_on", PROBES)
def test_huggingface_callback_trains_and_measures_on_the_device(device, probes_on, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from lazymeter.integrations.huggingface import LazyMeterCallback, last_label_logits

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    config._attn_implementation = "eager"
    model = transformers.GPT2LMHeadModel(config)
    model0 = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (40, T), generator=g)
    ids[:, -1] = (ids[:, 0] + ids[:, 1]) % 5
    train, test = ids[:8].to(probe_device(device, probes_on)), ids[8:16]
    data = [{"input_ids": r, "labels": torch.cat([torch.tensor([-100]), r[1:]])} for r in ids]
    probe = lm.ProbeSet((train, train), test=(test, test), max_points=8)
    cb = LazyMeterCallback(alpha=2.0, probe=probe, schedule=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
        learning_rate=cb.scaled_lr(1e-2), logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=device.type == "cpu", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=cb.wrap(model), args=args, train_dataset=data, callbacks=[cb]
    )
    trainer.train()
    meter = cb.meter
    assert next(model.parameters()).device.type == device.type
    assert meter.probe_x.device.type == device.type and meter.K0.device.type == device.type
    history = meter.history
    assert [r["step"] for r in history] == [0, 2, 4]
    for r in history:
        assert_finite(r)
    assert history[0]["ntk_drift"] < 1e-6 and history[-1]["ntk_drift"] > 0
    # f - f0 = 0 at the first step: the loss the Trainer logged is log(vocab) exactly
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    assert losses[1] == pytest.approx(math.log(VOCAB), rel=1e-5)
    # K0 on the device against the initial model's float64 kernel on the CPU
    m64 = copy.deepcopy(model0).double().eval()
    ref = lm.empirical_ntk(m64, train.cpu(), output_fn=last_label_logits, method="jacobian")
    assert rel_err(meter.K0, ref) < 1e-4


# --------------------------------------------------------- examples/distributed.py, 1 rank


HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RUN_ONE_RANK = """
import json, sys
import torch.distributed as dist
from example_scripts import load_example
backends = []
init = dist.init_process_group
def recording(backend=None, *a, **k):
    backends.append(backend)
    return init(backend, *a, **k)
dist.init_process_group = recording
summary = load_example("distributed").main(sys.argv[1:])
print("RESULT " + json.dumps({"backend": backends, "summary": summary}))
"""


def run_one_rank(device: str, shard: str, out: str) -> dict:
    """``examples/distributed.py`` as torchrun would start its only rank (the environment
    variables ``init_process_group`` reads); the backends it asked for and its summary."""
    env = {
        **os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])  # helpers
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the example takes nccl whenever it sees a GPU
    cmd = [sys.executable, "-c", RUN_ONE_RANK, "--shard", shard, "--steps", "4", "--every", "2",
           "--out", out]  # fmt: skip
    for _ in range(3):  # a port taken between free_port() and the rendezvous: another one
        env["MASTER_PORT"] = str(free_port())
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if "address already in use" not in done.stderr.lower():
            break
    assert done.returncode == 0, done.stderr[-3000:]
    line = [s for s in done.stdout.splitlines() if s.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("shard", ["ddp", "fsdp"])
def test_distributed_example_on_one_rank(device, shard, tmp_path):
    found = run_one_rank(device.type, shard, str(tmp_path / "run"))
    assert found["backend"] == ["nccl" if device.type == "cuda" else "gloo"]
    summary = found["summary"]
    assert summary["world"] == 1 and summary["shard"] == shard and summary["step"] == 4
    rows = lm.read_jsonl(tmp_path / "run" / "history.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert_finite(r)
    assert rows[0]["ntk_drift"] == 0.0 and rows[-1]["ntk_drift"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    if device.type == "cuda":  # the same run on the CPU (gloo): the same numbers
        cpu = run_one_rank("cpu", shard, str(tmp_path / "cpu"))
        for k, v in cpu["summary"].items():
            # not the K0 baseline: a pseudo-inverse of a numerically singular kernel
            if isinstance(v, float) and not k.startswith("k0_"):
                assert summary[k] == pytest.approx(v, rel=1e-3, abs=1e-5), k
