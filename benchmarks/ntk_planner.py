"""Does the planner spend its budget? Predicted against measured peak, and what chunking costs.

For each case of ``benchmarks/ntk_cases.py`` the budget is swept by factors of two
(``--smallest`` to ``--largest``); each distinct block size the planner picks is kept at the
smallest budget that gives it, so every row is "the smallest budget that fits this block".
For each: one warm-up call, then the median of ``--repeats`` calls of
``empirical_ntk(method=<the engine auto takes>, memory_budget=...)``; the measured peak is
the resident memory's high-water mark above the footprint before the call (Linux
``/proc/self/clear_refs``), against ``kernel_plan(...)["predicted_peak"]``. The time ratio
is against the unchunked kernel (one block), measured in the same process.

Targets (issue 27): measured / predicted peak within [0.5, 2]; a budget that fits blocks
that are not tiny (>= 16 samples) costs at most ~1.3x the unchunked kernel. Smaller blocks
(``--min-block``) are not timed.

    python benchmarks/ntk_planner.py [--cases b,c,d,g,h] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from memory import reset_peak, status_kib  # noqa: E402
from ntk_cases import make  # noqa: E402

import lazymeter as lm  # noqa: E402

MIB = 2**20


def _trim() -> None:
    """Hand freed heap back to the OS, so that memory the call reuses counts in its peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(case, method: str, budget: int, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MiB above the footprint before the timed calls)."""

    def call():
        return lm.empirical_ntk(
            case.model, case.x, output_fn=case.output_fn, trace_outputs=case.trace,
            method=method, memory_budget=budget,
        )  # fmt: skip

    call()  # warm-up: routes, plans and caches
    _trim()
    base = status_kib("VmRSS")
    reset_peak()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        K = call()
        times.append(time.perf_counter() - start)
        del K
    return statistics.median(times), (status_kib("VmHWM") - base) / 1024


def _size(n: int) -> str:
    return f"{n / MIB:.0f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


def shrink(case, P: int):
    """The case on its first ``P`` samples (the ``--tiny`` run)."""
    case.x = case.x[:P]
    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="b,c,d,g,h")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smallest", default="16MiB")
    ap.add_argument("--largest", default="16GiB")
    ap.add_argument("--min-block", type=int, default=16, help="smaller blocks are not timed")
    ap.add_argument("--tiny", action="store_true", help="a few samples per case (the tests)")
    a = ap.parse_args(argv)
    if not reset_peak():
        print("cannot reset the peak RSS here (/proc/self/clear_refs)")
        return 2
    lo, hi = lm.ntk.parse_bytes(a.smallest), lm.ntk.parse_bytes(a.largest)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    print(
        "| case | budget | block | blocks | time | vs one block | predicted peak "
        "| measured peak | measured / predicted |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    worst = []
    for name in a.cases.split(","):
        case = make(name)
        if a.tiny:
            case = shrink(case, 96)
        kw = dict(output_fn=case.output_fn, trace_outputs=case.trace)
        method = lm.ntk.select_method(case.model, case.x, **kw)
        chosen: dict[int, tuple[int, dict]] = {}
        budget = lo
        while budget <= hi:
            plan = lm.ntk.kernel_plan(case.model, case.x, method=method, memory_budget=budget, **kw)
            chosen.setdefault(plan["chunk_size"], (budget, plan))
            budget *= 2
        one = max(chosen)  # the largest block seen: one block when the sweep reaches it
        t_one, _ = measure(case, method, chosen[one][0], a.repeats)
        for c in sorted(chosen):
            budget, plan = chosen[c]
            if c < min(a.min_block, one):
                continue  # tiny blocks: thousands of block pairs, slow by construction
            t, peak = (t_one, None) if c == one else measure(case, method, budget, a.repeats)
            if peak is None:
                _, peak = measure(case, method, budget, 1)
            predicted = plan["predicted_peak"] / MIB
            ratio = peak / max(predicted, 1e-9)
            worst.append((name, c, ratio, t / t_one))
            print(
                f"| ({name}) {method} | {_size(budget)} | {c} | {plan['blocks']} | "
                f"{t:.3f} s | {t / t_one:.2f}x | {predicted:.0f} MiB | {peak:.0f} MiB | "
                f"{ratio:.2f} |",
                flush=True,
            )
    far = [w for w in worst if not 0.5 <= w[2] <= 2.0]
    slow = [w for w in worst if w[1] >= 16 and w[3] > 1.3]
    print(f"peak predictions outside [0.5, 2]: {len(far)} of {len(worst)}")
    print(f"blocks of >= 16 samples slower than 1.3x one block: {len(slow)}")
    print("ntk_planner: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
