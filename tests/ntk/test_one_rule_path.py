"""One rule mechanism (issue 28, item 2): every layer's maths is an operator rule, the
built-in module rules only name the operation, a user's module rule is one operation of
the same capture, and ``Engine.compute(..., groups=None)`` is the one engine entry.

Kernels are checked in float64 against a naive loop of ``torch.autograd.grad`` per
sample and output."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lazymeter as lm
from lazymeter.ntk import ENGINES, RULES, explain, register_engine, unregister_engine
from lazymeter.ntk.engines import ContractionEngine, JacobianEngine, LoopEngine


def naive(model, x):
    """``K[i, j] = sum_o <d f_o(x_i)/d theta, d f_o(x_j)/d theta>`` by autograd, one
    sample and output at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(x)):
        out = model(x[i : i + 1]).reshape(-1)
        grads = [torch.autograd.grad(out[o], params, retain_graph=True) for o in range(len(out))]
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
    J = torch.stack(rows)  # [P, O, n]
    return torch.einsum("ion,jon->ij", J, J)


def assert_exact(model, x):
    K = lm.empirical_ntk(model, x, method="structured")
    ref = naive(model, x)
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-9 * max(1.0, ref.abs().max().item()))


class RawGroupedConv(nn.Module):
    """A grouped convolution written with ``F.conv2d`` on raw parameters: no module rule
    can see it; before, the operator rule refused ``groups > 1`` (generic engine)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 2, 3, 3) / 3)
        self.b = nn.Parameter(torch.randn(6) / 3)

    def forward(self, x):
        return F.conv2d(x, self.w, self.b, padding=1, groups=2)


GROUPED = {
    "raw_groups_2": lambda: nn.Sequential(
        RawGroupedConv(), nn.Tanh(), nn.Flatten(), nn.Linear(96, 2)
    ),
    "conv2d_groups_2": lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Tanh(), nn.Flatten(), nn.Linear(96, 2)
    ),
    "depthwise_2d": lambda: nn.Sequential(
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4, padding_mode="reflect"),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16, 2),
    ),
    "depthwise_1d": lambda: nn.Sequential(
        nn.Conv1d(4, 8, 3, groups=4, dilation=2), nn.Tanh(), nn.Flatten(), nn.Linear(0, 2)
    ),
    "conv_transpose_groups_2": lambda: nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(294, 2),
    ),
}


@pytest.mark.parametrize("name", list(GROUPED))
def test_grouped_convolutions_take_the_operator_rule_and_are_exact(name):
    torch.manual_seed(0)
    model = GROUPED[name]()
    if name == "depthwise_1d":  # 4 channels x 4 positions in, (4 - 4) out: size the head
        model[3] = nn.Linear(8 * 4, 2)
        x = torch.randn(5, 4, 8)
    else:
        x = torch.randn(5, 4, 4, 4)
    model = model.double()
    x = x.double()
    ex = explain(model, x)
    assert ex.covered == 1.0
    conv = ex.rows[0]
    assert conv.ops and conv.ops[0].startswith("conv"), conv  # the one path: an operator
    assert_exact(model, x)


def test_norm_layers_are_operator_rules():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(64, 6),
        nn.RMSNorm(6),
        nn.LayerNorm(6),
        nn.Linear(6, 2),
    ).double()
    model[3].running_mean.uniform_(-1, 1)
    model[3].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    ex = explain(model, x)
    assert ex.covered == 1.0
    assert ex["1.weight"].route == "ops group_norm" and ex["3.bias"].route == "ops batch_norm"
    assert ex["6.weight"].route == "ops rms_norm" and ex["7.weight"].route == "ops layer_norm"
    assert_exact(model, x)


def test_built_in_module_rules_only_name_their_operation():
    assert RULES[nn.Linear].op == "linear" and RULES[nn.Conv2d].op == "conv2d"
    assert RULES[nn.Embedding].op == "embedding" and RULES[nn.GroupNorm].op == "group_norm"
    # Built on by users (docs/extending.md): the rule runs the operator rule's maths.
    torch.manual_seed(2)
    layer = nn.Conv2d(4, 6, 3, groups=2).double()
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    forms = RULES[nn.Conv2d](layer, (x,), layer(x))
    g = torch.randn(3, 1, *layer(x).shape[1:], dtype=torch.float64)  # one output
    J = forms["weight"](g).J.reshape(3, *layer.weight.shape)
    for i in range(3):
        ref = torch.autograd.grad(layer(x[i : i + 1]), layer.weight, g[i])[0]
        torch.testing.assert_close(J[i], ref)


def test_a_user_module_rule_is_one_operation_of_the_capture():
    """A module rule's layer is computed by its rule; a parameter that layer also uses
    outside (tied) adds the operator rule's use to it, exactly."""

    class Scale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.s = nn.Parameter(torch.randn(d))

        def forward(self, x):
            return torch.addcmul(torch.zeros_like(x), x, self.s)  # no operator rule

    def scale_rule(m, args, out):
        x = args[0]
        return {
            "s": lambda g: lm.ntk.Dense(
                (g * x[:, None]).reshape(*g.shape[:2], -1, x.shape[-1]).sum(2)
            )
        }

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = Scale(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.tanh(self.scale(x)) + self.scale.s)

    torch.manual_seed(3)
    model, x = Net().double(), torch.randn(5, 3, 4, dtype=torch.float64)
    assert not explain(model, x)["scale.s"].ruled
    lm.ntk.register_rule(Scale)(scale_rule)
    try:
        r = explain(model, x)["scale.s"]
        assert r.ruled and r.rule == "Scale" and r.ops == ("add",)
        out = lambda y: y.sum(1)  # noqa: E731
        K = lm.empirical_ntk(model, x, output_fn=out, method="structured")
        ref = naive(nn.Sequential(model, Sum()), x)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-9 * ref.abs().max().item())
    finally:
        lm.ntk.unregister_rule(Scale)


class Sum(nn.Module):
    def forward(self, y):
        return y.sum(1)


# --- one engine entry ---------------------------------------------------------------------
def test_jacobian_and_loop_share_one_contraction():
    assert isinstance(ENGINES["jacobian"], ContractionEngine)
    assert isinstance(ENGINES["loop"], ContractionEngine)
    for cls in (JacobianEngine, LoopEngine):
        assert "compute" not in vars(cls) and not hasattr(cls, "compute_groups")


@pytest.mark.parametrize("kind", ["without_groups", "legacy_compute_groups", "function"])
def test_engines_without_groups_still_give_per_layer_kernels(kind):
    calls = []

    class Plain(lm.ntk.Engine):
        def compute(self, fm, x1, x2, *, n_out, trace, chunk_size, budget):
            calls.append(sorted(fm.params))
            return ENGINES["jacobian"].compute(
                fm, x1, x2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
            )

    class Legacy(Plain):
        def compute_groups(self, fm, x1, x2, *, groups, **kw):
            calls.append("groups")
            return ENGINES["jacobian"].compute(fm, x1, x2, groups=groups, **kw)

    def fn(fm, x1, x2, *, n_out, trace, chunk_size, budget):
        calls.append(sorted(fm.params))
        return ENGINES["jacobian"].compute(
            fm, x1, x2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
        )

    engine = {"without_groups": Plain(), "legacy_compute_groups": Legacy(), "function": fn}[kind]
    register_engine("user", engine)
    try:
        torch.manual_seed(4)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        x = torch.randn(4, 3, dtype=torch.float64)
        K = lm.empirical_ntk(model, x, method="user", per_layer=True)
        ref = lm.empirical_ntk(model, x, method="jacobian", per_layer=True)
    finally:
        unregister_engine("user")
    for k in ref:
        torch.testing.assert_close(K[k], ref[k])
    if kind == "legacy_compute_groups":
        assert calls == ["groups"]
    else:  # one call per layer, each on that layer's parameters
        assert calls == [["0.bias", "0.weight"], ["2.bias", "2.weight"]]
