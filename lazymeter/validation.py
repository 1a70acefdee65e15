"""Argument validators shared by the metric, baseline and decomposition functions.

Each raises a ``TypeError`` or ``ValueError`` whose message names the argument and the fix
(the input contract in :mod:`lazymeter.metrics`).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def check_tensor(x: object, name: str) -> Tensor:
    """``x`` itself if it is a real tensor; ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor, got {type(x).__name__}; "
            f"convert it with torch.as_tensor({name})"
        )
    if x.is_complex():
        raise TypeError(
            f"{name}: complex tensors have no real-valued metric; pass {name}.real "
            f"(or {name}.abs())"
        )
    return x


def check_finite(x: Tensor, name: str) -> None:
    """``ValueError`` naming ``name`` if ``x`` has a NaN or Inf entry."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name}: contains NaN or Inf; a kernel, label or parameter with them has no metric "
            "(check the model for divergence)"
        )


def as_float64(x: object, name: str) -> Tensor:
    """Detached float64 copy (or view) of a finite real tensor."""
    x = check_tensor(x, name).detach().to(torch.float64)
    check_finite(x, name)
    return x


def real_number(v: object, name: str) -> float:
    """``v`` (a real number or one-element real tensor) as a finite float; ``TypeError`` /
    ``ValueError`` naming ``name`` otherwise."""
    if isinstance(v, Tensor) and v.numel() == 1 and not v.is_complex():
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    return v


def int_at_least(v: object, name: str, minimum: int) -> int:
    """``v`` as an int ``>= minimum`` (bools refused), else a ``ValueError`` naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {what}, got {v!r}")
    return v
