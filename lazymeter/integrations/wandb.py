"""Weights & Biases as a :class:`lazymeter.Sink`: each measurement as one ``run.log`` call.

``pip install lazymeter[wandb]``. Usage::

    from lazymeter.integrations.wandb import WandbSink

    meter = lm.LazyMeter(model, ..., sinks=[WandbSink(project="lazy-vs-rich")])
    # offline (no account, no network): WandbSink(mode="offline", dir="runs/a")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..sinks import tag_for
from ..validation import int_at_least

#: The meter's step, logged with every row: the x-axis of every ``lazymeter/*`` chart.
STEP_KEY = "lazymeter/step"


class WandbSink:
    """Measurements to a W&B run.

    * Each row's values (and the scalars passed to ``step()`` every ``scalar_every``
      steps, 10 by default) go in one ``run.log`` call, named like the TensorBoard tags
      (``ntk_drift -> lazymeter/ntk/drift``), with the meter's step as
      ``lazymeter/step``, which is declared (``define_metric``) the step metric of
      ``lazymeter/*``. The rows are logged without ``step=``, so they never collide with
      the W&B step of the user's own ``wandb.log`` calls (as long as those do not pass
      ``step=`` either: W&B drops a ``step=`` below its current step).
    * The run's meta (NTK engine, modes, estimators) goes in the config under
      ``lazymeter``; the lazy/rich read-out in the summary as ``lazymeter/regime``; the
      hparams of ``meter.close(hparams=...)`` in the config.

    Which run: ``run`` if given; else the current one (``wandb.run``, from the user's
    ``wandb.init``), left open; else ``wandb.init(**init_kwargs)`` (e.g.
    ``project=..., mode="offline", dir=...``) at the first measurement, finished at
    ``meter.close()``. Nothing is started before the first measurement, so a sink given
    to a rank that never writes (a distributed meter's other ranks) starts no run.

    Resuming: the meter's checkpoint keeps the id of a run this sink started, and a meter
    that loads it continues that run (``wandb.init(id=..., resume="allow")``) instead of
    starting one per restart; a given or current run is the user's and is kept.
    """

    def __init__(self, run: Any = None, *, scalar_every: int = 10, **init_kwargs: Any) -> None:
        self.scalar_every = int_at_least(scalar_every, "scalar_every", 1)
        try:
            import wandb  # noqa: F401 - fail here, not at the first measurement
        except ImportError:
            raise ImportError("WandbSink needs wandb: pip install lazymeter[wandb]") from None
        self._run = run
        self.init_kwargs = init_kwargs
        self._owned = False
        self._ready = False
        self._meta: dict[str, Any] | None = None

    @property
    def run(self) -> Any:
        """The W&B run, chosen (or started) on first use."""
        if self._run is None:
            import wandb

            if wandb.run is not None:
                self._run = wandb.run
            else:
                self._run = wandb.init(**self.init_kwargs)
                self._owned = True
        if not self._ready:
            self._ready = True
            self._run.define_metric(STEP_KEY)
            self._run.define_metric("lazymeter/*", step_metric=STEP_KEY)
        return self._run

    def _log(self, values: Mapping[str, Any], step: int) -> None:
        data: dict[str, Any] = {
            tag_for(k): float(v)
            for k, v in values.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        data[STEP_KEY] = int(step)
        run = self.run
        if self._meta is not None:  # kept until the run exists (see the class docstring)
            run.config.update({"lazymeter": self._meta}, allow_val_change=True)
            self._meta = None
        run.log(data)

    # ------------------------------------------------------------------ Sink
    def write_row(self, row: dict[str, float], step: int) -> None:
        """One measurement: every value but ``step``, with ``lazymeter/step = step``."""
        self._log(row, step)

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """The user's scalars between measurements, with ``lazymeter/step = step``."""
        self._log(values, step)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Kept, and put in the config under ``lazymeter`` with the first row."""
        self._meta = dict(meta)

    def write_text(self, tag: str, text: str, step: int) -> None:
        """A text (the lazy/rich read-out) in the run's summary (its latest value)."""
        self.run.summary[tag] = text

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """``hparams`` in the config (the last row's values are in the summary already)."""
        self.run.config.update(dict(hparams), allow_val_change=True)

    def state_dict(self) -> dict[str, Any]:
        """:class:`~lazymeter.Sink` ``state_dict``: the run this sink started, if any."""
        started = self._run is not None and self._owned
        return {"run_id": self._run.id if started else self.init_kwargs.get("id")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run a checkpointed sink started (unless this one was given a run
        or logs into the user's current one); a run this sink had started is finished."""
        saved = state.get("run_id")
        if saved is None or (self._run is not None and not self._owned):
            return
        if self._run is not None:
            if self._run.id == saved:
                return
            self._run.finish()
            self._run, self._owned, self._ready = None, False, False
        self.init_kwargs.update(id=saved, resume="allow")

    def close(self) -> None:
        """Finish the run if this sink started it (a given or current run is left open)."""
        if self._run is not None and self._owned:
            self._run.finish()
            self._owned = False
