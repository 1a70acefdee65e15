"""Time and peak memory of ``empirical_ntk`` against the number of probes P and the width.

Cells (each in a fresh process, so that its peak memory is its own):

* MNIST MLP 784-200-200-10 (``examples/paper/mnist.py``'s ``make_mlp``, 10 outputs traced) on random
  ``[P, 784]`` inputs, P = 256 ... 4096, with the ``structured`` and ``jacobian`` engines;
* the paper's one-layer transformer (d_model 128, 4 heads, d_mlp 512, vocab 114, 113
  last-position logits traced) on ``[a, b, =]`` token sequences, P = 256 ... 1024 with
  ``structured``, and ``jacobian`` at the P where it finishes within the cell timeout;
* the MLP at fixed P against the hidden width (128 ... 2048), ``structured``.

Each cell reports the wall time (the median of several calls after a warm-up when one call
is short, else one call) and the peak resident memory above the process's footprint just
before the call (the kernel itself included), read from ``/proc/self/status`` after
resetting the peak with ``/proc/self/clear_refs``. Power laws ``t ~ P^a`` and
``mem ~ P^b`` are fitted by least squares on log-log axes. The torch thread count is set
explicitly (``--threads``) and recorded.

    python benchmarks/ntk_scaling.py                       # full run (~10 min on 2 cores)
    python benchmarks/ntk_scaling.py --quick               # a short run
    python benchmarks/ntk_scaling.py --budget 256MiB       # a smaller memory budget
    python benchmarks/ntk_scaling.py --write-docs          # docs/performance.md + figure
    python benchmarks/ntk_scaling.py --tiny                # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from memory import reset_peak, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs", "performance.md")
FIGURE = os.path.join(ROOT, "docs", "figures", "ntk_scaling.png")
BEGIN = "<!-- ntk_scaling:begin (written by benchmarks/ntk_scaling.py --write-docs) -->"
END = "<!-- ntk_scaling:end -->"


@dataclass
class Cell:
    sweep: str  # "P" or "width"
    model: str  # "mlp" or "transformer"
    engine: str
    P: int
    width: int = 200  # MLP hidden width (the transformer ignores it)
    partial: bool = False  # run for --partial-timeout seconds only; time extrapolated
    result: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} {self.engine}"


# ----------------------------------------------------------------------------- one cell


def build(model: str, P: int, width: int, tiny: bool, seed: int = 0):
    """``(model, inputs, output_fn)`` of a cell."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))  # the paper's tasks are examples
    from paper.mnist import make_mlp
    from paper.transformer import Transformer

    g = torch.Generator().manual_seed(seed)
    if model == "mlp":
        d_in = 32 if tiny else 784
        return make_mlp(d_in, width, 2, 10, seed=seed), torch.randn(P, d_in, generator=g), None
    if model == "transformer":
        p, d, mlp = (13, 16, 32) if tiny else (113, 128, 512)
        torch.manual_seed(seed)
        net = Transformer(vocab=p + 1, d_model=d, n_heads=4, d_mlp=mlp, n_classes=p)
        ab = torch.randint(0, p, (P, 2), generator=g)
        x = torch.cat([ab, torch.full((P, 1), p)], dim=1)
        return net, x, lambda y: y[:, -1]
    raise ValueError(f"unknown model {model!r}")


def measure(
    cell: Cell, *, budget: str | None, tiny: bool, repeat_below: float, repeats: int
) -> dict:
    """Run one cell in this process: times, peak extra memory, block size used."""
    import lazymeter as lm
    from lazymeter.ntk import default_memory_budget, engines, parse_bytes, structured

    net, x, output_fn = build(cell.model, cell.P, cell.width, tiny)
    chunks: list[int] = []
    base = [status_kib("VmRSS"), False]  # footprint before the call; measuring yet?
    inner = engines.blocked_kernel

    def spy(x1, x2, chunk_size, **kw):
        # Record the block size, and report progress on stderr (blocks paired so far and
        # the peak so far), which the parent reads when a cell runs past its timeout.
        chunks.append(chunk_size)
        nb = math.ceil(x1[0].shape[0] / chunk_size)
        total = nb * (nb + 1) // 2 if x2 is None else nb * math.ceil(x2[0].shape[0] / chunk_size)
        pair, done, t0, last = kw["pair_fn"], [0], time.perf_counter(), [time.perf_counter()]

        def counted(r, c):
            out = pair(r, c)
            done[0] += 1
            if base[1] and time.perf_counter() - last[0] > 5:
                last[0] = time.perf_counter()
                state = {"done": done[0], "total": total, "elapsed": last[0] - t0}
                state["peak_mib"] = (status_kib("VmHWM") - base[0]) / 1024
                print("PROGRESS " + json.dumps(state), file=sys.stderr, flush=True)
            return out

        kw["pair_fn"] = counted
        return inner(x1, x2, chunk_size, **kw)

    engines.blocked_kernel = structured.blocked_kernel = spy

    def run() -> torch.Tensor:
        return lm.empirical_ntk(
            net, x, output_fn=output_fn, method=cell.engine, memory_budget=budget
        )

    try:
        # Warm-up on two samples: lazy imports and first-use allocations are not the cell's.
        lm.empirical_ntk(net, x[:2], output_fn=output_fn, method=cell.engine, memory_budget=budget)
        chunks.clear()
        base[:] = [status_kib("VmRSS"), True]
        exact_peak = reset_peak()
        t0 = time.perf_counter()
        K = run()
        times = [time.perf_counter() - t0]
        if times[0] < repeat_below:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
        peak = (status_kib("VmHWM") - base[0]) / 1024
    finally:
        engines.blocked_kernel = structured.blocked_kernel = inner
    assert K.shape == (cell.P, cell.P) and bool(torch.isfinite(K).all())
    return {
        "time": statistics.median(times),
        "calls": len(times),
        "peak_mib": peak,
        "peak_exact": exact_peak,
        "chunk": chunks[0] if chunks else None,
        "threads": torch.get_num_threads(),
        "budget": parse_bytes(budget) if budget else default_memory_budget(),
        "kernel_mib": K.numel() * K.element_size() / 2**20,
    }


# ----------------------------------------------------------------------------- the sweep


def plan(a: argparse.Namespace) -> list[Cell]:
    if a.tiny:
        Ps, widths, tP, jmax, tjmax, wP = (16, 32, 64), (16, 32, 64), (16, 32), 32, 0, 32
        partial, tpartial = (), ()
    elif a.quick:
        Ps, widths, tP, jmax, tjmax, wP = (256, 512, 1024), (128, 256, 512), (256, 512), 256, 0, 512
        partial, tpartial = (), ()
    else:
        Ps, widths = (256, 512, 1024, 2048, 4096), (128, 256, 512, 1024, 2048)
        tP, jmax, tjmax, wP = (256, 512, 1024), a.jacobian_max_p, a.transformer_jacobian_max_p, 1024
        partial, tpartial = (4096,), (256, 1024)
    cells = [Cell("P", "mlp", "structured", P) for P in Ps]
    cells += [Cell("P", "mlp", "jacobian", P) for P in Ps if P <= jmax]
    cells += [Cell("P", "mlp", "jacobian", P, partial=True) for P in partial if P > jmax]
    cells += [Cell("P", "transformer", "structured", P) for P in tP]
    cells += [Cell("P", "transformer", "jacobian", P) for P in tP if P <= tjmax]
    cells += [Cell("P", "transformer", "jacobian", P, partial=True) for P in tpartial if P > tjmax]
    cells += [Cell("width", "mlp", "structured", wP, w) for w in widths]
    return cells


def run_cell(cell: Cell, a: argparse.Namespace) -> dict:
    kw = dict(budget=a.budget, tiny=a.tiny, repeat_below=a.repeat_below, repeats=a.repeats)
    if a.in_process:
        torch.set_num_threads(a.threads)
        return measure(cell, **kw)
    spec = json.dumps({"cell": asdict(cell), **kw, "threads": a.threads})
    timeout = a.partial_timeout if cell.partial else a.timeout
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        res = {
            "status": f"stopped at {timeout:.0f} s"
            if cell.partial
            else f"timeout (> {timeout:.0f} s)"
        }
        progress = [ln for ln in err.splitlines() if ln.startswith("PROGRESS ")]
        if progress:  # the last report: blocks done, time so far, peak so far
            p = json.loads(progress[-1].split(" ", 1)[1])
            res["peak_so_far_mib"] = p["peak_mib"]
            res["extrapolated"] = p["elapsed"] * p["total"] / max(p["done"], 1)
            res["status"] += (
                f", {p['done']}/{p['total']} blocks in {p['elapsed']:.0f} s: "
                f"~{res['extrapolated']:.0f} s extrapolated, peak so far "
                f"{p['peak_mib']:.0f} MiB"
            )
        return res
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1][:100]
        return {"status": f"failed: {err}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(spec: str) -> None:
    s = json.loads(spec)
    torch.set_num_threads(s.pop("threads"))
    cell = Cell(**s.pop("cell"))
    print(json.dumps(measure(cell, **s)))


def fit(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    lx, ly = [math.log(v) for v in xs], [math.log(max(v, 1e-9)) for v in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((u - mx) ** 2 for u in lx)
    return sum((u - mx) * (v - my) for u, v in zip(lx, ly, strict=True)) / sxx


def series(cells: list[Cell]) -> dict[tuple[str, str], list[Cell]]:
    out: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        if "time" in c.result:
            out.setdefault((c.sweep, c.label), []).append(c)
    return out


def exponents(cells: list[Cell]) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(sweep, label): (time exponent, memory exponent)}`` for series of >= 2 points."""
    res = {}
    for key, cs in series(cells).items():
        if len(cs) < 2:
            continue
        xs = [c.P if key[0] == "P" else c.width for c in cs]
        res[key] = (
            fit(xs, [c.result["time"] for c in cs]),
            fit(xs, [max(c.result["peak_mib"], 1.0) for c in cs]),
        )
    return res


def _fmt_time(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s" if t < 100 else f"{t:.0f} s"


def table(cells: list[Cell]) -> list[str]:
    lines = [
        "| sweep | model | engine | P | width | time | peak extra memory | block size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        r = c.result
        width = str(c.width) if c.model == "mlp" else "-"
        if "time" not in r:
            peak = f"> {r['peak_so_far_mib']:.0f} MiB" if "peak_so_far_mib" in r else ""
            lines.append(
                f"| {c.sweep} | {c.model} | {c.engine} | {c.P} | {width} | {r['status']} "
                f"| {peak} | |"
            )
            continue
        calls = f" (median of {r['calls']})" if r["calls"] > 1 else ""
        lines.append(
            f"| {c.sweep} | {c.model} | {c.engine} | {c.P} | {width} | "
            f"{_fmt_time(r['time'])}{calls} | {r['peak_mib']:.0f} MiB | {r['chunk']} |"
        )
    return lines


def exponent_lines(ex: dict[tuple[str, str], tuple[float, float]]) -> list[str]:
    lines = ["| against | model, engine | time exponent | memory exponent |", "|---|---|---|---|"]
    for (sweep, label), (a, b) in ex.items():
        lines.append(f"| {sweep} | {label} | {a:.2f} | {b:.2f} |")
    return lines


def figure(cells: list[Cell], ex: dict, path: str, budget_mib: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for col, sweep in enumerate(("P", "width")):
        for (sw, label), cs in series(cells).items():
            if sw != sweep:
                continue
            xs = [c.P if sweep == "P" else c.width for c in cs]
            a, b = ex.get((sw, label), (float("nan"), float("nan")))
            axes[0, col].loglog(
                xs, [c.result["time"] for c in cs], "o-", label=f"{label} ({a:.2f})"
            )
            axes[1, col].loglog(
                xs, [max(c.result["peak_mib"], 1.0) for c in cs], "o-", label=f"{label} ({b:.2f})"
            )
        xlabel = "probes P" if sweep == "P" else "MLP hidden width (P fixed)"
        axes[0, col].set_title(f"time against {xlabel} (fitted exponent)", fontsize=10)
        axes[1, col].set_title(f"peak extra memory against {xlabel}", fontsize=10)
        axes[1, col].axhline(budget_mib, color="grey", ls="--", lw=1, label="memory budget")
        axes[0, col].set_ylabel("seconds")
        axes[1, col].set_ylabel("MiB")
        for ax in axes[:, col]:
            ax.set_xlabel(xlabel)
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def docs_section(cells: list[Cell], ex: dict, a: argparse.Namespace, meta: dict) -> str:
    budget = meta["budget"]
    figure_rel = os.path.relpath(a.figure, os.path.dirname(os.path.abspath(a.docs)))
    lines = [
        BEGIN,
        "## Scaling with the number of probes and the width",
        "",
        f"Measured by `python benchmarks/ntk_scaling.py {meta['argv']}` on 2 CPU cores, "
        f"torch {torch.__version__} (CPU build), float32, `torch.set_num_threads({a.threads})`, "
        f"memory budget {budget / 2**20:.0f} MiB"
        + (" (the default)" if a.budget is None else f" (`--budget {a.budget}`)")
        + ". Models: the MNIST MLP 784-200-200-10 of `examples/paper/mnist.py` (10 outputs, "
        "traced) on random inputs, and the paper's one-layer transformer (d_model 128, 4 heads, "
        "d_mlp 512, 113 last-position logits, traced) on `[a, b, =]` sequences; the width sweep "
        f"is the MLP 784-W-W-10 at P = {meta['width_P']}. Each cell runs in a fresh process; "
        "memory is the peak resident set above the process's footprint just before the call "
        "(the `[P, P]` kernel included); time is one call, or the median of "
        f"{a.repeats} calls after a warm-up when one call takes under {a.repeat_below:g} s. "
        "The machine is shared with other jobs, so times are noisy (tens of percent); the "
        "memory column is not. Block size is the number of samples per block chosen from the "
        "budget (the whole probe set when it fits). Exponents are least-squares slopes on "
        "log-log axes over the measured points.",
        "",
        *table(cells),
        "",
        *exponent_lines(ex),
        "",
        f"![NTK time and memory against P and width]({figure_rel})",
        "",
    ]
    lines += NOTES
    lines.append(END)
    return "\n".join(lines) + "\n"


NOTES = [
    "What the budget covers: the block work of the engines (per-sample Jacobians or "
    "per-layer features of the blocks being paired, their production, the pair products) "
    "and any features kept across blocks; the returned kernel (`P^2` floats, 64 MiB at "
    "P = 4096; `P^2 O^2` untraced) comes on top. The structured engine keeps every "
    "column block's features when they fit beside one block's work, else holds a panel "
    "of row blocks in what is left of the budget and computes each column block once per "
    "panel; the Jacobian engine holds two blocks of `[c, O, n_params]` Jacobians. Memory "
    "grows with P only through the kernel and the kept features until the budget caps the "
    "block; time then grows as `P^2` (more blocks), faster for the Jacobian engine, which "
    "recomputes column Jacobians.",
    "",
    "Cells marked *stopped* ran for `--partial-timeout` seconds only: the extrapolated time "
    "is the elapsed time scaled by the fraction of blocks paired so far, and the memory is "
    "the peak up to then. They are left out of the fits.",
    "",
]


def write_docs(path: str, section: str) -> None:
    text = open(path).read() if os.path.exists(path) else ""
    pat = re.compile(re.escape(BEGIN.split(" (")[0]) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller cells (~2 min)")
    ap.add_argument("--tiny", action="store_true", help="toy models, in-process: a smoke test")
    ap.add_argument("--budget", default=None, help="memory budget, e.g. 256MiB (default: env)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=3, help="calls per short cell (median)")
    ap.add_argument("--repeat-below", type=float, default=2.0, help="seconds: repeat if shorter")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per cell")
    ap.add_argument("--partial-timeout", type=float, default=60.0, help="seconds per partial cell")
    ap.add_argument("--jacobian-max-p", type=int, default=512, help="MLP jacobian cells up to")
    ap.add_argument(
        "--transformer-jacobian-max-p", type=int, default=0, help="transformer jacobian up to"
    )
    ap.add_argument("--in-process", action="store_true", help="no subprocess per cell")
    ap.add_argument("--write-docs", action="store_true", help="write the docs section + figure")
    ap.add_argument("--docs", default=DOCS, help=argparse.SUPPRESS)
    ap.add_argument("--figure", default=FIGURE, help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child)
        return
    if a.tiny:
        a.in_process = True
    from lazymeter.ntk import default_memory_budget, parse_bytes

    budget = parse_bytes(a.budget) if a.budget else default_memory_budget()
    cells = plan(a)
    print(
        f"torch {torch.__version__}, {a.threads} threads, budget {budget / 2**20:.0f} MiB, "
        f"{len(cells)} cells" + (" (in-process)" if a.in_process else " (one process each)")
    )
    t_all = time.perf_counter()
    for c in cells:
        c.result = run_cell(c, a)
        r = c.result
        what = f"{c.sweep:5s} {c.model:11s} {c.engine:10s} P={c.P:5d} width={c.width:5d}"
        if "time" in r:
            print(
                f"{what}  {_fmt_time(r['time']):>9s}  peak +{r['peak_mib']:6.0f} MiB  "
                f"block {r['chunk']}",
                flush=True,
            )
        else:
            print(f"{what}  {r['status']}", flush=True)
    ex = exponents(cells)
    print("\nfitted power-law exponents (least squares on log-log):")
    for (sweep, label), (te, me) in ex.items():
        print(
            f"  against {sweep:5s} {label:22s} time exponent {te:5.2f}  memory exponent {me:5.2f}"
        )
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if a.write_docs:
        width_P = next((c.P for c in cells if c.sweep == "width"), 0)
        argv_s = " ".join(sys.argv[1:] if argv is None else argv)
        meta = {"budget": budget, "width_P": width_P, "argv": argv_s}
        figure(cells, ex, a.figure, budget / 2**20)
        write_docs(a.docs, docs_section(cells, ex, a, meta))
        print(f"wrote {a.docs} and {a.figure}")


if __name__ == "__main__":
    main()
