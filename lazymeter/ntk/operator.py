"""The empirical NTK as a linear operator: ``K Z`` without forming the ``[P, P]`` kernel.

``K = sum_o J_o J_o^T`` (outputs traced), with ``J_o [P, n_params]`` the Jacobian of output
``o``. A product ``K Z`` for ``Z [P, k]`` is one reverse pass (``J_o^T z`` for every column
and output, accumulated over blocks of points) and one forward-mode pass (``J_o g``) over
the ``P`` points. Memory is linear in ``P``: the parameter-space vectors ``[k O, n_params]``
plus one block's activations for ``k O`` tangents at a time; time is about three forward
passes over the ``P`` points per group of columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .api import empirical_ntk
from .budget import resolve_budget
from .exact import kernel_dtype
from .functional import (
    FunctionalModel,
    OutputFn,
    as_inputs,
    cast_copy,
    num_samples,
    slice_inputs,
)

Params = dict[str, Tensor]


class KernelOperator:
    """The traced empirical NTK of ``model`` on inputs ``x`` (``[P, ...]``) as an operator.

    Args:
        model: any ``nn.Module`` whose forward has forward-mode AD rules (``torch.func.jvp``);
            used in its current mode (call ``model.eval()`` for dropout/BatchNorm models).
        x: ``[P, ...]`` inputs (a Tensor or a tuple of Tensors sharing dim 0).
        output_fn: as in :func:`~lazymeter.empirical_ntk`.
        dtype: precision of the products (default: as :func:`~lazymeter.empirical_ntk`,
            the model's, float32 for a float16/bfloat16 model; a cast copy otherwise).
        memory_budget: bytes for one block's tangents and activations (default None: as
            for :func:`~lazymeter.empirical_ntk`, from the device).

    Attributes:
        P: number of points; O: outputs per point; fm: the functional model.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Any,
        *,
        output_fn: OutputFn | None = None,
        dtype: torch.dtype | None = None,
        memory_budget: int | str | None = None,
    ) -> None:
        fm = FunctionalModel(model, output_fn)
        # A half-precision model's products in float32, as its dense kernel: summed in
        # bfloat16 the row sums were off by ~1e-3 relative, biasing the matrix-free sums.
        target = kernel_dtype(fm.dtype, dtype)
        if target != fm.dtype:
            fm = FunctionalModel(cast_copy(model, target), output_fn)
        self.fm = fm
        self.xs = tuple(
            t.to(fm.dtype) if t.is_floating_point() else t for t in as_inputs(x, "x", fm.device)
        )
        self.P = num_samples(self.xs)
        self.O = fm.num_outputs(self.xs)
        self.dtype, self.device = fm.dtype, fm.device
        self.budget, _ = resolve_budget(memory_budget, self.device)
        self._per_sample = max(fm.activation_bytes(self.xs), 1)

    # ------------------------------------------------------------------ blocks
    def _blocks(self, width: int) -> Iterator[tuple[int, int]]:
        """Point ranges whose ``width`` tangents' activations fit the budget."""
        b = max(1, min(self.P, self.budget // (4 * width * self._per_sample)))
        for start in range(0, self.P, b):
            yield start, min(start + b, self.P)

    def _out(self, params: Params, start: int, stop: int) -> Tensor:
        return self.fm.batched(params, slice_inputs(self.xs, start, stop))

    # ------------------------------------------------------------------ J^T and J
    def jt(self, V: Tensor) -> Params:
        """``J^T V``: for cotangents ``V [P, O, m]``, ``{name: [m, *shape]}`` with
        ``G_c = sum_{i,o} V[i, o, c] d f_o(x_i) / d theta``."""
        m = V.shape[-1]
        acc = {
            k: torch.zeros((m, *p.shape), dtype=p.dtype, device=p.device)
            for k, p in self.fm.params.items()
        }
        for start, stop in self._blocks(1):
            _, pull = torch.func.vjp(lambda p, a=start, b=stop: self._out(p, a, b), self.fm.params)
            (g,) = torch.func.vmap(pull)(V[start:stop].movedim(-1, 0))
            for k in acc:
                acc[k] += g[k]
        return acc

    def j(self, G: Params) -> Tensor:
        """``J G``: for parameter-space tangents ``{name: [m, *shape]}``, ``[P, O, m]``."""
        m = next(iter(G.values())).shape[0]
        out = torch.empty((self.P, self.O, m), dtype=self.dtype, device=self.device)
        for start, stop in self._blocks(m):

            def push(t: Params, a: int = start, b: int = stop) -> Tensor:
                return torch.func.jvp(lambda p: self._out(p, a, b), (self.fm.params,), (t,))[1]

            out[start:stop] = torch.func.vmap(push)(G).movedim(0, -1)
        return out

    def matvec(self, Z: Tensor, group: int | None = None) -> Tensor:
        """``K Z`` for ``Z [P, k]`` (traced over outputs), ``[P, k]``, in groups of ``group``
        columns (each group: ``group * O`` reverse and forward tangents; default: about 32
        tangents). ``Z`` may live on any device; the result is on the model's."""
        Z = Z.to(self.device, self.dtype)
        group = group or max(1, 32 // self.O)
        cols = []
        eye = torch.eye(self.O, dtype=self.dtype, device=self.device)
        for c in range(0, Z.shape[1], group):
            z = Z[:, c : c + group]  # [P, g]
            # cotangent (column c, output o) = z_c on output o: traced K = sum_o J_o J_o^T
            V = (z[:, None, :, None] * eye[None, :, None, :]).reshape(self.P, self.O, -1)
            JG = self.j(self.jt(V)).reshape(self.P, self.O, z.shape[1], self.O)
            cols.append(JG.diagonal(0, 1, 3).sum(-1))
        return torch.cat(cols, 1)

    def row_sums(self) -> Tensor:
        """``K 1`` (one kernel-vector product), ``[P]``."""
        return self.matvec(torch.ones(self.P, 1, dtype=self.dtype, device=self.device))[:, 0]

    def quadratic(self, Y: Tensor) -> Tensor:
        """``y_c^T K y_c`` for each column of ``Y [P, C]`` (``= sum_o ||J_o^T y_c||^2``):
        reverse passes only. ``[C]``, on the model's device (``Y`` may be elsewhere)."""
        Y = Y.to(self.device, self.dtype)
        eye = torch.eye(self.O, dtype=self.dtype, device=self.device)
        V = (Y[:, None, :, None] * eye[None, :, None, :]).reshape(self.P, self.O, -1)
        G = self.jt(V)
        sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in G.values())
        return sq.reshape(Y.shape[1], self.O).sum(1)

    def diagonal(self, block: int = 256) -> Tensor:
        """``K_ii = sum_o ||J_o(x_i)||^2`` (per-sample gradient norms), ``[P]``: the
        diagonal of the kernel of each block of ``block`` points, by the fastest engine."""
        out = torch.empty(self.P, dtype=self.dtype, device=self.device)
        for start in range(0, self.P, block):
            stop = min(start + block, self.P)
            K = empirical_ntk(
                self.fm.model,
                slice_inputs(self.xs, start, stop),
                output_fn=self.fm.output_fn,
                dtype=self.dtype,
            )
            out[start:stop] = K.diagonal()
        return out
