"""Memory budget of the NTK engines: the environment variable, size strings, block sizes
that shrink with the budget (same kernel), row panels, and the scaling benchmark's smoke run."""

import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.ntk import (
    MEMORY_BUDGET_ENV,
    blocks,
    default_memory_budget,
    engines,
    plan,
    structured,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mlp(d_in=20, width=24, n_out=3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d_in, width),
        nn.Tanh(),
        nn.Linear(width, width),
        nn.Tanh(),
        nn.Linear(width, n_out),
    ).double()


@pytest.fixture
def spy(monkeypatch):
    """Records each ``blocked_kernel`` call: block size, and the caching / panel verdicts."""
    calls = []
    inner = engines.blocked_kernel

    def wrapped(x1, x2, chunk_size, **kw):
        rec = {"chunk": chunk_size, "cache": kw["cache_cols"], "panel": kw.get("panel", 1)}
        calls.append(rec)
        for name in ("cache_cols", "panel"):
            fn = kw.get(name)
            if callable(fn):

                def verdict(first, fn=fn, name=name):
                    rec["cache" if name == "cache_cols" else name] = out = fn(first)
                    return out

                kw[name] = verdict
        return inner(x1, x2, chunk_size, **kw)

    monkeypatch.setattr(engines, "blocked_kernel", wrapped)
    monkeypatch.setattr(structured, "blocked_kernel", wrapped)
    return calls


def test_env_var_sets_the_default_budget(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "3MiB")
    assert default_memory_budget() == 3 * 2**20
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1.5e6")
    assert default_memory_budget() == 1_500_000


def test_the_default_budget_is_a_quarter_of_the_available_ram_on_the_cpu(monkeypatch):
    """A quarter of MemAvailable (or of what a cgroup limit leaves), at most the CPU cap,
    never below the floor, and said where it came from."""
    from lazymeter.ntk import budget as B

    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    monkeypatch.setattr(B, "available_ram", lambda: 2 * 2**30)
    assert default_memory_budget() == 2**29
    assert B.resolve_budget(None, "cpu") == (2**29, "25% of 2 GiB available RAM")
    monkeypatch.setattr(B, "available_ram", lambda: 20 * 2**30)  # larger blocks stop paying
    assert B.resolve_budget(None, "cpu") == (2**30, "the CPU cap (1 GiB; 20 GiB RAM available)")
    monkeypatch.setattr(B, "available_ram", lambda: 2**20)  # a nearly full machine
    assert default_memory_budget("cpu") == B.MIN_BUDGET
    monkeypatch.setattr(B, "available_ram", lambda: None)  # nothing readable
    assert default_memory_budget() == B.DEFAULT_MEMORY_BUDGET
    assert B.resolve_budget("2GiB", "cpu") == (2 * 2**30, "memory_budget='2GiB'")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1GiB")  # the variable beats the device
    assert B.resolve_budget(None, "cpu") == (2**30, "$LAZYMETER_MEMORY_BUDGET=1GiB")


def test_available_ram_reads_this_machine():
    from lazymeter.ntk.budget import available_ram

    ram = available_ram()
    assert ram is None or 0 < ram  # Linux: MemAvailable (capped by a cgroup limit)


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "-1MiB", "0"])
def test_malformed_env_var_raises_naming_it(monkeypatch, bad):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, bad)
    with pytest.raises(ValueError, match=MEMORY_BUDGET_ENV):
        default_memory_budget()
    with pytest.raises(ValueError, match=MEMORY_BUDGET_ENV):
        lm.empirical_ntk(nn.Linear(2, 1), torch.randn(3, 2))


@pytest.mark.parametrize(
    "method, P, budgets",
    [
        ("jacobian", 48, (2_000_000, 1_000_000, 400_000)),
        ("structured", 96, (400_000, 100_000, 30_000)),
    ],
)
def test_smaller_budget_smaller_blocks_same_kernel(monkeypatch, spy, method, P, budgets):
    model, x = _mlp(), torch.randn(P, 20, dtype=torch.float64)
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    ref = lm.empirical_ntk(model, x, method=method, memory_budget="1GiB")
    assert spy[-1]["chunk"] == P  # everything fits: one block
    chunks = []
    for budget in budgets:
        K = lm.empirical_ntk(model, x, method=method, memory_budget=budget)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-10 * float(ref.abs().max()))
        chunks.append(spy[-1]["chunk"])
    assert chunks == sorted(chunks, reverse=True) and chunks[-1] < chunks[0] < P, chunks
    # The environment variable sets the same blocks when no argument is given.
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(budgets[-1]))
    K = lm.empirical_ntk(model, x, method=method)
    assert spy[-1]["chunk"] == chunks[-1]
    torch.testing.assert_close(K, ref, rtol=0, atol=1e-10 * float(ref.abs().max()))


def test_budget_string_form(spy):
    model, x = _mlp(), torch.randn(64, 20, dtype=torch.float64)
    K1 = lm.empirical_ntk(model, x, method="jacobian", memory_budget="1MiB")
    c1 = spy[-1]["chunk"]
    K2 = lm.empirical_ntk(model, x, method="jacobian", memory_budget=2**20)
    assert spy[-1]["chunk"] == c1 < 64
    torch.testing.assert_close(K1, K2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="memory budget"):
        lm.empirical_ntk(model, x, memory_budget="1 furlong")


def test_structured_budget_counts_kept_features(spy):
    """Column features are kept only when they fit beside one block's work; otherwise row
    panels are sized from what is left. Both give the reference kernel."""
    model, x = _mlp(), torch.randn(200, 20, dtype=torch.float64)
    ref = lm.empirical_ntk(model, x, method="jacobian", memory_budget="1GiB")
    fm = lm.ntk.FunctionalModel(model)
    features, work, pair = plan.costs(fm, (x,), n_out=3, trace=True)
    assert features > 0 and work > 0
    verdicts = []
    for budget in (2_000_000, 300_000, 60_000):
        K = lm.empirical_ntk(model, x, method="structured", memory_budget=budget)
        torch.testing.assert_close(K, ref, rtol=0, atol=1e-10 * float(ref.abs().max()))
        rec = spy[-1]
        c = rec["chunk"]
        assert plan.block_work(fm, (x,), n_out=3, trace=True, c=c, single=c == 200) <= budget
        if rec["cache"] is True:  # kept features + one block's work within the budget
            assert (
                200 * features + plan.block_work(fm, (x,), n_out=3, trace=True, c=c)
                <= 1.05 * budget
            )
        verdicts.append((c, rec["cache"], rec["panel"]))
    assert verdicts[0][0] == 200 or verdicts[0][1] is True
    assert any(v[1] is False and v[2] > 1 for v in verdicts), verdicts  # panels were used


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("trace", [True, False])
def test_row_panels_compute_columns_once_per_panel(symmetric, trace):
    torch.manual_seed(3)
    x1 = (torch.randn(10, 4, dtype=torch.float64),)
    x2 = None if symmetric else (torch.randn(7, 4, dtype=torch.float64),)
    W = torch.randn(4, 6, 2, dtype=torch.float64)
    counts = {"col": 0}

    def feats(xs):
        return torch.einsum("nd,dpo->nop", xs[0], W)  # [n, O, p]

    def col(xs):
        counts["col"] += 1
        return feats(xs)

    def pair(a, b):
        return blocks.contract([a], [b], trace)

    common = dict(trace=trace, n_out=2, like=x1[0], pair_fn=pair, cache_cols=False)
    f = feats if symmetric else col  # symmetric: the row features serve as columns
    K1 = blocks.blocked_kernel(x1, x2, 3, row_fn=feats, col_fn=f, panel=1, **common)
    one = counts["col"]
    counts["col"] = 0
    K4 = blocks.blocked_kernel(x1, x2, 3, row_fn=feats, col_fn=f, panel=4, **common)
    torch.testing.assert_close(K4, K1, rtol=0, atol=0)
    full = feats(x1)
    ref = blocks.contract([full], [full if symmetric else feats(x2)], trace)
    torch.testing.assert_close(K1, ref, rtol=0, atol=1e-12)
    if not symmetric:  # 4 row blocks x 3 column blocks: once per row block, once per panel
        assert (one, counts["col"]) == (12, 3)


def test_scaling_benchmark_smoke(tmp_path):
    docs, fig = tmp_path / "performance.md", tmp_path / "figures" / "scaling.png"
    docs.write_text(
        "# Perf\n\nkept above\n\n<!-- ntk_scaling:begin (old) -->\nold section\n"
        "<!-- ntk_scaling:end -->\n\nkept below\n"
    )
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "ntk_scaling.py"), "--tiny"]
    cmd += ["--write-docs", "--docs", str(docs), "--figure", str(fig), "--budget", "64MiB"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    found = re.findall(r"against (P|width)\s+(.+?)\s+time exponent\s+(-?[\d.]+)", proc.stdout)
    assert {(s, m.strip()) for s, m, _ in found} >= {
        ("P", "mlp structured"),
        ("P", "mlp jacobian"),
        ("width", "mlp structured"),
    }
    assert all(abs(float(e)) < 10 for *_, e in found)
    text = docs.read_text()
    assert "old section" not in text and "kept above" in text and "kept below" in text
    assert text.count("ntk_scaling:begin") == 1 and text.count("ntk_scaling:end") == 1
    assert "| P | mlp | structured | 64 |" in text and "memory budget 64 MiB" in text
    assert fig.exists() and fig.stat().st_size > 1000


def test_the_plan_lays_features_out_for_the_block_it_picks():
    """Whether a layer is contracted pairwise or materialised depends on the block size,
    and the features' size on that choice: the block planned must fit with its own layout
    (the largest such block), not with a fixed guess that materialises everything."""
    from paper.transformer import RawTransformer

    from lazymeter.ntk.functional import FunctionalModel
    from lazymeter.ntk.plan import _plan, costs, plan

    torch.manual_seed(0)
    model = RawTransformer(50, 32, 2, 64, 6, n_classes=50)
    x = torch.randint(0, 50, (64, 6))
    fm = FunctionalModel(model, lambda y: y[:, -1])
    budget = 64 * 2**20
    c = plan(fm, (x,), n_out=50, trace=True, budget=budget, n_samples=64)
    kw = dict(n_out=50, trace=True, budget=budget, n_samples=64)
    assert _plan(fm, (x,), layout=c, **kw) >= c  # fits as it will be laid out
    assert c == 64 or _plan(fm, (x,), layout=2 * c, **kw) < 2 * c  # and is the largest
    small, large = (costs(fm, (x,), n_out=50, trace=True, c=k)[0] for k in (4, 128))
    assert small < large  # pairwise (small blocks) keeps far less per sample
    assert c > _plan(fm, (x,), layout=128, **kw)  # the old fixed guess gave smaller blocks


def test_activation_bytes_count_what_grows_with_the_batch():
    """Copies of the parameters (an einsum's permuted weight) are not per-sample memory:
    the raw-parameter transformer and its module twin save the same bytes per sample."""
    from paper.transformer import RawTransformer, Transformer

    from lazymeter.ntk.functional import FunctionalModel

    torch.manual_seed(0)
    t = Transformer(30, 32, 2, 64, 3, n_classes=30)
    raw = RawTransformer.from_modules(t)
    x = torch.randint(0, 30, (4, 3))
    a, b = (FunctionalModel(m).activation_bytes((x,)) for m in (t, raw))
    assert abs(a - b) <= 0.1 * a


def test_the_meter_and_explain_say_which_budget_engine_and_blocks_are_used(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randn(40, 2, dtype=torch.float64)
    meter = lm.LazyMeter(
        model, probe=lm.ProbeSet((x, y), max_points=32), log_dir=tmp_path,
        ntk=lm.NTKOptions(method="jacobian", memory_budget="16KiB"),
    )  # fmt: skip
    info = meter.ntk_plan
    assert info["memory_budget"] == 16 * 2**10 and info["budget_source"] == "memory_budget='16KiB'"
    assert 1 <= info["chunk_size"] < 32 and info["blocks"] == -(-32 // info["chunk_size"])
    with open(tmp_path / "meta.json") as f:  # what the numbers depend on: not the budget
        assert json.load(f)["ntk_engine"] == meter.ntk_engine
    found = lm.ntk.kernel_plan(model, x[:32], memory_budget=16384, method="jacobian")
    assert found["chunk_size"] == info["chunk_size"] and found["budget_source"].endswith("16 KiB")
    assert "RAM" in lm.ntk.kernel_plan(model, x)["budget_source"]  # from this machine
    assert "memory budget" in str(lm.ntk.explain(model, x))
    assert lm.ntk.explain(model, x).plan["engine"] == lm.ntk.select_method(model, x)


def test_planner_benchmark_smoke_sweeps_block_sizes_and_reports_peak_ratios():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "ntk_planner.py"), "--tiny"]
    cmd += ["--cases", "b", "--repeats", "1", "--smallest", "2MiB", "--largest", "64MiB"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if proc.returncode == 2:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(
        r"^\| \(b\) (\w+) \| .+? \| (\d+) \| (\d+) \| .+ \| (-?[\d.]+) \|$", proc.stdout, re.M
    )
    blocks = {int(c) for _, c, _, _ in rows}
    assert len(blocks) >= 2 and max(blocks) == 96, proc.stdout  # chunked and one block
    assert len(rows) == len(blocks)  # one row per block size, each with a peak ratio
    assert "peak predictions outside [0.5, 2]:" in proc.stdout
