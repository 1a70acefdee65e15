"""``scaled_lr``'s rules: GD ``lr / alpha^2``, Adam ``lr / alpha``, and ``"none"`` (lr as is)."""

import math

import pytest
import torch
from torch import nn

import lazymeter as lm


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))


@pytest.mark.parametrize("alpha", [1e-3, 0.5, 1.0, 7.0])
def test_the_three_rules(alpha):
    meter = lm.LazyMeter(mlp(), alpha=alpha)
    assert meter.scaled_lr(0.1) == pytest.approx(0.1 / alpha**2)
    assert meter.scaled_lr(0.1, "adam") == pytest.approx(0.1 / alpha)
    assert meter.scaled_lr(0.1, "none") == 0.1  # exactly the lr given


def test_none_leaves_the_function_space_speed_proportional_to_alpha_under_adam():
    """With the lr unscaled, Adam moves each parameter by about lr on its first step
    (sign of the gradient), so the uncentred output ``alpha f`` moves alpha times as far
    (to first order in the small lr);
    with ``"adam"`` (lr / alpha) the move is the same for every alpha."""
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(16, 1, generator=torch.Generator().manual_seed(2))

    def first_move(alpha: float, rule: str) -> float:
        meter = lm.LazyMeter(mlp(), alpha=alpha, center=False)
        opt = torch.optim.Adam(meter.parameters(), lr=meter.scaled_lr(1e-5, rule))
        before = meter(x).detach()
        # Loss of the unit-alpha output, so the gradient's sign (Adam's first step) is the
        # same for every alpha and the moves compare.
        ((meter(x) / alpha - y) ** 2).mean().backward()
        opt.step()
        return float((meter(x).detach() - before).norm())

    none = {a: first_move(a, "none") for a in (0.1, 1.0, 10.0)}
    adam = {a: first_move(a, "adam") for a in (0.1, 1.0, 10.0)}
    assert none[10.0] / none[1.0] == pytest.approx(10.0, rel=1e-2)
    assert none[0.1] / none[1.0] == pytest.approx(0.1, rel=1e-2)
    assert adam[10.0] == pytest.approx(adam[1.0], rel=1e-2)
    assert adam[0.1] == pytest.approx(adam[1.0], rel=1e-2)


def test_unknown_rule_and_unusable_lr_are_clear_errors():
    meter = lm.LazyMeter(mlp(), alpha=2.0)
    with pytest.raises(ValueError, match="expected 'sgd', 'adam' or 'none', got 'adamw'"):
        meter.scaled_lr(0.1, "adamw")
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="alpha: lr = .* not a usable learning rate"):
            meter.scaled_lr(bad, "none")
