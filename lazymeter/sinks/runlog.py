"""One run's sinks together (:class:`RunLog`): the JSON lines, TensorBoard and the user's."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from .jsonl import JsonlSink, _fresh_history, check_writable
from .protocol import check_sinks
from .tensorboard import TensorBoardSink

#: How often the scalars passed to ``meter.step`` reach a sink that does not say
#: (its ``scalar_every`` attribute), in steps.
SCALAR_EVERY = 10


class RunLog:
    """One run's sinks: ``log_dir/history.jsonl`` (a fresh file; an earlier run's is moved
    aside), TensorBoard (the :class:`TensorBoardSink` among ``sinks``, else one in
    ``log_dir`` with its defaults) and the user's other ``sinks`` (:class:`Sink`). Any of
    them may be absent. ``history.jsonl`` also gets a scalar row at each step without a
    measurement that :attr:`scalar_every` divides (the most frequent sink's cadence)."""

    def __init__(self, log_dir: str | None, sinks: Iterable[Any] | None = None) -> None:
        sinks = check_sinks(sinks)
        boards = [s for s in sinks if isinstance(s, TensorBoardSink)]
        if len(boards) > 1:
            raise ValueError(
                f"sinks: has {len(boards)} TensorBoardSinks; pass one (its options apply to "
                "the run's event files)"
            )
        self.sinks = [s for s in sinks if not isinstance(s, TensorBoardSink)]
        self.jsonl: JsonlSink | None = None
        if log_dir is not None:
            check_writable(log_dir)
            path, previous = _fresh_history(log_dir, stacklevel=6)
            self.jsonl = JsonlSink(path, previous)
        self.tb = boards[0] if boards else TensorBoardSink()
        self.tb.default_dir(log_dir)
        self._meta_text: str | None = None
        self._failed: set[int] = set()  # id() of the user's sinks already warned about
        self._jsonl_failed = False
        self._tb_sent: tuple[int, set[str]] | None = None  # scalars TensorBoard has at a step

    def _each(self, method: str, *args: Any, only: Any = None) -> None:
        """Call ``method`` on every user sink that has it (or on ``only``). A sink that
        raises is warned about once (it may be a tracker's server gone away) and called
        again next time: measurements are kept in ``meter.history`` whatever a sink does."""
        for sink in self.sinks if only is None else [only]:
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
        sent = self._tb_sent
        # A step's scalars already written to TensorBoard (a row measured after step():
        # close(), measure()) are not written again: one point per step in each curve.
        board = row if sent is None or sent[0] != step else {
            k: v for k, v in row.items() if k not in sent[1]
        }  # fmt: skip
        self.tb.write(board, step, flush=False)
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

    @staticmethod
    def _due(sink: Any, step: int) -> bool:
        return step % getattr(sink, "scalar_every", SCALAR_EVERY) == 0

    @property
    def scalar_every(self) -> int:
        """The most frequent sink cadence (TensorBoard's, or any user sink's
        ``scalar_every``): that of the scalar rows of ``history.jsonl``."""
        cadences = [getattr(s, "scalar_every", SCALAR_EVERY) for s in self.sinks]
        return min([self.tb.scalar_every, *cadences])

    def wants_scalars(self, step: int) -> bool:
        """Whether :meth:`write_scalars` at ``step`` reaches any sink."""
        if self.jsonl is not None and step % self.scalar_every == 0:
            return True
        return (self.tb.enabled and self._due(self.tb, step)) or any(
            self._due(s, step) for s in self.sinks
        )

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """The user's scalars at a step without a measurement, to each sink whose
        ``scalar_every`` divides ``step`` (:data:`SCALAR_EVERY` when it has none), and as a
        scalar row of ``history.jsonl`` when :attr:`scalar_every` does."""
        if values and step % self.scalar_every == 0:
            self._scalar_row(values, step)
        if self._due(self.tb, step):
            self.tb.write_scalars(values, step)
            self._tb_sent = (step, set(values))
        for sink in self.sinks:
            if self._due(sink, step):
                self._each("write_scalars", values, step, only=sink)

    def write_last_scalars(self, values: dict[str, float], step: int | None) -> None:
        """The last step's scalars as a scalar row of ``history.jsonl`` unless a row of
        that step is in it already (``meter.close(measure=False)``)."""
        if step is not None and values and self.jsonl is not None:
            if self.jsonl.last_step != step:
                self._scalar_row(values, step)

    def _scalar_row(self, values: dict[str, float], step: int) -> None:
        if self.jsonl is None:
            return
        try:
            self.jsonl.write_scalars(values, step)
        except OSError as e:  # disk full, directory gone: training goes on
            if not self._jsonl_failed:
                self._jsonl_failed = True
                warnings.warn(
                    f"lazymeter: could not write {self.jsonl.path} ({e}); measurements are "
                    "kept in meter.history (warned once)",
                    RuntimeWarning,
                    stacklevel=4,
                )

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
