"""No public call changes the user's model (issue: aliased submodules lost their
Parameters), on every test architecture, and training after the calls is bit-identical
to training without them."""

from __future__ import annotations

import os

import pytest
import torch
from architectures import INTEGRITY_ARCHITECTURES, STATEFUL_ARCHITECTURES, naive_ntk
from integrity import ModelState, trains_every_used_parameter

import lazymeter as lm
from lazymeter.ntk import coverage, select_method
from lazymeter.ntk.functional import call_with

ZOO = {**INTEGRITY_ARCHITECTURES, **STATEFUL_ARCHITECTURES}
ARCHS = sorted(ZOO)
#: (architecture, call) pairs that must fail, each with a clear error: no forward-mode AD
#: for torch._weight_norm, which the NTK-vector engine needs.
EXPECTED_ERRORS = {
    ("weight_norm_parametrized", "ntk[ntvp]"): "forward-mode AD",
    ("weight_norm_hook", "ntk[ntvp]"): "forward-mode AD",
    ("weight_norm_parametrized", "ntk_alignment[matrix_free]"): "method: 'matrix_free' needs",
    ("weight_norm_hook", "ntk_alignment[matrix_free]"): "method: 'matrix_free' needs",
}


def public_calls(model, x1, x2, output_fn, tmp_path):
    """``(name, thunk)`` for every public call that takes the model."""
    with torch.random.fork_rng(), torch.no_grad():  # a shape, not a step of the model's
        out = call_with(model, {}, (x1,))  # on copies of the buffers
    out = output_fn(out) if output_fn else out
    # Probes of >= 5 points (unbiased alignment with its standard error needs 5).
    px, tx = torch.cat([x1, x2]), torch.cat([x2, x1[:2]])
    g = torch.Generator().manual_seed(0)
    y = torch.randn((px.shape[0], *out.shape[1:]), dtype=torch.float64, generator=g)
    y2 = torch.randn((tx.shape[0], *out.shape[1:]), dtype=torch.float64, generator=g)
    yv = torch.randn(px.shape[0], dtype=torch.float64, generator=g)
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
        ("explain", lambda: lm.ntk.explain(model, x1, **kw)),
        (
            "ntk_alignment",
            lambda: lm.ntk_alignment(model, px, yv, method="dense", estimator="biased", **kw),
        ),
        (
            "ntk_alignment[matrix_free]",
            lambda: lm.ntk_alignment(
                model, px, yv, method="matrix_free", estimator="biased", rows=5, **kw
            ),
        ),
    ]
    state: dict = {}

    def construct():
        state["meter"] = lm.LazyMeter(
            model,
            alpha=3.0,
            probe=lm.ProbeSet((px, y), test=(tx, y2)),
            schedule=1,
            log_dir=tmp_path / "run",
            quantities=lm.quantities.default(linearized=True, **kw),
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
    model, x1, x2, output_fn = ZOO[arch]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # built before any lazymeter call
    for name, call in public_calls(model, x1, x2, output_fn, tmp_path):
        before = ModelState(model)
        expected = EXPECTED_ERRORS.get((arch, name))
        if expected is None:
            call()
        else:
            with pytest.raises(Exception, match=expected):
                call()
        before.assert_same(own_forward=name == "meter(x)")  # that one runs the user's forward
    trains_every_used_parameter(model, opt, x1, output_fn)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_with_interleaved_calls_is_bit_identical(arch, tmp_path):
    (a, x1, x2, output_fn), (b, *_) = (ZOO[arch]() for _ in range(2))
    opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (a, b)]
    calls = public_calls(a, x1, x2, output_fn, tmp_path)
    for step in range(2):
        start = torch.get_rng_state()
        for name, call in calls:
            if (arch, name) not in EXPECTED_ERRORS and (step == 0 or name != "LazyMeter()"):
                call()
        after_calls = torch.get_rng_state()
        torch.set_rng_state(start)
        with torch.no_grad():  # b runs what the calls ran of the user's own: meter(x)'s forward
            b(x1)
        # The calls drew from the RNG exactly what the user's forward draws alone.
        assert torch.equal(torch.get_rng_state(), after_calls), "lazymeter advanced the RNG"
        for m, opt in zip((a, b), opts, strict=True):
            torch.set_rng_state(after_calls)  # the same dropout masks for both
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


# ------------------------------------------------------------------ the robustness page's table
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
BEGIN = "<!-- integrity-table: generated by tests/test_integrity.py; a test checks it -->"
END = "<!-- integrity-table:end -->"


def integrity_table() -> str:
    """The table of docs/robustness.md: every public call the tests above make, on every
    architecture of the zoo, and where a call is a clear error instead."""
    model, x1, x2, output_fn = ZOO["mlp"]()
    names = [name for name, _ in public_calls(model, x1, x2, output_fn, "unused")]
    lines = [
        BEGIN,
        f"Models ({len(ZOO)}): " + ", ".join(f"`{a}`" for a in ARCHS) + ".",
        "",
        "| public call | a result, the model left exactly as it was | a clear error instead, "
        "the model left exactly as it was |",
        "|---|---|---|",
    ]
    for name in names:
        errors = sorted((a, m) for (a, n), m in EXPECTED_ERRORS.items() if n == name)
        ok = len(ZOO) - len(errors)
        said = "; ".join(f'`{a}` ("{m}")' for a, m in errors) or "none"
        what = f"{ok} of {len(ZOO)}"
        if name == "meter(x)":  # it runs the user's forward: buffers and RNG as that leaves them
            what += " (buffers, RNG: as by the model's own forward)"
        lines.append(f"| `{name}` | {what} | {said} |")
    lines.append(END)
    return "\n".join(lines)


def test_the_robustness_page_shows_the_integrity_table_of_these_tests():
    """Regenerate with ``LAZYMETER_WRITE_DOCS=1 pytest tests/test_integrity.py -k page``."""
    path = os.path.join(DOCS, "robustness.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    table = integrity_table()
    if os.environ.get("LAZYMETER_WRITE_DOCS"):
        start, stop = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + table + text[stop:]
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    assert table in text, "docs/robustness.md: rerun with LAZYMETER_WRITE_DOCS=1"
