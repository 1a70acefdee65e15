"""The default memory budget (from the device) against fixed ones, on cases a-i.

For each case of ``benchmarks/ntk_cases.py``, ``empirical_ntk(method="auto")`` runs in a
fresh process (``benchmarks/ntk_speed.py``'s child: one warm-up call, the median of
``--repeats`` calls, the peak resident memory above the process's footprint) under three
budgets set through ``$LAZYMETER_MEMORY_BUDGET``: the former fixed default (512 MiB), the
default now (the variable unset: a quarter of the available RAM on the CPU), and a large
one (``--large``, 8 GiB). Prints the times, peaks and the ratios default / large (the
target: <= 1.3x) and default / 512 MiB, and the default's planned block size.

    python benchmarks/ntk_budget.py [--cases c,g,h] [--repeats 3] [--large 8GiB]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ntk_cases import CASES, make  # noqa: E402

import lazymeter as lm  # noqa: E402
from lazymeter.ntk import MEMORY_BUDGET_ENV  # noqa: E402


def run(case: str, budget: str | None, repeats: int, tmp: str, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop(MEMORY_BUDGET_ENV, None)
    if budget is not None:
        env[MEMORY_BUDGET_ENV] = budget
    path = os.path.join(tmp, f"{case}.pt")
    cmd = [sys.executable, os.path.join(HERE, "ntk_speed.py"), "--child", case, "auto"]
    try:
        proc = subprocess.run(
            [*cmd, str(repeats), path], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"status": f"> {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"status": (proc.stderr.strip().splitlines() or ["failed"])[-1][:60]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", default="8GiB")
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args()
    budgets = {"512 MiB": "512MiB", "default": None, a.large: a.large}
    print(f"default budget here: {lm.ntk.resolve_budget(None, 'cpu')[1]}")
    print(
        "| case | 512 MiB | default (block) | "
        f"{a.large} | default / {a.large} | default / 512 MiB |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.cases.split(","):
            case = make(name)
            got = {k: run(name, b, a.repeats, tmp, a.timeout) for k, b in budgets.items()}

            def cell(r: dict) -> str:
                if "median" not in r:
                    return r["status"]
                return f"{r['median']:.3f} s, {r['peak_mib']:.0f} MiB"

            block = lm.ntk.kernel_plan(
                case.model, case.x, output_fn=case.output_fn, trace_outputs=case.trace
            )["chunk_size"]
            ratios = []
            for other in (a.large, "512 MiB"):
                if "median" in got["default"] and "median" in got[other]:
                    ratios.append(f"{got['default']['median'] / got[other]['median']:.2f}x")
                else:
                    ratios.append("-")
            print(
                f"| ({name}) {case.description} | {cell(got['512 MiB'])} | "
                f"{cell(got['default'])} ({block}) | {cell(got[a.large])} | "
                f"{ratios[0]} | {ratios[1]} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
