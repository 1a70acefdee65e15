"""No hidden global side effects: library calls leave the matplotlib backend, pyplot's global
figure state and torch's thread count as they found them."""

from __future__ import annotations

import importlib
import json
import math
import os
import pkgutil
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import lazymeter
from lazymeter.threads import torch_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Polynomial task, smoke-sized (as in test_cli.py).


def _modules() -> list[str]:
    """Every module of the package (``__main__`` modules run the command line: left out)."""
    names = [m.name for m in pkgutil.walk_packages(lazymeter.__path__, "lazymeter.")]
    return sorted(n for n in names if n.rsplit(".", 1)[-1] != "__main__")


def _import_all() -> list[str]:
    """Import every module; a module whose optional third-party dependency is missing (an
    integration) is skipped. Returns the imported names."""
    done = []
    for name in _modules():
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] == "lazymeter":
                raise
            continue
        done.append(name)
    return done


def _history() -> list[dict[str, float]]:
    """A tiny fake run history with every key the figures draw."""
    rows = []
    for i, step in enumerate([0, 1, 2, 4, 8, 16, 32, 64]):
        d = 1.0 / (1 + i)
        rows.append(
            {
                "step": step,
                "train_loss": d**2,
                "test_loss": d,
                "lin_train_loss": 1.1 * d**2,
                "lin_test_loss": 1.1 * d,
                "k0_test_mse": 0.5,
                "alignment_train": 0.2 + 0.05 * i,
                "alignment_test": 0.1 + 0.05 * i,
                "ntk_drift": 0.01 * (1 + i),
                "ntk_cka": 1.0 - 0.01 * i,
                "param_movement": 0.02 * (1 + i),
                "decomp_variance": 0.1 * d,
                "decomp_misalignment": 0.2 * d,
                "decomp_linear": 0.3 * d,
            }
        )
    return rows


SUMMARY = {
    "k0_test_mse": 0.5,
    "time_to_grok": {"train_step": 4.0, "test_step": 16.0, "ratio": 4.0},
    "config": {"alpha": 1.0, "eps": 0.1},
}


def _plot(tmp: str) -> list[str]:
    """The library's figure calls on fake data: ``plots.paper_figure``, ``plots.plot_run``
    and ``report.write_report`` on a one-run directory. Returns the PNG paths."""
    from paper.figures import paper_figure

    from lazymeter.plots import plot_run
    from lazymeter.report import write_report

    hist = _history()
    run_dir = os.path.join(tmp, "run")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "history.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in hist)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(SUMMARY, f)
    fig_png = os.path.join(tmp, "figure.png")
    paper_figure(hist, SUMMARY, fig_png)
    run_png = os.path.join(tmp, "run.png")
    plot_run(run_dir).savefig(run_png)
    report_png, _ = write_report([run_dir], os.path.join(tmp, "report"))
    return [fig_png, run_png, report_png]


@pytest.fixture
def two_threads():
    """Run the test at two torch threads (so that a switch to one shows), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ matplotlib


def test_importing_every_module_and_plotting_keeps_the_matplotlib_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    assert len(_import_all()) > 10
    for png in _plot(str(tmp_path)):
        assert os.path.getsize(png) > 10_000
    assert matplotlib.get_backend() == before


def test_library_figures_use_neither_matplotlib_use_nor_pyplot(tmp_path):
    """In a fresh interpreter (pytest or another test may have imported pyplot here): the
    user's backend choice survives, and pyplot, whose global figure registry leaks figures
    that are not closed, is never imported by the library."""
    pytest.importorskip("matplotlib")
    script = textwrap.dedent(
        f"""
        import importlib, sys
        import matplotlib
        matplotlib.use("svg")  # the user's choice; a library must not switch it
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        sys.path.insert(0, {os.path.join(ROOT, "examples")!r})  # the paper's figure
        import test_side_effects as t

        # Lightning imports pyplot itself (a third-party import, not the library's).
        names = [n for n in t._modules() if n != "lazymeter.integrations.lightning"]
        for name in names:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if (e.name or "").split(".")[0] == "lazymeter":
                    raise
        t._plot({str(tmp_path)!r})
        # The meter's TensorBoard figures (spectrum) are rendered without pyplot too.
        import torch
        import lazymeter as lm
        x = torch.randn(12, 3, dtype=torch.float64)
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        meter = lm.LazyMeter(net.double(), probe=(x, x.sum(1, keepdim=True)),
                             log_dir={str(tmp_path / "tb")!r},
                             sinks=[lm.TensorBoardSink(figures=True)])
        meter.measure()
        meter.close()
        assert "matplotlib.pyplot" not in sys.modules, "the library imported matplotlib.pyplot"
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("MPLBACKEND", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------- torch threads


def test_torch_threads_restores_the_count(two_threads):
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == two_threads
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == two_threads
    for n in (None, 0, -1):  # leave the count alone
        with torch_threads(n):
            assert torch.get_num_threads() == two_threads
    assert torch.get_num_threads() == two_threads


def test_a_run_on_fewer_threads_restores_the_count(two_threads, tmp_path):
    pytest.importorskip("matplotlib")  # the polynomial task draws its figure
    from paper.harness import preset, run

    s = run("polynomial", preset("polynomial", "smoke"), str(tmp_path), progress=False, threads=1)
    assert torch.get_num_threads() == two_threads
    assert math.isfinite(s["final_test_loss"])
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "figure.png").stat().st_size > 1e4


def test_a_worker_job_runs_on_one_thread_even_when_it_fails(two_threads, monkeypatch):
    from paper import harness

    seen = []

    def fake_run(task, cfg, out, progress, figure):
        seen.append((torch.get_num_threads(), progress, figure))
        if cfg == "fail":
            raise RuntimeError("diverged")
        return {"ok": 1}

    monkeypatch.setattr(harness, "run", fake_run)
    assert harness._run_job_quiet(("a", "polynomial", "cfg", None)) == {"name": "a", "ok": 1}
    with pytest.raises(RuntimeError, match="diverged"):
        harness._run_job_quiet(("b", "polynomial", "fail", None))
    assert seen == [(1, False, False)] * 2
    assert torch.get_num_threads() == two_threads


GLOBAL_MPL = re.compile(
    r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot"
)


def test_no_library_module_switches_the_backend_or_uses_pyplot():
    """Every figure in the package (the tasks' too, which the test above does not draw) is a
    ``matplotlib.figure.Figure`` of its own: no ``matplotlib.use``, no pyplot."""
    package = os.path.join(ROOT, "lazymeter")
    offenders = []
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                if GLOBAL_MPL.search(open(path, encoding="utf-8").read()):
                    offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
