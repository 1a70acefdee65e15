"""A live figure in a Jupyter notebook: ``meter.live()`` redraws ``meter.plot()`` in one
output area at each measurement (IPython's ``display(..., display_id=True)`` handle).

The figure is rendered to PNG with matplotlib's Agg canvas directly (no pyplot, no backend
switch), so it shows the same in any notebook front end, whatever its matplotlib backend.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

from .validation import int_at_least


class PNG:
    """PNG bytes that IPython displays as an image (``_repr_png_``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<lazymeter figure: {len(self.data)} bytes of PNG>"


def render_png(figure: Any, dpi: float = 80) -> bytes:
    """``figure`` (a matplotlib ``Figure``) as PNG bytes (``savefig`` picks the Agg canvas
    for this call only: no backend switch)."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def ipython_display() -> Callable[..., Any]:
    """IPython's ``display``, with a clear error outside a notebook kernel."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        raise ImportError(
            "meter.live() draws in a Jupyter notebook and needs IPython (pip install jupyter "
            "or ipykernel); elsewhere use fig = meter.plot() and fig.savefig(path)"
        ) from None
    if get_ipython() is None:
        raise RuntimeError(
            "meter.live() draws in a Jupyter notebook (or IPython), not in a plain Python "
            "process; use fig = meter.plot() and fig.savefig(path)"
        )
    return display


class LiveView:
    """A :class:`~lazymeter.Sink` that redraws a figure of the run in one notebook output at
    every ``every``-th measurement: ``meter.live()``, or ``LazyMeter(..., sinks=[LiveView()])``.

    The first drawing creates the output (``display(png, display_id=True)``, in the cell that
    draws first); later ones replace it in place (``handle.update(png)``), so a training loop
    in another cell updates the same picture. A drawing that fails warns once
    (``RuntimeWarning``) and training goes on; :attr:`error` keeps the last failure.

    Args:
        draw: makes the figure, e.g. ``meter.plot``; None: :func:`lazymeter.plot_run` of the
            rows this sink received, with the run's meta and ``plot_kwargs``.
        every: redraw at every this many measurements (a redraw costs ~1-3 s of CPU).
        display: IPython's ``display`` (default) or a stand-in with its signature:
            ``display(obj, display_id=True)`` returning a handle with ``update(obj)``.
        dpi: of the PNG.
        plot_kwargs: for :func:`~lazymeter.plot_run` when ``draw`` is None (``loss=``, ...).
    """

    def __init__(
        self,
        draw: Callable[[], Any] | None = None,
        *,
        every: int = 1,
        display: Callable[..., Any] | None = None,
        dpi: float = 80,
        **plot_kwargs: Any,
    ) -> None:
        self.draw = draw if draw is not None else self._plot_rows
        self.every = int_at_least(every, "every", 1)
        self.dpi = dpi
        self.display = display if display is not None else ipython_display()
        self.plot_kwargs = plot_kwargs
        self.rows: list[dict[str, Any]] = []  # as received (meter.history, when attached)
        self.meta: dict[str, Any] = {}
        self.handle: Any = None
        self.measurements = 0  # received since the view was made
        self.redraws = 0
        self.error: Exception | None = None
        self.closed = False

    def _plot_rows(self) -> Any:
        from .plots import plot_run

        meta = {**self.meta, **(self.plot_kwargs.get("meta") or {})}
        return plot_run(self.rows, **{**self.plot_kwargs, "meta": meta})

    def refresh(self) -> None:
        """Draw now (and create the output on the first call)."""
        try:
            image = PNG(render_png(self.draw(), self.dpi))
        except Exception as e:  # noqa: BLE001 - a picture must never stop training
            if self.error is None:
                warnings.warn(
                    f"lazymeter: the live figure could not be drawn ({e!r}); training goes on "
                    "(warned once)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self.error = e
            return
        if self.handle is None:
            self.handle = self.display(image, display_id=True)
        else:
            self.handle.update(image)
        self.redraws += 1

    # ----------------------------------------------------------------- the Sink protocol
    def write_row(self, row: dict[str, float], step: int) -> None:
        """One measurement: keep it, and redraw when it is the ``every``-th."""
        if self.closed:
            return
        self.rows.append(dict(row))
        self.measurements += 1
        if self.measurements % self.every == 0:
            self.refresh()

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta.update(meta)

    def rewind(self, history: list[dict[str, Any]], step: int | None) -> None:
        """After ``load_state_dict``: the rows are the checkpoint's; redraw them."""
        self.rows = [dict(r) for r in history]
        if not self.closed:
            self.refresh()

    def close(self) -> None:
        """Stop redrawing (the last picture stays); also called by ``meter.close()``."""
        self.closed = True

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live"
        return f"LiveView({state}, every={self.every}, redraws={self.redraws})"
