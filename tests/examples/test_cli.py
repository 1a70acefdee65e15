"""The paper's command line (`python -m examples.paper`), the `lazymeter` command (run
reports), and the regime read-out."""

import json
import math
import re
import subprocess
import sys

import pytest
from example_scripts import EXAMPLES
from paper.cli import main

from lazymeter.cli import main as lazymeter_main
from lazymeter.regime import RegimeThresholds, classify, grokking_onset
from lazymeter.report import load_run, write_report

SMALL = [
    "--D",
    "10",
    "--P",
    "40",
    "--P-test",
    "50",
    "--N",
    "20",
    "--epochs",
    "60",
    "--lr-scale",
    "2",
    "--per-decade",
    "4",
    "--linearized",
    "false",
]


def test_tasks_is_a_short_table_and_tasks_name_gives_a_tasks_options(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) < 20, out
    table = {line.split()[0]: line for line in lines[1 : lines.index("")]}
    # one line per task an example script runs: its name, the script, what it is
    assert "examples/polynomial_regression.py" in table["polynomial"] and "Figure 1" in out
    assert "examples/mnist.py" in table["mnist"]
    assert set(table) == {
        "polynomial", "alpha_eps", "decomposition", "modular_mlp", "transformer_modular",
        "student_teacher", "init_scale", "mnist", "eigenlabels",
    }  # fmt: skip
    assert "mnist_run" not in out and "--lr-scale" not in out  # internal tasks, options: hidden
    assert "tasks NAME" in out and "tasks --all" in out

    assert main(["tasks", "polynomial"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("polynomial: Figure 1")
    assert "--alpha" in out and "--lr-scale" in out and "examples/polynomial_regression.py" in out

    assert main(["tasks", "--all"]) == 0
    assert "mnist_run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["tasks", "nosuchtask"])


def _nan_words(text: str) -> list[str]:
    return re.findall(r"\bnan\b", text, flags=re.IGNORECASE)


def test_a_crossing_that_is_not_reached_prints_as_not_reached_never_nan(tmp_path, capsys):
    # the train loss falls below 0.9 x its start, the test loss (which rises) never does
    argv = [*SMALL, "--threshold", "0.9", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(["run", "polynomial", *argv]) == 0
    out = capsys.readouterr().out
    assert "train loss < 0.9 x start: at epoch" in out
    assert "test loss: not reached;" in out
    assert _nan_words(out) == [], out
    printed = json.loads(out[: out.index("\n}\n") + 2])  # the summary, strict JSON
    assert printed["time_to_grok"]["test_step"] is None
    assert printed["time_to_grok"]["ratio"] is None


def test_the_figure_title_says_not_reached(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from paper.figures import paper_figure

    titles = []
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: titles.append(fig.axes[0].get_title())
    )
    hist = [{"step": s, "train_loss": 1.0 / s, "test_loss": 1.0} for s in (1, 2, 4)]
    for ratio in (None, math.nan, 3.52):
        summary = {"config": {"alpha": 1.0, "eps": 0.02}, "time_to_grok": {"ratio": ratio}}
        paper_figure(hist, summary, str(tmp_path / "f.png"))
    assert titles == [
        "alpha=1.0, eps=0.02: grokking delay not reached",
        "alpha=1.0, eps=0.02: grokking delay not reached",
        "alpha=1.0, eps=0.02: grokking delay 3.5x",
    ]


def test_run_writes_a_run_directory_and_report_reads_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["run", "polynomial", *SMALL, "--alpha", "2", "--out", str(out), "--no-progress"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["alpha"] == 2.0 and summary["config"]["D"] == 10
    assert lazymeter_main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep.html").read_text()
    assert "data:image/png;base64," in page and "grokking_onset" in page
    assert (tmp_path / "rep.png").stat().st_size > 10_000


def test_sweep_runs_the_grid_in_processes_and_reports_overlaid_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert (
        main(["sweep", "polynomial", *SMALL, "--alpha", "1,2", "--out", str(out), "--workers", "2"])
        == 0
    )
    printed = capsys.readouterr().out  # no run of 60 epochs halves its test loss
    assert "/not reached" in printed  # the test-loss crossing
    assert _nan_words(printed) == [], printed
    results = json.loads((out / "sweep.json").read_text())
    assert [r["values"]["alpha"] for r in results] == [1.0, 2.0]
    dirs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [d.name for d in dirs] == ["alpha=1.0", "alpha=2.0"]
    png, page = write_report([str(d) for d in dirs], str(tmp_path / "overlay"))
    text = open(page).read()
    assert "alpha=1.0" in text and "alpha=2.0" in text


def test_python_dash_m_examples_paper_is_the_command_from_a_checkout_and_the_folder_too(
    tmp_path,
):
    root = EXAMPLES.parent
    done = subprocess.run(
        [sys.executable, "-m", "examples.paper", "tasks", "polynomial"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    assert "polynomial:" in done.stdout and "--lr-scale" in done.stdout
    done = subprocess.run(  # the folder run as a script, from elsewhere
        [sys.executable, str(EXAMPLES / "paper"), "run", "polynomial", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "python -m examples.paper run polynomial" in done.stdout and "--alpha" in done.stdout


def test_lazymeter_run_sweep_and_tasks_point_to_the_examples_command(capsys):
    for argv in (["tasks"], ["run", "polynomial", "--alpha", "2"], ["sweep", "mnist"]):
        assert lazymeter_main(argv) == 2
        err = capsys.readouterr().err
        assert f"python -m examples.paper {' '.join(argv)}" in err and "checkout" in err
    done = subprocess.run(
        [sys.executable, "-m", "lazymeter", "run", "polynomial"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "python -m examples.paper run polynomial" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "lazymeter", "--help"], capture_output=True, text=True, check=True
    )
    assert "report" in done.stdout and "python -m examples.paper" in done.stdout


def test_report_errors_name_the_path_and_the_fix(tmp_path, capsys):
    assert lazymeter_main(["report", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no history.jsonl"):
        load_run(str(tmp_path / "empty"))


def test_bad_flag_values_are_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "polynomial", "--alpha", "abc"])
    assert e.value.code == 2
    assert "--alpha: expected a float, got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "nosuchtask"])


def row(step, cka=1.0, move=0.0, align=0.0, align0=0.0, test=1.0, se=0.0, drift=0.0):
    return {
        "step": step,
        "ntk_drift": drift,
        "ntk_cka": cka,
        "ntk_cka_se": se,
        "param_movement": move,
        "alignment_train": align,
        "alignment_train_se": se,
        "alignment0_train": align0,
        "alignment0_train_se": se,
        "test_loss": test,
    }


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (row(1, cka=0.995, move=0.2, align=0.01), "lazy"),
        (row(1, cka=0.97), "transitioning"),
        (row(1, move=0.8), "transitioning"),
        (row(1, align=0.05), "transitioning"),
        (row(1, align=0.05, se=0.03), "lazy"),  # a rise within 2 standard errors is noise
        (row(1, cka=0.5, se=0.3), "lazy"),  # so is a kernel change
        (row(1, move=7.0), "rich"),
        (row(1, cka=0.7), "rich"),
        (row(1, align=0.3, align0=0.01, se=0.05), "rich"),
        (row(1, drift=5.0), "lazy"),  # drift depends on the probe size: not read
        ({"step": 1}, "lazy"),
    ],
)
def test_regime_classification(r, expected):
    assert classify(r) == expected


def test_thresholds_are_arguments():
    assert classify(row(1, cka=0.97), RegimeThresholds(lazy_kernel=0.04)) == "lazy"
    assert classify(row(1, align=0.05, se=0.03), RegimeThresholds(z=1.0)) == "transitioning"


def test_grokking_onset_waits_for_a_significant_alignment_rise():
    rows = [
        row(1, test=1.0),
        row(2, test=0.8),  # falls, but alignment has not risen yet
        row(3, test=1.2, align=0.05, se=0.03),  # risen, but within noise
        row(4, test=1.15, align=0.05, se=0.01),
        row(5, test=1.0, align=0.1, se=0.01),
    ]  # 1.0 <= 0.9 * 1.2: onset
    assert grokking_onset(rows) == 5
    assert math.isnan(grokking_onset([row(1), row(2, test=0.1)]))
    rows[3] = row(4, test=1.15, align=0.05, se=0.03)
    rows[4] = row(5, test=1.0, align=0.1, se=0.1)
    assert math.isnan(grokking_onset(rows))


def test_version_and_run_or_sweep_without_a_task_list_the_tasks(capsys):
    import lazymeter

    for command in (lazymeter_main, main):
        with pytest.raises(SystemExit) as e:
            command(["--version"])
        assert e.value.code == 0 and lazymeter.__version__ in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "polynomial" in out and "alpha_eps" in out and "TASK --help" in out
    assert main(["sweep"]) == 2  # a usage error, but one that says what to type
    assert "mnist" in capsys.readouterr().err


def test_the_report_keeps_a_classifiers_mse_baseline_off_its_loss_axes_and_uses_its_unit(
    tmp_path,
):
    from lazymeter.report import plot_runs

    rows = [
        {"step": s, "train_loss": 2.0 / s, "test_loss": 3.0 / s, "k0_test_mse": 0.4}
        for s in (1, 10, 100)
    ]
    runs = []
    for name, meta in (("ce", {"loss": "cross_entropy"}), ("mse", {"loss": "mse"})):
        d = tmp_path / name
        d.mkdir()
        (d / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "meta.json").write_text(json.dumps({**meta, "step_label": "epochs"}))
        runs.append(load_run(str(d)))
    captured = {}
    import matplotlib.figure

    real = matplotlib.figure.Figure.savefig
    matplotlib.figure.Figure.savefig = lambda fig, *a, **k: captured.setdefault("fig", fig)
    try:
        plot_runs(runs, str(tmp_path / "r.png"))
    finally:
        matplotlib.figure.Figure.savefig = real
    ax = next(a for a in captured["fig"].axes if a.get_title() == "losses")
    baselines = [ln.get_label() for ln in ax.get_lines() if "K0" in ln.get_label()]
    assert baselines == ["mse: K0"]  # the cross-entropy run's MSE baseline is not drawn
    assert ax.get_xlabel() == "epochs"
