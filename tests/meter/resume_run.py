"""A small training run with LazyMeter, split at a checkpoint (used by test_meter.py).

    python tests/meter/resume_run.py full   OUT_DIR           # steps 1..2 * HALF in one process
    python tests/meter/resume_run.py first  OUT_DIR CKPT      # steps 1..HALF, then save
    python tests/meter/resume_run.py second OUT_DIR CKPT      # load, steps HALF + 1..2 * HALF

(Step 0 is the meter's row before any update.)

Writes OUT_DIR/history.json (meter.history) and the meter's log files in OUT_DIR.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

import lazymeter as lm

HALF = 2000


def build(out_dir: str) -> tuple[nn.Module, lm.LazyMeter, torch.optim.Optimizer, tuple]:
    torch.manual_seed(0)
    D, P = 5, 24
    x, xt = torch.randn(P, D, dtype=torch.float64), torch.randn(16, D, dtype=torch.float64)
    y, yt = torch.sin(x.sum(1)), torch.sin(xt.sum(1))
    model = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1)).double()
    meter = lm.LazyMeter(
        model,
        alpha=2.0,
        probe=lm.ProbeSet((x, y), test=(xt, yt)),
        schedule="log",
        log_dir=out_dir,
        output_fn=lambda out: out.squeeze(-1),
    )
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.2), momentum=0.9)
    return model, meter, opt, (x, y, xt, yt)


def train(meter, opt, data, steps) -> None:
    x, y, xt, yt = data
    for _ in steps:
        loss = ((meter(x) - y) ** 2).mean()  # dropout: uses the global RNG stream
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test_loss = ((meter(xt) - yt) ** 2).mean()
        meter.step(train_loss=loss.item(), test_loss=test_loss.item())


def main(phase: str, out_dir: str, ckpt: str | None = None) -> None:
    model, meter, opt, data = build(out_dir)
    if phase == "full":
        train(meter, opt, data, range(2 * HALF))
    elif phase == "first":
        train(meter, opt, data, range(HALF))
        torch.save(
            {"meter": meter.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()},
            ckpt,
        )
    else:
        state = torch.load(ckpt)  # default weights_only loading must suffice
        meter.load_state_dict(state["meter"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        train(meter, opt, data, range(meter.last_step + 1, 2 * HALF + 1))
    meter.close()
    with open(f"{out_dir}/history.json", "w") as f:
        json.dump(meter.history, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
