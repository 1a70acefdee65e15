"""``method="auto"`` that knows the device: where tuning is on, the applicable engines are
timed once on a trial block per (signature, size bucket) and the fastest is kept; where it
is off (the CPU by default) the FLOP model decides; ``method=`` always forces."""

import copy
import time

import pytest
import torch
from architectures import naive_ntk
from torch import nn

import lazymeter as lm
from lazymeter.ntk import ENGINES, Engine, register_engine, select_method, tuning, unregister_engine


class Timed(Engine):
    """The Jacobian engine under another name: a cost estimate below every engine's and a
    chosen delay per call, so that the FLOP model and the clock disagree."""

    def __init__(self, delay: float, fail: bool = False):
        self.delay, self.fail, self.calls = delay, fail, 0

    def applicable(self, fm, x1, n_out):
        return None

    def cost(self, fm, x1, n2, n_out, trace):
        return -1.0  # the FLOP model's favourite

    def compute(self, fm, x1, x2, *, n_out, trace, chunk_size, budget):
        self.calls += 1
        if self.fail:
            raise RuntimeError("no batching rule for this op")
        time.sleep(self.delay)
        return ENGINES["jacobian"].compute(
            fm, x1, x2, n_out=n_out, trace=trace, chunk_size=chunk_size, budget=budget
        )


@pytest.fixture
def slow():
    engine = Timed(delay=0.3)
    register_engine("slow", engine)
    try:
        yield engine
    finally:
        unregister_engine("slow")


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    return model, torch.randn(12, 5, dtype=torch.float64)


def test_tuning_on_takes_the_fastest_engine_not_the_flop_models_favourite(slow, monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    model, x = _model()
    K = lm.empirical_ntk(model, x)
    torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)
    assert slow.calls == 2  # the FLOP model's favourite: a warm-up and a timed trial
    plan = lm.ntk.kernel_plan(model, x)
    assert plan["engine"] != "slow"
    assert plan["choice"].startswith("fastest in a trial on 12 samples (cpu)")
    assert plan["choice"].index(plan["engine"]) < plan["choice"].index("slow ")
    assert select_method(model, x) == plan["engine"]
    assert f"engine {plan['engine']!r} (fastest in a trial" in str(lm.ntk.explain(model, x))
    lm.empirical_ntk(model, x)
    assert slow.calls == 2  # remembered: no second trial, the slow engine never runs again


def test_tuning_off_keeps_the_flop_models_choice_and_times_nothing(slow, monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "off")
    model, x = _model()
    lm.empirical_ntk(model, x)
    assert slow.calls == 1 and select_method(model, x) == "slow"
    assert lm.ntk.kernel_plan(model, x)["choice"] == "the lowest estimated cost (FLOP model)"


def test_the_cpu_default_is_the_flop_model_and_cuda_is_timed(monkeypatch):
    monkeypatch.delenv(tuning.AUTOTUNE_ENV, raising=False)
    assert not tuning.enabled("cpu") and tuning.enabled("cuda")
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "sometimes")
    with pytest.raises(ValueError, match="LAZYMETER_AUTOTUNE"):
        tuning.enabled("cpu")


def test_a_forced_method_is_never_timed(slow, monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    model, x = _model()
    lm.empirical_ntk(model, x, method="slow")
    assert slow.calls == 1
    assert lm.ntk.kernel_plan(model, x, method="slow")["choice"] == "forced by method='slow'"
    assert model not in lm.ntk.CACHE.tunings


def test_a_whole_kernel_trial_is_the_answer_and_a_block_of_a_larger_one_is_not(monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    fast = Timed(delay=0.0)
    register_engine("fast", fast)
    try:
        model, x = _model()
        K = lm.empirical_ntk(model, x)
        if select_method(model, x) == "fast":
            assert fast.calls == 2  # warm-up and timed trial; the trial's kernel returned
        torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)
        big = torch.randn(tuning.TRIAL_POINTS + 6, 5, dtype=torch.float64)
        calls = fast.calls
        K = lm.empirical_ntk(model, big)  # another size bucket: tuned again, on 64 samples
        trials = [t for ts in lm.ntk.CACHE.tunings[model].values() for t in ts]
        assert {t.points for t in trials} == {12, tuning.TRIAL_POINTS}
        torch.testing.assert_close(K, naive_ntk(model, big), rtol=0, atol=1e-10)
        if select_method(model, big) == "fast":
            assert fast.calls == calls + 3  # two trials, then the whole kernel
    finally:
        unregister_engine("fast")


def test_an_engine_that_fails_its_trial_is_passed_over(monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    broken = Timed(delay=0.0, fail=True)
    register_engine("broken", broken)
    try:
        model, x = _model()
        K = lm.empirical_ntk(model, x)
        torch.testing.assert_close(K, naive_ntk(model, x), rtol=0, atol=1e-10)
        assert broken.calls == 1 and select_method(model, x) != "broken"
        assert "broken failed (no batching rule" in lm.ntk.kernel_plan(model, x)["choice"]
    finally:
        unregister_engine("broken")


def test_the_same_size_bucket_reuses_the_choice(slow, monkeypatch):
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    model, x = _model()
    lm.empirical_ntk(model, x)
    lm.empirical_ntk(model, x[:9])  # 9 and 12 share the bucket [8, 16)
    assert slow.calls == 2 and len(lm.ntk.CACHE.tunings[model]) == 1
    assert [tuning.size_bucket(n) for n in (1, 8, 15, 16)] == [1, 4, 4, 5]


def test_a_candidate_far_slower_in_its_warm_up_is_not_timed_and_failures_are_noted():
    calls = []

    def run(name):
        calls.append(name)
        if name == "broken":
            raise NotImplementedError("no forward-mode AD")
        time.sleep({"fast": 0.01, "slow": 0.3, "nan": 0.0}[name])
        return torch.full((2, 2), float("nan") if name == "nan" else 1.0)

    finite = lambda K: bool(torch.isfinite(K).all())  # noqa: E731
    order = ["fast", "slow", "broken", "nan"]
    trials, K = tuning.time_engines(order, run, points=2, device=torch.device("cpu"), finite=finite)
    assert calls == ["fast", "fast", "slow", "broken", "nan"]
    assert [t.engine for t in trials] == order and trials[0].seconds is not None
    assert [t.note.split(" ")[0] for t in trials[1:]] == ["dropped", "failed", "non-finite"]
    assert torch.equal(K, torch.ones(2, 2))
    line = tuning.describe(trials, torch.device("cpu"))
    assert line.startswith("fastest in a trial on 2 samples (cpu): fast ")
    assert "slow dropped (warm-up" in line


def test_choice_and_plan_of_a_half_precision_model_are_those_of_its_float32_kernel(monkeypatch):
    """A bfloat16 model's kernel runs on a float32 cast copy: select_method and kernel_plan
    look there too (they planned blocks at 2 bytes an entry, and ran a trial of their own)."""
    monkeypatch.setenv(tuning.AUTOTUNE_ENV, "on")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 64), nn.Tanh(), nn.Linear(64, 3))
    x = torch.randn(40, 5)
    half = copy.deepcopy(model).to(torch.bfloat16)
    lm.empirical_ntk(half, x)
    assert len(lm.ntk.CACHE.tunings.get(half, {})) == 0  # the trial ran on the cast copy
    ran = next(iter(lm.ntk.CACHE.methods[lm.ntk.CACHE.casts[half]].values()))
    assert select_method(half, x) == ran
    budget = 64 * 2**10
    plan = lm.ntk.kernel_plan(half, x, memory_budget=budget, method="jacobian")
    twin = lm.ntk.kernel_plan(model, x, memory_budget=budget, method="jacobian")
    assert plan["chunk_size"] == twin["chunk_size"] < 40
    assert plan["predicted_peak"] == twin["predicted_peak"]
