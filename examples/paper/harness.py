"""One harness for every bundled experiment: a :class:`Task` says *what* to train, the runner
does everything else the same way for all of them.

A task is

* a configuration dataclass whose fields are declared with :func:`option` (a default and a
  help text, which become ``python -m examples.paper run TASK --help``), with the presets
  ``paper()`` (the authors' protocol) and ``smoke()`` (a seconds-long run for tests), every
  field's default being the CPU-sized run; every configuration has ``seed`` and ``device``;
* ``build(cfg) -> Setup``: model, meter arguments, loss, measurement and optimiser of one run;
* ``summarize(cfg, meter, setup) -> dict``: the run's numbers;
* optionally ``runs(cfg)``: the sub-runs of a multi-run experiment (a sweep, a grid), each a
  ``(name, task, cfg)``, and ``combine(cfg, summaries) -> dict`` to summarise them;
* optionally ``plot(cfg, summary, path)`` (matplotlib, drawn only when installed) and
  ``headline(summary) -> str`` (what the command prints).

The runner (:func:`run`) owns seeding, torch threads, the :class:`lazymeter.LazyMeter`
construction (``log_dir`` = the run directory), the training loop (:func:`fit`) with its
progress bar, ``summary.json`` (strict JSON), ``figure.png`` and the TensorBoard events the
meter writes; the same function backs the example scripts and ``python -m examples.paper
run`` / ``sweep``. Experiments need only torch; figures and progress bars use the
``experiments`` extra (matplotlib, tqdm, scikit-learn) when it is installed.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .progress import progress_bar
from .results import write_json


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch intra-op threads (None or <= 0: as it is), then restore
    the count. Small models train fastest on one thread: their ops are too short for
    intra-op threads to pay off."""
    before = torch.get_num_threads()
    if n is not None and n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def option(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word for it
    """A configuration field with its help text (shown by ``python -m examples.paper run TASK
    --help``)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("option: use a tuple, not a mutable default")
    return field(default=default, metadata={"help": help})


def field_help(f: dataclasses.Field) -> str:
    """The help text of a configuration field (empty when it has none)."""
    return str(f.metadata.get("help", ""))


@dataclass
class Setup:
    """One training run as a task builds it.

    Attributes:
        model: the network; the runner wraps it in ``LazyMeter(model, log_dir=..., **meter)``.
        meter: keyword arguments of :class:`lazymeter.LazyMeter` (not ``log_dir``).
        steps: optimiser steps; the loop runs ``steps + 1`` iterations (the last only measures).
        loss: ``loss(meter, i) -> Tensor``, the scalar minimised at iteration ``i`` (its
            batch choice included).
        measure: ``measure(meter) -> {name: float}``, the scalars of a measurement row
            (``train_loss`` at least, test losses, accuracies), called under ``no_grad`` only
            when the meter measures, on the state before that iteration's update.
        optimizer: ``optimizer(meter) -> torch.optim.Optimizer`` (the meter sets lr rules).
        scheduler: ``scheduler(optimizer)`` -> an lr scheduler stepped after each update.
        step_unit: the step reported to the meter after ``i`` updates is
            ``round(i * step_unit)`` (e.g. lr-equivalent epochs when the lr is a multiple of
            the paper's); below 1, several updates share a step and only the last of them
            reports it (see :func:`reported_steps`).
        hparams: written to TensorBoard's hparams with the final numbers.
        desc: the progress bar's label.
        data: whatever the task's ``summarize`` needs again (data, labels, thresholds).
        stop: ``stop(step, scalars) -> reason | None``, asked after each measurement row;
            a reason ends the run there (e.g. converged) and is kept in :attr:`stopped`.
        stopped: why the run ended early (set by :func:`fit`; None when it ran its steps).
    """

    model: nn.Module
    meter: dict[str, Any]
    steps: int
    loss: Callable[[Any, int], Tensor]
    measure: Callable[[Any], dict[str, float]]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    step_unit: float = 1.0
    hparams: dict[str, Any] = field(default_factory=dict)
    desc: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    stop: Callable[[int, dict[str, float]], str | None] | None = None
    stopped: str | None = None


SubRun = tuple[str, "Task | str", Any]


@dataclass(frozen=True)
class Task:
    """An experiment: see the module docstring for the contract of each function."""

    name: str
    description: str
    config: type
    build: Callable[[Any], Setup] | None = None
    summarize: Callable[[Any, Any, Setup], dict[str, Any]] | None = None
    runs: Callable[[Any], list[SubRun]] | None = None
    combine: Callable[[Any, list[dict[str, Any]]], dict[str, Any]] | None = None
    plot: Callable[[Any, Mapping[str, Any], str], None] | None = None
    headline: Callable[[Mapping[str, Any]], str] | None = None

    def __post_init__(self) -> None:
        if (self.build is None) == (self.runs is None):
            raise TypeError(f"task {self.name}: give either build (one run) or runs (several)")
        names = {f.name for f in dataclasses.fields(self.config)}
        missing = {"seed", "device"} - names
        if missing:
            raise TypeError(f"task {self.name}: its configuration lacks {sorted(missing)}")
        for preset in ("paper", "smoke"):
            if not callable(getattr(self.config, preset, None)):
                raise TypeError(f"task {self.name}: {self.config.__name__}.{preset}() missing")


def load_task(ref: Task | str) -> Task:
    """A :class:`Task`, or its registered name (``paper.TASKS``), or
    ``"module:ATTRIBUTE"``."""
    if isinstance(ref, Task):
        return ref
    if ":" not in ref:
        from . import TASKS

        if ref not in TASKS:
            raise KeyError(f"unknown task {ref!r}; known: {', '.join(sorted(TASKS))}")
        ref = TASKS[ref]
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def preset(task: Task | str, name: str = "default", **overrides: Any) -> Any:
    """The configuration ``name`` (``"default"``, ``"paper"`` or ``"smoke"``) with
    ``overrides``."""
    cls = load_task(task).config
    if name not in ("default", "paper", "smoke"):
        raise ValueError(f"preset: expected default, paper or smoke, got {name!r}")
    base = cls() if name == "default" else getattr(cls, name)()
    return dataclasses.replace(base, **overrides)


def differences(cfg: Any, other: Any) -> dict[str, dict[str, Any]]:
    """``{field: {"value": cfg's, "paper": other's}}`` for every field where they differ."""
    out = {}
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(other, f.name)
        if a != b:
            out[f.name] = {"value": a, "paper": b}
    return out


def reported_steps(steps: int, step_unit: float) -> dict[int, int]:
    """``{iteration: step}``: which of the ``steps + 1`` iterations of :func:`fit` report to
    the meter, and at which step, strictly increasing (the meter's contract).

    Iteration ``i`` (the state after ``i`` updates) stands for step ``round(i * step_unit)``
    (lr-equivalent epochs when the lr is ``step_unit`` times the paper's). With ``step_unit``
    of at least 1 every iteration reports, at that step. Below 1 several iterations round to
    the same step: the last of them reports it (the step is then within half an
    lr-equivalent epoch of the state's, as for any non-integer ``i * step_unit``), except
    that iteration 0 is always step 0 and the last iteration, always reported, gets the
    next step when it would repeat the previous one (a run shorter than half a step)."""
    if steps < 0:
        raise ValueError(f"steps: expected >= 0, got {steps}")
    if not (math.isfinite(step_unit) and step_unit > 0):
        raise ValueError(f"step_unit: expected a finite number > 0, got {step_unit!r}")
    out = {0: 0}
    prev = 0
    for i in range(1, steps + 1):
        step = round(i * step_unit)
        if i == steps:
            out[i] = prev = max(step, prev + 1)
        elif step > prev and round((i + 1) * step_unit) != step:
            out[i] = prev = step
    return out


def fit(setup: Setup, meter: Any, *, progress: bool = True) -> float:
    """The training loop every task shares; returns its wall time in seconds.

    Iteration ``i`` reports step ``round(i * setup.step_unit)`` where
    :func:`reported_steps` says so (every iteration for a ``step_unit`` of at least 1; the
    steps stay strictly increasing for any ``step_unit``): when the meter will measure
    there, ``setup.measure`` gives the row's scalars (state before the update);
    otherwise the minimised loss is passed as ``train_loss`` on the steps the meter writes
    scalars (``scalar_every``: TensorBoard's curve), and read nowhere else.
    The last iteration (``i = steps``, no update) is always measured; ``setup.stop`` may end
    the run at an earlier measurement.
    A non-finite train loss at a measurement stops the run with a warning (gradient descent
    past its stability edge), keeping what was measured.
    """
    opt = setup.optimizer(meter)
    sched = setup.scheduler(opt) if setup.scheduler is not None else None
    bar = progress_bar(setup.steps, progress, setup.desc)
    t0 = time.perf_counter()
    reported = reported_steps(setup.steps, setup.step_unit)
    try:
        for i in range(setup.steps + 1):
            step = reported.get(i)  # None: an update inside a step, not reported
            loss = setup.loss(meter, i)
            measuring = step is not None and meter.will_measure(step)
            if step is None:
                pass
            elif measuring or i == setup.steps:
                with torch.no_grad():
                    scalars = setup.measure(meter)
                meter.step(step=step, **scalars)
                if not measuring:  # the final state always gets a row: summaries read it
                    meter.measure()
                bar.set_postfix(
                    {k: f"{v:.3g}" for k, v in scalars.items() if k.endswith(("loss", "acc"))},
                    refresh=False,
                )
                if not math.isfinite(scalars.get("train_loss", 0.0)):
                    warnings.warn(
                        f"{setup.desc or 'run'}: the train loss diverged at step {step}; "
                        "stopping (lower the learning rate and raise the steps)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    break
                if setup.stop is not None and i < setup.steps:
                    setup.stopped = setup.stop(step, scalars)
                    if setup.stopped is not None:
                        break
            elif meter.wants_scalars(step):  # only then written: no sync on other steps
                meter.step(step=step, train_loss=loss.item())
            else:
                meter.step(step=step)
            if i == setup.steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            bar.update(1)
    finally:
        bar.close()
    return time.perf_counter() - t0


def run(
    task: Task | str,
    cfg: Any = None,
    out: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
    workers: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run ``task`` with ``cfg`` (default: its default configuration), writing into ``out``.

    One run writes ``history.jsonl``, ``meta.json`` and TensorBoard events (the meter),
    ``summary.json`` and ``figure.png``; a multi-run task writes each sub-run into
    ``out/<name>/`` (in ``workers`` spawned processes, one torch thread each) and its own
    ``summary.json`` and figure at ``out``. ``threads`` caps torch's intra-op threads for
    the duration (restored afterwards).

    Returns:
        the summary: the task's numbers plus ``config``, ``preset_differences`` (fields that
        differ from the paper's preset), ``seconds`` and ``figure``; a single run's summary
        also holds its ``history`` (not written to ``summary.json``), a multi-run one its
        sub-runs' summaries under ``runs``.
    """
    task = load_task(task)
    cfg = task.config() if cfg is None else cfg
    if not isinstance(cfg, task.config):
        raise TypeError(f"{task.name}: expected a {task.config.__name__}, got {type(cfg)}")
    on_cpu = torch.device(cfg.device).type == "cpu"
    t0 = time.perf_counter()
    with torch_threads(threads if on_cpu else None):
        if task.runs is not None:
            jobs = [
                (n, sub, c, None if out is None else os.path.join(out, n))
                for n, sub, c in task.runs(cfg)
            ]
            subs = run_many(jobs, workers=workers, progress=progress, desc=task.name)
            summary = task.combine(cfg, subs) if task.combine is not None else {}
            summary["runs"] = subs
        else:
            summary = _run_one(task, cfg, out, progress)
    summary = {
        **summary,
        "config": dataclasses.asdict(cfg),
        "preset_differences": differences(cfg, task.config.paper()),
        "seconds": time.perf_counter() - t0,
    }
    if out is not None:
        os.makedirs(out, exist_ok=True)
        summary["figure"] = _figure(task, cfg, summary, out) if figure else None
        slim = {k: v for k, v in summary.items() if k != "history"}
        if "runs" in slim:
            slim["runs"] = [{k: v for k, v in r.items() if k != "history"} for r in slim["runs"]]
        write_json(os.path.join(out, "summary.json"), slim)
    return summary


def _run_one(task: Task, cfg: Any, out: str | None, progress: bool) -> dict[str, Any]:
    import lazymeter as lm

    torch.manual_seed(cfg.seed)  # tasks draw from their own generators; this covers the rest
    setup = task.build(cfg)
    meter = lm.LazyMeter(setup.model, log_dir=out, **setup.meter)
    seconds = fit(setup, meter, progress=progress)
    summary = task.summarize(cfg, meter, setup)
    meter.close(hparams={k: v for k, v in setup.hparams.items() if v is not None})
    return {**summary, "train_seconds": seconds, "history": meter.history}


def _figure(task: Task, cfg: Any, summary: Mapping[str, Any], out: str) -> str | None:
    """Draw the task's figure; None (and why, in a warning) when it cannot be drawn."""
    if task.plot is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(
            f"{task.name}: no figure (matplotlib is not installed: pip install "
            "'lazymeter[experiments]'); the numbers are in summary.json",
            stacklevel=3,
        )
        return None
    path = os.path.join(out, "figure.png")
    task.plot(cfg, summary, path)
    return path


def _run_job(job: tuple[str, Task | str, Any, str | None], progress: bool) -> dict[str, Any]:
    name, sub, cfg, out = job
    s = run(sub, cfg, out, progress=progress, figure=False)
    return {"name": name, **s}


def _run_job_quiet(job: tuple[str, Task | str, Any, str | None]) -> dict[str, Any]:
    with torch_threads(1):  # one process per core
        return _run_job(job, progress=False)


def run_many(
    jobs: Sequence[tuple[str, Task | str, Any, str | None]],
    *,
    workers: int = 1,
    progress: bool = True,
    desc: str = "runs",
) -> list[dict[str, Any]]:
    """Run ``(name, task, cfg, out)`` jobs, in order, or in ``workers`` spawned processes
    (a fresh interpreter each: no forked torch thread pools). Returns their summaries, each
    with its ``name``, in the order of ``jobs``."""
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        return [_run_job(j, progress) for j in jobs]
    import concurrent.futures as cf
    import multiprocessing as mp

    # Sub-runs cross a process boundary: pass registered task names, not Task objects.
    jobs = [(n, t if isinstance(t, str) else _registered_name(t), c, o) for n, t, c, o in jobs]
    bar = progress_bar(len(jobs), progress, desc, unit="run")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_job_quiet, j) for j in jobs]
        for _ in cf.as_completed(futures):
            bar.update(1)
        bar.close()
        return [f.result() for f in futures]


def _registered_name(task: Task) -> str:
    from . import TASKS

    for name, ref in TASKS.items():
        if load_task(ref) is task:
            return name
    raise ValueError(f"task {task.name} is not registered in paper.TASKS")
