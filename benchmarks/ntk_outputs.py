"""Many outputs: the exact traced kernel against sketched estimates, and the block planner
against the memory budget on models with ~100 outputs.

1. A language-model-shaped net (HuggingFace GPT-2, tiny config, ``--vocab`` logits of the
   last token; needs ``transformers``; else a raw-parameter transformer with as many
   logits): time of the exact traced kernel and of ``Sketch(s)`` for several ``s``, the
   sketch's relative Frobenius error against the exact kernel and the relative standard
   error it reports (``rel_se``).
2. The planner: a 100-output MLP (P=1024) and the paper's transformer (113 outputs,
   P=512) at the default 512 MiB budget and at 8 GiB: block size and time. Blocks
   recomputed under a small budget should cost little (the issue's bound: < 3x).

Same process, float32, the machine's default thread count.

    python benchmarks/ntk_outputs.py
    python benchmarks/ntk_outputs.py --vocab 500 --P 32      # a quick look
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch
from torch import nn

import lazymeter as lm
from lazymeter.ntk import FunctionalModel, Sketch, sketched_ntk
from lazymeter.ntk.plan import plan_chunk

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper.transformer import RawTransformer, Transformer  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001  (progress shows when piped)


def lm_shaped(vocab: int, P: int) -> tuple[nn.Module, torch.Tensor, object, str]:
    torch.manual_seed(0)
    x = torch.randint(0, vocab, (P, 6))
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        model = RawTransformer(vocab, 64, 4, 256, 6, n_classes=vocab).eval()
        return model, x, (lambda y: y[:, -1]), f"RawTransformer d64, {vocab} logits"
    config = GPT2Config(
        vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        attn_implementation="eager",
    )  # fmt: skip
    model = GPT2LMHeadModel(config).eval()
    return model, x, (lambda out: out.logits[:, -1]), f"HF GPT-2 tiny, {vocab} logits"


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (routes, plans)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def sketches(vocab: int, P: int, repeats: int) -> None:
    model, x, fn, what = lm_shaped(vocab, P)
    print(f"\n1. {what}, P={P}, traced kernel")
    t_exact, K = timed(lambda: lm.empirical_ntk(model, x, output_fn=fn), repeats)
    print(f"  exact (O={vocab})     {t_exact:8.2f} s")
    for s in (16, 64, 256):
        t, r = timed(lambda s=s: sketched_ntk(model, x, sketch=Sketch(s), output_fn=fn), repeats)
        err = float((r.kernel - K).norm() / K.norm())
        print(
            f"  Sketch(s={s:<3})        {t:8.2f} s  ({t_exact / t:5.1f}x faster)  "
            f"error {err:.3f}, reported rel_se {r.rel_se:.3f}"
        )


def budgets(repeats: int) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 100)
    )
    tr = Transformer(113, 128, 4, 512, 3, n_classes=113)
    cases = {
        "MLP 784-200-200-100, P=1024": (mlp, torch.randn(1024, 784), None),
        "transformer (113 outputs), P=512": (
            tr, torch.randint(0, 113, (512, 3)), lambda y: y[:, -1]
        ),
    }  # fmt: skip
    print("\n2. block planner against the memory budget (traced)")
    for name, (model, x, fn) in cases.items():
        times = {}
        for budget in ("512MiB", "8GiB"):
            fm = FunctionalModel(model, fn)
            n_out = fm.num_outputs((x,))
            b = lm.ntk.parse_bytes(budget)
            c = plan_chunk(fm, (x,), n_out=n_out, trace=True, budget=b, n_samples=len(x))
            times[budget], _ = timed(
                lambda m=model, x=x, fn=fn, b=budget: lm.empirical_ntk(
                    m, x, output_fn=fn, memory_budget=b
                ),
                repeats,
            )
            print(f"  {name:34s} budget {budget:>6}: blocks of {c:4d}  {times[budget]:6.2f} s")
        print(f"  {'':34s} small/large budget: {times['512MiB'] / times['8GiB']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=500)
    ap.add_argument("--P", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    sketches(args.vocab, args.P, args.repeats)
    budgets(args.repeats)


if __name__ == "__main__":
    main()
