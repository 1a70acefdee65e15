"""Alignment on a whole data set: ``lm.ntk_alignment`` matrix-free against dense, by P.

On the paper's net (``QuadraticNet(100, 500, 0.02)``: D=100, N=500, float32, seed 0) at
initialisation, with ``make_data(100, P, 10)`` (``y = (beta . x)^2 / 2``), for P in
(1000, 4000, 10_000, 100_000): the unbiased alignment by ``method="matrix_free"`` (default
``rows=256``, ``se_points=1000``) and, where the dense float32 kernel fits comfortably
(``P <= --max-dense``, default 10_000: 400 MB of kernel, 5.7 GiB peak with the
jackknife's float64 work), by ``method="dense"``. Reports value, stderr, estimator_se,
seconds and the peak extra resident memory; then the dense/matrix-free time ratio and
the agreement ``|value_mf - value_dense|`` in units of the matrix-free ``estimator_se`` (and of its
``stderr``).

Each (P, method) runs in a fresh subprocess (``--one P METHOD``): it builds the net and the
data, makes a warm-up call on the first 300 points (one-time set-up: routes, plans, lazy
imports), then records ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before and after the
measured call; the peak extra RSS is the difference. As a cross-check the child also
resets the address space's peak (``/proc/self/clear_refs``) and reports ``VmHWM - VmRSS``
around the call (the ``VmHWM check`` column), which is not inherited over ``exec``.

``--parts`` also times the pieces of the matrix-free method in a fresh process per P:
``KernelOperator.matvec`` on ones (``K 1``), ``.diagonal()``, ``.quadratic(Y)``, the row
sampling (``empirical_ntk(model, x[I], x_block)`` over column blocks of 4096) and the dense
subsample (``empirical_ntk`` + jackknife on ``se_points`` points).

    python benchmarks/ntk_alignment_scale.py --parts           # ~4 min on 2 loaded CPU cores
    python benchmarks/ntk_alignment_scale.py --parts --threads 1   # ~2.5 min there
    python benchmarks/ntk_alignment_scale.py --quick           # P up to 10_000

Results and discussion: docs/performance.md, "Alignment on a whole data set".
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch
from memory import reset_peak, status_kib

import lazymeter as lm

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper.polynomial import QuadraticNet, make_data  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001  (progress shows when piped)

SIZES = (1000, 4000, 10_000, 100_000)
QUICK_SIZES = (1000, 4000, 10_000)
WARMUP = 300


def build(P: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = QuadraticNet(100, 500, 0.02, generator=g)
    data = make_data(100, P, 10, generator=g)
    return model, data.x, data.y


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def one(P: int, method: str, seed: int) -> dict:
    """Child: one measured call of ``ntk_alignment`` after a warm-up; a JSON-able dict."""
    model, x, y = build(P, seed)
    lm.ntk_alignment(model, x[:WARMUP], y[:WARMUP], method=method)  # warm-up
    before = maxrss_kib()
    rss0 = status_kib("VmRSS")
    hwm_ok = reset_peak()
    t0 = time.perf_counter()
    est = lm.ntk_alignment(model, x, y, method=method)
    dt = time.perf_counter() - t0
    after = maxrss_kib()
    hwm = status_kib("VmHWM")
    return {
        "P": P,
        "method": est.method,
        "value": est.value,
        "stderr": est.stderr,
        "estimator_se": est.estimator_se,
        "seconds": dt,
        "extra_mib": (after - before) / 1024,
        "hwm_extra_mib": (hwm - rss0) / 1024 if hwm_ok else None,
        "base_mib": before / 1024,
        "threads": torch.get_num_threads(),
    }


def parts(P: int, seed: int, rows: int = 256, se_points: int = 1000) -> dict:
    """Child: the pieces of the matrix-free method, timed one by one (seconds)."""
    from lazymeter.ntk.functional import slice_inputs
    from lazymeter.ntk.operator import KernelOperator

    model, x, y = build(P, seed)
    lm.ntk_alignment(model, x[:WARMUP], y[:WARMUP], method="matrix_free")  # warm-up
    Y = y.to(torch.float64)[:, None]
    out: dict = {"P": P}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        r = fn()
        out[name] = time.perf_counter() - t0
        return r

    op = timed("operator", lambda: KernelOperator(model, x))
    timed("K 1", lambda: op.matvec(torch.ones(P, 1, dtype=torch.float64)))
    timed("diagonal", op.diagonal)
    timed("quadratic", lambda: op.quadratic(Y))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(P, generator=g)[: min(rows, P)]

    def row_blocks() -> None:
        xi = x[idx]
        for a in range(0, P, 4096):
            lm.empirical_ntk(model, xi, slice_inputs((x,), a, min(a + 4096, P)))

    timed("rows", row_blocks)
    m = min(P, se_points)
    sub = torch.randperm(P, generator=g)[:m].sort().values

    def dense_sub() -> None:
        lm.alignment_estimate(lm.empirical_ntk(model, x[sub]), y[sub].to(torch.float64)[:, None])

    timed("dense subsample", dense_sub)
    return out


def run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout (> {timeout:.0f} s)"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"failed (rc {proc.returncode}): {tail[:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="P up to 10_000")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated P values")
    ap.add_argument("--max-dense", type=int, default=10_000, help="largest P run densely")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    ap.add_argument("--parts", action="store_true", help="also time the matrix-free parts")
    ap.add_argument("--one", nargs=2, metavar=("P", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        P, what = int(args.one[0]), args.one[1]
        res = parts(P, args.seed) if what == "parts" else one(P, what, args.seed)
        print(json.dumps(res))
        return

    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else SIZES)
    )
    extra = ["--seed", str(args.seed)]
    if args.threads is not None:
        extra += ["--threads", str(args.threads)]
    load = os.getloadavg()
    print(
        f"paper's net D=100 N=500 eps=0.02, float32, seed {args.seed}, unbiased alignment; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"threads {args.threads or torch.get_num_threads()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rows: dict[tuple[int, str], dict] = {}
    print(
        "\n| P | method | value | stderr | estimator_se | time | peak extra RSS | VmHWM check |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for P in sizes:
        for method in ("matrix_free", "dense"):
            if method == "dense" and P > args.max_dense:
                print(f"| {P} | dense | skipped (P > {args.max_dense}) | | | | | |")
                continue
            r = run_child(["--one", str(P), method, *extra], args.timeout)
            rows[P, method] = r
            if "error" in r:
                print(f"| {P} | {method} | {r['error']} | | | | | |")
                continue
            print(
                f"| {P} | {method} | {r['value']:.6f} | {r['stderr']:.2e} | "
                f"{r['estimator_se']:.1e} | {r['seconds']:.1f} s | {r['extra_mib']:.0f} MiB | "
                f"{fmt(r['hwm_extra_mib'], '.0f')} |"
            )
    print(
        "\n| P | dense / matrix-free time | abs(value_mf - value_dense) | "
        "in estimator_se | in stderr (mf) |\n|---|---|---|---|---|"
    )
    for P in sizes:
        mf, de = rows.get((P, "matrix_free"), {}), rows.get((P, "dense"), {})
        if "value" not in mf or "value" not in de:
            continue
        diff = abs(mf["value"] - de["value"])
        in_se = diff / mf["estimator_se"] if mf["estimator_se"] > 0 else math.inf
        print(
            f"| {P} | {de['seconds'] / mf['seconds']:.1f}x | {diff:.1e} | {in_se:.2f} | "
            f"{diff / mf['stderr']:.3f} |"
        )
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if not args.parts:
        return
    names = ("K 1", "diagonal", "quadratic", "rows", "dense subsample")
    print(
        "\nmatrix-free parts (seconds, fresh process per P)\n\n"
        f"| P | {' | '.join(names)} | sum | whole call |\n|{'---|' * (len(names) + 3)}"
    )
    for P in sizes:
        r = run_child(["--one", str(P), "parts", *extra], args.timeout)
        if "error" in r:
            print(f"| {P} | {r['error']} |")
            continue
        whole = rows.get((P, "matrix_free"), {}).get("seconds")
        total = sum(r[n] for n in names)
        print(
            f"| {P} | {' | '.join(f'{r[n]:.2f}' for n in names)} | {total:.1f} | "
            f"{fmt(whole, '.1f')} |"
        )


if __name__ == "__main__":
    main()
