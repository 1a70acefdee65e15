"""The linearised shadow model: first-order Taylor expansion, trained like the network."""

import copy

import pytest
import torch
from architectures import naive_jacobian, naive_ntk
from torch import nn

import lazymeter as lm

#: The default quantities with the linearised shadow model.
SHADOW = lm.quantities.default(linearized=True)


def mlp(seed=0, D=4, out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, out)).double()


def test_forward_is_alpha_times_initial_jacobian_times_displacement():
    model = mlp(out=2)
    lin = lm.Linearized(model, alpha=3.0)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert torch.equal(lin(x), torch.zeros(5, 2, dtype=torch.float64))
    with torch.no_grad():
        for p in lin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    delta = torch.cat(
        [(p - q).reshape(-1) for p, q in zip(lin.parameters(), model.parameters(), strict=True)]
    )
    J = naive_jacobian(model, x)  # [P, O, n] at theta0
    torch.testing.assert_close(lin(x), 3.0 * J @ delta)
    uncentred = lm.Linearized(model, alpha=3.0, center=False)
    uncentred.load_state_dict(lin.state_dict())
    torch.testing.assert_close(uncentred(x), 3.0 * (model(x) + J @ delta))


def test_model_is_used_as_a_function_only():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    lin = lm.Linearized(model)
    ((lin(torch.randn(3, 4, dtype=torch.float64)) - 1) ** 2).sum().backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert {id(p) for p in lin.parameters()}.isdisjoint(id(p) for p in model.parameters())


def test_gradient_descent_on_the_shadow_converges_to_k0_kernel_regression():
    # A linear model trained by GD from theta0 reaches the minimum-norm interpolant:
    # exactly the lazy baseline K0(x*, X) K0^-1 y.
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(6, 4, generator=g).double(), torch.randn(5, 4, generator=g).double()
    y = torch.sin(x.sum(1))
    model = mlp()
    lin = lm.Linearized(model, alpha=1.0, output_fn=lambda o: o.squeeze(-1))
    K0, K0t = naive_ntk(model, x), naive_ntk(model, xt, x)
    lam = torch.linalg.eigvalsh(K0)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5 * 6 / float(lam[-1]))  # f += lr 2K/P (y - f)
    for _ in range(int(40 * lam[-1] / lam[0])):
        loss = ((lin(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch.testing.assert_close(lin(xt), K0t @ torch.linalg.solve(K0, y), rtol=1e-6, atol=1e-8)


def test_meter_offers_the_shadow_outside_its_parameters_and_saves_it():
    model = mlp()
    meter = lm.LazyMeter(model, alpha=2.0, quantities=SHADOW)
    assert {id(p) for p in meter.parameters()} == {id(p) for p in model.parameters()}
    x = torch.randn(4, 4, dtype=torch.float64)
    opt = torch.optim.SGD(meter.linearized.parameters(), lr=0.1)
    ((meter.linearized(x) - 1) ** 2).mean().backward()
    opt.step()
    other = lm.LazyMeter(mlp(seed=1), alpha=2.0, quantities=SHADOW)
    other.load_state_dict(meter.state_dict())
    torch.testing.assert_close(other.linearized(x), meter.linearized(x))
    meter.float()
    assert all(p.dtype == torch.float32 for p in meter.linearized.parameters())
    with pytest.raises(RuntimeError, match="linearized=True"):
        _ = lm.LazyMeter(mlp()).linearized
