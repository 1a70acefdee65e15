"""Operator-level rules: raw parameters used directly in operations (``einsum``, ``@``,
``addmm``, indexing, broadcasting arithmetic), followed through views, with several uses
of one parameter adding up. Every kernel is checked against the per-sample autograd loop
at 1e-8 (float64), traced and untraced, and every route is named by ``explain``."""

import math

import pytest
import torch
import torch.nn.functional as F
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import coverage, explain
from lazymeter.ntk.ops import OP_RULES, register_op_rule


class Fn(nn.Module):
    """A model given as ``forward(params, x)`` over raw parameters of the given shapes."""

    def __init__(self, forward, **shapes):
        super().__init__()
        self.fn = forward
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.randn(*shape, dtype=torch.float64)))

    def forward(self, x):
        return self.fn(self, x)


def floats(*shape):
    return lambda: torch.randn(*shape, dtype=torch.float64)


def tokens(*shape, high=7):
    return lambda: torch.randint(0, high, shape)


# name: (forward, parameter shapes, inputs, operations expected per parameter)
CASES = {
    "linear_transposed_view": (
        lambda m, x: torch.tanh(x @ m.W.T) @ m.V,
        dict(W=(5, 4), V=(5, 3)),
        floats(6, 4),
        dict(W=("matmul",), V=("matmul",)),
    ),
    "F.linear_with_raw_bias": (
        lambda m, x: F.linear(torch.tanh(F.linear(x, m.W, m.b)), m.V),
        dict(W=(5, 4), b=(5,), V=(2, 5)),
        floats(6, 3, 4),
        dict(W=("linear",), b=("linear",), V=("linear",)),
    ),
    "addmm_like_hf_conv1d": (
        lambda m, x: torch.addmm(m.b, torch.tanh(x), m.W).sin(),
        dict(W=(4, 3), b=(3,)),
        floats(6, 4),
        dict(W=("addmm",), b=("addmm",)),
    ),
    "einsum_heads_in_the_output": (
        lambda m, x: torch.einsum("btd,hde->bhte", x, m.W).tanh().sum((1, 2)),
        dict(W=(2, 4, 3)),
        floats(5, 3, 4),
        dict(W=("einsum",)),
    ),
    "einsum_heads_contracted_and_ellipsis": (
        lambda m, x: torch.einsum("...hte,hed->...td", x, m.W).tanh()[:, -1],
        dict(W=(2, 3, 4)),
        floats(5, 2, 3, 3),
        dict(W=("einsum",)),
    ),
    "bmm_broadcast_against_a_batched_parameter": (
        lambda m, x: torch.matmul(x.unsqueeze(1), m.W).tanh().flatten(1),
        dict(W=(2, 4, 3)),
        floats(5, 6, 4),
        dict(W=("matmul",)),
    ),
    "parameter_on_the_left": (
        lambda m, x: (m.W @ x).tanh().flatten(1),
        dict(W=(3, 4)),
        floats(5, 4, 2),
        dict(W=("matmul",)),
    ),
    "table_lookup_and_position_slice": (
        lambda m, x: ((m.E[x] + m.P[: x.shape[1]]).tanh() @ m.U)[:, -1],
        dict(E=(7, 4), P=(5, 4), U=(4, 7)),
        tokens(6, 3),
        dict(E=("__getitem__",), P=("add",), U=("matmul",)),
    ),
    "lookup_along_dim_1_like_nanda": (
        lambda m, x: m.E[:, x].permute(1, 2, 0).tanh().sum(1),
        dict(E=(4, 7)),
        tokens(6, 3),
        dict(E=("__getitem__",)),
    ),
    "embedding_with_padding_and_index_select": (
        lambda m, x: (
            F.embedding(x, m.E, padding_idx=0).tanh().sum(1) + m.E.index_select(0, x[:, 0]).cos()
        ),
        dict(E=(7, 3)),
        tokens(6, 3),
        dict(E=("embedding", "index_select")),
    ),
    "tied_embedding_and_unembedding": (
        lambda m, x: m.E[x].tanh().mean(1) @ m.E.T,
        dict(E=(7, 4)),
        tokens(6, 3),
        dict(E=("__getitem__", "matmul")),
    ),
    "packed_projection_chunked": (
        lambda m, x: sum((x @ w.T).tanh() * k for k, w in enumerate(m.W.chunk(3), 1)).flatten(1),
        dict(W=(6, 4)),
        floats(5, 2, 4),
        dict(W=("matmul",)),
    ),
    "scales_shifts_and_signs": (
        lambda m, x: (torch.tanh(x * m.g - m.b) / 2 - m.c).neg() * 3 + m.g / 4,
        dict(g=(4,), b=(1, 4), c=(4,)),
        floats(5, 2, 4),
        dict(g=("mul", "div"), b=("sub",), c=("sub",)),
    ),
    "two_parameters_in_one_product": (
        lambda m, x: torch.tanh(x @ (m.A @ m.B)) @ m.A.T[:3, :2],
        dict(A=(4, 4), B=(4, 3)),
        floats(5, 4),
        dict(A=("matmul",), B=("matmul",)),
    ),
    "expanded_parameter_repeats_entries": (
        lambda m, x: torch.tanh(x * m.w.expand(3, 4)).flatten(1),
        dict(w=(1, 4)),
        floats(5, 3, 4),
        dict(w=("mul",)),
    ),
    "functional_conv2d_same_padding_strided": (
        lambda m, x: torch.tanh(
            F.conv2d(torch.tanh(F.conv2d(x, m.W, m.b, padding="same", dilation=2)), m.V, stride=2)
        ).flatten(1),
        dict(W=(3, 2, 2, 3), b=(3,), V=(2, 3, 3, 3)),
        floats(5, 2, 6, 6),
        dict(W=("conv2d",), b=("conv2d",), V=("conv2d",)),
    ),
    "functional_conv1d_padded": (
        lambda m, x: torch.tanh(F.conv1d(x, m.W, m.b, padding=1)).mean(-1),
        dict(W=(3, 2, 3), b=(3,)),
        floats(5, 2, 7),
        dict(W=("conv1d",), b=("conv1d",)),
    ),
    "functional_layer_norm": (
        lambda m, x: F.layer_norm(x, (4,), m.w, m.b).tanh()[:, -1],
        dict(w=(4,), b=(4,)),
        floats(5, 3, 4),
        dict(w=("layer_norm",), b=("layer_norm",)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("trace", [True, False])
def test_operator_rules_are_exact(case, trace):
    forward, shapes, inputs, ops = CASES[case]
    torch.manual_seed(0)
    model, x1, x2 = Fn(forward, **shapes), inputs(), inputs()[:3]
    ex = explain(model, x1)
    for name, expected in ops.items():
        assert ex[name].ruled and ex[name].ops == expected, ex[name]
    assert coverage(model, x1) == 1.0
    for b in (x2, None):
        K = lm.empirical_ntk(model, x1, b, method="structured", trace_outputs=trace)
        ref = naive_ntk(model, x1, b, trace=trace)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))


def test_small_blocks_give_the_same_kernel():
    forward, shapes, inputs, _ = CASES["tied_embedding_and_unembedding"]
    torch.manual_seed(1)
    model, x = Fn(forward, **shapes), tokens(11, 3)()
    K = lm.empirical_ntk(model, x, method="structured", chunk_size=3)
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)


REFUSED = {
    "nonlinear_function_of_a_parameter": (
        lambda m, x: x @ torch.tanh(m.W),
        "used by tanh, which has no operator rule",
    ),
    "parameter_in_a_denominator": (lambda m, x: x / m.W[0], "a parameter in a denominator"),
    "reduction_of_a_parameter": (lambda m, x: x * m.W.sum(0), "used by sum"),
    "per_head_weights_on_per_head_inputs": (
        lambda m, x: torch.einsum("bhd,hd->bh", x.reshape(-1, 2, 2), m.W.reshape(2, -1)[:, :2]),
        "in the parameter, the input and the output",
    ),
    "concatenated_with_an_input": (
        lambda m, x: torch.cat([x, m.W[0:1].expand(x.shape[0], -1)], 1).sum(1, keepdim=True),
        "cat joins it with a tensor that is not a parameter",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_uses_without_a_rule_go_to_the_generic_engine_with_the_reason(case):
    forward, why = REFUSED[case]
    torch.manual_seed(2)
    model = Fn(forward, W=(4, 4))
    x = torch.randn(5, 4, dtype=torch.float64)
    r = explain(model, x)["W"]
    assert not r.ruled and r.route == "generic" and why in r.reason
    K = lm.empirical_ntk(model, x, method="structured")
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)


def test_a_wrong_operator_rule_is_caught_by_the_exactness_guard():
    from lazymeter.ntk.ops import products

    def doubled(args, kwargs, find, out):  # claims y = 2 x W: wrong by a factor of 2
        uses = products.einsum(args, kwargs, find, out)
        for u in uses:
            make = u.build
            u.build = lambda ts, g, make=make: make(ts, 2 * g)
        return uses

    torch.manual_seed(3)
    model = Fn(CASES["einsum_heads_in_the_output"][0], W=(2, 4, 3))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    lm.ntk.clear_caches()
    register_op_rule("einsum")(doubled)
    try:
        r = explain(model, x)["W"]
        assert not r.ruled and "exactness guard" in r.reason
        K = lm.empirical_ntk(model, x, method="structured")
    finally:
        register_op_rule("einsum")(products.einsum)
    assert OP_RULES["einsum"] is products.einsum
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)
    assert explain(model, x)["W"].ruled  # the route is keyed by the rule table


def test_raw_parameter_transformer_equals_its_module_twin():
    from paper.transformer import RawTransformer, Transformer

    torch.manual_seed(4)
    t = Transformer(13, 8, 2, 16, 3, n_classes=13).double()
    raw = RawTransformer.from_modules(t)
    x1, x2 = torch.randint(0, 13, (6, 3)), torch.randint(0, 13, (4, 3))
    last = lambda y: y[:, -1]  # noqa: E731
    torch.testing.assert_close(t(x1), raw(x1))
    ex = explain(raw, x1, output_fn=last)
    assert ex.covered == 1.0 and all(r.ops for r in ex.rows)
    for trace in (True, False):
        K = lm.empirical_ntk(raw, x1, x2, output_fn=last, trace_outputs=trace)
        ref = naive_ntk(raw, x1, x2, last, trace)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * ref.abs().max().item())
        twin = lm.empirical_ntk(t, x1, x2, output_fn=last, trace_outputs=trace)
        torch.testing.assert_close(K, twin, rtol=0, atol=1e-8 * ref.abs().max().item())
    assert lm.ntk.select_method(raw, x1, output_fn=last) == "structured"
    assert math.isfinite(float(K.sum()))


def test_the_documented_operator_rule_covers_tensordot():
    """docs/extending.md's operator rule, run as written."""
    import re
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "extending.md").read_text()
    block = re.findall(r"```python\n(.*?)```", docs.split("## A new operator rule")[1], re.S)[0]
    torch.manual_seed(5)
    model = Fn(lambda m, x: torch.tanh(torch.tensordot(x, m.W, dims=1)).sum(1), W=(4, 3))
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    assert not explain(model, x)["W"].ruled
    try:
        exec(block, {})  # registers the rule
        r = explain(model, x)["W"]
        assert r.ruled and r.ops == ("tensordot",)
        K = lm.empirical_ntk(model, x, method="structured")
    finally:
        del OP_RULES["tensordot"]
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)


def test_a_raw_tied_language_model_is_covered_and_exact():
    from architectures import INTEGRITY_ARCHITECTURES

    model, x1, x2, _ = INTEGRITY_ARCHITECTURES["raw_parameters"]()
    ex = explain(model, x1)
    assert ex.covered == 1.0 and ex["W_E"].ops == ("__getitem__", "matmul")
    for trace in (True, False):
        K = lm.empirical_ntk(model, x1, x2, trace_outputs=trace)
        ref = naive_ntk(model, x1, x2, trace=trace)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * ref.abs().max().item())


def test_a_tied_table_is_contracted_with_cross_terms_not_scattered(monkeypatch):
    """A token table that is also the unembedding: lookup and product in one layout are
    paired with their cross terms; the [c, O, V d] Jacobian is never formed (traced)."""
    from lazymeter.ntk import forms

    forward, shapes, inputs, _ = CASES["tied_embedding_and_unembedding"]
    torch.manual_seed(6)
    model, x1, x2 = Fn(forward, **shapes), inputs(), inputs()[:4]
    fs = forms.parts
    seen = []
    monkeypatch.setattr(
        "lazymeter.ntk.structured.parts", lambda f, n: seen.append(fs(f, n)) or seen[-1]
    )
    K = lm.empirical_ntk(model, x1, x2, method="structured", chunk_size=2)
    assert any(isinstance(p, forms.Tied) for ps in seen for p in ps)
    ref = naive_ntk(model, x1, x2)
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * ref.abs().max().item())


def test_a_layer_that_runs_but_does_not_reach_the_output():
    """BERT's pooler behind a ``last_hidden_state`` readout: its parameters have zero
    gradient; routing must not fail on them (autograd calls them unused)."""

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.pool = nn.Linear(4, 4), nn.Linear(4, 4)
            self.raw = nn.Parameter(torch.randn(4, 2))

        def forward(self, x):
            h = torch.tanh(self.body(x))
            self.pooled = self.pool(h)  # computed, not part of the output
            return h @ self.raw

    torch.manual_seed(7)
    model, x = Pooled().double(), torch.randn(5, 4, dtype=torch.float64)
    assert coverage(model, x) == 1.0
    K = lm.empirical_ntk(model, x)
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)
