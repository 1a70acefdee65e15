"""GPU benchmark of lazymeter's NTK against the torch.func kernel a user would write.

Run on one GPU: ``python benchmarks/gpu_bench.py`` (sized to finish within 5 minutes on one
H200; exit status 2 without CUDA). ``--device cpu --tiny`` runs every row with small sizes,
on one thread, in well under a minute on two CPU cores (the test suite does, so the script
cannot rot on machines without a GPU). ``--rows 2,3`` runs some rows (``1``: 1a and 1b),
``--repeats`` sets N, ``--threads`` the CPU threads.

Rows (full sizes; float32 with TF32 off, so that float32 means float32):

1. raw-parameter transformer (``RawTransformer`` d128, 113 last-position logits traced),
   P=256 (1a) and P=1024 (1b);
2. HF ``GPT2LMHeadModel`` (2 layers, n_embd 64, vocab 100, 8 tokens), last-token logits
   traced, P=128;
3. CNN conv16-conv32 (3x3, max-pool) + linear on 28x28, 10 outputs, P=1024;
4. MNIST MLP 784-200-200-10, P=1024;
5. GPT-2 small sized (12 layers, n_embd 768, vocab 50257: 124M parameters, random init),
   ``outputs=Sketch(16)``, P=64 sequences of 64 tokens, last-token logits;
6. ``ntk_alignment(method="matrix_free")`` of the paper's net QuadraticNet(100, 500, 0.02)
   on P=10^5 points of its task;
7. meter overhead: a GPT-2 (2 layers, n_embd 64) fine-tuning loop (AdamW, 2000 steps, so
   26 measurements) through ``LazyMeter(alpha=1, schedule="log")`` against the same loop on
   the bare model: seconds of each (best of N) and their ratio.

Columns of the kernel rows (times in milliseconds, memory in MiB):

* ``O``: outputs traced (row 5: ``s``, the sketch's projections);
* ``lm_ms``: ``lm.empirical_ntk(model, x, output_fn=...)`` with its defaults
  (``method="auto"``, default memory budget): median of N calls after one untimed call,
  synchronised on CUDA; row 6: ``lm.ntk_alignment(model, x, y, method="matrix_free")``;
* ``lm_MiB``: peak memory over those calls above what was allocated before them: CUDA
  ``max_memory_allocated``; CPU the growth of the resident set, sampled every millisecond
  from ``/proc/self/statm`` by a thread (free heap memory is handed back to the system
  first, so that reused memory counts), ``n/a`` where that file is unreadable;
* ``engine``, ``chunk``: what ``lm.ntk.kernel_plan`` says the call runs (samples per block;
  row 6: the plan of its ``K[I, :]`` row blocks);
* ``func_ms``, ``func_MiB``: the same, for the torch.func kernel: ``vmap(jacrev(one-sample
  functional_call))`` over the probe, then an einsum of the flattened Jacobians into the
  traced ``[P, P]`` kernel (row 5: of the same ``s`` projected outputs; row 6: then
  ``lm.kernel_alignment`` of that kernel); ``skipped`` (the note says what it would need)
  when its Jacobian, ``P * O * n_params * 4`` bytes (row 6: plus four ``P x P``
  matrices), exceeds 60% of the device's free memory;
* ``err``: ``max |K - K_ref| / max |K_ref|`` on the first 8 or 16 probe points, ``K_ref``
  the float64 kernel by per-sample autograd (a backward pass per point and output; row 5
  on the same projections); row 6: relative error of the matrix-free alignment on 256
  points with every row drawn (exact up to rounding) against the alignment of the float64
  kernel. Tolerance 1e-3;
* ``floor_ms``: what no NTK method can avoid: one batched forward over the whole probe and
  ``O`` backward passes (``torch.autograd.grad`` of each output's sum over the probe);
  ``lm/floor``: ``lm_ms / floor_ms``.

Exit status 1 when a row fails (it prints ``FAIL: <error>`` and the others still run) or an
error exceeds its tolerance; last line ``gpu_bench: OK`` otherwise. Each row's wall time
goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import math
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

import lazymeter as lm
from lazymeter.ntk.sketch import projections
from lazymeter.threads import torch_threads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ntk_cases import cnn as cnn_model  # noqa: E402  (benchmarks/ is not a package)
from paper import mnist, polynomial  # noqa: E402  (ntk_cases put examples/ on the path)
from paper.transformer import RawTransformer, Transformer  # noqa: E402

TOL = 1e-3  # float32 kernels against float64 (relative to the kernel's largest entry)
FUNC_FRACTION = 0.6  # the torch.func baseline runs when its Jacobian fits this much free memory
MiB, GiB = 2**20, 2**30

#: Row keys (for ``--rows``; ``1`` = 1a and 1b) and the names the table prints.
NAMES = {
    "1a": "1a raw-transformer",
    "1b": "1b raw-transformer",
    "2": "2 hf-gpt2",
    "3": "3 cnn",
    "4": "4 mnist-mlp",
    "5": "5 gpt2-small-sketch",
    "6": "6 alignment-mf",
    "7": "7 meter-overhead",
}
ROWS = tuple(NAMES)

print = functools.partial(print, flush=True)  # noqa: A001  (progress when piped)


# --------------------------------------------------------------------------- timing, memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trim_heap() -> None:
    """Give free heap memory back to the system (glibc), so that memory a later call reuses
    shows up again as resident-set growth instead of hiding in malloc's free lists."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory (bytes) of the block above what was allocated when it started: CUDA's
    allocator statistics, or on the CPU the resident set sampled by a thread (``None``
    where ``/proc/self/statm`` is unreadable)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, None
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
            return self
        _trim_heap()
        try:
            self._before = self._max = _rss()
        except OSError:
            return self
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._max = max(self._max, _rss())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._before
            return
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, _rss())
            self.peak = self._max - self._before


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any, Any]:
    """``(median seconds of `repeats` calls after one untimed call, peak bytes, result)``."""
    out = fn()  # warm: routes, plans, the auto engine's choice, allocator pools
    times = []
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            out = None  # the previous result is not part of the next call's memory
            sync(device)
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak, out


def free_bytes(device: torch.device) -> int:
    """Memory a new allocation can get now: free device memory plus the allocator's unused
    reserve (CUDA), or ``MemAvailable`` (CPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------- the rows
@dataclass
class KernelRow:
    """One kernel to time: ``model`` on ``x``, outputs ``output_fn(model(x))`` flattened
    (with ``sketch``: estimated from its projections)."""

    name: str
    model: nn.Module
    x: Tensor
    output_fn: Callable[[Any], Tensor] | None
    sketch: lm.ntk.Sketch | None = None
    ref_points: int = 16


def _gpt2(vocab: int, n_embd: int, n_layer: int, n_head: int, n_positions: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, bos_token_id=0, eos_token_id=0,
        attn_implementation="eager",  # vmap (the torch.func baseline) has no SDPA rule on CPU
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def _last_logits(out: Any) -> Tensor:
    return out.logits[:, -1]


def _last(y: Tensor) -> Tensor:
    return y[:, -1]


def kernel_rows(tiny: bool) -> dict[str, Callable[[], KernelRow]]:
    """Rows 1-5 by key, each a builder (a model is built only when its row runs)."""

    @functools.cache
    def transformer() -> tuple[nn.Module, Tensor]:
        # tiny: fewer classes and a narrower model; the same raw-parameter code path
        p, d, mlp, P = (23, 32, 64, 64) if tiny else (113, 128, 512, 1024)
        torch.manual_seed(0)
        dense = Transformer(vocab=p + 1, d_model=d, n_heads=4, d_mlp=mlp, n_classes=p)
        ab = torch.randint(0, p, (P, 2), generator=torch.Generator().manual_seed(0))
        x = torch.cat([ab, torch.full((P, 1), p)], dim=1)  # [a, b, =]
        return RawTransformer.from_modules(dense).eval(), x

    def raw(key: str, P: int) -> KernelRow:
        model, x = transformer()
        return KernelRow(NAMES[key], model, x[:P], _last, ref_points=8)

    def hf_gpt2() -> KernelRow:
        vocab, n_embd, T, P = (50, 32, 6, 16) if tiny else (100, 64, 8, 128)
        torch.manual_seed(0)
        x = torch.randint(0, vocab, (P, T), generator=torch.Generator().manual_seed(2))
        return KernelRow(NAMES["2"], _gpt2(vocab, n_embd, 2, 2, T), x, _last_logits, ref_points=8)

    def cnn() -> KernelRow:
        side, P = (12, 32) if tiny else (28, 1024)
        torch.manual_seed(0)
        x = torch.randn(P, 1, side, side, generator=torch.Generator().manual_seed(3))
        return KernelRow(NAMES["3"], cnn_model(side).eval(), x, None)

    def mlp() -> KernelRow:
        d_in, width, P = (64, 32, 64) if tiny else (784, 200, 1024)
        x = torch.randn(P, d_in, generator=torch.Generator().manual_seed(4))
        return KernelRow(NAMES["4"], mnist.make_mlp(d_in, width, seed=0).eval(), x, None)

    def gpt2_small() -> KernelRow:
        # GPT-2 small: 12 layers, n_embd 768, 12 heads, vocab 50257 (124M parameters)
        cfg, P, T = ((200, 32, 2, 2), 8, 6) if tiny else ((50257, 768, 12, 12), 64, 64)
        torch.manual_seed(0)
        model = _gpt2(*cfg, n_positions=16 if tiny else 1024)
        x = torch.randint(0, cfg[0], (P, T), generator=torch.Generator().manual_seed(5))
        sketch = lm.ntk.Sketch(4, groups=2) if tiny else lm.ntk.Sketch(16)
        return KernelRow(NAMES["5"], model, x, _last_logits, sketch, ref_points=8)

    sizes = (32, 64) if tiny else (256, 1024)
    return {
        "1a": lambda: raw("1a", sizes[0]),
        "1b": lambda: raw("1b", sizes[1]),
        "2": hf_gpt2,
        "3": cnn,
        "4": mlp,
        "5": gpt2_small,
    }


def flat(out_fn: Callable[[Any], Tensor] | None, y: Any) -> Tensor:
    """``out_fn(y)`` as ``[B, O]``."""
    t = y if out_fn is None else out_fn(y)
    return t.reshape(t.shape[0], -1)


def projected(out_fn: Callable[[Any], Tensor] | None, R: Tensor) -> Callable[[Any], Tensor]:
    """The outputs ``flat(y) @ R`` (R scaled by ``1/sqrt(s)``: the traced kernel of these
    outputs is the sketched kernel)."""
    return lambda y: flat(out_fn, y).to(R.dtype) @ R


def trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def func_kernel(model: nn.Module, x: Tensor, out_fn: Callable[[Any], Tensor]) -> Tensor:
    """The traced NTK ``[P, P]`` the torch.func way: per-sample Jacobians
    ``vmap(jacrev(f_one))`` ``{name: [P, O, *shape]}``, contracted parameter by parameter."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = dict(model.named_buffers())

    def one(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return flat(out_fn, functional_call(model, (p, buffers), (xi.unsqueeze(0),)))[0]

    jac = vmap(jacrev(one), in_dims=(None, 0))(params, x)
    P = x.shape[0]
    K = torch.zeros(P, P, dtype=next(iter(params.values())).dtype, device=x.device)
    for j in jac.values():
        jf = j.reshape(P, j.shape[1], -1)
        K += torch.einsum("ion,jon->ij", jf, jf)
    return K


def reference_kernel(model: nn.Module, x: Tensor, out_fn: Callable[[Any], Tensor]) -> Tensor:
    """Float64 traced kernel of ``model`` (cast copy) on ``x`` [n, ...] by per-sample autograd:
    one forward per point, one backward pass per point and output."""
    # One-sample float64 ops are too short for intra-op threads: on a loaded 2-core machine
    # two threads made each backward pass ~300x slower than one (not timed here anyway).
    with torch_threads(1 if x.device.type == "cpu" else None):
        return _reference_kernel(model, x, out_fn)


def _reference_kernel(model: nn.Module, x: Tensor, out_fn: Callable[[Any], Tensor]) -> Tensor:
    m = copy.deepcopy(model).to(torch.float64)
    xs = x.double() if x.is_floating_point() else x
    params = trainable(m)
    sizes = [p.numel() for p in params]
    n = xs.shape[0]
    outs = [flat(out_fn, m(xs[i : i + 1]))[0] for i in range(n)]
    G = torch.zeros(n, sum(sizes), dtype=torch.float64, device=x.device)
    K = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for o in range(outs[0].numel()):
        for i in range(n):
            grads = torch.autograd.grad(outs[i][o], params, retain_graph=True, allow_unused=True)
            start = 0
            for grad, size in zip(grads, sizes, strict=True):
                if grad is not None:  # unused: stays 0
                    G[i, start : start + size] = grad.reshape(-1)
                start += size
        K += G @ G.T
    return K


def floor_pass(model: nn.Module, x: Tensor, out_fn: Callable[[Any], Tensor]) -> None:
    """One batched forward over the probe, then one backward pass per output (of its sum
    over the probe): the passes any kernel of ``O`` outputs needs at least."""
    params = trainable(model)
    with torch.enable_grad():
        out = flat(out_fn, model(x))
        n_out = out.shape[1]
        for o in range(n_out):
            torch.autograd.grad(out[:, o].sum(), params, retain_graph=o < n_out - 1)


def rel_err(K: Tensor, ref: Tensor) -> float:
    return float((K.double().cpu() - ref.cpu()).abs().max() / ref.abs().max())


def fmt_mib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / MiB:.1f}"


HEADER = (
    f"{'row':22s} {'P':>6s} {'O':>6s} {'lm_ms':>9s} {'lm_MiB':>8s} {'engine':22s} "
    f"{'chunk':>6s} {'func_ms':>9s} {'func_MiB':>8s} {'err':>8s} {'floor_ms':>9s} "
    f"{'lm/floor':>8s}  note"
)


def line(
    name: str, P: int, n_out: int, lm_s: float, lm_mem: int | None, engine: str,
    chunk: int | str, func: tuple[float, int | None] | None, err: float, floor_s: float,
    note: str,
) -> str:  # fmt: skip
    func_ms, func_mib = (
        ("skipped", "-") if func is None else (f"{1e3 * func[0]:.1f}", fmt_mib(func[1]))
    )
    return (
        f"{name:22s} {P:>6d} {n_out:>6d} {1e3 * lm_s:9.1f} {fmt_mib(lm_mem):>8s} {engine:22s} "
        f"{chunk!s:>6s} {func_ms:>9s} {func_mib:>8s} {err:8.1e} {1e3 * floor_s:9.1f} "
        f"{lm_s / floor_s:8.2f}  {note}"
    ).rstrip()


def maybe_func(
    fn: Callable[[], Any], need: int, device: torch.device, repeats: int, what: str = "Jacobian"
) -> tuple[tuple[float, int | None] | None, Any, str]:
    """The torch.func baseline timed, or None and why when ``need`` bytes (``what``) do not
    fit."""
    free = free_bytes(device)
    if need > FUNC_FRACTION * free:
        why = (
            f"torch.func skipped: needs ~{need / GiB:.1f} GiB ({what}), over "
            f"{FUNC_FRACTION:.0%} of {free / GiB:.1f} GiB free"
        )
        return None, None, why
    try:
        s, mem, out = timed(fn, device, repeats)
    except torch.OutOfMemoryError:  # the estimate leaves out vmap's temporaries
        gc.collect()
        torch.cuda.empty_cache()
        why = f"torch.func ran out of memory ({what} ~{need / GiB:.1f} GiB + temporaries)"
        return None, None, why
    return (s, mem), out, ""


def run_kernel_row(row: KernelRow, device: torch.device, repeats: int) -> float:
    """Times and checks one kernel row, prints its line; returns its error."""
    model = row.model.to(device)
    x = row.x.to(device)
    P = x.shape[0]
    with torch.no_grad():
        n_full = flat(row.output_fn, model(x[:1])).shape[1]
    n_params = sum(p.numel() for p in trainable(model))
    kw: dict[str, Any] = {"output_fn": row.output_fn}
    if row.sketch is not None:
        kw["outputs"] = row.sketch
    lm_s, lm_mem, K = timed(lambda: lm.empirical_ntk(model, x, **kw), device, repeats)
    if row.sketch is None:
        plan = lm.ntk.kernel_plan(model, x, output_fn=row.output_fn)
        out_fn, ref_fn, n_out = row.output_fn, row.output_fn, n_full
    else:  # the same projections the sketched call used (one group's plan: all are alike)
        like = torch.empty(0, device=device)
        groups = projections(model, row.output_fn, n_full, row.sketch, like)
        plan = lm.ntk.kernel_plan(model, x, output_fn=groups[0])
        R = torch.cat([g.R for g in groups], dim=1) / math.sqrt(row.sketch.s)
        out_fn, ref_fn = projected(row.output_fn, R), projected(row.output_fn, R.double())
        n_out = row.sketch.s
    need = P * n_out * n_params * 4
    func, _, note = maybe_func(lambda: func_kernel(model, x, out_fn), need, device, repeats)
    n = min(row.ref_points, P)
    err = rel_err(K[:n, :n], reference_kernel(model, x[:n], ref_fn))
    floor_s, _, _ = timed(lambda: floor_pass(model, x, out_fn), device, repeats)
    if row.sketch is not None:
        note = f"O={n_full} sketched: s={row.sketch.s}; " + note
    if not err < TOL:
        note += f"  FAIL: err {err:.1e} > {TOL:.0e}"
    engine, chunk = plan["engine"], plan["chunk_size"]
    print(line(row.name, P, n_out, lm_s, lm_mem, engine, chunk, func, err, floor_s, note))
    model.to("cpu")
    return err


def run_alignment_row(device: torch.device, tiny: bool, repeats: int) -> float:
    """Row 6: ``ntk_alignment(method="matrix_free")`` on P points of the paper's net."""
    D, N, P, m = (20, 100, 2000, 64) if tiny else (100, 500, 100_000, 256)
    g = torch.Generator().manual_seed(0)
    data = polynomial.make_data(D, P, 1, generator=g)
    model = polynomial.QuadraticNet(D, N, 0.02, generator=g).to(device)
    x, y = data.x.to(device), data.y.to(device)

    def align() -> lm.Estimate:
        return lm.ntk_alignment(model, x, y, method="matrix_free")

    lm_s, lm_mem, est = timed(align, device, repeats)
    # the matrix-free path's row blocks K[I, a:a+4096] (256 rows) go through empirical_ntk
    plan = lm.ntk.kernel_plan(model, x[:256], x[: min(P, 4096)])

    def dense() -> float:  # what a user would write: the whole kernel, then its alignment
        return lm.kernel_alignment(func_kernel(model, x, None), y, "double", "unbiased")

    # the Jacobian, the kernel and the few P x P temporaries of the alignment
    need = P * N * D * 4 + 4 * P * P * 4
    what = "Jacobian + 4 P x P"
    func, dense_value, note = maybe_func(dense, need, device, repeats, what)
    # The check: every row drawn (rows=m), so that the matrix-free sums are exact up to
    # rounding, on labels [y, x . beta]: the alignment with y alone is near 0 at init (the
    # paper's point), where a relative error says little; the linear target's is not.
    xm = x[:m]
    Y = torch.stack([y[:m], xm @ data.beta.to(device)], dim=1)
    exact = lm.ntk_alignment(model, xm, Y, method="matrix_free", rows=m, se_points=m)
    Kref = reference_kernel(model, xm, None)
    ref = lm.alignment_estimate(Kref, Y.double(), "double", "unbiased").value
    err = abs(exact.value - ref) / abs(ref)
    floor_s, _, _ = timed(lambda: floor_pass(model, x, None), device, repeats)
    note = (
        f"alignment {est.value:.2e} +- {est.stderr:.1e}"
        + ("" if dense_value is None else f" (dense {dense_value:.2e})")
        + f"; err on {m} points; "
        + note
    )
    if not err < TOL:
        note += f"  FAIL: err {err:.1e} > {TOL:.0e}"
    engine, chunk = "matrix_free/" + plan["engine"], plan["chunk_size"]
    print(line(NAMES["6"], P, 1, lm_s, lm_mem, engine, chunk, func, err, floor_s, note))
    return err


def run_meter_row(device: torch.device, tiny: bool, repeats: int) -> None:
    """Row 7: seconds of ``steps`` AdamW steps of a GPT-2 (last-token classification of
    ``(a + b) mod 10``) through ``LazyMeter(alpha=1, schedule="log")`` (64 train and 64 test
    probe points, the default quantities on the last-token logits; the loss sees the centred
    ``f - f0``, so each step also runs the initial model's forward) and bare (the same loop
    on the model itself, dropout on in both); their ratio (best of ``repeats`` each,
    interleaved). The meter's construction (initial kernels) is outside the timed loop."""
    vocab, n_embd, T, B, steps = (50, 32, 6, 16, 20) if tiny else (100, 64, 8, 64, 2000)
    n_probe = 16 if tiny else 64
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[Tensor, Tensor]:
        ids = torch.randint(0, vocab, (n, T), generator=g)
        return ids.to(device), ((ids[:, 0] + ids[:, 1]) % 10).to(device)

    x, y = batch(B)
    probe, test = batch(n_probe), batch(n_probe)
    torch.manual_seed(0)
    init = _gpt2(vocab, n_embd, 2, 2, T).train().to(device)
    loss_fn = nn.functional.cross_entropy

    def bare() -> float:
        model = copy.deepcopy(init)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(x).logits[:, -1], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        sync(device)
        return time.perf_counter() - t0

    def metered() -> tuple[float, int]:
        model = copy.deepcopy(init)
        meter = lm.LazyMeter(
            model, alpha=1.0, probe=lm.ProbeSet(probe, test=test), schedule="log",
            output_fn=_last_logits,
        )  # fmt: skip
        opt = torch.optim.AdamW(meter.parameters(), lr=meter.scaled_lr(1e-3, "adam"))
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(meter(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            meter.step(train_loss=loss.item())
        sync(device)
        elapsed = time.perf_counter() - t0
        meter.close()
        return elapsed, len(meter.history)

    bare()  # warm: allocator, kernels
    t_bare, t_meter = [], []
    for _ in range(repeats):  # interleaved: the machine's speed drifts
        t_bare.append(bare())
        t, n_meas = metered()
        t_meter.append(t)
    tb, tm = min(t_bare), min(t_meter)
    print(
        f"{NAMES['7']:22s} bare {tb:.3f} s  meter {tm:.3f} s  ratio {tm / tb:.2f}  "
        f"({steps} AdamW steps of batch {B}, {n_meas} measurements at schedule='log', "
        f"best of {repeats})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (N)")
    ap.add_argument("--rows", default="", help="comma-separated rows, e.g. 1,5 or 1b (all)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 with "
        "--tiny on the CPU, where ops are too short for threads to pay off)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats: expected a positive int, got {args.repeats}")
    # tiny ops on a loaded 2-core machine: two threads made calls 10-70x slower than one
    threads = args.threads or (1 if args.tiny and args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; run with --device cpu --tiny for a smoke run")
        sys.exit(2)
    # float32 must mean float32: TF32 would change the errors and the speed (set here, the
    # library leaves the user's flags alone)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    picked = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in picked if r not in ROWS and r + "a" not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; rows are {', '.join(ROWS)} (1 = 1a and 1b)")

    def wanted(key: str) -> bool:
        return not picked or any(key == r or key.rstrip("ab") == r for r in picked)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"gpu_bench: device {device} ({name}), torch {torch.__version__}, dtype float32, "
        f"TF32 off, {torch.get_num_threads()} threads, {'tiny' if args.tiny else 'full'} "
        f"sizes, median of {args.repeats} warm calls"
    )
    print(HEADER)
    failed, bad = [], []

    def guarded(key: str, fn: Callable[[], float | None]) -> None:
        t0 = time.perf_counter()
        try:
            err = fn()
            if err is not None and not err < TOL:
                bad.append(key)
        except Exception as e:  # one row's failure must not hide the others
            traceback.print_exc()
            print(f"{NAMES[key]:22s} FAIL: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
            failed.append(key)
        finally:
            print(f"  ({NAMES[key]}: {time.perf_counter() - t0:.1f} s in all)", file=sys.stderr)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    for key, build in kernel_rows(args.tiny).items():
        if wanted(key):
            # building the model is part of the row: a failure there is that row's failure
            guarded(key, lambda build=build: run_kernel_row(build(), device, args.repeats))
    if wanted("6"):
        guarded("6", lambda: run_alignment_row(device, args.tiny, args.repeats))
    if wanted("7"):
        guarded("7", lambda: run_meter_row(device, args.tiny, args.repeats))
    if failed or bad:
        print(f"gpu_bench: FAILED (failed: {failed or '-'}; error over {TOL:.0e}: {bad or '-'})")
        sys.exit(1)
    print("gpu_bench: OK")


if __name__ == "__main__":
    main()
