"""Where measurements go: JSON lines on disk, TensorBoard scalars, and any :class:`Sink`.

Every sink takes flat ``{key: float}`` rows. :func:`tag_for` maps a row key to
a TensorBoard tag under ``lazymeter/``, grouped by what it measures (the MLflow and
W&B sinks in :mod:`lazymeter.integrations` name their metrics the same way).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    """Where a meter's measurements go: pass instances as ``LazyMeter(..., sinks=[...])``.

    Two methods are required:

    * ``write_row(row, step)``: one measurement. ``row`` is the ``{key: float}`` dict that
      :attr:`LazyMeter.history` receives (``step``, the scalars passed to ``step()``, the
      quantities' keys; NaN for a value that could not be computed); ``step`` is
      ``int(row["step"])``.
    * ``close()``: from :meth:`LazyMeter.close`; release what the sink holds.

    Optional hooks, called only when the sink defines them:

    * ``write_scalars(values, step)``: the scalars passed to ``step()`` at steps without a
      measurement, every ``scalar_every`` steps (at a measurement they are in the row).
    * ``write_meta(meta)``: once, at construction: what the numbers depend on (the NTK
      engine, modes, estimators; nested dicts, as in ``log_dir/meta.json``).
    * ``write_text(tag, text, step)``: the lazy/rich read-out with every row
      (``tag = "lazymeter/regime"``).
    * ``write_hparams(hparams, metrics)``: from ``meter.close(hparams=...)``, with the last
      row's values as ``metrics``.
    * ``flush()``: before a checkpoint is taken (``state_dict``).
    * ``rewind(history, step)``: after ``load_state_dict``: the run continues from ``step``
      with ``history`` (what a crashed run logged after the checkpoint should go).
    * ``state_dict()`` / ``load_state_dict(state)``: what the sink needs to continue the
      same run after a resume (e.g. the tracker's run id), kept in the meter's checkpoint
      and given back, before ``rewind``, to the sink of the same type at the same position.

    Only rank 0 of a distributed meter writes to its sinks (the other ranks drop them),
    and a sink that raises is warned about once and then called as before: a failing
    sink never stops training. :class:`JsonlSink` and :class:`TensorBoardSink` are sinks.
    """

    def write_row(self, row: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def check_writer(writer: Any) -> None:
    """``writer=`` takes a TensorBoard ``SummaryWriter`` or any object with its
    ``add_scalar(tag, value, step)`` (``add_text``, ``flush``, ``add_custom_scalars``,
    ``add_image`` and ``add_hparams`` are used when present); a :class:`Sink` or anything
    else is a ``TypeError`` naming what to pass instead."""
    if writer is None or callable(getattr(writer, "add_scalar", None)):
        return
    hint = (
        "; it is a lazymeter Sink: pass it as sinks=[...]"
        if callable(getattr(writer, "write_row", None))
        else ""
    )
    raise TypeError(
        "writer: expected a TensorBoard SummaryWriter (or an object with its "
        f"add_scalar(tag, value, step)), got {type(writer).__name__}{hint}"
    )


def check_sinks(sinks: Iterable[Any] | None) -> list[Any]:
    """The ``sinks=`` argument as a list, each checked to have ``write_row`` and ``close``."""
    if sinks is None:
        return []
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise TypeError(f"sinks: expected a list of sinks, got {type(sinks).__name__}")
    out = list(sinks)
    for i, sink in enumerate(out):
        missing = [m for m in ("write_row", "close") if not callable(getattr(sink, m, None))]
        if missing:
            hint = (
                " (a SummaryWriter goes in writer=)"
                if callable(getattr(sink, "add_scalar", None))
                else ""
            )
            raise TypeError(
                f"sinks[{i}]: {type(sink).__name__} has no {' or '.join(missing)}; a sink needs "
                f"write_row(row, step) and close(){hint}"
            )
    return out


#: Row key -> TensorBoard tag under ``lazymeter/``. Filled by the quantities that produce
#: the keys (:class:`lazymeter.Quantity` ``tags``), not kept here by hand; the losses the
#: user passes to ``step`` follow the naming rules of :func:`tag_for`.
_TAGS: dict[str, str] = {}
#: Key prefix (ending in ``_`` or ``/``) -> tag group, from the quantities likewise.
_PREFIXES: dict[str, str] = {}
#: TensorBoard custom-scalar charts ``{title: [row keys]}``; the quantities add theirs.
_CHARTS: dict[str, list[str]] = {"losses (network, linearised)": ["train_loss", "test_loss"]}


def register_tags(tags: dict[str, str] | Any) -> None:
    """Add ``{key: tag}`` (exact keys) or ``{prefix: group/}`` (keys ending in ``_`` or ``/``)
    entries to the tag table used by :func:`tag_for`."""
    for key, tag in dict(tags).items():
        if key.endswith(("_", "/")):
            _PREFIXES[key] = tag
        else:
            _TAGS[key] = tag


def register_chart(title: str, keys: list[str]) -> None:
    """Put ``keys`` on the TensorBoard custom-scalar chart ``title`` (created if new)."""
    chart = _CHARTS.setdefault(title, [])
    chart.extend(k for k in keys if k not in chart)


def custom_scalars() -> dict[str, Any]:
    """TensorBoard's CUSTOM SCALARS layout: one multiline chart per registered title."""
    return {
        "lazymeter": {
            title: ["Multiline", [tag_for(k) for k in keys]] for title, keys in _CHARTS.items()
        }
    }


def tag_for(key: str) -> str:
    """TensorBoard tag of a row key, e.g. ``train_loss -> lazymeter/loss/train``,
    ``ntk_drift -> lazymeter/ntk/drift`` (tags registered by the quantities)."""
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
    path = os.path.join(log_dir, "history.jsonl")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        moved_aside(path, stacklevel=4)
    return path


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
        """:class:`Sink` ``rewind``: the file becomes ``history`` (:meth:`rewrite`)."""
        self.rewrite(history)

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
                self._writer.add_custom_scalars(custom_scalars())
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
        if callable(getattr(w, "add_text", None)):  # a duck-typed writer may take no text
            w.add_text(tag, text, step)

    def write_figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib ``Figure`` as an image, rendered with the Agg canvas directly
        (``SummaryWriter.add_figure`` would import pyplot, a global side effect)."""
        w = self.writer
        if not callable(getattr(w, "add_image", None)):
            return
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        w.add_image(tag, rgba[..., :3].copy(), step, dataformats="HWC")

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the run's final metrics (TensorBoard's HPARAMS tab)."""
        w = self.writer
        if not callable(getattr(w, "add_hparams", None)):
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

    def write_row(self, row: dict[str, Any], step: int) -> None:
        """:class:`Sink` ``write_row``: the row's scalars at ``step``, flushed."""
        self.write(row, step, flush=True)

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """:class:`Sink` ``write_scalars``: the user's scalars between measurements."""
        self.write(values, step)

    def flush(self) -> None:
        """Flush the writer if one is open (a duck-typed writer may have no ``flush``)."""
        flush = getattr(self._writer, "flush", None)
        if callable(flush):
            flush()

    def rewind(self, history: Iterable[dict[str, Any]], step: int | None) -> None:
        """:class:`Sink` ``rewind``: later events of an earlier run are purged."""
        if step is not None:
            self.purge_after(step)

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
            self.flush()

    def close(self) -> None:
        if self._writer is not None:
            if self._owned:
                self._writer.close()
            else:
                self.flush()


class RunLog:
    """One run's sinks: ``log_dir/history.jsonl`` (a fresh file; an earlier run's is moved
    aside), TensorBoard (in ``log_dir``, or the given ``writer``) and the user's ``sinks``
    (:class:`Sink`). Any of them may be absent."""

    def __init__(
        self,
        log_dir: str | None,
        writer: Any = None,
        tensorboard: bool = True,
        sinks: Iterable[Any] | None = None,
    ) -> None:
        check_writer(writer)
        self.sinks = check_sinks(sinks)
        self.jsonl: JsonlSink | None = None
        if log_dir is not None:
            check_writable(log_dir)
            self.jsonl = JsonlSink(fresh_history(log_dir))
        self.tb = TensorBoardSink(log_dir if tensorboard else None, writer)
        self._meta_text: str | None = None
        self._failed: set[int] = set()  # id() of the user's sinks already warned about

    def _each(self, method: str, *args: Any) -> None:
        """Call ``method`` on every user sink that has it. A sink that raises is warned
        about once (it may be a tracker's server gone away) and called again next time:
        measurements are kept in ``meter.history`` whatever a sink does."""
        for sink in self.sinks:
            fn = getattr(sink, method, None)
            if not callable(fn):
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a sink must never stop training
                if id(sink) not in self._failed:
                    self._failed.add(id(sink))
                    warnings.warn(
                        f"lazymeter: sink {type(sink).__name__}.{method} failed ({e!r}); "
                        "measurements are kept in meter.history (warned once per sink)",
                        RuntimeWarning,
                        stacklevel=4,
                    )

    def write_meta(self, meta: dict[str, Any]) -> None:
        """What the run's numbers depend on (engine, modes): ``log_dir/meta.json``, the
        user's sinks' ``write_meta`` and, with the first row (TensorBoard's writer is made
        lazily, after a resumed run has set its purge step), a text entry."""
        if self.jsonl is not None:
            self.jsonl.write_meta(meta)
        self._meta_text = f"```\n{json.dumps(meta, indent=1, default=str)}\n```"
        self._each("write_meta", meta)

    def write_row(
        self,
        row: dict[str, Any],
        step: int,
        texts: dict[str, str] | None = None,
        figures: Callable[[], dict[str, Any]] | None = None,
    ) -> OSError | None:
        """Append ``row`` to the JSONL file (its ``OSError`` is returned, not raised: the
        in-memory history goes on), write its scalars and ``texts`` at ``step`` to
        TensorBoard and the user's sinks, and ``figures()`` (``{tag: Figure}``, only asked
        for when TensorBoard is on) to TensorBoard."""
        error = None
        if self.jsonl is not None:
            try:
                self.jsonl.write(row)
            except OSError as e:  # disk full, directory gone
                error = e
        self.tb.write(row, step, flush=False)
        if self.tb.enabled:
            if self._meta_text is not None:
                self.tb.write_text("lazymeter/meta", self._meta_text, step)
                self._meta_text = None
            for tag, text in (texts or {}).items():
                self.tb.write_text(tag, text, step)
            for tag, fig in (figures() if figures else {}).items():
                self.tb.write_figure(tag, fig, step)
            if self.tb.writer is not None:
                self.tb.flush()
        self._each("write_row", row, step)
        for tag, text in (texts or {}).items():
            self._each("write_text", tag, text, step)
        return error

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """The user's scalars at a step without a measurement (every ``scalar_every``)."""
        self.tb.write_scalars(values, step)
        self._each("write_scalars", values, step)

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the run's final metrics: TensorBoard and the user's sinks."""
        self.tb.write_hparams(hparams, metrics)
        self._each("write_hparams", hparams, metrics)

    def flush(self) -> None:
        self.tb.flush()
        self._each("flush")

    def state_dict(self) -> list[dict[str, Any]]:
        """The user's sinks' own states (:class:`Sink` ``state_dict``), by position."""
        out = []
        for i, sink in enumerate(self.sinks):
            fn = getattr(sink, "state_dict", None)
            if callable(fn):
                out.append({"index": i, "type": type(sink).__name__, "state": fn()})
        return out

    @staticmethod
    def check_state(states: Any) -> None:
        """A ``ValueError`` for a malformed ``sinks`` entry of a checkpoint."""
        ok = states is None or (
            isinstance(states, list)
            and all(isinstance(e, dict) and {"index", "type", "state"} <= set(e) for e in states)
        )
        if not ok:
            raise ValueError(
                "state_dict['_extra_state']['sinks']: expected a list of {index, type, state}"
            )

    def load_state_dict(self, states: list[dict[str, Any]] | None) -> None:
        """Give each sink of the same type at the same position its saved state (a sink
        list changed since the checkpoint: the others start afresh)."""
        for e in states or []:
            i = e["index"]
            if i < len(self.sinks) and type(self.sinks[i]).__name__ == e["type"]:
                fn = getattr(self.sinks[i], "load_state_dict", None)
                if callable(fn):
                    fn(e["state"])

    def rewind(self, history: Iterable[dict[str, Any]], step: int | None) -> None:
        """After loading a checkpoint: the files continue exactly as ``history`` does
        (whatever a crashed run logged after the checkpoint is dropped; the run's meta text
        was written by the run that made the checkpoint). The user's sinks' ``rewind``
        is called with the same arguments."""
        self._meta_text = None
        history = list(history)
        if self.jsonl is not None:
            self.jsonl.rewind(history, step)
        self.tb.rewind(history, step)
        self._each("rewind", history, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        self.tb.close()
        self._each("close")
        self.sinks = []  # closed: the meter goes on in memory only


def scalar_values(scalars: dict[str, Any]) -> dict[str, float]:
    """``{key: float(value)}`` of the scalars passed to ``step``; a value that is not a
    number (a string, a tensor of several elements) is a ``TypeError`` naming it."""
    values = {}
    for k, v in scalars.items():
        try:
            if isinstance(v, (str, bytes)):
                raise TypeError
            values[k] = float(v)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{k}: expected a number (or a one-element tensor), got {v!r}"
            ) from None
    return values
