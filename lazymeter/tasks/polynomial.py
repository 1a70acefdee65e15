"""The paper's polynomial-regression task (section 5, Figure 1).

Data: ``x ~ N(0, I/D)``, ``beta ~ N(0, I_D)``, target ``y = (beta . x)^2 / 2``.
Model (no readouts): ``f(x) = mean_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2``,
``W [N, D]`` standard normal, only ``W`` trained (optional readouts ``a [N]``:
``f(x) = mean_i a_i phi(w_i . x)``). The output scale alpha and the centring
are applied by :class:`lazymeter.LazyMeter`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class QuadraticNet(nn.Module):
    """``f(x) = mean_i a_i phi(w_i . x)`` with ``phi(h) = h + eps/2 h^2``; output ``[B]``.

    Args:
        D: input dimension; N: hidden width; eps: strength of the quadratic term.
        readouts: learn readout weights ``a`` (standard normal); else ``a_i = 1`` fixed.
    """

    def __init__(
        self,
        D: int,
        N: int,
        eps: float,
        *,
        readouts: bool = False,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.eps = float(eps)
        # An nn.Linear (not a raw Parameter) so that per-layer NTK rules apply to it.
        self.hidden = nn.Linear(D, N, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.randn(N, D, generator=generator, dtype=dtype))
        a = torch.randn(N, generator=generator, dtype=dtype) if readouts else None
        self.a = None if a is None else nn.Parameter(a.to(device))

    @property
    def W(self) -> Tensor:
        """First-layer weights ``[N, D]``."""
        return self.hidden.weight

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x)
        act = h + (self.eps / 2) * h * h
        return (act if self.a is None else act * self.a).mean(-1)


@dataclass
class PolynomialData:
    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    beta: Tensor


def make_data(
    D: int,
    P: int,
    P_test: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PolynomialData:
    """``P`` train and ``P_test`` test points of ``y = (beta . x)^2 / 2``, ``x ~ N(0, I/D)``."""
    beta = torch.randn(D, generator=generator, dtype=dtype)
    x = torch.randn(P, D, generator=generator, dtype=dtype) / D**0.5
    xt = torch.randn(P_test, D, generator=generator, dtype=dtype) / D**0.5
    target = lambda v: (v @ beta) ** 2 / 2  # noqa: E731
    to = lambda t: t.to(device)  # noqa: E731
    return PolynomialData(to(x), to(target(x)), to(xt), to(target(xt)), to(beta))
