"""The training loop the tests run a meter in, written once."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

import lazymeter as lm


def mse(out: Tensor, y: Tensor) -> Tensor:
    """Mean squared error of ``out`` against ``y``; a ``[P, 1]`` output meets ``[P]`` targets
    as ``[P]`` (never broadcast to ``[P, P]``)."""
    if out.shape != y.shape and out.numel() == y.numel():
        out = out.reshape(y.shape)
    return ((out - y) ** 2).mean()


def fit(
    meter: lm.LazyMeter,
    x: Tensor,
    y: Tensor,
    steps: int = 5,
    lr: float = 0.1,
    xt: Tensor | None = None,
    yt: Tensor | None = None,
    *,
    params: Iterable[nn.Parameter] | None = None,
) -> float:
    """``steps`` updates of full-batch gradient descent on ``mse(meter(x), y)`` with
    ``lr = meter.scaled_lr(lr)`` (over ``params``, default all the meter's), calling
    ``meter.step(train_loss=..., [test_loss=...])`` after each, the test loss on
    ``(xt, yt)`` when given. Steps continue from ``meter.last_step``. Returns the last
    train loss."""
    opt = torch.optim.SGD(params or meter.parameters(), lr=meter.scaled_lr(lr))
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = mse(meter(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        scalars = {"train_loss": loss.item()}
        if xt is not None and yt is not None:
            with torch.no_grad():
                scalars["test_loss"] = mse(meter(xt), yt).item()
        meter.step(**scalars)
    return loss.item()
