"""Crash safety and resume: a training process killed with SIGKILL mid-run loses no
completed measurement, leaves a history that parses, and resumes from its last
checkpoint into exactly the curves of an uninterrupted run (no duplicated or missing
steps, in history.jsonl and in TensorBoard: the latter is an expected failure while
TensorBoard keeps the crashed run's orphaned events, see the end of the resume test).
A torn last line of history.jsonl is skipped with a warning; a broken line followed
by more rows is an error (see ``lazymeter.read_jsonl``).

The runs are ``tests/meter/crash_run.py`` subprocesses. Kills are triggered by the progress
lines the child prints (never by elapsed time), so a loaded machine only slows the
test down.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

import lazymeter as lm
from lazymeter.history import measurements
from lazymeter.sinks import JsonlSink
from lazymeter.threads import torch_threads

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import crash_run  # noqa: E402

SCRIPT = str(HERE / "crash_run.py")
TIMEOUT = 120  # seconds for one child process; generous for a loaded 2-core machine
SCHEDULE = list(range(0, crash_run.STEPS, crash_run.EVERY))


# ---------------------------------------------------------------------------- helpers
def env() -> dict[str, str]:
    paths = [
        str(HERE.parents[1]),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def markers(lines: list[str], kind: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(kind + " ")]


def run_to_end(run_dir: Path) -> list[str]:
    """Run (or resume) crash_run.py in ``run_dir`` to the end; its progress lines."""
    out = subprocess.run(
        [sys.executable, SCRIPT, str(run_dir / "log"), str(run_dir / "ckpt.pt")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-1] == "done", lines
    return lines


def run_and_kill(run_dir: Path, should_kill, fence: int) -> list[str]:
    """Start crash_run.py, feed each progress line to ``should_kill(lines)`` and SIGKILL
    the child as soon as it says so. ``--fence`` stops the child at step ``fence`` (it
    blocks there) so that it cannot finish before the kill lands. Returns every line the
    child printed before it died (read after the kill: the pipe keeps them)."""
    stderr = open(run_dir / "stderr.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, str(run_dir / "log"), str(run_dir / "ckpt.pt")]
        + ["--fence", str(fence)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env(),
    )
    watchdog = threading.Timer(TIMEOUT, proc.kill)  # a hung child ends the test, not CI
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if should_kill(lines):
                os.kill(proc.pid, signal.SIGKILL)
                break
        lines += [line.strip() for line in proc.stdout]  # printed before the kill landed
        rc = proc.wait(TIMEOUT)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        for f in (proc.stdin, proc.stdout):
            f.close()
        stderr.close()
    assert rc == -signal.SIGKILL, (rc, lines, (run_dir / "stderr.txt").read_text()[-3000:])
    assert "done" not in lines
    return lines


def same(a, b) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def rows_equal(r1: list[dict], r2: list[dict]) -> bool:
    return len(r1) == len(r2) and all(
        a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        for a, b in zip(r1, r2, strict=True)
    )


def read_strict(path: Path) -> list[dict]:
    """read_jsonl, failing on any warning (a torn line) it would emit."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return lm.read_jsonl(str(path))


def tb_curves(log_dir: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Every TensorBoard series of ``log_dir`` (the scalar curves, the regime text) as
    ``tag -> [(step, serialized value)]``, read the way TensorBoard's UI reads them: with
    the plugin accumulator, which purges a run's events at and after the step of any
    SessionLog.START but its first. (The legacy ``event_accumulator.EventAccumulator``
    purges on the first START too, but only scalar-like types: through it the scalars
    look clean after a resume while the regime text shows orphaned steps.)"""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(log_dir), size_guidance=pea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return {
        tag: [(e.step, e.tensor_proto.SerializeToString()) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        # The chart layout, not a series. The resumed writer adds it again at step 0
        # (two copies of the same config; TensorBoard shows one layout).
        if tag != "custom_scalars__config__"
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The same run without a crash, in this process (saves a torch start-up): the
    resumed subprocesses must reproduce it bit for bit."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    lines: list[str] = []
    with torch.random.fork_rng(), torch_threads(1):
        crash_run.run(str(run_dir / "log"), str(run_dir / "ckpt.pt"), say=lines.append)
    assert markers(lines, "measured") == SCHEDULE
    return run_dir


# ---------------------------------------------------------------------------- kill, resume
def kill_mid_run(lines: list[str]) -> bool:
    """At least 5 measurements and a checkpoint, and the latest line is a measurement
    after the latest checkpoint: history.jsonl then holds rows the checkpoint lacks."""
    ckpts, measured = markers(lines, "checkpoint"), markers(lines, "measured")
    if len(measured) < 5 or not ckpts or not lines[-1].startswith("measured "):
        return False
    return measured[-1] > ckpts[-1]


def kill_at_fence(lines: list[str]) -> bool:
    return lines[-1].startswith("fence ")


@pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"
)
@pytest.mark.parametrize(
    "should_kill, fence",
    [
        # Killed wherever the child happens to be (training, measuring, writing a row or
        # a checkpoint) once the trigger line is read; the fence only keeps it from ending.
        pytest.param(kill_mid_run, 45, id="mid-run"),
        # Killed right after the checkpoint of step 29 (not a measurement step).
        pytest.param(kill_at_fence, 29, id="after-checkpoint"),
    ],
)
def test_sigkill_then_resume_continues_the_curves_exactly(
    tmp_path, uninterrupted, should_kill, fence
):
    lines = run_and_kill(tmp_path, should_kill, fence)
    printed = markers(lines, "measured")
    saved = markers(lines, "checkpoint")
    assert saved and printed, lines

    # After the kill: every measurement announced before it is on disk, in order, once,
    # and the file parses cleanly (a single write per line leaves no torn line).
    history = tmp_path / "log" / "history.jsonl"
    rows = read_strict(history)  # measurements, and scalar rows (scalar_every=1) between
    steps = [r["step"] for r in measurements(rows)]
    assert steps == SCHEDULE[: len(steps)]  # increasing, no duplicates, no gaps
    assert steps[: len(printed)] == printed
    assert len(steps) - len(printed) in (0, 1)  # killed between fsync and print at most
    assert rows_equal(
        rows, lm.read_jsonl(str(uninterrupted / "log" / "history.jsonl"))[: len(rows)]
    )
    if should_kill is kill_at_fence:
        assert steps[-1] < saved[-1] == fence

    # Resume from the last checkpoint (a fresh process) and finish.
    ckpt_step = torch.load(tmp_path / "ckpt.pt")["step"]
    assert ckpt_step >= saved[-1]  # a kill mid-save leaves the previous checkpoint whole
    resumed = run_to_end(tmp_path)
    assert resumed[0] == f"start {ckpt_step + 1}"
    assert markers(resumed, "measured") == [s for s in SCHEDULE if s > ckpt_step]

    final = read_strict(history)
    # The last step, 59, is measured by close() (the schedule skipped it).
    assert [r["step"] for r in measurements(final)] == [*SCHEDULE, crash_run.STEPS - 1]
    # The scalar rows up to the checkpoint came over from the crashed run's file.
    scalar_steps = [r["step"] for r in final if r.get("kind") == "scalars"]
    assert scalar_steps == [s for s in range(crash_run.STEPS) if s not in SCHEDULE]
    expected = uninterrupted / "log" / "history.jsonl"
    assert rows_equal(final, lm.read_jsonl(str(expected)))
    assert history.read_bytes() == expected.read_bytes()  # bit-identical, deterministic loop
    # The crashed run's file was kept aside, not appended to.
    assert [r["step"] for r in measurements(read_strict(Path(f"{history}.1")))] == steps

    # TensorBoard, as its UI reads the two runs' event files: every series has each step
    # once, and equals the uninterrupted run's.
    got, want = tb_curves(tmp_path / "log"), tb_curves(uninterrupted / "log")
    assert got.keys() == want.keys()
    for tag, curve in got.items():
        tb_steps = [s for s, _ in curve]
        assert tb_steps == sorted(set(tb_steps)), f"{tag}: duplicated steps {tb_steps}"
        assert curve == want[tag], tag
    # (This needs the START event a fresh TensorBoardSink records at step 0: TensorBoard
    # ignores the first START of a run, so the resumed writer's purge would be ignored.)


# ---------------------------------------------------------------------------- torn lines
ROWS = [{"step": s, "train_loss": 1.0 / (s + 1), "ntk_drift": math.nan} for s in range(4)]


def write_rows(path: Path, rows=ROWS) -> bytes:
    sink = JsonlSink(str(path))
    for r in rows:
        sink.write(r)
    sink.close()
    return path.read_bytes()


def test_read_jsonl_skips_a_torn_last_line_with_a_warning_naming_file_and_line(tmp_path):
    path = tmp_path / "history.jsonl"
    full = write_rows(path)
    last = full.rstrip(b"\n").rfind(b"\n") + 1  # start of line 4
    for cut in (last + 1, (last + len(full)) // 2, len(full) - 2):
        path.write_bytes(full[:cut])  # what a kill in the middle of write() would leave
        with pytest.warns(RuntimeWarning, match="line 4") as record:
            rows = lm.read_jsonl(str(path))
        assert str(path) in str(record[0].message)
        assert rows_equal(rows, ROWS[:3])
    # A last row that lost only its newline is whole: kept, no warning.
    path.write_bytes(full[:-1])
    assert rows_equal(read_strict(path), ROWS)
    # Trailing blank lines are not torn lines.
    path.write_bytes(full + b"\n\n")
    assert rows_equal(read_strict(path), ROWS)


def test_read_jsonl_rejects_a_broken_line_in_the_middle_naming_it(tmp_path):
    path = tmp_path / "history.jsonl"
    lines = write_rows(path).splitlines(keepends=True)
    # A torn line 2 followed by more rows: a crash cannot do this (it tears only the end),
    # so the file is corrupt, and a silent gap in the history would be worse.
    path.write_bytes(lines[0] + lines[1][:10] + b"\n" + b"".join(lines[2:]))
    with pytest.raises(ValueError, match="line 2"):
        lm.read_jsonl(str(path))


def test_jsonl_sink_writes_each_row_as_one_whole_line(tmp_path):
    path = tmp_path / "history.jsonl"
    sink = JsonlSink(str(path))
    for i, r in enumerate(ROWS):
        sink.write(r)
        text = path.read_text()  # as another process sees it, without close()
        assert text.endswith("\n") and len(text.splitlines()) == i + 1
        assert json.loads(text.splitlines()[-1])["ntk_drift"] is None
    sink.close()


def test_jsonl_sink_repairs_a_torn_tail_before_appending(tmp_path):
    path = tmp_path / "history.jsonl"
    full = write_rows(path)
    path.write_bytes(full[:-7])  # torn line 4
    with pytest.warns(RuntimeWarning, match="torn line"):
        sink = JsonlSink(str(path))
    sink.write(ROWS[3])
    sink.close()
    assert path.read_bytes() == full  # the torn fragment is gone, not glued to the new row
    path.write_bytes(full[:-1])  # a whole row without its newline is kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sink = JsonlSink(str(path))
    sink.write(ROWS[0])
    sink.close()
    assert path.read_bytes() == full + full.splitlines(keepends=True)[0]


def test_resuming_a_meter_into_a_log_dir_with_a_torn_history_leaves_a_clean_file(tmp_path):
    log = tmp_path / "log"
    model, meter, opt, (x, y, xt, yt) = crash_run.build(str(log))
    for _ in range(7):  # measurements at 0, 3, 6
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())
    state = meter.state_dict()
    meter.close(measure=False)  # as the checkpoint: no row for step 7 beyond its scalar row
    history = log / "history.jsonl"
    clean = history.read_bytes()
    # The crashed run had measured step 9 and was killed writing step 12's row.
    six = next(r for r in clean.splitlines(keepends=True) if r.startswith(b'{"step": 6,'))
    with history.open("ab") as f:
        f.write(six.replace(b'"step": 6', b'"step": 9'))
        f.write(b'{"step": 12, "train_loss": 0.12')

    with pytest.warns(RuntimeWarning, match="moved it to"):
        _, resumed, _, _ = crash_run.build(str(log))
    resumed.load_state_dict(state)
    assert history.read_bytes() == clean  # rewritten from the checkpoint: no torn line
    assert [r["step"] for r in measurements(read_strict(history))] == [0, 3, 6]
    resumed.step(9, train_loss=0.5)
    resumed.close()
    assert [r["step"] for r in measurements(read_strict(history))] == [0, 3, 6, 9]
