"""The task harness: one loop, one summary writer, one set of flags for every experiment."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from example_scripts import EXAMPLES
from paper import TASKS
from paper.cli import main, parse_run
from paper.harness import Setup, Task, field_help, load_task, option, run, run_many
from torch import nn


@dataclass
class ToyConfig:
    """Linear regression on 32 points; ``lr`` large enough to diverge on request."""

    steps: int = option(20, "GD steps")
    lr: float = option(0.1, "learning rate")
    seed: int = option(0, "seed")
    device: str = option("cpu", "device")

    @classmethod
    def paper(cls, **kw):
        return cls(**{"steps": 40, **kw})

    @classmethod
    def smoke(cls, **kw):
        return cls(**{"steps": 5, **kw})


def toy_build(cfg: ToyConfig) -> Setup:
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(32, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    model = nn.Linear(3, 1)
    mse = lambda m: ((m(x).squeeze(-1) - y) ** 2).mean()  # noqa: E731
    seen = []
    return Setup(
        model=model,
        meter=dict(alpha=1.0, center=False, probe=(x, y), schedule=10, quantities=[]),
        steps=cfg.steps,
        loss=lambda meter, i: (seen.append(i), mse(meter))[1],
        measure=lambda meter: {"train_loss": mse(meter).item()},
        optimizer=lambda meter: torch.optim.SGD(meter.parameters(), lr=cfg.lr),
        step_unit=2.0,
        data={"seen": seen},
    )


def toy_summarize(cfg, meter, setup):
    return {"final_train_loss": meter.history[-1]["train_loss"], "iters": setup.data["seen"]}


TOY = Task("toy", "linear regression", ToyConfig, build=toy_build, summarize=toy_summarize)
TOY_SWEEP = Task(
    "toy_sweep",
    "two toy runs",
    ToyConfig,
    runs=lambda cfg: [(f"lr{lr}", TOY, dataclasses.replace(cfg, lr=lr)) for lr in (0.05, 0.1)],
    combine=lambda cfg, subs: {"losses": [s["final_train_loss"] for s in subs]},
)


def test_fit_runs_steps_plus_one_iterations_and_reports_scaled_steps(tmp_path):
    s = run(TOY, ToyConfig(steps=20), str(tmp_path), progress=False)
    assert s["iters"] == list(range(21))  # the last iteration only measures
    assert [r["step"] for r in s["history"]] == list(range(0, 41, 10))  # step = 2 i, every 10
    assert s["history"][-1]["train_loss"] < 0.01 * s["history"][0]["train_loss"]


def test_summary_json_is_strict_and_names_what_differs_from_the_paper(tmp_path):
    s = run(TOY, ToyConfig(steps=20, lr=1e9), str(tmp_path), progress=False)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))
    assert data["preset_differences"] == {
        "steps": {"value": 20, "paper": 40},
        "lr": {"value": 1e9, "paper": 0.1},
    }
    assert "history" not in data and s["history"]


def test_a_diverging_run_stops_with_a_warning_and_keeps_its_rows():
    with pytest.warns(RuntimeWarning, match="diverged"):
        s = run(TOY, ToyConfig(steps=2000, lr=10.0), progress=False)
    assert len(s["iters"]) < 2000
    assert s["history"]


def test_a_multi_run_task_runs_its_sub_runs_in_order_into_their_directories(tmp_path):
    s = run(TOY_SWEEP, ToyConfig(), str(tmp_path), progress=False)
    assert [r["name"] for r in s["runs"]] == ["lr0.05", "lr0.1"]
    assert s["losses"][1] < s["losses"][0]  # a larger lr has gone further in 20 steps
    assert (tmp_path / "lr0.05" / "history.jsonl").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][0]["name"] == "lr0.05"


def test_run_many_keeps_job_order():
    jobs = [(f"j{k}", TOY, ToyConfig(steps=k), None) for k in (3, 1, 2)]
    out = run_many(jobs, progress=False)
    assert [len(r["iters"]) for r in out] == [4, 2, 3]


def test_a_task_must_say_what_it_runs_and_carry_seed_device_and_presets():
    with pytest.raises(TypeError, match="either build"):
        Task("x", "", ToyConfig, summarize=toy_summarize)

    @dataclass
    class NoSeed:
        device: str = "cpu"

    with pytest.raises(TypeError, match="seed"):
        Task("x", "", NoSeed, build=toy_build)
    with pytest.raises(TypeError, match="mutable"):
        option([1, 2], "a list")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_documents_every_option_and_has_both_presets(name):
    task = load_task(name)
    assert task.name and task.description
    for f in dataclasses.fields(task.config):
        assert field_help(f), f"{name}: --{f.name} has no help text"
    assert isinstance(task.config.paper(), task.config)
    assert isinstance(task.config.smoke(), task.config)


def test_run_help_shows_each_option_with_its_default_and_the_papers(capsys):
    with pytest.raises(SystemExit):
        main(["run", "polynomial", "--help"])
    out = capsys.readouterr().out
    assert "hidden width" in out and "--smoke" in out and "--full" in out
    assert "default 20.0, paper 1.0" in out  # lr_scale


def test_flags_start_from_the_chosen_preset():
    cfg, _ = parse_run("polynomial", ["--smoke", "--alpha", "3", "--seed", "4"])
    assert (cfg.D, cfg.alpha, cfg.seed) == (10, 3.0, 4)
    cfg, _ = parse_run("polynomial", ["--full"])
    assert cfg.epochs == 100_000 and cfg.lr_scale == 1.0
    with pytest.raises(SystemExit):
        parse_run("polynomial", ["--full", "--smoke"])


def test_experiments_run_without_matplotlib_and_say_there_is_no_figure(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "from paper.cli import main\n"
        f"raise SystemExit(main(['run', 'polynomial', '--smoke', '--out', r'{tmp_path}',"
        " '--no-progress']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "matplotlib is not installed" in done.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["figure"] is None
    assert not (tmp_path / "figure.png").exists()


def test_the_docs_task_of_your_own_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "examples.md"
    block = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)[0]
    block = block.replace("Config(), ", "Config.smoke(), ")  # seconds, not the default budget
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "docs/examples.md", "exec"), namespace)  # noqa: S102
    summary = namespace["summary"]
    assert summary["final"] < summary["history"][0]["train_loss"]
    assert (tmp_path / "runs" / "mine" / "summary.json").exists()
