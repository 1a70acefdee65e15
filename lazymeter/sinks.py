"""Where measurements go: JSON lines on disk and TensorBoard scalars.

Both sinks take flat ``{key: float}`` rows. :func:`tag_for` maps a row key to
a TensorBoard tag under ``lazymeter/``, grouped by what it measures.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

_TAGS = {
    "ntk_drift": "ntk/drift",
    "ntk_cka": "ntk/cka_to_init",
    "alignment_train": "ntk/alignment_train",
    "alignment_test": "ntk/alignment_test",
    "alignment0_train": "ntk/alignment0_train",
    "alignment0_test": "ntk/alignment0_test",
    "test_ntk_drift": "ntk/test_drift",
    "param_movement": "params/movement",
    "weight_norm": "params/weight_norm",
    "k0_test_mse": "baseline/k0_test_mse",
    "k0_test_acc": "baseline/k0_test_acc",
    "k0_train_mse": "baseline/k0_train_mse",
}
_PREFIXES = {
    "spectrum_": "spectrum/",
    "feature_cka/": "features/",
    "lin_": "linearized/",
    "decomp_": "decomposition/",
}


#: TensorBoard's CUSTOM SCALARS tab: losses on one chart, kernel diagnostics on another.
CUSTOM_SCALARS = {
    "lazymeter": {
        "losses (network, linearised)": [
            "Multiline",
            [
                "lazymeter/loss/train",
                "lazymeter/loss/test",
                "lazymeter/linearized/train_loss",
                "lazymeter/linearized/test_loss",
                "lazymeter/baseline/k0_test_mse",
            ],
        ],
        "kernel (drift, alignment, CKA)": [
            "Multiline",
            [
                "lazymeter/ntk/drift",
                "lazymeter/ntk/alignment_train",
                "lazymeter/ntk/alignment_test",
                "lazymeter/ntk/cka_to_init",
            ],
        ],
        "weights": ["Multiline", ["lazymeter/params/movement", "lazymeter/params/weight_norm"]],
    }
}


def tag_for(key: str) -> str:
    """TensorBoard tag of a row key, e.g. ``train_loss -> lazymeter/loss/train``."""
    if key in _TAGS:
        return "lazymeter/" + _TAGS[key]
    for prefix, group in _PREFIXES.items():
        if key.startswith(prefix):
            return f"lazymeter/{group}{key[len(prefix) :]}"
    if key.endswith("_loss"):
        return "lazymeter/loss/" + key[: -len("_loss")]
    if key.endswith(("_acc", "_accuracy")):
        return "lazymeter/accuracy/" + key.rsplit("_", 1)[0]
    return "lazymeter/scalars/" + key


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN/Inf
    return v


def _line(row: dict[str, Any]) -> bytes:
    """One measurement as one line of strict (ASCII) JSON, newline included."""
    return (json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    # One write() for the whole line: on a local file system it lands whole, so a kill
    # (SIGKILL, OOM) between measurements never leaves part of a line. The loop only
    # matters for a short write (a full disk, a signal on a network file system).
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path``'s directory durable (POSIX; a no-op where unsupported)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class JsonlSink:
    """Appends one JSON object per measurement to ``path``, flushed and fsynced each time,
    so a crash loses nothing already measured. Non-finite values are written as ``null``.

    Crash safety: each line goes out in a single ``os.write`` on an ``O_APPEND`` file
    descriptor (no user-space buffer), followed by ``fsync``; a process killed at any
    point leaves every earlier line whole and at most one torn last line (and in practice
    none: a kill cannot interrupt a small write to a local file). Opening a file that ends
    in a torn line first repairs it, so that appended rows never follow a broken line: a
    last line that is whole JSON but lost only its newline gets the newline back, any
    other partial line is cut off with a ``RuntimeWarning``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fd: int | None = None
        self._open()

    def _open(self) -> None:
        _repair_torn_tail(self.path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._fd = os.open(self.path, flags, 0o666)

    def write(self, row: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"JsonlSink({self.path!r}) is closed")
        _write_all(self._fd, _line(row))
        os.fsync(self._fd)

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``rows`` (atomically), e.g. after resuming from a checkpoint.

        The rows go to ``<path>.tmp``, which is fsynced and then renamed over ``path``: a
        crash at any point leaves either the old file or the new one, never a mix.
        """
        self.close()
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                for row in rows:
                    f.write(_line(row))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _fsync_dir(self.path)
        self._open()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _repair_torn_tail(path: str) -> None:
    """If ``path`` ends in a partial line (no newline), make it end at a line boundary."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        return
    keep = data.rfind(b"\n") + 1
    tail = data[keep:]
    try:
        whole = isinstance(json.loads(tail), dict)
    except ValueError:
        whole = False
    if whole:  # a complete row that only lost its newline
        with open(path, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        return
    line_no = data.count(b"\n") + 1
    warnings.warn(
        f"lazymeter: {path} ended in a torn line (line {line_no}, "
        f"{len(tail)} bytes, cut by a crash mid-write); removed it before appending",
        RuntimeWarning,
        stacklevel=4,
    )
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (``null`` read back as NaN); blank lines are ignored.

    A crash can only tear the *last* line (see :class:`JsonlSink`): an unreadable last
    line is skipped with a ``RuntimeWarning`` naming the file and the line. An unreadable
    line followed by a readable one cannot come from a crash, so the file is corrupt
    (e.g. two writers, or rows appended after a torn line by another program): that
    raises ``ValueError`` naming the file and the line, rather than silently leaving a
    gap in the history.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    rows = []
    for j, (n, line) in enumerate(numbered):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            if j == len(numbered) - 1:
                warnings.warn(
                    f"lazymeter: {path}: skipped line {n}, a torn last line (cut by a crash "
                    "mid-write?)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                break
            raise ValueError(
                f"{path}: line {n} is not a JSON object ({e}) but more rows follow it; only "
                "the last line can be torn by a crash, so this file is corrupt"
            ) from None
        rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows


class TensorBoardSink:
    """Scalars to a ``SummaryWriter`` (``torch.utils.tensorboard``), created lazily.

    Pass ``writer`` to reuse the user's own writer (it is then not closed here).
    Without the ``tensorboard`` package this sink disables itself with one warning.
    """

    def __init__(self, log_dir: str | None = None, writer: Any = None) -> None:
        self.log_dir = log_dir
        self._writer = writer
        self._owned = writer is None
        self._purge_step: int | None = None
        self._layout_done = False
        self.enabled = writer is not None or log_dir is not None

    def purge_after(self, step: int) -> None:
        """Drop events after ``step`` from an earlier run (resume from a checkpoint)."""
        if self._owned:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._purge_step = step + 1

    @property
    def writer_if_open(self) -> Any:
        """The writer if one exists already (never creates one)."""
        return self._writer

    @property
    def writer(self) -> Any:
        if self._writer is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard is not installed, so no event files are written "
                    "(pip install tensorboard, or lazymeter[tensorboard]); the JSON-lines "
                    f"history in {self.log_dir} is still written.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self.enabled = False
                return None
            self._writer = SummaryWriter(self.log_dir, purge_step=self._purge_step)
            if self._purge_step is None:
                self._mark_start()
        if self._writer is not None and not self._layout_done:
            self._layout_done = True
            try:
                self._writer.add_custom_scalars(CUSTOM_SCALARS)
            except Exception:  # noqa: BLE001 - a writer without layouts still takes scalars
                pass
        return self._writer

    def _mark_start(self) -> None:
        """Record a session start at step 0 in a fresh writer's file. TensorBoard ignores
        the first START of a run, so without it the purge a resumed writer records (after
        a crash) would be ignored too, and the crashed run's later steps would show twice."""
        try:
            from tensorboard.compat.proto.event_pb2 import Event, SessionLog

            event = Event(step=0, session_log=SessionLog(status=SessionLog.START))
            self._writer._get_file_writer().add_event(event)
        except Exception:  # noqa: BLE001 - only a display nicety; scalars are unaffected
            pass

    def write_text(self, tag: str, text: str, step: int) -> None:
        w = self.writer
        if w is not None:
            w.add_text(tag, text, step)

    def write_figure(self, tag: str, figure: Any, step: int) -> None:
        w = self.writer
        if w is not None:
            w.add_figure(tag, figure, step, close=True)

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the run's final metrics (TensorBoard's HPARAMS tab)."""
        w = self.writer
        if w is None:
            return
        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        finals = {
            f"hparam/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        w.add_hparams(clean, finals, run_name=".")

    def write(self, row: dict[str, Any], step: int, flush: bool = False) -> None:
        w = self.writer
        if w is None:
            return
        values = {
            tag_for(k): float(v)
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        try:
            # One event holding every value: an event costs ~50 us, a value almost nothing.
            from tensorboard.compat.proto.summary_pb2 import Summary

            summary = Summary(
                value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()]
            )
            w._get_file_writer().add_summary(summary, step)
        except (ImportError, AttributeError):  # another SummaryWriter implementation
            for t, v in values.items():
                w.add_scalar(t, v, step)
        if flush:
            w.flush()

    def close(self) -> None:
        if self._writer is not None:
            if self._owned:
                self._writer.close()
            else:
                self._writer.flush()
