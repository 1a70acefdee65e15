"""Time and memory of the NTK engines on the paper's polynomial net.

Prints, for D=100, N=500 (50k parameters, one output):
* the median time of ``empirical_ntk`` on P=550 points (symmetric kernel) per method,
  next to a hand-written ``torch.func`` baseline (``vmap(jacrev)`` then one einsum, the
  torch.func NTK tutorial's recipe) measured in the same run;
* the peak resident memory of a P=4096 kernel with the default memory budget, each
  method in a fresh process, next to the size of the full ``[P, n_params]`` Jacobian
  that an unchunked computation would hold.

Run: ``python benchmarks/ntk_methods.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch
from memory import status_kib
from torch import nn
from torch.func import functional_call, jacrev, vmap

import lazymeter as lm
from lazymeter.ntk import DEFAULT_MEMORY_BUDGET, ENGINES

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper import polynomial  # noqa: E402


def QuadraticNet() -> nn.Module:
    return polynomial.QuadraticNet(D=100, N=500, eps=0.02)


def data(P: int, D: int = 100) -> torch.Tensor:
    return torch.randn(P, D) / D**0.5


def tutorial_baseline(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    J = vmap(jacrev(f), (None, 0))(params, x)
    J = torch.cat([j.flatten(2) for j in J.values()], dim=2)
    return torch.einsum("aon,bon->ab", J, J)


def median_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory_child(method: str, P: int) -> None:
    torch.manual_seed(0)
    model, x = QuadraticNet(), data(P)
    base = status_kib("VmRSS")
    t0 = time.perf_counter()
    K = lm.empirical_ntk(model, x, method=method)
    dt = time.perf_counter() - t0
    extra = (status_kib("VmHWM") - base) / 1024
    print(json.dumps({"extra_mib": extra, "seconds": dt, "shape": list(K.shape)}))


def main() -> None:
    torch.manual_seed(0)
    model, x = QuadraticNet(), data(550)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; paper net D=100 N=500 "
        f"({n} params), P=550, float32"
    )
    ref = tutorial_baseline(model, x)
    base = median_time(lambda: tutorial_baseline(model, x))
    print(f"  {'torch.func tutorial (vmap(jacrev) + einsum)':45s} {base * 1e3:8.1f} ms   1.00x")
    for method in ["auto", *sorted(ENGINES)]:
        K = lm.empirical_ntk(model, x, method=method)
        err = float((K - ref).norm() / ref.norm())
        t = median_time(lambda m=method: lm.empirical_ntk(model, x, method=m))
        print(
            f"  {'lazymeter method=' + method:45s} {t * 1e3:8.1f} ms  {base / t:5.2f}x"
            f"   rel. err {err:.1e}"
        )

    P = 4096
    full = P * n * 4 / 2**20
    print(
        f"\nP={P}: a full [P, n_params] float32 Jacobian is {full:.0f} MiB; default budget "
        f"{DEFAULT_MEMORY_BUDGET / 2**20:.0f} MiB"
    )
    for method in sorted(ENGINES):
        out = subprocess.run(
            [sys.executable, __file__, "--child", method, str(P)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  method={method:10s} peak extra RSS {r['extra_mib']:7.0f} MiB   "
            f"{r['seconds']:6.2f} s   K {r['shape']}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        peak_memory_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
