"""LazyMeter for the HuggingFace ``transformers.Trainer``.

    from lazymeter.integrations.huggingface import LazyMeterCallback

    cb = LazyMeterCallback(alpha=10, probe=(input_ids, labels), schedule="log")
    args = TrainingArguments("out", learning_rate=cb.scaled_lr(1e-3, "adam"), ...)
    trainer = Trainer(model=cb.wrap(model), args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()                     # or trainer.train(resume_from_checkpoint=True)

**What the Trainer trains.** A HuggingFace model computes its loss inside ``forward`` from
``labels``, so a callback alone cannot make the loss see ``alpha * (f - f0)``: the Trainer
must train the rescaled model. ``cb.wrap(model)`` returns a :class:`ScaledTrainerModel`
whose ``forward`` runs ``model`` *without* the labels, replaces the logits by
``alpha * (logits - logits0)`` (``logits0``: the initial model's, from the meter's frozen
snapshot, no graph) or ``alpha * logits`` (``center=False``), and computes the loss on
those logits with ``loss_fn`` (default :func:`causal_lm_loss`, the loss GPT-2's own
``forward`` computes: next-token cross-entropy, ``-100`` ignored). The gradients, the
logged ``loss``, ``eval_loss`` and ``trainer.predict`` logits are thus all those of
``alpha * (f - f0)``; ``model`` itself is left unchanged (it still computes ``f``, e.g. for
``generate``). A ``compute_loss_func`` given to the Trainer also sees the rescaled logits.

**What the meter measures.** The callback builds a :class:`~lazymeter.LazyMeter` around
``model`` when the Trainer is built. By default it measures the logits at the position that
predicts the last label, ``output.logits[:, -2]`` (``[P, vocab]``; ``logits[:, t]`` predicts
token ``t + 1``), against the probe's last labels, ``labels[:, -1]`` (the answer token of a
grokking-style sequence ``a b = c``); sequence-level (2-D) logits and 1-D labels are used as
they are. Pass ``output_fn`` (and matching probe labels) to measure something else,
``probe=lazymeter.ProbeSet((ids, labels), test=(ids_t, labels_t), max_points=...)`` for
held-out points, and ``ntk=lazymeter.NTKOptions(outputs=lazymeter.ntk.Sketch(s))`` for a
real vocabulary (one backward pass per output otherwise).

**Steps, logs, files.** The meter's step is the Trainer's ``state.global_step``: the row at
step ``k`` is measured after ``k`` optimiser steps (step 0: at ``on_train_begin``, before any),
and its ``train_loss`` is the loss of the batch of optimiser step ``k``, as the Trainer logs
it at the same step (with gradient accumulation: the step's micro-batches on this process).
At ``on_train_end`` the last step is measured when the schedule skipped it (the Lightning
callback's steps are the same: ``trainer.global_step`` after the optimiser step).
Each row is appended to ``trainer.state.log_history`` (keys ``lazymeter/...``, with
``step`` and ``epoch``; so it is in every checkpoint's ``trainer_state.json``) and written
to ``history.jsonl`` and TensorBoard event files in ``args.output_dir`` (or ``log_dir``),
so ``lazymeter report OUTPUT_DIR`` reads the run.

**Checkpoints.** ``on_save`` writes the meter's state (snapshot ``theta0``, ``K0``, probes,
history, schedule; not the weights, which the checkpoint holds) to
``checkpoint-N/lazymeter.pt``. When training resumes at step ``N``, the callback loads it
from ``args.output_dir/checkpoint-N`` (or ``args.resume_from_checkpoint``, when set): the
history, ``history.jsonl`` and TensorBoard continue from step ``N`` (rows a crashed run wrote
after it are dropped), and ``f0`` is the first run's initial model.

**Distributed training.** Only global rank zero measures and writes files (the meter has
``distributed=None``: no collective in a measurement); every rank computes ``f0`` for its
own batches, from rank 0's snapshot (broadcast at ``on_train_begin``).

Not supported: ``label_smoothing_factor`` (pass a smoothed ``loss_fn`` instead), models that
return tuples (``return_dict=False``), model-parallel and DeepSpeed/FSDP sharding.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import types
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "lazymeter.integrations.huggingface needs transformers: "
        "pip install 'lazymeter[huggingface]'"
    ) from e

from ..meter import LazyMeter
from ..ntk.functional import call_with, replayed_rng, rng_state
from ..probes import ProbeSet
from ..scaled import scaled_lr
from ..sinks import tag_for

#: File with the meter's state inside each Trainer checkpoint folder.
STATE_FILE = "lazymeter.pt"

LossFn = Callable[[Tensor, Tensor, Any], Tensor]


def causal_lm_loss(
    logits: Tensor, labels: Tensor, num_items_in_batch: Tensor | int | None = None
) -> Tensor:
    """The loss a HuggingFace model computes from ``labels``, on the given logits.

    3-D logits ``[B, T, V]`` (causal LM): next-token cross-entropy, ``logits[:, t]`` against
    ``labels[:, t + 1]``, label ``-100`` ignored (as ``ForCausalLMLoss``). 2-D logits
    ``[B, C]`` with labels ``[B]`` (sequence classification): cross-entropy. In nats, in
    float32 or wider. Mean over the counted labels, or ``sum / num_items_in_batch`` when the
    Trainer passes the number of labels in the whole (accumulated) batch.
    """
    if logits.dim() == 3:
        logits, labels = logits[:, :-1], labels[:, 1:]
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    labels = labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    total = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def _logits(out: Any) -> Tensor:
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    raise TypeError(
        f"model: returned {type(out).__name__} without 'logits'; the Trainer's model must "
        "return a ModelOutput (or dict) with logits (do not pass return_dict=False)"
    )


def _with(out: Mapping[str, Any], logits: Tensor, loss: Tensor | None) -> Any:
    """``out`` with ``logits`` replaced and ``loss`` set (its own class when that has a
    ``loss`` field, else a dict)."""
    new = {k: v for k, v in out.items() if k not in ("loss", "logits")}
    new = {"loss": loss, "logits": logits, **new} if loss is not None else {"logits": logits, **new}
    cls = type(out)
    if dataclasses.is_dataclass(out) and "loss" in {f.name for f in dataclasses.fields(out)}:
        return cls(**new)
    return new


def last_label_logits(out: Any) -> Tensor:
    """What the meter measures by default: ``logits[:, -2]`` (``[B, V]``, the prediction of
    the last token) of token-level logits ``[B, T, V]``; 2-D logits ``[B, C]`` as they are."""
    logits = _logits(out)
    return logits[:, -2] if logits.dim() == 3 else logits


def as_probe(probe: Any) -> tuple[Tensor, Tensor] | None:
    """``(input_ids [P, T], y)`` for the meter from ``(input_ids, labels)``, a batch dict
    (``{"input_ids": ..., "labels": ...}``, e.g. a datasets slice ``ds[:64]``) or a list of
    examples (dicts); ``y`` is ``labels[:, -1]`` for token labels ``[P, T]`` (the label the
    default ``output_fn`` predicts), the labels as they are when 1-D, and the last input id
    when there are no labels (a causal LM whose collator copies ``input_ids``)."""
    if probe is None:
        return None
    if isinstance(probe, Sequence) and probe and isinstance(probe[0], Mapping):
        probe = {k: torch.stack([torch.as_tensor(e[k]) for e in probe]) for k in probe[0]}
    if isinstance(probe, Mapping):
        x = probe["input_ids"]
        y = probe.get("labels", probe.get("label"))
    elif isinstance(probe, Sequence) and len(probe) == 2:
        x, y = probe
    else:
        raise TypeError(
            "probe: expected (input_ids, labels), a dict with 'input_ids' (and 'labels') or "
            f"a list of such examples; got {type(probe).__name__}"
        )
    x = torch.as_tensor(x)
    y = x if y is None else torch.as_tensor(y)
    return x, (y[:, -1] if y.dim() == 2 else y)


def as_probes(probe: Any) -> ProbeSet | tuple[Tensor, Tensor] | None:
    """:func:`as_probe` of ``probe``, or of a :class:`~lazymeter.ProbeSet`'s train and test
    points (its ``max_points`` and ``seed`` kept)."""
    return probe.map(as_probe) if isinstance(probe, ProbeSet) else as_probe(probe)


class ScaledTrainerModel(nn.Module):
    """The model a ``Trainer`` trains: ``alpha * (f - f0)`` with the loss on those logits.

    Made by :meth:`LazyMeterCallback.wrap`; see the module docstring. ``forward`` takes the
    model's own arguments (its signature is the model's, so the Trainer keeps the dataset's
    columns) plus ``labels`` and ``num_items_in_batch``; returns the model's output with
    ``logits`` rescaled and ``loss`` (when labels are given) computed on them. Attributes it
    does not have (``config``, ``gradient_checkpointing_enable``...) are the model's.
    ``state_dict`` is the model's (prefixed ``model.``), each tied tensor once.
    """

    #: The Trainer passes ``num_items_in_batch`` (correct gradient accumulation).
    accepts_loss_kwargs = True

    def __init__(self, model: nn.Module, callback: LazyMeterCallback) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_callback", callback)  # not a submodule
        self._params = set(inspect.signature(model.forward).parameters)
        #: Tied duplicates left out of ``state_dict`` (the Trainer re-ties them on load).
        self._keys_to_ignore_on_save: list[str] = []

        # The Trainer reads ``inspect.signature(model.forward)`` to drop the dataset columns
        # the model does not take: this instance's forward shows the wrapped model's
        # signature (a bound method, so that a deep copy rebinds it to the copy).
        sig = inspect.signature(model.forward)
        me = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)

        def forward(self: ScaledTrainerModel, *args: Any, **kwargs: Any) -> Any:
            return ScaledTrainerModel.forward(self, *args, **kwargs)

        forward.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[me, *sig.parameters.values()]
        )
        object.__setattr__(self, "forward", types.MethodType(forward, self))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None:
                raise
            return getattr(model, name)

    def forward(
        self,
        *args: Any,
        labels: Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The model's output with ``logits = alpha * (logits - logits0)`` (``center``) or
        ``alpha * logits``, and ``loss = loss_fn(logits, labels, num_items_in_batch)`` when
        ``labels`` are given; ``logits0`` from the meter's snapshot of the initial model,
        run on the same inputs in the same mode, without a graph."""
        cb = self._callback
        meter = cb.meter
        if meter is None:
            raise RuntimeError(
                "ScaledTrainerModel: its LazyMeterCallback has not been set up; pass it to the "
                "Trainer: Trainer(model=cb.wrap(model), callbacks=[cb], ...)"
            )
        if "use_cache" in self._params and "use_cache" not in kwargs:
            kwargs["use_cache"] = False  # training never reuses a cache; saves memory
        # f0 replays f's random numbers (the same dropout masks; the run's RNG advances as
        # by f alone), as LazyMeter's forward does.
        device = meter._device()
        state = rng_state(device) if meter.center and self.model.training else None
        out = self.model(*args, **kwargs)
        logits = _logits(out)
        if meter.center:
            replay = replayed_rng(state, device) if state is not None else nullcontext()
            with torch.no_grad(), replay:  # f0: the frozen initial model, in the same mode
                out0 = call_with(meter.net, meter.snapshot.as_dict(), args, kwargs)
            logits = logits - _logits(out0)
        if meter.alpha != 1.0:
            logits = meter.alpha * logits
        loss = None
        if labels is not None:
            loss = cb.loss_fn(logits, labels, num_items_in_batch)
            if self.training and torch.is_grad_enabled():
                cb._record_loss(loss, num_items_in_batch is not None)
        return _with(out, logits, loss)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        state = super().state_dict(*args, **kwargs)
        seen: dict[tuple[Any, ...], str] = {}
        for k in list(state):
            v = state[k]
            if not isinstance(v, Tensor) or v.device.type == "meta":
                continue
            key = (v.device, v.data_ptr(), v.dtype, tuple(v.shape), v.stride())
            if key in seen:  # a tied weight (lm_head = wte): safetensors stores each once
                del state[k]
                if k not in self._keys_to_ignore_on_save:
                    self._keys_to_ignore_on_save.append(k)
            else:
                seen[key] = k
        return state

    def tie_weights(self) -> None:
        tie = getattr(self.model, "tie_weights", None)
        if callable(tie):
            tie()


class LazyMeterCallback(TrainerCallback):
    """``transformers.TrainerCallback`` around :class:`~lazymeter.LazyMeter` (module docstring).

    Args:
        alpha: output scale, as for LazyMeter. Set the learning rate with :meth:`scaled_lr`.
        probe: training points to measure on: ``(input_ids [P, T], labels)``, a batch dict or
            a list of examples (:func:`as_probe`), or a :class:`~lazymeter.ProbeSet` of
            those (with held-out points, how many, seed); moved to the model's device.
        test_probe: lazymeter 0.1's spelling of ``ProbeSet(..., test=...)``: still passed on
            to the meter, which warns (:mod:`lazymeter.deprecations`).
        schedule: when to measure, in Trainer steps (``state.global_step``).
        center: subtract the initial model's logits.
        output_fn: what the meter measures from the model's output (default
            :func:`last_label_logits`); it must match the probe labels.
        loss_fn: ``loss_fn(logits, labels, num_items_in_batch) -> scalar`` on the rescaled
            logits (default :func:`causal_lm_loss`): a mean over the batch's items, or
            ``sum / num_items_in_batch`` when that is not None.
        log_dir: where ``history.jsonl`` and TensorBoard files go (default
            ``args.output_dir``).
        **meter_kwargs: any other LazyMeter keyword (``quantities``, ``ntk``, ``sinks``, ...).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        probe: Any = None,
        test_probe: Any = None,
        schedule: Any = "log",
        center: bool = True,
        output_fn: Callable[[Any], Tensor] | None = None,
        loss_fn: LossFn | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        **meter_kwargs: Any,
    ) -> None:
        self.kwargs: dict[str, Any] = dict(
            alpha=alpha,
            center=center,
            schedule=schedule,
            output_fn=output_fn or last_label_logits,
            **meter_kwargs,
        )
        # Only global rank zero steps the meter, so it must not wait for the other ranks.
        self.kwargs.setdefault("distributed", None)
        self.alpha = float(alpha)
        self.probe, self.test_probe = as_probes(probe), as_probe(test_probe)
        self.log_dir = log_dir
        self.loss_fn: LossFn = loss_fn or causal_lm_loss
        self.meter: LazyMeter | None = None
        self.model: ScaledTrainerModel | None = None
        self._losses: list[tuple[Tensor, bool]] = []

    def wrap(self, model: nn.Module) -> ScaledTrainerModel:
        """The module to give the Trainer: trains ``alpha * (model - model0)``."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.model = ScaledTrainerModel(model, self)
        return self.model

    def scaled_lr(self, lr: float, optimizer: str = "adam") -> float:
        """:meth:`lazymeter.LazyMeter.scaled_lr` for this alpha (default ``"adam"``: the
        Trainer's optimiser is AdamW): ``lr / alpha``; ``"sgd"``: ``lr / alpha**2``."""
        net = None if self.model is None else self.model.model
        params = [] if net is None else [p for p in net.parameters() if p.requires_grad]
        return scaled_lr(lr, self.alpha, optimizer, params[0].dtype if params else None)

    # ------------------------------------------------------------------ Trainer events
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if self.model is None or model is not self.model:
            raise ValueError(
                "LazyMeterCallback: the Trainer must train the wrapped model: "
                "Trainer(model=cb.wrap(model), callbacks=[cb], ...)"
            )
        if self.meter is not None and self.meter.net is self.model.model:
            return  # a second Trainer on the same callback and model: the same run
        main = state.is_world_process_zero
        device = next(self.model.parameters()).device
        if main:
            kwargs = dict(self.kwargs)
            if self.test_probe is not None:  # 0.1's spelling: the meter warns
                kwargs["test_probe"] = self._to(self.test_probe, device)
            self.meter = LazyMeter(
                self.model.model,
                probe=self._to(self.probe, device),
                log_dir=self.log_dir if self.log_dir is not None else args.output_dir,
                **kwargs,
            )
        else:  # other ranks only compute f0 for their own batches: no probe, no files
            k = self.kwargs
            self.meter = LazyMeter(
                self.model.model,
                k["alpha"],
                center=k["center"],
                quantities=[],
                distributed=None,
            )

    @staticmethod
    def _to(probe: Any, device: torch.device) -> Any:
        """``probe`` (``(x, y)``, a :class:`ProbeSet` of them, or None) on ``device``."""
        if isinstance(probe, ProbeSet):
            return probe.map(lambda p: LazyMeterCallback._to(p, device))
        return None if probe is None else tuple(t.to(device) for t in probe)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        meter = self._meter()
        meter.to(next(meter.net.parameters()).device)  # the Trainer may have moved the model
        self._losses = []
        if state.is_world_process_zero:
            if state.global_step > 0:
                self._resume(args, state)
            elif meter.last_step is None:
                self._log(state, meter.step(step=0))  # the initial model, before any update
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in meter.snapshot.buffers():  # f0 is rank 0's initial model everywhere
                dist.broadcast(t, src=0)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        losses, self._losses = self._losses, []
        meter = self.meter
        if meter is None or not state.is_world_process_zero:
            return
        step = state.global_step
        if meter.last_step is not None and step <= meter.last_step:
            return
        scalars = {}
        # float() waits for the device: only at steps where the loss is recorded (and at
        # the last step: the run's final row).
        if losses and (meter.wants_scalars(step) or step >= state.max_steps > 0):
            scalars["train_loss"] = self._step_loss(losses, args)
        self._log(state, meter.step(step=step, **scalars))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The last step's row, when the schedule skipped that step.
        if self.meter is not None and state.is_world_process_zero:
            self._log(state, self.meter._measure_last())

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.meter is None or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        os.makedirs(folder, exist_ok=True)
        # The weights are in the checkpoint already: only the meter's own state.
        own = {k: v for k, v in self.meter.state_dict().items() if not k.startswith("model.")}
        torch.save(own, os.path.join(folder, STATE_FILE))

    # ------------------------------------------------------------------ helpers
    def _meter(self) -> LazyMeter:
        if self.meter is None:
            raise RuntimeError("LazyMeterCallback: not set up (pass it to the Trainer)")
        return self.meter

    def _record_loss(self, loss: Tensor, normalised: bool) -> None:
        self._losses.append((loss.detach(), normalised))

    @staticmethod
    def _step_loss(losses: list[tuple[Tensor, bool]], args: TrainingArguments) -> float:
        """The optimiser step's loss from its micro-batches: their sum when each was divided
        by the whole step's label count (times the processes, as the Trainer scales it when
        it averages tokens across devices), else their mean."""
        values = torch.stack([v.float() for v, _ in losses])
        if all(n for _, n in losses):
            world = args.world_size if getattr(args, "average_tokens_across_devices", False) else 1
            return float(values.sum()) * world
        return float(values.mean())

    def _log(self, state: TrainerState, row: dict[str, float] | None) -> None:
        """A measurement row into the Trainer's ``log_history`` (finite numbers only)."""
        if row is None:
            return
        entry: dict[str, float] = {
            tag_for(k): v
            for k, v in row.items()
            if k != "step"
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        entry["step"] = int(row["step"])
        state.log_history.append(entry)

    def _resume(self, args: TrainingArguments, state: TrainerState) -> None:
        meter = self._meter()
        step = state.global_step
        folders = [os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")]
        if isinstance(getattr(args, "resume_from_checkpoint", None), str):
            folders.insert(0, args.resume_from_checkpoint)
        for folder in folders:
            path = os.path.join(folder, STATE_FILE)
            if not os.path.isfile(path):
                continue
            state_dict = torch.load(path, map_location=meter._device(), weights_only=True)
            if state_dict.get("_extra_state", {}).get("step") != step:
                continue  # another run's checkpoint at this path
            meter.load_state_dict(state_dict, strict=False)
            return
        raise ValueError(
            f"LazyMeterCallback: training resumes at step {step} but no {STATE_FILE} of that "
            f"step is in {' or '.join(folders)}; f0 (the initial model) and the meter's "
            "history are in it. Resume from a checkpoint this callback saved, or set "
            "args.resume_from_checkpoint to its folder"
        )
