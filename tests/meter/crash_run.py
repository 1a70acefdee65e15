"""A small deterministic training run with LazyMeter that checkpoints, for crash tests.

    python tests/meter/crash_run.py OUT_DIR CKPT [--fence STEP]

Trains a tiny MLP regression (full-batch heavy-ball GD, float64, one thread) for
``STEPS`` steps, measuring every ``EVERY`` steps into OUT_DIR (history.jsonl and
TensorBoard events) and saving ``{"model", "opt", "meter", "step"}`` to CKPT after
every ``CKPT_EVERY`` steps, atomically (temp file, fsync, ``os.replace``). If CKPT
exists, the run resumes from it. Progress goes to stdout, one flushed line each:

    start S          first step this process trains (0, or the checkpoint's step + 1)
    measured S       the measurement at step S is complete (in history.jsonl, fsynced)
    checkpoint S     CKPT now holds the state after step S
    fence S          (with --fence S) step S is done; now blocks reading stdin
    done             the run finished and the meter is closed

``--fence`` gives a test a known point to kill the process at, or a point it cannot
run past while a kill is on its way.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import lazymeter as lm

STEPS = 60
EVERY = 3
CKPT_EVERY = 10


def say(msg: str) -> None:
    print(msg, flush=True)


def build(out_dir: str):
    torch.manual_seed(0)
    D, P, PT = 4, 32, 16
    x, xt = torch.randn(P, D, dtype=torch.float64), torch.randn(PT, D, dtype=torch.float64)
    y, yt = torch.sin(x.sum(1)), torch.sin(xt.sum(1))
    model = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    meter = lm.LazyMeter(
        model,
        alpha=2.0,
        probe=lm.ProbeSet((x, y), test=(xt, yt)),
        schedule=EVERY,
        log_dir=out_dir,
        sinks=[lm.TensorBoardSink(scalar_every=1)],
        output_fn=lambda out: out.squeeze(-1),
    )
    opt = HeavyBall(meter.parameters(), lr=meter.scaled_lr(0.1), momentum=0.9)
    return model, meter, opt, (x, y, xt, yt)


class HeavyBall:
    """SGD with momentum, by hand: ``torch.optim`` imports ``torch._dynamo`` (~2 s a process).

    Same ``state_dict`` / ``load_state_dict`` protocol, so the checkpoint holds its state.
    """

    def __init__(self, params, lr: float, momentum: float) -> None:
        self.params = list(params)
        self.lr, self.momentum = lr, momentum
        self.bufs = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, b in zip(self.params, self.bufs, strict=True):
            b.mul_(self.momentum).add_(p.grad)
            p.sub_(self.lr * b)

    def state_dict(self) -> dict:
        return {"bufs": [b.clone() for b in self.bufs]}

    def load_state_dict(self, state: dict) -> None:
        for b, saved in zip(self.bufs, state["bufs"], strict=True):
            b.copy_(saved)


def save_atomically(obj, path: str) -> None:
    """Write to a temp file, fsync, rename over ``path``: a kill leaves the old or the new."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)


def run(out_dir: str, ckpt: str, fence: int | None = None, say=say) -> None:
    """The training run (resumed from ``ckpt`` if it exists); progress lines go to ``say``.

    Call it in one torch thread (``main`` does; a test uses ``lazymeter.threads``).
    """
    model, meter, opt, (x, y, xt, yt) = build(out_dir)
    if os.path.exists(ckpt):
        state = torch.load(ckpt)  # default weights_only loading must suffice
        model.load_state_dict(state["model"])
        meter.load_state_dict(state["meter"])
        opt.load_state_dict(state["opt"])
        assert meter.last_step == state["step"]
    first = 0 if meter.last_step is None else meter.last_step + 1
    say(f"start {first}")
    for step in range(first, STEPS):
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test_loss = ((meter(xt) - yt) ** 2).mean()
        row = meter.step(step, train_loss=loss.item(), test_loss=test_loss.item())
        if row is not None:
            say(f"measured {int(row['step'])}")
        if (step + 1) % CKPT_EVERY == 0:
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "meter": meter.state_dict(),
                "step": step,
            }
            save_atomically(state, ckpt)
            say(f"checkpoint {step}")
        if step == fence:
            say(f"fence {step}")
            input()  # blocks until killed (or stdin gets a line / closes)
    meter.close()
    say("done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("ckpt")
    parser.add_argument("--fence", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(args.out_dir, args.ckpt, args.fence)


if __name__ == "__main__":
    main()
