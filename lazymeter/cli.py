"""The ``lazymeter`` command: list, run and sweep the bundled tasks; report on run directories.

    lazymeter tasks
    lazymeter run polynomial --alpha 2 --eps 0.05 --out runs/a2
    lazymeter sweep polynomial --alpha 0.5,1,2,4 --out runs/sweep --workers 2
    lazymeter report runs/sweep/* --out runs/report

``run`` and ``sweep`` call the same ``train`` function as the example scripts; every field
of a task's configuration dataclass is a flag (``lr_scale`` -> ``--lr-scale``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from .tasks import TASKS


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


def _config_fields(task: str) -> tuple[type, Any, list[dataclasses.Field]]:
    cfg_cls, train = TASKS[task].load()
    return cfg_cls, train, list(dataclasses.fields(cfg_cls))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(p: argparse.ArgumentParser, fields: list[dataclasses.Field], grid: bool):
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"default {default!r}" + (" (comma-separated values make a grid)" if grid else "")
        p.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            metavar="V" if not grid else "V,..",
            help=help_,
        )


def _config(cfg_cls: type, fields: list[dataclasses.Field], values: dict[str, Any], full: bool):
    base = cfg_cls.paper() if full and hasattr(cfg_cls, "paper") else cfg_cls()
    return dataclasses.replace(base, **values)


def _overrides(
    ns: argparse.Namespace, fields: list[dataclasses.Field], grid: bool
) -> dict[str, list[Any]]:
    """Parsed flag values: a list per field (several for a sweep grid). A field whose default
    is a tuple (e.g. ``ks=(1, 70, 100)``) takes one comma-separated tuple."""
    out = {}
    for f in fields:
        raw = getattr(ns, f.name)
        if raw is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            if isinstance(default, (tuple, list)):
                item = default[0] if default else ""
                out[f.name] = [tuple(_parse_value(v, item) for v in str(raw).split(","))]
            elif grid:
                out[f.name] = [_parse_value(v, default) for v in str(raw).split(",")]
            else:
                out[f.name] = [_parse_value(str(raw), default)]
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{_flag(f.name)}: {e}") from None
    return out


def _short(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("history", "config")}


def cmd_tasks(ns: argparse.Namespace) -> int:
    for name, spec in TASKS.items():
        cfg_cls, _ = spec.load()
        print(f"{name}: {spec.description}")
        for f in dataclasses.fields(cfg_cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            print(f"    {_flag(f.name):18s} {default!r}")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    cfg_cls, train, fields = _config_fields(ns.task)
    values = {k: v[0] for k, v in _overrides(ns, fields, grid=False).items()}
    cfg = _config(cfg_cls, fields, values, ns.full)
    out = ns.out or os.path.join("runs", ns.task)
    summary = train(cfg, out, progress=not ns.no_progress)
    print(json.dumps(_short(summary), indent=1, default=str))
    print(
        f"wrote {out}/ (history.jsonl, summary.json, figure.png, TensorBoard events); "
        f"report: lazymeter report {out}"
    )
    return 0


def _sweep_one(args: tuple[str, dict[str, Any], bool, str]) -> dict[str, Any]:
    task, values, full, out = args
    from .threads import torch_threads

    cfg_cls, train, fields = _config_fields(task)
    with torch_threads(1):  # one process per core; the count is restored afterwards
        summary = train(_config(cfg_cls, fields, values, full), out, progress=False)
    return {"values": values, "out": out, **_short(summary)}


def cmd_sweep(ns: argparse.Namespace) -> int:
    import concurrent.futures as cf
    import multiprocessing as mp

    cfg_cls, _, fields = _config_fields(ns.task)
    grid = _overrides(ns, fields, grid=True)
    if not grid:
        print(
            "sweep: give at least one flag with comma-separated values, e.g. --alpha 0.5,1,2",
            file=sys.stderr,
        )
        return 2
    names = list(grid)
    combos = [dict(zip(names, vals, strict=True)) for vals in itertools.product(*grid.values())]
    out = ns.out or os.path.join("runs", f"{ns.task}-sweep")
    varying = [k for k in names if len(grid[k]) > 1] or names[:1]
    jobs = [
        (ns.task, c, ns.full, os.path.join(out, ",".join(f"{k}={c[k]}" for k in varying)))
        for c in combos
    ]
    workers = ns.workers or min(len(jobs), os.cpu_count() or 1)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the examples extra
        tqdm = None
    results = []
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch threads
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_sweep_one, j) for j in jobs]
        bar = tqdm(total=len(jobs), desc=f"sweep {ns.task}", unit="run") if tqdm else None
        for fut in cf.as_completed(futures):
            results.append(fut.result())
            if bar:
                bar.update(1)
        if bar:
            bar.close()
    results.sort(key=lambda r: [str(r["values"][k]) for k in names])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    for r in results:
        g = r.get("time_to_grok", {})
        print(
            f"  {r['values']}: test loss {r.get('final_test_loss', math.nan):.4g}, "
            f"grok train/test steps {g.get('train_step')}/{g.get('test_step')}"
        )
    print(f"wrote {out}/sweep.json; report: lazymeter report {out}/*/ --out {out}/report")
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from .regime import RegimeThresholds
    from .report import write_report

    dirs = [d for d in ns.dirs if os.path.isdir(d) or not os.path.exists(d)]
    out = ns.out or os.path.join(dirs[0] if len(dirs) == 1 else ".", "report")
    try:
        png, page = write_report(dirs, out, RegimeThresholds())
    except (FileNotFoundError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"wrote {png} and {page}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lazymeter", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the bundled tasks and their defaults")
    for name in ("run", "sweep"):
        p = sub.add_parser(name, help=f"{name} a bundled task", add_help=False)
        p.add_argument("task", choices=sorted(TASKS))
        p.add_argument("-h", "--help", action="store_true")
        p.add_argument("--out", default=None, help="output directory")
        p.add_argument("--full", action="store_true", help="the paper's full budget")
        if name == "run":
            p.add_argument("--no-progress", action="store_true")
        else:
            p.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    p = sub.add_parser("report", help="figure + HTML report of run directories")
    p.add_argument("dirs", nargs="+", help="run directories (with history.jsonl)")
    p.add_argument("--out", default=None, help="path prefix of report.png/.html")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    ns, rest = ap.parse_known_args(argv)
    if ns.command in ("run", "sweep"):
        # Second pass: the task is known, so its configuration fields become flags.
        _, _, fields = _config_fields(ns.task)
        p = argparse.ArgumentParser(prog=f"lazymeter {ns.command} {ns.task}")
        _add_config_flags(p, fields, grid=ns.command == "sweep")
        if ns.help:
            p.print_help()
            return 0
        ns2 = p.parse_args(rest)
        for k, v in vars(ns2).items():
            setattr(ns, k, v)
    elif rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    command = {"tasks": cmd_tasks, "run": cmd_run, "sweep": cmd_sweep, "report": cmd_report}
    try:
        return command[ns.command](ns)
    except argparse.ArgumentTypeError as e:
        print(f"lazymeter {ns.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
