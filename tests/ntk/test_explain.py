"""``lazymeter.ntk.explain``: each trainable parameter's route and the reason it is not
ruled, on a model mixing covered, subclassed and uncovered layers; it agrees with
``coverage`` and the kernel stays exact whatever the route."""

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import RULES, coverage, explain, register_rule, unregister_rule


class SameLinear(nn.Linear):
    """A subclass with Linear's forward: the Linear rule is found along the MRO, and
    ``F.linear`` inside is what it stands for."""


class DoubledLinear(nn.Linear):
    """A subclass that changes forward: the weight and bias still go through ``F.linear``,
    which the operator rules cover (the doubling is no use of a parameter)."""

    def forward(self, x):
        return 2 * super().forward(x)


class WarpedLinear(nn.Linear):
    """A subclass whose weight goes through ``tanh``: no operator rule covers ``tanh``, so
    the weight goes to the generic engine (its bias, added by ``F.linear``, does not)."""

    def forward(self, x):
        return nn.functional.linear(x, torch.tanh(self.weight), self.bias)


class Custom(nn.Module):
    """A layer with a raw parameter, no module rule, and used by ``addcmul``, which has no
    operator rule."""

    def __init__(self, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, dtype=torch.float64))

    def forward(self, x):
        return torch.addcmul(torch.zeros_like(x), x, self.w)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.same = SameLinear(6, 6)
        self.doubled = DoubledLinear(6, 5)
        self.warped = WarpedLinear(5, 5)
        self.custom = Custom(5)
        self.head = nn.Linear(5, 2)
        self.alias = self.fc  # one layer under two names: listed and counted once

    def forward(self, x):
        h = torch.tanh(self.alias(x))
        h = torch.tanh(self.same(h))
        h = torch.tanh(self.custom(self.warped(self.doubled(h))))
        return self.head(h)


@pytest.fixture
def mixed():
    torch.manual_seed(0)
    return Mixed().double(), torch.randn(5, 4, dtype=torch.float64)


def test_explain_names_each_route_and_reason(mixed):
    model, x = mixed
    ex = explain(model, x)
    names = [r.name for r in ex.rows]
    assert names == [n for n, _ in model.named_parameters()]  # each parameter once
    assert len(set(names)) == len(names) == 11
    assert ex["fc.weight"].aliases == ("alias.weight",) and ex["alias.bias"].name == "fc.bias"

    for n in ("fc.weight", "fc.bias", "head.weight", "head.bias"):
        assert ex[n].ruled and ex[n].rule == "Linear" and ex[n].reason is None
    for n in ("same.weight", "same.bias"):  # covered through the MRO
        r = ex[n]
        assert r.ruled and r.rule == "Linear" and r.layer_type == "SameLinear", r
    for n in ("doubled.weight", "doubled.bias"):  # F.linear inside, whatever is around it
        r = ex[n]
        assert r.ruled and r.rule == "Linear" and r.ops == ("linear",) and r.route == "ops linear"
    r = ex["warped.weight"]  # rule found, traced through: tanh has no operator rule
    assert not r.ruled and r.rule == "Linear" and r.route == "generic"
    assert "used by tanh, which has no operator rule" in r.reason
    assert ex["warped.bias"].ruled and ex["warped.bias"].route == "ops linear"
    r = ex["custom.w"]
    assert not r.ruled and r.rule is None and r.layer_type == "Custom"
    assert "no rule for Custom" in r.reason and "register_rule(Custom)" in r.reason
    assert "used by addcmul, which has no operator rule" in r.reason

    assert ex.covered == pytest.approx(coverage(model, x))
    ruled = sum(p.numel() for n, p in model.named_parameters() if ex[n].ruled)
    assert ex.covered == pytest.approx(ruled / sum(p.numel() for p in model.parameters()))
    assert {r.name for r in ex.generic} == {"warped.weight", "custom.w"}

    text = str(ex)
    assert text.splitlines()[0].split() == ["parameter", "layer", "entries", "route", "reason"]
    for n in names:
        assert n in text
    assert "ops linear" in text and "no rule for Custom" in text and "used by tanh" in text
    assert f"{ex.covered:.1%}" in text

    K = lm.empirical_ntk(model, x, method="structured")  # exact whatever the route
    ref = naive_ntk(model, x)
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))


def test_explain_reports_static_and_run_time_declines_and_tied_weights():
    torch.manual_seed(1)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.custom = Custom(4)
            self.out = nn.Linear(4, 6, bias=False)
            self.tied = nn.Linear(4, 6, bias=False)
            self.tied.weight = self.out.weight  # one weight, two layers

        def forward(self, t):
            h = self.custom(self.emb(t)).mean(1)
            return self.out(h) + self.tied(torch.tanh(h))

    def custom_rule(m, args, out):
        return "this call is not handled"  # declines at run time, with a reason

    model, x = Model().double(), torch.randint(0, 6, (4, 3))
    register_rule(Custom)(custom_rule)
    try:
        ex = explain(model, x)
    finally:
        unregister_rule(Custom)
    assert Custom not in RULES
    # Declined by its configuration (and F.embedding renormalises the table in place,
    # which the operator rules' traced forward refuses too).
    renorm = nn.Sequential(nn.Embedding(6, 4, max_norm=1.0), nn.Flatten(), nn.Linear(12, 2))
    assert "declines this configuration: max_norm" in explain(renorm, x)["0.weight"].reason
    assert "declined: this call is not handled" in ex["custom.w"].reason
    assert ex["custom.w"].rule == "Custom" and not ex["custom.w"].ruled
    r = ex["out.weight"]  # no layer's rule for a tied weight; both F.linear uses add up
    assert r.aliases == ("tied.weight",) and r.ruled and r.ops == ("linear",)
    assert ex.covered == pytest.approx(48 / 52) == coverage(model, x)


def test_a_rule_returning_none_is_reported_too():
    model = nn.Sequential(Custom(3), nn.Linear(3, 2)).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    register_rule(Custom)(lambda m, args, out: None)
    try:
        r = explain(model, x)["0.w"]
    finally:
        unregister_rule(Custom)
    assert not r.ruled and "returned None" in r.reason
