"""The examples of docs/extending.md ("A new NTK rule"), each checked against the naive
per-sample autograd loop (float64, 1e-8 relative): a rule for a custom layer, a subclass
of a covered layer (covered as it is), and one that changes forward (rejected by the
exactness guard until it gets its own rule, built on the base's)."""

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter
from lazymeter.ntk import Dense, Outer


# --- (a) a rule for a custom layer (docs/extending.md, verbatim) -------------------------
class Projection(nn.Module):
    """``y = gain * x @ weight + shift`` with ``weight [d_in, d_out]``, the product written
    with ``tensordot`` (no operator rule), so that only a module rule covers it."""

    def __init__(self, d_in: int, d_out: int, gain: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_in, d_out) / d_in**0.5)
        self.shift = nn.Parameter(torch.zeros(d_out))
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * torch.tensordot(x, self.weight, dims=1) + self.shift


def projection_rule(m: Projection, args: tuple, out: torch.Tensor):
    x = args[0]  # [c, ..., d_in]
    c, d_in = x.shape[0], x.shape[-1]
    h = (m.gain * x).reshape(c, -1, d_in)  # [c, S, d_in]

    def positions(g: torch.Tensor) -> torch.Tensor:  # [c, O, ..., d_out] -> [c, O, S, d_out]
        return g.reshape(c, g.shape[1], -1, g.shape[-1])

    return {
        "weight": lambda g: Outer(g=positions(g), h=h, din=d_in, transpose=True),
        "shift": lambda g: Dense(positions(g).sum(2)),
    }


# --- (b) subclasses of a covered layer (docs/extending.md, verbatim) ---------------------
class TaggedLinear(nn.Linear):
    """An nn.Linear with a tag: same forward, so the Linear rule applies."""

    tag = "readout"


class ScaledLinear(nn.Linear):
    """``y = scale * (x W^T + b)``: a Linear whose output is scaled."""

    def __init__(self, d_in: int, d_out: int, scale: float = 3.0) -> None:
        super().__init__(d_in, d_out)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * super().forward(x)


linear_rule = lazymeter.ntk.RULES[nn.Linear]


def scaled_linear_rule(m: ScaledLinear, args: tuple, out: torch.Tensor):
    forms = linear_rule(m, args, out)
    return {name: (lambda g, make=make: make(m.scale * g)) for name, make in forms.items()}


# -----------------------------------------------------------------------------------------
@pytest.fixture
def rule():
    """``rule(type, fn)`` registers as the docs' decorator does, removed after the test."""
    added = []

    def register(t, fn):
        lazymeter.ntk.register_rule(t)(fn)
        added.append(t)

    yield register
    lazymeter.ntk.unregister_rule(*added)
    assert not set(added) & set(lazymeter.ntk.RULES)


def assert_exact(model, x1, x2=None, output_fn=None):
    for trace in (True, False):
        K = lazymeter.empirical_ntk(
            model, x1, x2, output_fn=output_fn, method="structured", trace_outputs=trace
        )
        ref = naive_ntk(model, x1, x2, output_fn, trace)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))


def test_a_rule_for_a_custom_layer(rule):
    torch.manual_seed(0)
    model = nn.Sequential(
        Projection(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), Projection(8, 3, gain=2.0)
    ).double()
    x1, x2 = torch.randn(6, 4, 5).double(), torch.randn(3, 4, 5).double()  # 4 positions
    output_fn = lambda y: y.mean(1)  # noqa: E731
    ex = lazymeter.ntk.explain(model, x1, output_fn=output_fn)
    assert "no rule for Projection" in ex["0.weight"].reason
    # Without its rule: the shifts are covered by the operator rule for +, not the weights.
    assert lazymeter.ntk.coverage(model, x1, output_fn=output_fn) == pytest.approx(83 / 147)
    assert_exact(model, x1, x2, output_fn)  # generic for Projection, exact all the same

    rule(Projection, projection_rule)
    assert lazymeter.ntk.coverage(model, x1, output_fn=output_fn) == 1.0
    ex = lazymeter.ntk.explain(model, x1, output_fn=output_fn)
    assert all(r.ruled for r in ex.rows) and ex["0.weight"].rule == "Projection"
    assert_exact(model, x1, x2, output_fn)
    assert_exact(model, x1[:, -1], x2[:, -1])  # no position dimension


def test_a_subclass_with_the_same_forward_is_covered_as_it_is():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), TaggedLinear(8, 3)).double()
    x1, x2 = torch.randn(5, 4).double(), torch.randn(3, 4).double()
    ex = lazymeter.ntk.explain(model, x1)
    assert ex["2.weight"].ruled and ex["2.weight"].rule == "Linear"
    assert ex["2.weight"].layer_type == "TaggedLinear"
    assert lazymeter.ntk.coverage(model, x1) == 1.0
    assert_exact(model, x1, x2)


def test_a_subclass_that_changes_forward_gets_its_own_rule(rule):
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(4, 8)
            self.scaled = ScaledLinear(8, 3)

        def forward(self, x):
            return self.scaled(torch.tanh(self.hidden(x)))

    model = Net().double()
    x1, x2 = torch.randn(5, 4).double(), torch.randn(3, 4).double()
    r = lazymeter.ntk.explain(model, x1)["scaled.weight"]
    # The guard rejects the inherited Linear rule; F.linear inside super().forward is
    # then covered by the operator rules.
    assert r.ruled and r.rule == "Linear" and r.route == "ops linear"
    assert_exact(model, x1, x2)

    rule(ScaledLinear, scaled_linear_rule)
    ex = lazymeter.ntk.explain(model, x1)
    assert ex["scaled.weight"].ruled and ex["scaled.weight"].rule == "ScaledLinear"
    assert ex.covered == 1.0 == lazymeter.ntk.coverage(model, x1)
    assert_exact(model, x1, x2)
    # nn.Linear and its other subclasses keep the built-in rule.
    assert lazymeter.ntk.RULES[nn.Linear] is linear_rule
    plain = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), TaggedLinear(3, 2)).double()
    assert lazymeter.ntk.explain(plain, x1)["2.weight"].rule == "Linear"


def test_the_docs_show_these_examples():
    """docs/extending.md's code is this file's (decorators aside), so neither drifts."""
    import ast
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "extending.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)

    def defs(source):
        out = {}
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                node.decorator_list = []
                out[node.name] = ast.dump(node)
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                out[node.targets[0].id] = ast.dump(node)
        return out

    documented = {}
    for block in blocks:
        documented.update(defs(block))
    with open(__file__) as f:
        here = defs(f.read())
    names = ["Projection", "projection_rule", "TaggedLinear", "ScaledLinear"]
    names += ["linear_rule", "scaled_linear_rule"]
    for name in names:
        assert documented[name] == here[name], name
