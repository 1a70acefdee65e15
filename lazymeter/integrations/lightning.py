"""LazyMeter as a Lightning callback.

    from lazymeter.integrations.lightning import LazyMeterCallback

    class Net(L.LightningModule):
        def training_step(self, batch, i):
            x, y = batch
            out = self.lazymeter(x)          # alpha * (f(x) - f0(x)), set by the callback
            return ((out - y) ** 2).mean()

    trainer = L.Trainer(callbacks=[LazyMeterCallback(alpha=10, probe=(x, y), schedule="log")])
    # held-out points too: probe=lazymeter.ProbeSet((x, y), test=(xt, yt), max_points=128)

The callback builds a :class:`~lazymeter.LazyMeter` around the LightningModule when fitting
starts (on the module's device), exposes it as ``pl_module.lazymeter``, measures the module
before any update (step 0, at ``on_train_start``), steps it after every optimiser step with
the training loss, measures the last step at the end of training when the schedule skipped
it, logs its rows through the trainer's loggers (``lazymeter/...`` keys), logs the loss every
``log_every_n_steps`` steps as Lightning does, measures on global rank zero only, writes
``history.jsonl`` into the trainer's log directory when no ``log_dir`` is given (so
``lazymeter report`` reads the run), and saves/restores its state with the checkpoints.

**Steps.** The meter's step is ``trainer.global_step`` after the optimiser step, as in the
HuggingFace callback (``state.global_step`` at ``on_step_end``): the row at step ``k`` is
measured after ``k`` optimiser steps, and its ``train_loss`` is the loss of the batch of the
``k``-th step. Lightning's own ``self.log`` in ``training_step`` logs that batch's values at
``global_step`` before its update, ``k - 1``: one step below the meter's row.
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "lazymeter.integrations.lightning needs Lightning: pip install lightning"
    ) from e

from ..deprecations import BOARD
from ..meter import LazyMeter
from ..probes import ProbeSet
from ..sinks import TensorBoardSink, tag_for


class LazyMeterCallback(pl.Callback):
    """Lightning callback around :class:`~lazymeter.LazyMeter`.

    Args:
        alpha: output scale, as for LazyMeter.
        probe: the points to measure on, as for LazyMeter: ``(x, y)`` training points or a
            :class:`~lazymeter.ProbeSet` (with held-out points, how many, seed); tensors are
            moved to the module's device.
        test_probe: lazymeter 0.1's spelling of ``ProbeSet(..., test=(x, y))``: still
            passed on to the meter, which warns (:mod:`lazymeter.deprecations`).
        schedule: when to measure, in optimiser steps (``trainer.global_step``).
        center: subtract the initial module's output.
        output_fn: reduces the module's output to a Tensor.
        attribute: name under which the meter is set on the LightningModule.
        **meter_kwargs: any other LazyMeter keyword (``quantities``, ``ntk``, ``sinks``, ...).
            Without a ``log_dir``, ``history.jsonl`` goes to the trainer's log directory and
            no TensorBoard event files are written (the trainer's loggers have the scalars)
            unless ``sinks`` holds a :class:`~lazymeter.TensorBoardSink`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        probe: ProbeSet | tuple[torch.Tensor, torch.Tensor] | None = None,
        test_probe: tuple[torch.Tensor, torch.Tensor] | None = None,
        schedule: Any = "log",
        center: bool = True,
        output_fn: Any = None,
        attribute: str = "lazymeter",
        **meter_kwargs: Any,
    ) -> None:
        super().__init__()
        self.kwargs = dict(
            alpha=alpha, center=center, schedule=schedule, output_fn=output_fn, **meter_kwargs
        )
        # Only global rank zero steps the meter, so it must not wait for the other ranks.
        self.kwargs.setdefault("distributed", None)
        self.probe, self.test_probe, self.attribute = probe, test_probe, attribute
        self.meter: LazyMeter | None = None
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _to(probe: Any, device: torch.device) -> Any:
        """``probe`` with its ``(x, y)`` tensors on ``device`` (a :class:`ProbeSet`'s train
        and test points too); other sources (a DataLoader, batches) as they are."""
        if isinstance(probe, ProbeSet):
            return probe.map(lambda p: LazyMeterCallback._to(p, device))
        if isinstance(probe, (tuple, list)) and len(probe) == 2:
            if all(isinstance(t, torch.Tensor) for t in probe):
                return tuple(t.to(device) for t in probe)
        return probe

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before configure_optimizers, which may ask the meter for scaled_lr.
        if stage != "fit":
            return
        if self.meter is None:
            kwargs = dict(self.kwargs)
            if kwargs.get("log_dir") is None and trainer.is_global_zero:
                # history.jsonl beside the logger's files (so `lazymeter report DIR` works on
                # the run); TensorBoard scalars go through the trainer's loggers instead.
                kwargs["log_dir"] = trainer.log_dir or trainer.default_root_dir
                sinks = list(kwargs.get("sinks") or [])
                if any(k in kwargs for k in BOARD):  # 0.1's keywords: the meter translates
                    kwargs.setdefault("tensorboard", False)
                elif not any(isinstance(s, TensorBoardSink) for s in sinks):
                    kwargs["sinks"] = [TensorBoardSink(enabled=False), *sinks]
            elif not trainer.is_global_zero:
                kwargs["log_dir"] = None  # one writer per run
            if self.test_probe is not None:  # 0.1's spelling: the meter warns
                kwargs["test_probe"] = self._to(self.test_probe, pl_module.device)
            self.meter = LazyMeter(
                pl_module, probe=self._to(self.probe, pl_module.device), **kwargs
            )
        # Not registered as a submodule: the meter holds the module, not the other way round.
        object.__setattr__(pl_module, self.attribute, self.meter)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.meter is not None
        self.meter.to(pl_module.device)  # the strategy has placed the module by now
        if self._pending is not None:
            self.meter.load_state_dict(self._pending, strict=False)
            self._pending = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Step 0: the module before any optimiser step (a resumed meter has its rows).
        meter = self.meter
        if meter is None or not trainer.is_global_zero or meter.last_step is not None:
            return
        if trainer.global_step == 0:
            self._log_row(trainer, meter.step(step=0), 0)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.meter is None or not trainer.is_global_zero:
            return
        # After the optimiser step: global_step counts it (the HuggingFace callback's step).
        step = trainer.global_step
        if step <= 0 or (self.meter.last_step is not None and step <= self.meter.last_step):
            return  # gradient accumulation: no optimiser step since the last call
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        scalars = {}
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            scalars["train_loss"] = float(loss.detach())
        row = self.meter.step(step=step, **scalars)
        # Lightning logs this batch's loss at step - 1 when step % log_every_n_steps == 0.
        logged = scalars if step % max(trainer.log_every_n_steps, 1) == 0 else {}
        self._log_row(trainer, row, step, logged)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The last step's row, when the schedule skipped that step.
        if self.meter is not None and trainer.is_global_zero:
            row = self.meter._measure_last()
            if row is not None:
                self._log_row(trainer, row, int(row["step"]))

    @staticmethod
    def _log_row(
        trainer: pl.Trainer,
        row: dict[str, float] | None,
        step: int,
        scalars: dict[str, float] | None = None,
    ) -> None:
        """``scalars`` and a measurement ``row`` through the trainer's loggers at ``step``."""
        metrics: dict[str, float] = {tag_for(k): v for k, v in (scalars or {}).items()}
        if row is not None:
            metrics.update(
                {
                    tag_for(k): v
                    for k, v in row.items()
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)
                }
            )
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def state_dict(self) -> dict[str, Any]:
        if self.meter is None:
            return {}
        # The module's own weights are in the checkpoint already.
        return {k: v for k, v in self.meter.state_dict().items() if not k.startswith("model.")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.meter is None:
            self._pending = dict(state_dict)
        else:
            self.meter.load_state_dict(state_dict, strict=False)
