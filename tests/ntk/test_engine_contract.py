"""The engine protocol: every engine states applicability, cost, chunk plan and compute;
``method="auto"`` takes the applicable engine with the lowest estimated cost, a newly
registered one included, and ``api.py`` names no engine."""

import inspect

import pytest
import torch
from architectures import ARCHITECTURES, INTEGRITY_ARCHITECTURES, naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import (
    ENGINES,
    Engine,
    FunctionalModel,
    choose_engine,
    register_engine,
    select_method,
    unregister_engine,
)


class Toy(Engine):
    """The Jacobian engine under another name, with a lower cost estimate."""

    def __init__(self, cost=0.0, reason=None):
        self.calls = 0
        self._cost, self._reason = cost, reason

    def applicable(self, fm, x1, n_out):
        return self._reason

    def cost(self, fm, x1, n2, n_out, trace):
        return self._cost * ENGINES["jacobian"].cost(fm, x1, n2, n_out, trace)

    def compute(self, fm, x1, x2, *, n_out, trace, chunk_size, budget):
        self.calls += 1
        return ENGINES["jacobian"].compute(
            fm, x1, x2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
        )


@pytest.fixture
def toy():
    engine = Toy()
    register_engine("toy", engine)
    try:
        yield engine
    finally:
        unregister_engine("toy")
    assert "toy" not in ENGINES


def test_every_built_in_engine_implements_the_protocol():
    assert {"jacobian", "ntvp", "structured"} <= set(ENGINES)
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    fm = FunctionalModel(model)
    for name, engine in ENGINES.items():
        assert isinstance(engine, Engine) and engine.name == name
        assert engine.applicable(fm, (x1,), 3) is None  # an MLP: every engine applies
        assert engine.cost(fm, (x1,), None, 3, True) >= 0
        assert 1 <= engine.plan_chunk(fm, (x1,), n_out=3, trace=True, budget=2**20, n_samples=5)
        K = engine.compute(fm, (x1,), None, n_out=3, trace=True, chunk_size=5, budget=2**20)
        torch.testing.assert_close(K, naive_ntk(model, x1), rtol=0, atol=1e-10)


def test_api_names_no_engine():
    source = inspect.getsource(lm.ntk.api) + inspect.getsource(lm.ntk.exact)
    for name in ("structured", "jacobian", "ntvp"):
        assert name not in source, name


def test_auto_picks_a_newly_registered_cheaper_engine(toy):
    model, x1, x2, output_fn = ARCHITECTURES["attention"]()
    assert select_method(model, x1, output_fn=output_fn) == "toy"
    K = lm.empirical_ntk(model, x1, x2, output_fn=output_fn)
    assert toy.calls == 1
    ref = naive_ntk(model, x1, x2, output_fn)
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-8 * max(1.0, ref.abs().max().item()))
    # On a model the rules cover, the structured engine's estimate (no generic part) is 0:
    # the toy at a tenth of the Jacobian estimate does not beat it.
    toy._cost = 0.1
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    assert select_method(model, x1) == "structured"
    # Not applicable: skipped whatever its cost.
    toy._cost, toy._reason = 0.0, "toy says no"
    model, x1 = Warped(), torch.randn(5, 4, dtype=torch.float64)
    assert select_method(model, x1) == "jacobian"


def test_auto_with_nothing_applicable_names_each_reason(monkeypatch):
    monkeypatch.setattr(lm.ntk.engines, "ENGINES", {"toy": Toy(reason="toy says no")})
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    with pytest.raises(ValueError, match="toy: toy says no"):
        choose_engine(FunctionalModel(model), (x1,), None, 3, True)


def test_a_plain_function_engine_still_registers_and_auto_prefers_estimated_engines():
    model, x1, _, _ = ARCHITECTURES["mlp"]()
    calls = []

    @register_engine("plain")
    def plain(fm, x1, x2, *, n_out, trace, chunk_size, budget):
        calls.append(chunk_size)
        return ENGINES["jacobian"](
            fm, x1, x2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
        )

    try:
        assert callable(plain) and ENGINES["plain"].name == "plain"
        K = lm.empirical_ntk(model, x1, method="plain")
        assert calls == [5]  # the default plan: every Jacobian fits the default budget
        torch.testing.assert_close(K, naive_ntk(model, x1), rtol=0, atol=1e-10)
        assert select_method(model, x1) == "structured"  # no estimate: cost inf
    finally:
        unregister_engine("plain")


@pytest.mark.parametrize("arch", ["weight_norm_parametrized", "weight_norm_hook"])
def test_ntvp_states_why_it_does_not_apply(arch):
    model, x1, _, _ = INTEGRITY_ARCHITECTURES[arch]()
    fm = FunctionalModel(model)
    if fm.supports_forward_ad((x1,)):
        pytest.skip("this torch has a forward-mode AD formula for weight norm")
    assert "forward-mode AD" in ENGINES["ntvp"].applicable(fm, (x1,), fm.num_outputs((x1,)))
    assert select_method(model, x1, trace_outputs=False) != "ntvp"


class Warped(nn.Module):
    """Most entries in a raw parameter used through ``tanh`` (no operator rule)."""

    def __init__(self):
        super().__init__()
        self.raw = nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
        self.head = nn.Linear(6, 2).double()

    def forward(self, x):
        return self.head(x @ torch.tanh(self.raw))


def test_structured_states_why_it_does_not_apply():
    model, x = Warped(), torch.randn(5, 4, dtype=torch.float64)
    fm = FunctionalModel(model)
    why = ENGINES["structured"].applicable(fm, (x,), 2)
    assert "37%" in why and "explain" in why


def test_structured_cost_is_below_every_generic_estimate_where_it_applies():
    torch.manual_seed(0)

    class Half(nn.Module):  # half of the entries in a raw parameter no rule covers
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4, bias=False).double()
            self.raw = nn.Parameter(torch.randn(4, 4, dtype=torch.float64))

        def forward(self, x):
            return torch.tanh(self.lin(x)) @ torch.sinh(self.raw)

    model, x = Half(), torch.randn(5, 4, dtype=torch.float64)
    fm = FunctionalModel(model)
    structured = ENGINES["structured"]
    assert structured.applicable(fm, (x,), 4) is None
    generic = [ENGINES[n].cost(fm, (x,), None, 4, True) for n in ("jacobian", "ntvp")]
    assert 0 < structured.cost(fm, (x,), None, 4, True) <= 0.5 * min(generic)
    assert select_method(model, x) == "structured"
    K = lm.empirical_ntk(model, x)
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)


def test_register_engine_refuses_auto_and_non_engines():
    with pytest.raises(ValueError, match="auto"):
        register_engine("auto", Toy())
    with pytest.raises(TypeError, match="Engine"):
        register_engine("bad", 3)
    assert "bad" not in ENGINES
