"""No public call changes the user's model (issue: aliased submodules lost their
Parameters), on every test architecture, and training after the calls is bit-identical
to training without them."""

from __future__ import annotations

import pytest
import torch
from architectures import INTEGRITY_ARCHITECTURES, naive_ntk
from integrity import ModelState, trains_every_used_parameter

import lazymeter as lm
from lazymeter.ntk import coverage, select_method

ARCHS = sorted(INTEGRITY_ARCHITECTURES)
#: (architecture, call) pairs that must fail, each with a clear error: no forward-mode AD
#: for torch._weight_norm, which the NTK-vector engine needs.
EXPECTED_ERRORS = {
    ("weight_norm_parametrized", "ntk[ntvp]"): "forward-mode AD",
    ("weight_norm_hook", "ntk[ntvp]"): "forward-mode AD",
}


def public_calls(model, x1, x2, output_fn, tmp_path):
    """``(name, thunk)`` for every public call that takes the model."""
    out = model(x1)
    out = output_fn(out) if output_fn else out
    y = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y2 = torch.randn((x2.shape[0], *out.shape[1:]), dtype=torch.float64)
    kw = {"output_fn": output_fn}
    calls = [
        (f"ntk[{m}]", lambda m=m: lm.empirical_ntk(model, x1, x2, method=m, **kw))
        for m in ("jacobian", "ntvp", "structured", "auto")
    ]
    calls += [
        (
            "ntk[symmetric, untraced]",
            lambda: lm.empirical_ntk(model, x1, trace_outputs=False, **kw),
        ),
        ("ntk[float32 copy]", lambda: lm.empirical_ntk(model, x1, dtype=torch.float32, **kw)),
        ("select_method", lambda: select_method(model, x1, **kw)),
        ("coverage", lambda: coverage(model)),
        ("coverage[x]", lambda: coverage(model, x1, **kw)),
    ]
    state: dict = {}

    def construct():
        state["meter"] = lm.LazyMeter(
            model,
            alpha=3.0,
            probe=(x1, y),
            test_probe=(x2, y2),
            schedule=1,
            log_dir=tmp_path / "run",
            linearized=True,
            **kw,
        )

    def forward():
        with torch.no_grad():
            state["meter"](x1)

    def load():
        sd = state["meter"].state_dict()
        state["meter"].load_state_dict(sd)

    calls += [
        ("LazyMeter()", construct),
        ("meter(x)", forward),
        ("measure", lambda: state["meter"].measure()),
        ("step", lambda: state["meter"].step(train_loss=1.0)),
        ("state_dict/load_state_dict", load),
        ("close", lambda: state["meter"].close()),
    ]
    return calls


@pytest.mark.parametrize("arch", ARCHS)
def test_no_public_call_changes_the_model(arch, tmp_path):
    model, x1, x2, output_fn = INTEGRITY_ARCHITECTURES[arch]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # built before any lazymeter call
    for name, call in public_calls(model, x1, x2, output_fn, tmp_path):
        before = ModelState(model)
        expected = EXPECTED_ERRORS.get((arch, name))
        if expected is None:
            call()
        else:
            with pytest.raises(Exception, match=expected):
                call()
        before.assert_same(attributes=name != "meter(x)")  # that one is the user's forward
    trains_every_used_parameter(model, opt, x1, output_fn)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_with_interleaved_calls_is_bit_identical(arch, tmp_path):
    (a, x1, x2, output_fn), (b, *_) = (INTEGRITY_ARCHITECTURES[arch]() for _ in range(2))
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (a, b)]
    calls = public_calls(a, x1, x2, output_fn, tmp_path)
    for step in range(2):
        for name, call in calls:
            if (arch, name) not in EXPECTED_ERRORS and (step == 0 or name != "LazyMeter()"):
                call()
        for m, opt in zip((a, b), opts, strict=True):
            opt.zero_grad()
            out = m(x1)
            ((output_fn(out) if output_fn else out) ** 2).sum().backward()
            opt.step()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{n}: training diverged after lazymeter calls"


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "structured"])
def test_aliased_submodule_kernel_is_exact_and_repeatable(method):
    model, x1, x2, _ = INTEGRITY_ARCHITECTURES["aliased"]()
    ref = naive_ntk(model, x1, x2)
    for _ in range(2):  # the second call used to fail ("no parameters with requires_grad")
        K = lm.empirical_ntk(model, x1, x2, method=method)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-12)


def test_aliased_and_tied_coverage_counts_each_parameter_once():
    model, x, *_ = INTEGRITY_ARCHITECTURES["aliased"]()
    assert coverage(model) == 1.0 and coverage(model, x) == 1.0
    model, x, *_ = INTEGRITY_ARCHITECTURES["tied"]()
    tied = model.emb.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    assert coverage(model) == pytest.approx(1 - tied / total)  # the tied table: generic


def test_ntvp_names_the_missing_forward_mode_rule_and_auto_avoids_it():
    model, x1, *_ = INTEGRITY_ARCHITECTURES["weight_norm_parametrized"]()
    with pytest.raises(NotImplementedError, match="method='jacobian' or 'structured'"):
        lm.empirical_ntk(model, x1, method="ntvp")
    assert select_method(model, x1) != "ntvp"
