"""Lazy baselines: kernel regression with the initial NTK ``K0``, and the linearised model."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import jvp

from .ntk.functional import call_with
from .validation import check_finite, check_tensor, real_number


def kernel_regression(
    K_train: Tensor, y_train: Tensor, K_test_train: Tensor, ridge: float = 0.0
) -> Tensor:
    """Kernel (ridge) regression predictions ``K_test_train (K_train + ridge I)^-1 y_train``.

    Args:
        K_train: ``[P, P]`` symmetric PSD Gram matrix of the training inputs.
        y_train: ``[P]`` or ``[P, C]`` targets.
        K_test_train: ``[Q, P]`` kernel between test and training inputs.
        ridge: finite non-negative ridge ``lambda``.

    Returns:
        ``[Q]`` or ``[Q, C]`` predictions, in the promoted dtype of the inputs
        (solved in float64). The system is solved by Cholesky; when that fails
        (a singular or indefinite kernel, e.g. ``P`` larger than the parameter
        count with ``ridge=0``) it falls back to the minimum-norm least-squares
        solution (pseudo-inverse) with a ``RuntimeWarning``.

    Raises:
        TypeError: a non-tensor or complex input, a non-numeric ``ridge``.
        ValueError: NaN/Inf entries, wrong shapes, ``P = 0``, a negative or infinite
            ``ridge``, or predictions that overflow the output dtype (e.g. float16).
            Integer/bool inputs are accepted (output in the default float dtype).
    """
    for name, t in (("K_train", K_train), ("y_train", y_train), ("K_test_train", K_test_train)):
        if check_tensor(t, name).is_floating_point():
            check_finite(t, name)
    if K_train.dim() != 2 or K_train.shape[0] != K_train.shape[1]:
        raise ValueError(f"K_train: expected a square [P, P] matrix, got {tuple(K_train.shape)}")
    P = K_train.shape[0]
    if P == 0:
        raise ValueError("K_train: is empty (P = 0); pass at least one training sample")
    if y_train.dim() not in (1, 2) or y_train.shape[0] != P:
        raise ValueError(f"y_train: expected shape [{P}] or [{P}, C], got {tuple(y_train.shape)}")
    if K_test_train.dim() != 2 or K_test_train.shape[1] != P:
        raise ValueError(
            f"K_test_train: expected shape [Q, {P}] (test rows, train columns), "
            f"got {tuple(K_test_train.shape)}"
        )
    ridge = real_number(ridge, "ridge")
    if ridge < 0:
        raise ValueError(f"ridge: expected a non-negative number, got {ridge}")
    out_dtype = torch.promote_types(
        torch.promote_types(K_train.dtype, y_train.dtype), K_test_train.dtype
    )
    if not out_dtype.is_floating_point:
        out_dtype = torch.get_default_dtype()
    f64 = torch.float64
    A = K_train.to(f64)
    A = (A + A.T) / 2 + ridge * torch.eye(P, dtype=f64, device=A.device)
    y = y_train.to(A.device, f64)  # targets and test kernel may live elsewhere (the CPU)
    rhs = y[:, None] if y.dim() == 1 else y
    L, info = torch.linalg.cholesky_ex(A)
    ok = int(info) == 0
    if ok:
        # Cholesky of a numerically singular matrix can "succeed"; judge by its pivots.
        d = L.diagonal() ** 2
        ok = float(d.min()) > P * float(torch.finfo(f64).eps) * float(d.max())
    if ok:
        coef = torch.cholesky_solve(rhs, L)
    if not ok:
        warnings.warn(
            "kernel_regression: K_train + ridge*I is singular; using the minimum-norm "
            "least-squares solution (pass ridge > 0 to regularise)",
            RuntimeWarning,
            stacklevel=2,
        )
        coef = torch.linalg.pinv(A, hermitian=True) @ rhs
    pred = K_test_train.to(A.device, f64) @ coef
    out = (pred[:, 0] if y.dim() == 1 else pred).to(out_dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(
            f"K_train: the predictions overflow {out_dtype} (an ill-conditioned kernel or huge "
            "targets); pass float64 tensors or a ridge > 0"
        )
    return out


class Linearized(nn.Module):
    """The linearised ("lazy") shadow of a model, trainable like the model itself.

    ``f_lin(x; theta) = f(x; theta0) + J(x; theta0) (theta - theta0)``: the first-order
    Taylor expansion around the parameters at construction, evaluated with
    ``torch.func.jvp`` (no Jacobian is formed). Its forward returns, like
    :class:`~lazymeter.LazyMeter`, ``alpha * (f_lin(x) - f(x; theta0))`` when ``center``
    (that is ``alpha * J(x; theta0) (theta - theta0)``), else ``alpha * f_lin(x)``.

    Its parameters (a copy of the model's trainable ones, starting at ``theta0``) are its
    own: train it with its own optimiser, the same loss and the same learning rate as the
    network, and the gap between the two is what feature learning buys (the paper's
    black curves). The model is used as a function only and is never modified.
    """

    def __init__(
        self,
        model: nn.Module,
        alpha: float = 1.0,
        center: bool = True,
        output_fn: Callable[[Any], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self._fn = [model]  # a list, so the model is not registered (nor saved) twice
        self.alpha, self.center, self.output_fn = float(alpha), bool(center), output_fn
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model: has no parameters with requires_grad=True to linearise")
        self.names = [n for n, _ in named]
        self.theta = nn.ParameterList([nn.Parameter(p.detach().clone()) for _, p in named])
        for i, (_, p) in enumerate(named):
            self.register_buffer(f"theta0_{i}", p.detach().clone())
        frozen = [(n, t) for n, t in model.named_parameters() if not t.requires_grad]
        self.const_names = [n for n, _ in frozen] + [n for n, _ in model.named_buffers()]
        consts = [t for _, t in frozen] + [b for _, b in model.named_buffers()]
        for i, t in enumerate(consts):
            self.register_buffer(f"const_{i}", t.detach().clone())

    def _theta0(self) -> dict[str, Tensor]:
        return {n: getattr(self, f"theta0_{i}") for i, n in enumerate(self.names)}

    def forward(self, *args: Any) -> Tensor:
        consts = {n: getattr(self, f"const_{i}") for i, n in enumerate(self.const_names)}
        model = self._fn[0]

        def f(params: dict[str, Tensor]) -> Tensor:
            out = call_with(model, (params, consts), args)
            return out if self.output_fn is None else self.output_fn(out)

        theta0 = self._theta0()
        delta = {n: p - theta0[n] for n, p in zip(self.names, self.theta, strict=True)}
        out0, tangent = jvp(f, (theta0,), (delta,))
        return self.alpha * (tangent if self.center else out0 + tangent)
