"""``history.jsonl``: one fsynced JSON line per measurement, and scalar rows (the scalars of
steps without one, marked ``"kind": "scalars"``: :mod:`lazymeter.history`) between them
(:class:`JsonlSink`), read back with :func:`read_jsonl`; a torn last line (a crash
mid-write) is repaired, an earlier run's file is moved aside, never overwritten."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

from ..history import KIND_KEY, SCALARS, is_scalar_row


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


def check_writable(log_dir: str) -> None:
    """A clear error at construction, instead of a crash at the first measurement."""
    try:
        os.makedirs(log_dir, exist_ok=True)
        probe = os.path.join(log_dir, f".lazymeter-write-test-{os.getpid()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"log_dir: cannot write to {log_dir!r} ({e.strerror or e}); pass a writable "
            "directory, or log_dir=None to keep the history in memory only"
        ) from None


def fresh_history(log_dir: str) -> str:
    """The path of ``log_dir/history.jsonl`` for a new run: an earlier run's non-empty file
    is moved aside to ``history.jsonl.N`` (with a warning), never appended to (a resumed
    meter's ``load_state_dict`` rewrites the file from its checkpoint instead)."""
    return _fresh_history(log_dir, stacklevel=5)[0]


def _fresh_history(log_dir: str, stacklevel: int = 5) -> tuple[str, str | None]:
    """:func:`fresh_history`, and where the earlier file went (None when there was none)."""
    path = os.path.join(log_dir, "history.jsonl")
    moved = None
    if os.path.exists(path) and os.path.getsize(path) > 0:
        moved = moved_aside(path, stacklevel=stacklevel)
    return path, moved


def moved_aside(path: str, stacklevel: int = 3) -> str:
    """Move ``path`` to the first free ``path.N`` (N = 1, 2, ...) with a warning; returns
    the new name. Nothing is ever overwritten."""
    n = 1
    while os.path.exists(f"{path}.{n}"):
        n += 1
    os.replace(path, f"{path}.{n}")
    warnings.warn(
        f"lazymeter: {path} existed; moved it to {path}.{n}", RuntimeWarning, stacklevel=stacklevel
    )
    return f"{path}.{n}"


class JsonlSink:
    """Appends one JSON object per measurement to ``path``, flushed and fsynced each time,
    so a crash loses nothing already measured. Non-finite values are written as ``null``.
    :meth:`write_scalars` appends a scalar row (``"kind": "scalars"``) the same way.

    ``previous``: an earlier file of the same run (the one a resumed meter's construction
    moved aside), from which :meth:`rewind` carries the scalar rows up to the checkpoint.

    Crash safety: each line goes out in a single ``os.write`` on an ``O_APPEND`` file
    descriptor (no user-space buffer), followed by ``fsync``; a process killed at any
    point leaves every earlier line whole and at most one torn last line (and in practice
    none: a kill cannot interrupt a small write to a local file). Opening a file that ends
    in a torn line first repairs it, so that appended rows never follow a broken line: a
    last line that is whole JSON but lost only its newline gets the newline back, any
    other partial line is cut off with a ``RuntimeWarning``.
    """

    def __init__(self, path: str, previous: str | None = None) -> None:
        self.path = path
        self.previous = previous
        #: The step of the last row written (None before the first).
        self.last_step: int | None = None
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
        step = row.get("step")
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            self.last_step = int(step)

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """A scalar row: ``{"step": step, **values, "kind": "scalars"}``."""
        self.write({"step": step, **values, KIND_KEY: SCALARS})

    def write_row(self, row: dict[str, Any], step: int) -> None:
        """:class:`Sink` ``write_row``: the row is one line (``step`` is in it already)."""
        self.write(row)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """``meta.json`` beside the file (written whole, then renamed into place)."""
        path = os.path.join(os.path.dirname(os.path.abspath(self.path)), "meta.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=1, default=str) + "\n")
        os.replace(path + ".tmp", path)

    def rewind(self, history: Iterable[dict[str, Any]], step: int | None) -> None:
        """:class:`Sink` ``rewind``: the file becomes ``history`` (:meth:`rewrite`) with the
        scalar rows up to ``step`` of the same run in between, taken from this file or the
        earlier one (``previous``) whose measurements up to ``step`` are ``history``'s; so a
        resumed run's file is the uninterrupted run's. From another folder (no such file),
        only the measurements."""
        history = list(history)
        carried = self._scalar_rows(history, step)
        # Steps increase; at a step with both, the scalar row came first (a measure() call
        # after step()): a stable sort with the scalar rows first keeps the file's order.
        rows = sorted(carried + history, key=lambda r: r.get("step", 0))
        self.rewrite(rows)
        self.last_step = int(rows[-1]["step"]) if rows else None

    def _scalar_rows(self, history: list[dict[str, Any]], step: int | None) -> list[dict]:
        if step is None:
            return []
        want = [_line(r) for r in history]
        for source in (self.path, self.previous):
            lines = _lines(source)
            if not lines:
                continue
            measured, scalar = [], []
            for line, row in lines:
                s = row.get("step")
                if not isinstance(s, (int, float)) or s > step:
                    continue
                (scalar if is_scalar_row(row) else measured).append((line, row))
            # Its measurements are the checkpoint's, then at most rows of the checkpoint's
            # own step that came after it (a final row measured by close()).
            extra = measured[len(want) :]
            if [line for line, _ in measured[: len(want)]] == want and all(
                row.get("step") == step for _, row in extra
            ):
                return [row for _, row in scalar]
        return []

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``rows`` (atomically), e.g. after resuming from a checkpoint.

        The rows go to ``<path>.tmp``, which is fsynced and then renamed over ``path``: a
        crash at any point leaves either the old file or the new one, never a mix.
        """
        self.close()
        data = b"".join(_line(row) for row in rows)
        try:
            with open(self.path, "rb") as f:
                old = f.read()
        except FileNotFoundError:
            old = b""
        if not data.startswith(old):  # rows the new history lacks: never lost silently
            moved_aside(self.path)
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
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


def _lines(path: str | None) -> list[tuple[bytes, dict[str, Any]]]:
    """``(line, row)`` of each whole JSON-object line of ``path`` (none for no file; a
    torn or foreign line is passed over: this only looks for rows to carry)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line + b"\n", row))
    return out


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
