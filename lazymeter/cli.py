"""The ``lazymeter`` command: a figure and an HTML report of run directories.

    lazymeter report runs/sweep/* --out runs/report

A run directory is what :class:`~lazymeter.LazyMeter` writes with ``log_dir`` (and what the
paper's experiments write). The experiments themselves are examples, not part of the
library: from the root of a lazymeter checkout, ``python -m examples.paper tasks|run|sweep``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from . import __version__

#: The commands that ran the paper's tasks, now in the checkout's ``examples/paper``.
MOVED = ("tasks", "run", "sweep")
EXAMPLES_COMMAND = "python -m examples.paper"


def moved(command: str, rest: Sequence[str] = ()) -> str:
    """What ``lazymeter tasks|run|sweep`` says: where the paper's tasks are now."""
    typed = f"{EXAMPLES_COMMAND} {shlex.join([command, *rest])}"
    return (
        f"lazymeter {command}: the paper's tasks are examples now, not part of the installed "
        "library. From the root of a lazymeter checkout (its examples/paper package), run:\n"
        f"    {typed}\n"
        "(same flags; 'lazymeter report DIR...' still reports on the run directories)."
    )


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
    ap = argparse.ArgumentParser(
        prog="lazymeter",
        description=__doc__.split("\n\n")[0],
        epilog=f"The paper's experiments: {EXAMPLES_COMMAND} tasks|run|sweep, from the root "
        "of a lazymeter checkout.",
    )
    ap.add_argument("--version", action="version", version=f"lazymeter {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="figure + HTML report of run directories")
    p.add_argument("dirs", nargs="+", help="run directories (with history.jsonl)")
    p.add_argument("--out", default=None, help="path prefix of report.png/.html")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in MOVED:
        print(moved(argv[0], argv[1:]), file=sys.stderr)
        return 2
    ns = build_parser().parse_args(argv)
    return cmd_report(ns)


if __name__ == "__main__":
    raise SystemExit(main())
