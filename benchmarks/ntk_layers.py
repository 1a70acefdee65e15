"""Structured NTK rules for RMSNorm, GroupNorm, transposed and padded/grouped convolutions.

For each model: the structured engine's coverage (as routed at run time) and the median
time of ``--repeats`` calls after one warm-up of: the structured engine; the structured
engine with these layers' rules removed (what they got before they had rules: their
parameters went to the generic part); and the generic Jacobian engine for the whole
model (the torch.func recipe). Ratios are against the structured engine, and the last
column is the relative Frobenius distance between the structured and Jacobian kernels.
Same process, same inputs, float32, the machine's default thread count.

    python benchmarks/ntk_layers.py
    python benchmarks/ntk_layers.py --P 32 --repeats 1     # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import lazymeter as lm
from lazymeter.ntk import RULES, coverage, register_rule, unregister_rule

NEW_RULES = [nn.RMSNorm, nn.GroupNorm, nn.ConvTranspose1d, nn.ConvTranspose2d]


def rmsnorm_mlp() -> tuple[nn.Module, tuple[int, ...]]:
    m = nn.Sequential(
        nn.Linear(64, 256), nn.RMSNorm(256), nn.GELU(),
        nn.Linear(256, 256), nn.RMSNorm(256), nn.GELU(),
        nn.Linear(256, 10),
    )  # fmt: skip
    return m, (64,)


def groupnorm_cnn() -> tuple[nn.Module, tuple[int, ...]]:
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, 10),
    )  # fmt: skip
    return m, (3, 16, 16)


def decoder() -> tuple[nn.Module, tuple[int, ...]]:
    m = nn.Sequential(
        nn.Linear(16, 32 * 4 * 4), nn.Unflatten(1, (32, 4, 4)), nn.ReLU(),
        nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )  # fmt: skip
    return m, (16,)


def conv_variants() -> tuple[nn.Module, tuple[int, ...]]:
    m = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=4, padding_mode="circular"), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 12 * 12, 10),
    )  # fmt: skip
    return m, (3, 12, 12)


MODELS = {
    "rmsnorm_mlp": rmsnorm_mlp,
    "groupnorm_cnn": groupnorm_cnn,
    "decoder": decoder,
    "conv_same_groups_pad": conv_variants,
}


def timed(model: nn.Module, x: torch.Tensor, method: str, repeats: int):
    """``(median seconds, kernel)`` of ``repeats`` calls after one warm-up (plans, guard)."""
    K = lm.empirical_ntk(model, x, method=method)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        K = lm.empirical_ntk(model, x, method=method)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), K


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", type=int, default=64, help="probe points (traced kernel [P, P])")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, P={args.P}, float32")
    print(
        "| model | params | coverage before -> now | structured (s) | without the rules (s) "
        "| jacobian (s) | rel. diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, shape = MODELS[name]()
        x = torch.randn(args.P, *shape)
        n = sum(p.numel() for p in model.parameters())
        cov = coverage(model, x)
        ts, Ks = timed(model, x, "structured", args.repeats)
        tj, Kj = timed(model, x, "jacobian", args.repeats)
        saved = {t: RULES.pop(t) for t in NEW_RULES if t in RULES}
        # Grouped, "same" and non-zero-padded convolutions declined before: a subclass whose
        # rule (the Conv2d one, found along the MRO) declines them, as before.
        declined = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        declined = [m for m in declined if m.groups > 1 or m.padding_mode != "zeros"]
        old_conv = type("OldConv2d", (nn.Conv2d,), {})
        register_rule(old_conv, declines=lambda m: "declined before")(RULES[nn.Conv2d])
        for m in declined:
            m.__class__ = old_conv
        try:
            cov0 = coverage(model, x)
            t0, _ = timed(model, x, "structured", args.repeats)
        finally:
            RULES.update(saved)
            unregister_rule(old_conv)
            for m in declined:
                m.__class__ = nn.Conv2d
        diff = float((Ks - Kj).norm() / Kj.norm())
        print(
            f"| {name} | {n} | {cov0:.2f} -> {cov:.2f} | {ts:.3f} | {t0:.3f} ({t0 / ts:.1f}x) "
            f"| {tj:.3f} ({tj / ts:.1f}x) | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
