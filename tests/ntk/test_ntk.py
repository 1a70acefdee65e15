import warnings

import pytest
import torch
from architectures import ARCHITECTURES, QuadraticNet, naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import ENGINES, auto_chunk_size

METHODS = ["auto", *sorted(ENGINES)]


@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("trace", [True, False], ids=["traced", "untraced"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["x2=None", "x2"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_ntk_matches_naive_autograd_loop(arch, method, symmetric, trace, chunk_size):
    model, x1, x2, output_fn = ARCHITECTURES[arch]()
    x2 = None if symmetric else x2
    K = lm.empirical_ntk(
        model,
        x1,
        x2,
        output_fn=output_fn,
        method=method,
        trace_outputs=trace,
        chunk_size=chunk_size,
    )
    ref = naive_ntk(model, x1, x2, output_fn, trace)
    assert K.shape == ref.shape
    assert K.dtype == torch.float64
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_symmetric_kernel_is_exactly_symmetric_across_blocks(method):
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    x = torch.cat([x1, x1 * 2, -x1])
    K = lm.empirical_ntk(model, x, method=method, chunk_size=4)
    assert torch.equal(K, K.T)
    Ku = lm.empirical_ntk(model, x, method=method, chunk_size=4, trace_outputs=False)
    assert torch.equal(Ku, Ku.permute(1, 0, 3, 2))
    assert torch.equal(Ku.diagonal(0, 2, 3).sum(-1), Ku.diagonal(0, 2, 3).sum(-1).T)


def test_untraced_kernel_traces_to_traced_kernel():
    model, x1, x2, _ = ARCHITECTURES["cnn"]()
    Ku = lm.empirical_ntk(model, x1, x2, trace_outputs=False)
    K = lm.empirical_ntk(model, x1, x2)
    torch.testing.assert_close(Ku.diagonal(0, 2, 3).sum(-1), K)


def test_only_trainable_parameters_enter_the_kernel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(5, 3).double()
    full = lm.empirical_ntk(model, x)
    model[0].requires_grad_(False)
    last_only = lm.empirical_ntk(model, x)
    h = torch.tanh(model[0](x)).detach()
    # The last layer's Jacobian is [h, 1]: its NTK is h h^T + 1.
    torch.testing.assert_close(last_only, h @ h.T + 1)
    assert not torch.allclose(full, last_only)


def test_quadratic_net_ntk_matches_closed_form():
    # f = mean_i phi(w_i . x) => df/dw_i = phi'(w_i . x) x / N, so
    # K(x, x') = (x . x') / N^2 * sum_i phi'(h_i) phi'(h'_i).
    torch.manual_seed(0)
    net = QuadraticNet(D=7, N=9, eps=0.3)
    x = torch.randn(6, 7, dtype=torch.float64)
    d = 1 + net.eps * (x @ net.W.detach().T)
    expected = (x @ x.T) * (d @ d.T) / 9**2
    torch.testing.assert_close(lm.empirical_ntk(net, x), expected)


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_output_fn_picks_a_field_of_a_dict_or_tuple_output(method):
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 2).double()

        def forward(self, x):
            y = self.body(x)
            return {"logits": y, "aux": (y**2, y.sum(-1))}

    torch.manual_seed(0)
    model, x = Heads(), torch.randn(4, 3, dtype=torch.float64)
    K = lm.empirical_ntk(model, x, output_fn=lambda out: out["logits"], method=method)
    torch.testing.assert_close(K, lm.empirical_ntk(model.body, x, method=method))
    K_aux = lm.empirical_ntk(model, x, output_fn=lambda out: out["aux"][1], method=method)
    torch.testing.assert_close(K_aux, naive_ntk(model, x, None, lambda out: out["aux"][1]))


def test_tuple_inputs_share_the_sample_dimension():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2).double(), nn.Linear(4, 2).double()

        def forward(self, u, v):
            return torch.tanh(self.a(u)) * self.b(v)

    torch.manual_seed(0)
    model = TwoInputs()
    u, v = torch.randn(5, 3).double(), torch.randn(5, 4).double()
    K = lm.empirical_ntk(model, (u, v))
    J = []
    for i in range(5):
        out = model(u[i : i + 1], v[i : i + 1]).reshape(-1)
        J.append(
            torch.stack(
                [
                    torch.cat(
                        [
                            g.reshape(-1)
                            for g in torch.autograd.grad(
                                out[o], list(model.parameters()), retain_graph=True
                            )
                        ]
                    )
                    for o in range(2)
                ]
            )
        )
    J = torch.stack(J)
    torch.testing.assert_close(K, torch.einsum("ion,jon->ij", J, J))


def test_model_is_left_untouched():
    model, x1, _, _ = ARCHITECTURES["batchnorm_frozen"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    K = lm.empirical_ntk(model, x1)
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert not K.requires_grad


def test_result_follows_model_dtype():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(4, 3)
    K = lm.empirical_ntk(model, x)
    assert K.dtype == torch.float32 and K.shape == (4, 4)
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=1e-5, atol=1e-5)


def test_small_memory_budget_gives_small_chunks_and_same_kernel(monkeypatch):
    model, x1, x2, _ = ARCHITECTURES["mlp"]()
    x = torch.cat([x1] * 4)
    n_params = sum(p.numel() for p in model.parameters())
    seen = {}
    real = ENGINES["jacobian"]

    def spy(fm, a, b, **kw):
        seen.update(kw)
        return real(fm, a, b, **kw)

    monkeypatch.setitem(ENGINES, "jacobian", spy)
    budget = 3 * 3 * n_params * 8 * 5  # room for five samples' Jacobians
    K = lm.empirical_ntk(model, x, method="jacobian", memory_budget=budget)
    assert seen["chunk_size"] == 5
    torch.testing.assert_close(K, naive_ntk(model, x))


def test_auto_chunk_size_fits_budget():
    assert auto_chunk_size(10_000, 1, 50_000, 4, 2**29) == 2**29 // (3 * 50_000 * 4)
    assert auto_chunk_size(100, 1, 10, 4, 2**30) == 100
    assert auto_chunk_size(100, 10, 10**9, 4, 2**20) == 1


def test_auto_picks_a_registered_engine():
    from lazymeter.ntk import FunctionalModel, choose_method

    model, x1, _, _ = ARCHITECTURES["mlp"]()
    fm = FunctionalModel(model)
    assert choose_method(fm, (x1,), None, 3, True) == "structured"  # rules cover every layer
    model, x1, _, _ = ARCHITECTURES["attention"]()
    fm = FunctionalModel(model)  # raw parameters in einsums: operator rules cover them
    assert choose_method(fm, (x1,), None, fm.num_outputs((x1,)), True) == "structured"
    # Weight sharing: a wide conv costs far more FLOPs than it has parameters,
    # so NTK-vector products win for the untraced kernel.
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 8))
    x = torch.randn(3, 1, 32, 32)
    fm = FunctionalModel(conv)
    assert choose_method(fm, (x,), None, 8, False) in ENGINES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
@pytest.mark.parametrize("method", sorted(ENGINES))
def test_cuda_kernel_matches_cpu_kernel(method):
    model, x1, x2, _ = ARCHITECTURES["mlp"]()
    K_cpu = lm.empirical_ntk(model, x1, x2, method=method)
    K_gpu = lm.empirical_ntk(model.cuda(), x1.cuda(), x2.cuda(), method=method)
    assert K_gpu.device.type == "cuda"
    torch.testing.assert_close(K_gpu.cpu(), K_cpu)


# --- bad input -------------------------------------------------------------------------------


def test_model_without_trainable_parameters_is_rejected():
    model = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="model: has no parameters with requires_grad=True"):
        lm.empirical_ntk(model, torch.randn(2, 3))


def test_non_module_model_is_rejected():
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        lm.empirical_ntk(lambda x: x, torch.randn(2, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_rejected(bad):
    x = torch.randn(3, 2)
    x[1, 0] = bad
    with pytest.raises(ValueError, match="x1: contains NaN or Inf"):
        lm.empirical_ntk(nn.Linear(2, 1), x)
    with pytest.raises(ValueError, match="x2: contains NaN or Inf"):
        lm.empirical_ntk(nn.Linear(2, 1), torch.randn(3, 2), x)


def test_non_tensor_input_is_rejected():
    with pytest.raises(TypeError, match="x1: expected a Tensor"):
        lm.empirical_ntk(nn.Linear(2, 1), [[1.0, 2.0]])


def test_empty_or_scalar_inputs_are_rejected():
    with pytest.raises(ValueError, match="x1: has no samples"):
        lm.empirical_ntk(nn.Linear(2, 1), torch.randn(0, 2))
    with pytest.raises(ValueError, match="x1: inputs need a leading sample dimension"):
        lm.empirical_ntk(nn.Linear(2, 1), torch.tensor(1.0))


def test_inputs_on_another_device_are_rejected():
    with pytest.raises(ValueError, match="x1: is on meta but the model is on cpu"):
        lm.empirical_ntk(nn.Linear(2, 1), torch.empty(3, 2, device="meta"))


def test_unknown_method_and_bad_chunk_size_are_rejected():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="method: unknown 'fast'"):
        lm.empirical_ntk(nn.Linear(2, 1), x, method="fast")
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        lm.empirical_ntk(nn.Linear(2, 1), x, chunk_size=0)
    with pytest.raises(ValueError, match="memory_budget: expected a positive"):
        lm.empirical_ntk(nn.Linear(2, 1), x, memory_budget=0)


def test_batchnorm_in_training_mode_is_rejected_with_the_fix_when_measured_as_is():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        lm.empirical_ntk(model, torch.randn(4, 2), measure_mode="as_is")
    assert model.training


def test_train_mode_models_are_measured_in_eval_mode_like_the_meter_and_left_as_they_were():
    """One determinism rule for every public call: a train-mode model with BatchNorm and
    dropout is measured in eval mode (running statistics, no dropout), the global RNG and
    every flag are left as they were, and two calls agree exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 2))
    model = model.double()
    x = torch.randn(7, 2, dtype=torch.float64)
    with torch.no_grad():  # running statistics that are not the init's
        model(torch.randn(32, 2, dtype=torch.float64) * 3 + 1)
    rng = torch.get_rng_state()
    kernels = [lm.empirical_ntk(model, x, method=m) for m in ("jacobian", "ntvp", "structured")]
    kernels += [lm.empirical_ntk(model, x)]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())
    model.eval()
    ref = naive_ntk(model, x)
    for K in kernels:
        torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-10)


def test_structured_output_without_output_fn_is_rejected():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x):
            return {"y": self.lin(x)}

    with pytest.raises(TypeError, match="output_fn: the model returned dict"):
        lm.empirical_ntk(DictOut(), torch.randn(3, 2))


def test_output_fn_that_drops_the_batch_dimension_is_rejected():
    with pytest.raises(ValueError, match="output_fn: the output must keep the batch dimension"):
        lm.empirical_ntk(nn.Linear(2, 3), torch.randn(4, 2), output_fn=lambda y: y.sum())


def test_a_non_finite_kernel_never_leaves_empirical_ntk_silently():
    """Inputs near 1e20: the structured engine's contraction computes inf * 0 (a saturated
    tanh), while the Jacobian is finite. auto falls back to an exact engine and remembers
    it; an explicit structured call warns naming the engine and the way out; a diverged
    model's NaN kernel is returned with a warning naming its parameters."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(5, 3) * 1e20
    ref = lm.empirical_ntk(m, x, method="jacobian")
    assert bool(torch.isfinite(ref).all())
    with pytest.warns(RuntimeWarning, match="overflow inside engine 'structured'"):
        K = lm.empirical_ntk(m, x, method="structured")
    assert not bool(torch.isfinite(K).all())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto finds a finite kernel: nothing to warn about
        torch.testing.assert_close(lm.empirical_ntk(m, x), ref)
        torch.testing.assert_close(lm.empirical_ntk(m, x), ref)  # the remembered engine
    assert lm.ntk.select_method(m, x) != "structured"
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="parameters hold NaN or Inf"):
        assert not bool(torch.isfinite(lm.empirical_ntk(m, torch.randn(4, 3))).all())
