"""Speed and memory of the NTK engines on cases a-f (see benchmarks/ntk_cases.py).

Each (case, method) runs in a fresh process: one warm-up call, then the median of
``--repeats`` calls, and the peak resident memory above the process's footprint before
the first call (VmHWM - VmRSS). Methods: lazymeter's ``structured``, ``jacobian``
(Jacobian contraction: the torch.func baseline) and ``ntvp`` (NTK-vector products), and
nngeometry's Gram matrix when it is installed (``pip install --no-deps nngeometry==0.4``).
Ratios are against ``jacobian`` measured in the same run; errors are relative Frobenius
distances to ``structured``. Also prints this machine's float32 GEMM rate for scale.

    python benchmarks/ntk_speed.py                      # all cases, all methods
    python benchmarks/ntk_speed.py --cases a,e --methods structured,jacobian
    python benchmarks/ntk_speed.py --write docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from memory import status_kib  # noqa: E402
from ntk_cases import CASES, make  # noqa: E402

METHODS = ["structured", "jacobian", "ntvp", "nngeometry"]


def _nngeometry_kernel(case) -> torch.Tensor:
    from nngeometry.gram import GramMatrix
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(case.x), batch_size=len(case.x))
    fn = case.output_fn or (lambda y: y)
    gram = GramMatrix(case.model, loader, function=lambda *d: fn(case.model(d[0])))
    G = gram.data  # [O, N, O, N]
    if case.trace:
        return G.diagonal(0, 0, 2).sum(-1)
    return G.permute(1, 3, 0, 2)


def child(case_name: str, method: str, repeats: int, out_path: str) -> None:
    case = make(case_name)
    torch.set_num_threads(case.threads or torch.get_num_threads())
    import lazymeter as lm

    def run() -> torch.Tensor:
        if method == "nngeometry":
            return _nngeometry_kernel(case)
        return lm.empirical_ntk(
            case.model, case.x, output_fn=case.output_fn, method=method, trace_outputs=case.trace
        )

    base = status_kib("VmRSS")
    t0 = time.perf_counter()
    K = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    torch.save(K.detach().double().reshape(K.shape[0], K.shape[1], -1), out_path)
    print(
        json.dumps(
            {
                "median": statistics.median(times),
                "first": first,
                "peak_mib": (status_kib("VmHWM") - base) / 1024,
            }
        )
    )


def gemm_rate(threads: int | None = None) -> float:
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    rate = 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    torch.set_num_threads(old)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per (case, method)")
    ap.add_argument("--write", default=None, help="also write the markdown table here")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], int(a.child[2]), a.child[3])
        return
    try:
        import nngeometry  # noqa: F401
    except ImportError:
        print("nngeometry is not installed: its column is skipped")
    g2, g1 = gemm_rate(), gemm_rate(1)
    print(
        f"torch {torch.__version__}; float32 GEMM 2048^3: {g2:.0f} GFLOP/s "
        f"({torch.get_num_threads()} threads), {g1:.0f} GFLOP/s (1 thread)"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.cases.split(","):
            case = make(name)
            print(f"\n({name}) {case.description}" + (" [1 thread]" if case.threads else ""))
            results, kernels = {}, {}
            for method in a.methods.split(","):
                path = os.path.join(tmp, f"{name}-{method}.pt")
                cmd = [sys.executable, __file__, "--child", name, method, str(a.repeats), path]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                except subprocess.TimeoutExpired:
                    results[method] = {"status": f"timeout (> {a.timeout:.0f} s)"}
                    print(f"  {method:11s} {results[method]['status']}")
                    continue
                if proc.returncode != 0:
                    err = (proc.stderr.strip().splitlines() or ["?"])[-1][:90]
                    results[method] = {"status": f"failed: {err}"}
                    print(f"  {method:11s} {results[method]['status']}")
                    continue
                results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
                kernels[method] = torch.load(path)
            ref = kernels.get("structured")
            base = results.get("jacobian", {}).get("median")
            for method, r in results.items():
                if "median" not in r:
                    rows.append((name, method, r["status"], "", "", ""))
                    continue
                err = (
                    float((kernels[method] - ref).norm() / ref.norm())
                    if ref is not None and kernels[method].shape == ref.shape
                    else float("nan")
                )
                ratio = f"{base / r['median']:.1f}x" if base else "-"
                print(
                    f"  {method:11s} {r['median'] * 1e3:9.1f} ms  peak +{r['peak_mib']:7.0f} MiB"
                    f"  vs jacobian {ratio:>7s}  rel.err {err:.1e}  (first call "
                    f"{r['first'] * 1e3:.0f} ms)"
                )
                rows.append(
                    (
                        name,
                        method,
                        f"{r['median'] * 1e3:.1f} ms",
                        f"{r['peak_mib']:.0f} MiB",
                        ratio,
                        f"{err:.0e}",
                    )
                )
    if a.write:
        with open(a.write, "w") as f:
            f.write(TABLE_HEADER.format(g2=g2, g1=g1, torch=torch.__version__, reps=a.repeats))
            f.write(
                "| case | method | median time | peak extra RSS | speed-up vs jacobian "
                "| rel. error vs structured |\n|---|---|---|---|---|---|\n"
            )
            for r in rows:
                f.write("| " + " | ".join(r) + " |\n")
        print(f"\nwrote {a.write}")


TABLE_HEADER = """# NTK engine performance

Measured by `python benchmarks/ntk_speed.py --write docs/performance.md` on this project's
CI machine kind: 2 CPU cores, torch {torch} (CPU build), float32. Each (case, method) runs in
a fresh process: median of {reps} calls after one warm-up call; memory is the peak resident
set above the process's footprint before the first call. For scale, this machine's float32
GEMM (2048^3) runs at {g2:.0f} GFLOP/s with 2 threads and {g1:.0f} GFLOP/s with 1 thread.
Cases (e) and (f) run with one thread, as the published reference figures do.

"""


if __name__ == "__main__":
    main()
