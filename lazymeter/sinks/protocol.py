"""The :class:`Sink` protocol, and the checks of what a user passes as ``writer`` and
``sinks``."""

from __future__ import annotations

from collections.abc import Iterable
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
      measurement, every ``scalar_every`` steps (the sink's attribute of that name, 10 when
      it has none; at a measurement they are in the row).
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
    """``TensorBoardSink(writer=...)`` takes a TensorBoard ``SummaryWriter`` or any object with its
    ``add_scalar(tag, value, step)`` (``add_text``, ``flush``, ``add_custom_scalars``,
    ``add_image`` and ``add_hparams`` are used when present); a :class:`Sink` or anything
    else is a ``TypeError`` naming what to pass instead."""
    if writer is None or callable(getattr(writer, "add_scalar", None)):
        return
    hint = (
        "; it is a lazymeter Sink: pass it in the meter's sinks=[...]"
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
                " (wrap a SummaryWriter: TensorBoardSink(writer=w))"
                if callable(getattr(sink, "add_scalar", None))
                else ""
            )
            raise TypeError(
                f"sinks[{i}]: {type(sink).__name__} has no {' or '.join(missing)}; a sink needs "
                f"write_row(row, step) and close(){hint}"
            )
    return out
