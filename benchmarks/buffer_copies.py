"""What "forwards see copies of the buffers" costs in a training step.

Every forward lazymeter runs gets fresh copies of the model's buffers, so that a forward that
updates one (BatchNorm in train mode, a counter, a cache) never changes the model or the
initial snapshot. In a training loop that is the centring forward ``f0`` of ``meter(x)``.
This script times one full training step (``meter(x)``, loss, backward, SGD step) against
the same step with ``f0`` computed by a plain forward of a frozen deep copy (what a user would
write; its buffers drift, which is the bug the copies fix), interleaved, median of
``--repeats`` blocks of ``--steps`` steps, on:

* a small BatchNorm CNN (4 BatchNorm layers, buffers 2 KiB), batch 128 of 1x28x28;
* an MLP with a large constant buffer (a 4096 x 512 float32 table, 8 MiB), batch 128.

Run: ``python benchmarks/buffer_copies.py [--steps 20] [--repeats 5] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import lazymeter as lm


def bn_cnn() -> tuple[nn.Module, torch.Tensor]:
    layers: list[nn.Module] = []
    c = 1
    for width in (16, 32, 32, 64):
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))
    return model, torch.randn(128, 1, 28, 28)


class TableMLP(nn.Module):
    """An MLP that adds a row of a large constant table (a buffer) to its hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 512), nn.Linear(512, 10)
        self.register_buffer("table", torch.randn(4096, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x) + self.table[0]))


def table_mlp() -> tuple[nn.Module, torch.Tensor]:
    return TableMLP(), torch.randn(128, 64)


def step_time(forward, params, xs: list[torch.Tensor], y: torch.Tensor) -> float:
    """Seconds per step over the minibatches ``xs`` (a new batch each step, as in a
    minibatch loop: f0 is computed every step, never served from the meter's cache)."""
    opt = torch.optim.SGD(params, lr=1e-3)
    start = time.perf_counter()
    for x in xs:
        opt.zero_grad()
        loss = ((forward(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads")
    print("| model | buffers | plain f0 (ms/step) | meter(x) (ms/step) | ratio |")
    print("|---|---|---|---|---|")
    for name, make in (("BatchNorm CNN", bn_cnn), ("MLP + 8 MiB table", table_mlp)):
        torch.manual_seed(0)
        model, x = make()
        model, x = model.to(args.device), x.to(args.device)
        y = torch.randn(x.shape[0], 10, device=args.device)
        meter = lm.LazyMeter(model, alpha=2.0)
        frozen = copy.deepcopy(model).requires_grad_(False)

        def plain(inp, model=model, frozen=frozen):
            with torch.no_grad():
                out0 = frozen(inp)
            return 2.0 * (model(inp) - out0)

        times: dict[str, list[float]] = {"plain": [], "meter": []}
        batches = [torch.randn_like(x) for _ in range(args.steps)]
        step_time(meter, model.parameters(), batches[:2], y)  # warm-up
        for _ in range(args.repeats):
            times["plain"].append(step_time(plain, model.parameters(), batches, y))
            times["meter"].append(step_time(meter, model.parameters(), batches, y))
        size = sum(b.numel() * b.element_size() for b in model.buffers())
        a, b = (statistics.median(times[k]) * 1e3 for k in ("plain", "meter"))
        print(f"| {name} | {size / 2**10:.0f} KiB | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
