"""Scalars, text and figures to a TensorBoard ``SummaryWriter`` (:class:`TensorBoardSink`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

from ..validation import int_at_least
from .protocol import check_writer
from .tags import custom_scalars, tag_for


class TensorBoardSink:
    """Scalars, text and figures to a ``SummaryWriter`` (``torch.utils.tensorboard``),
    created lazily; the meter's TensorBoard options live here.

    ``LazyMeter(log_dir=d)`` writes TensorBoard event files to ``d`` with the defaults below;
    to change them pass one in ``sinks=[TensorBoardSink(...)]`` (it then writes to the
    meter's ``log_dir`` unless it has a ``log_dir`` or ``writer`` of its own).

    Args:
        log_dir: directory of the event files (default: the meter's ``log_dir``).
        writer: the user's own ``SummaryWriter`` (or any object with its
            ``add_scalar(tag, value, step)``; ``add_text``, ``flush``,
            ``add_custom_scalars``, ``add_image``, ``add_hparams`` are used when present),
            left open at ``close()``.
        scalar_every: write the scalars passed to ``meter.step`` every this many steps (and
            at every measurement); an event costs ~50 us.
        figures: also log the quantities' figures (kernel spectrum, decomposition) at each
            measurement; needs matplotlib.
        enabled: False writes no event files even with a ``log_dir`` (``history.jsonl``
            is still written there).

    Without the ``tensorboard`` package this sink disables itself with one warning.
    """

    def __init__(
        self,
        log_dir: str | None = None,
        writer: Any = None,
        *,
        scalar_every: int = 10,
        figures: bool = False,
        enabled: bool = True,
    ) -> None:
        check_writer(writer)
        self.log_dir = log_dir
        self._writer = writer
        self._owned = writer is None
        self._purge_step: int | None = None
        self._layout_done = False
        self.scalar_every = int_at_least(scalar_every, "scalar_every", 1)
        self.figures = bool(figures)
        self._on = bool(enabled)
        self.enabled = self._on and (writer is not None or log_dir is not None)

    def default_dir(self, log_dir: str | None) -> None:
        """Write to the meter's ``log_dir`` when this sink was given neither its own
        directory nor a writer."""
        if self._on and self.log_dir is None and self._writer is None and log_dir is not None:
            self.log_dir = log_dir
            self.enabled = True

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
        """:class:`Sink` ``write_scalars``: the user's scalars between measurements (the
        meter calls it every ``scalar_every`` steps)."""
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
