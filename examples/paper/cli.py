"""The paper's experiments from the command line: list, run and sweep its tasks.

From the root of a lazymeter checkout:

    python -m examples.paper tasks
    python -m examples.paper run polynomial --alpha 2 --eps 0.05 --out runs/a2
    python -m examples.paper sweep polynomial --alpha 0.5,1,2,4 --out runs/sweep --workers 2
    lazymeter report runs/sweep/* --out runs/report

``run`` and ``sweep`` go through the same harness as the example scripts
(:mod:`paper.harness`); every field of a task's configuration dataclass is a flag
(``lr_scale`` -> ``--lr-scale``) with its help text; ``--full`` is the paper's protocol,
``--smoke`` a seconds-long run, ``--out``, ``--seed``, ``--device`` work for every task.
The run directories they write are read by the library's ``lazymeter report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lazymeter

from . import TASKS
from .harness import field_help, load_task, preset, run, run_many, torch_threads
from .results import finite_or_none, reached, write_json

#: How the command is typed (its usage lines and messages).
PROG = "python -m examples.paper"


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, bool) or default is None and text.lower() in ("true", "false"):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    if default is None:
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return text
    try:
        return type(default)(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a {type(default).__name__}, got {text!r}"
        ) from None


def _fields(task: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(load_task(task).config))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


COMMON = ("seed", "device")  # configuration fields every task has, listed with the common flags


def _add_config_flags(p: argparse.ArgumentParser, task: str, grid: bool) -> None:
    """A flag per configuration field, with its help text and its defaults."""
    cls = load_task(task).config
    default, paper = cls(), cls.paper()
    group = p.add_argument_group(f"{task} configuration (CPU-sized default; paper = --full)")
    for f in _fields(task):
        d, pv = getattr(default, f.name), getattr(paper, f.name)
        shown = f"default {d!r}" + (f", paper {pv!r}" if pv != d else "")
        help_ = f"{field_help(f)} ({shown})" if field_help(f) else f"({shown})"
        if grid and not isinstance(d, tuple):
            help_ += "; comma-separated values make a grid"
        target = p if f.name in COMMON else group
        target.add_argument(
            _flag(f.name), dest=f.name, default=None, metavar="V,.." if grid else "V", help=help_
        )


def _add_common_flags(p: argparse.ArgumentParser, sweep: bool) -> None:
    p.add_argument("--out", default=None, help="output directory (default runs/TASK)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's protocol (paper preset)")
    size.add_argument("--smoke", action="store_true", help="a seconds-long run (smoke preset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figure", action="store_true", help="no figure.png")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for the runs of a sweep or multi-run task (default: 1 for run, "
        "the cores for sweep)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _overrides(
    ns: argparse.Namespace, fields: list[dataclasses.Field], default: Any, grid: bool
) -> dict[str, list[Any]]:
    """Parsed flag values: a list per field (several for a sweep grid). A field whose default
    is a tuple (e.g. ``alphas=(1.0, 2.0)``) takes one comma-separated tuple."""
    out = {}
    for f in fields:
        raw = getattr(ns, f.name, None)
        if raw is None:
            continue
        d = getattr(default, f.name)
        try:
            if isinstance(d, tuple):
                item = d[0] if d else ""
                out[f.name] = [tuple(_parse_value(v, item) for v in str(raw).split(",") if v)]
            elif grid:
                out[f.name] = [_parse_value(v, d) for v in str(raw).split(",")]
            else:
                out[f.name] = [_parse_value(str(raw), d)]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{_flag(f.name)}: {e}") from None
    return out


def _preset_name(ns: argparse.Namespace) -> str:
    return "paper" if ns.full else "smoke" if ns.smoke else "default"


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    drop = ("history", "config", "runs", "preset_differences")
    return {k: v for k, v in summary.items() if k not in drop}


def internal_tasks(scripts: dict[str, str]) -> set[str]:
    """The internal tasks: sub-runs that other tasks run for their parts (``mnist_run``, one
    alpha of ``mnist``) and that no example script runs (``polynomial``, a sub-run of
    ``alpha_eps``, is also Figure 1's task)."""
    names = set()
    for name in TASKS:
        task = load_task(name)
        if task.runs is not None:
            names |= {load_task(ref).name for _, ref, _ in task.runs(task.config())}
    return {n for n in names if n in TASKS and n not in scripts}


def example_scripts() -> dict[str, str]:
    """``{task: "examples/SCRIPT.py"}``: the example script that runs each task (the
    scripts of a checkout's ``examples/`` call ``run_task("TASK", ...)``)."""
    folder = Path(__file__).resolve().parents[1]
    scripts = {}
    for path in sorted(folder.glob("*.py")):
        for name in re.findall(r"""run_task\(\s*["'](\w+)["']""", path.read_text("utf-8")):
            scripts.setdefault(name, f"{folder.name}/{path.name}")
    return scripts


def _one_line(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width=max(width, 30), placeholder=" ...")


def cmd_tasks(ns: argparse.Namespace) -> int:
    """``tasks``: one line per task (the internal sub-runs with ``--all``); ``tasks NAME``:
    its description, example script and options."""
    scripts = example_scripts()
    if ns.name:
        task = load_task(ns.name)
        print(f"{ns.name}: {task.description}")
        if ns.name in scripts:
            print(f"example script: python {scripts[ns.name]} [options]")
        print(f"run: {PROG} run {ns.name} [options]; sweep: {PROG} sweep {ns.name} [options]")
        print("options (CPU-sized default; --full: the paper's protocol, --smoke: seconds):")
        default = task.config()
        for f in dataclasses.fields(task.config):
            print(f"    {_flag(f.name):20s} {getattr(default, f.name)!r:14}  {field_help(f)}")
        return 0
    hidden = set() if ns.all else internal_tasks(scripts)
    names = [n for n in TASKS if n not in hidden]
    w_name = max(len("task"), *(len(n) for n in names))
    w_script = max(len("example script"), *(len(scripts.get(n, "-")) for n in names))
    w_text = 150 - w_name - w_script - 4
    print(f"{'task':{w_name}}  {'example script':{w_script}}  what it is")
    for n in names:
        text = _one_line(load_task(n).description, w_text)
        print(f"{n:{w_name}}  {scripts.get(n, '-'):{w_script}}  {text}")
    print(f"\noptions of a task: {PROG} tasks NAME (or the script's --help)")
    print(f"run one: {PROG} run NAME [options]; a grid: {PROG} sweep NAME [options]")
    if hidden:
        print(f"also the {len(hidden)} internal sub-run tasks: {PROG} tasks --all")
    return 0


def parse_run(
    task: str, argv: Sequence[str], prog: str | None = None
) -> tuple[Any, argparse.Namespace]:
    """``(configuration, flags)`` of ``run TASK ARGV``: the preset (``--full``,
    ``--smoke`` or the default) with every configuration flag given."""
    p = argparse.ArgumentParser(prog=prog or f"{PROG} run {task}")
    _add_common_flags(p, sweep=False)
    _add_config_flags(p, task, grid=False)
    ns = p.parse_args(list(argv))
    base = preset(task, _preset_name(ns))
    try:
        values = {k: v[0] for k, v in _overrides(ns, _fields(task), base, grid=False).items()}
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return dataclasses.replace(base, **values), ns


def run_task(task: str, argv: Sequence[str] | None = None, prog: str | None = None) -> dict:
    """``run TASK`` (and every example script): parse, run, print; the summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, ns = parse_run(task, argv, prog)
    out = ns.out or os.path.join("runs", task)
    summary = run(
        task,
        cfg,
        out,
        progress=not ns.no_progress,
        figure=not ns.no_figure,
        workers=ns.workers or 1,
        threads=ns.threads,
    )
    # strict JSON: a crossing that was not reached is null (as in summary.json), not NaN
    print(json.dumps(finite_or_none(_short(summary)), indent=1, default=str, allow_nan=False))
    headline = load_task(task).headline
    if headline is not None:
        print(headline(summary))
    differs = ", ".join(
        f"{k}={v['value']!r} (paper {v['paper']!r})"
        for k, v in summary["preset_differences"].items()
    )
    print(
        f"preset: {_preset_name(ns)}"
        + (f"; differs from the paper in {differs}" if differs else "")
    )
    fig = f", {summary['figure']}" if summary.get("figure") else ""
    print(f"wrote {out}/ (summary.json{fig}); report: lazymeter report {out}")
    return summary


def cmd_sweep(ns: argparse.Namespace, rest: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} sweep {ns.task}")
    _add_common_flags(p, sweep=True)
    _add_config_flags(p, ns.task, grid=True)
    ns2 = p.parse_args(list(rest))
    base = preset(ns.task, _preset_name(ns2))
    try:
        grid = _overrides(ns2, _fields(ns.task), base, grid=True)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if not grid:
        print(
            "sweep: give at least one flag with comma-separated values, e.g. --alpha 0.5,1,2",
            file=sys.stderr,
        )
        return 2
    names = list(grid)
    combos = [dict(zip(names, vals, strict=True)) for vals in itertools.product(*grid.values())]
    out = ns2.out or os.path.join("runs", f"{ns.task}-sweep")
    varying = [k for k in names if len(grid[k]) > 1] or names[:1]
    label = lambda c: ",".join(f"{k}={c[k]}" for k in varying)  # noqa: E731
    jobs = [
        (label(c), ns.task, dataclasses.replace(base, **c), os.path.join(out, label(c)))
        for c in combos
    ]
    workers = ns2.workers or min(len(jobs), os.cpu_count() or 1)
    with torch_threads(ns2.threads):
        results = run_many(
            jobs, workers=workers, progress=not ns2.no_progress, desc=f"sweep {ns.task}"
        )
    rows = [
        {"values": c, "out": j[3], **_short(r)}
        for c, j, r in zip(combos, jobs, results, strict=True)
    ]
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "sweep.json"), rows, indent=1)
    for r in rows:
        g = r.get("time_to_grok") or {}
        print(
            f"  {r['values']}: test loss {reached(r.get('final_test_loss'), '.4g', missing='-')}, "
            f"grok train/test steps {reached(g.get('train_step'))}/{reached(g.get('test_step'))}"
        )
    print(f"wrote {out}/sweep.json; report: lazymeter report {out}/*/ --out {out}/report")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Reports of the run directories: lazymeter report DIR... (the library's command).",
    )
    ap.add_argument("--version", action="version", version=f"lazymeter {lazymeter.__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    tasks = sub.add_parser(
        "tasks",
        help="list the tasks ('tasks NAME': a task's options)",
        description=(
            "One line per task; with NAME, the task's description, example script and options."
        ),
    )
    tasks.add_argument(
        "name", nargs="?", choices=sorted(TASKS), metavar="NAME", help="a task: show its options"
    )
    tasks.add_argument("--all", action="store_true", help="also the internal sub-run tasks")
    for name in ("run", "sweep"):
        p = sub.add_parser(
            name,
            help=f"{name} a task ('{PROG} {name} TASK --help' lists its options)",
            add_help=False,
        )
        p.add_argument("task", choices=sorted(TASKS))
    return ap


def _task_list(command: str) -> str:
    width = max(len(n) for n in TASKS)
    rows = [f"  {n:{width}}  {load_task(n).description}" for n in TASKS]
    return (
        f"usage: {PROG} {command} TASK [options]   ({PROG} {command} TASK --help: its "
        "options)\n\ntasks:\n" + "\n".join(rows)
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["run"], ["sweep"]) and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        # Without a task there are no options to show yet: list the tasks instead.
        print(_task_list(argv[0]), file=sys.stdout if len(argv) > 1 else sys.stderr)
        return 0 if len(argv) > 1 else 2
    ap = build_parser()
    ns, rest = ap.parse_known_args(argv)
    try:
        if ns.command == "run":
            run_task(ns.task, rest)
            return 0
        if ns.command == "sweep":
            return cmd_sweep(ns, rest)
        if rest:
            ap.error(f"unrecognized arguments: {' '.join(rest)}")
        return cmd_tasks(ns)
    except argparse.ArgumentTypeError as e:
        print(f"{PROG} {ns.command}: {e}", file=sys.stderr)
        return 2
