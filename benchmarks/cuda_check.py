"""One-call GPU check: the CUDA-marked tests, then the NTK engines on the device.

Made to run in one short call on a lent GPU machine (``python benchmarks/cuda_check.py``):

1. ``pytest -m cuda`` (every test marked ``@pytest.mark.cuda``; they skip without CUDA);
2. ``empirical_ntk`` on the device for the paper's polynomial net (P=550), the MNIST MLP
   (P=1024 and 4096) and the one-layer transformer (P=256, 1024): structured and jacobian
   engines, float32 and bfloat16 (accumulated in float32), median wall time (synchronised)
   and peak device memory, each kernel checked against the CPU float64 kernel on a
   subset of rows;
3. one ``LazyMeter.measure()`` on the device with probes given on the CPU.

``--device cpu --tiny`` runs the same code path on the CPU with small sizes (the test suite
does this, so the script cannot rot on machines without a GPU). Exit status 1 if the tests
fail or a kernel disagrees with the CPU reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

import lazymeter as lm

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper import mnist, polynomial  # noqa: E402
from paper.transformer import Transformer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cases(tiny: bool):
    """(name, model, inputs, output_fn); ``tiny``: the same models, much smaller."""
    g = torch.Generator().manual_seed(0)
    D, N, P = (20, 50, 32) if tiny else (100, 500, 550)
    d = polynomial.make_data(D, P, 1, generator=g)
    yield "polynomial", polynomial.QuadraticNet(D, N, 0.02, generator=g), d.x, None
    d_in, width = (64, 32) if tiny else (784, 200)
    for P in (32, 64) if tiny else (1024, 4096):
        x = torch.randn(P, d_in, generator=g)
        yield f"mnist_mlp P={P}", mnist.make_mlp(d_in, width, seed=0), x, None
    d_model, d_mlp = (32, 64) if tiny else (128, 512)
    for P in (16, 32) if tiny else (256, 1024):
        model = Transformer(vocab=114, d_model=d_model, n_heads=4, d_mlp=d_mlp, n_classes=113)
        x = torch.randint(0, 113, (P, 3), generator=g)
        yield f"transformer P={P}", model, x, (lambda out: out[:, -1])


def check_kernels(device: torch.device, tiny: bool, repeats: int) -> bool:
    ok = True
    print(f"{'case':24s} {'engine':10s} {'dtype':9s} {'ms':>9s} {'peak MiB':>9s} {'rel err':>9s}")
    for name, model, x, output_fn in cases(tiny):
        xr = x.double() if x.is_floating_point() else x
        ref = lm.empirical_ntk(model.double(), xr[:16], xr, output_fn=output_fn, method="jacobian")
        for dtype in (torch.float32, torch.bfloat16):
            m = model.to(device=device, dtype=dtype)
            xd = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
            for method in ("structured", "jacobian"):
                times = []
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                for _ in range(repeats):
                    sync(device)
                    t0 = time.perf_counter()
                    K = lm.empirical_ntk(m, xd, output_fn=output_fn, method=method)
                    sync(device)
                    times.append(time.perf_counter() - t0)
                peak = (
                    torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0
                )
                err = float((K[:16].double().cpu() - ref).norm() / ref.norm())
                tol = 1e-5 if dtype == torch.float32 else 5e-2  # bf16 parameters, float32 sums
                ok &= err < tol
                print(
                    f"{name:24s} {method:10s} {str(dtype)[6:]:9s} "
                    f"{1e3 * statistics.median(times):9.2f} {peak:9.1f} {err:9.1e}"
                    + ("" if err < tol else "  FAIL")
                )
        model.to("cpu")
    return ok


def check_meter(device: torch.device) -> bool:
    g = torch.Generator().manual_seed(1)
    d = polynomial.make_data(100, 64, 64, generator=g)
    model = polynomial.QuadraticNet(100, 500, 0.02, generator=g).to(device)
    probe = lm.ProbeSet((d.x, d.y), test=(d.x_test, d.y_test))  # CPU probes
    meter = lm.LazyMeter(model, probe=probe)
    row = meter.measure()
    print(
        f"meter on {device}: probes moved to {meter.probe_x.device}; ntk_drift {row['ntk_drift']}"
    )
    return meter.probe_x.device.type == device.type and row["ntk_drift"] == row["ntk_drift"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --tiny for a smoke run")
        sys.exit(2)
    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    ok = True
    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"])
        ok &= rc in (0, 5)  # 5: no test collected (no CUDA-marked test selected)
    ok &= check_kernels(device, args.tiny, args.repeats)
    ok &= check_meter(device)
    print("cuda_check:", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
