"""Empirical-NTK engines and the blocked driver they share.

An engine is a function ``engine(fm, x1, x2, *, n_out, trace, chunk_size, budget) -> K``
registered in :data:`ENGINES` under its method name. ``x2 is None`` asks for
the symmetric kernel of ``x1`` with itself. Engines see a
:class:`~lazymeter.ntk.functional.FunctionalModel`, never a meter.

Shapes: ``K`` is ``[P1, P2]`` when ``trace`` (outputs summed), else
``[P1, P2, O, O]``; ``K[i, j, o, q] = <J_o(x_i), J_q(x_j)>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.func import grad, jacrev, jvp, vjp, vmap

from .functional import FunctionalModel, num_samples, slice_inputs


class Engine(Protocol):
    def __call__(
        self,
        fm: FunctionalModel,
        x1: tuple[Tensor, ...],
        x2: tuple[Tensor, ...] | None,
        *,
        n_out: int,
        trace: bool,
        chunk_size: int,
        budget: int,
    ) -> Tensor: ...


ENGINES: dict[str, Engine] = {}


def register_engine(name: str) -> Callable[[Engine], Engine]:
    """Decorator adding an engine to :data:`ENGINES` under ``name``."""

    def deco(fn: Engine) -> Engine:
        ENGINES[name] = fn
        return fn

    return deco


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def blocked_kernel(
    x1: tuple[Tensor, ...],
    x2: tuple[Tensor, ...] | None,
    chunk_size: int,
    *,
    trace: bool,
    n_out: int,
    like: Tensor,
    row_fn: Callable[[tuple[Tensor, ...]], Any],
    col_fn: Callable[[tuple[Tensor, ...]], Any],
    pair_fn: Callable[[Any, Any], Tensor],
    cache_cols: bool | Callable[[Any], bool],
    panel: int | Callable[[Any], int] = 1,
) -> Tensor:
    """Fill ``K`` block by block: ``K[rows_i, cols_j] = pair_fn(row_fn(x1_i), col_fn(x2_j))``.

    Symmetric case (``x2 is None``): only blocks with ``j >= i`` are computed,
    the rest mirrored and the diagonal blocks symmetrised, so that ``K == K^T`` exactly
    (``K[i,j,o,q] == K[j,i,q,o]`` untraced). ``row_fn`` and ``col_fn`` may
    return the same kind of object (then a diagonal block reuses it).

    Memory: ``cache_cols`` (or its verdict on the first row block's features) keeps every
    column block's features; otherwise ``panel`` row blocks (a number, or a function of
    the first row block's features) are held at once and each column block is computed
    once per panel and dropped, so column work is repeated ``ceil(row blocks / panel)``
    times instead of once per row block. Each block is the same ``pair_fn`` of the same
    slices either way, so the result does not depend on ``panel``.
    """
    symmetric = x2 is None
    xc = x1 if symmetric else x2
    n1, n2 = num_samples(x1), num_samples(xc)
    if n1 <= chunk_size and n2 <= chunk_size:  # one block: no assembly
        r = row_fn(x1)
        blk = pair_fn(r, r if symmetric and row_fn is col_fn else col_fn(xc))
        if symmetric:
            blk = (blk + (blk.T if trace else blk.permute(1, 0, 3, 2))) / 2
        return blk
    shape = (n1, n2) if trace else (n1, n2, n_out, n_out)
    K = torch.zeros(shape, dtype=like.dtype, device=like.device)
    rows, cols = _blocks(n1, chunk_size), _blocks(n2, chunk_size)
    cache: dict[int, Any] = {}
    shared = symmetric and row_fn is col_fn  # a row block's features serve as its column's

    def put(i: int, j: int, r: Any, c: Any) -> None:
        (a0, a1), (b0, b1) = rows[i], cols[j]
        blk = pair_fn(r, c)
        if symmetric and j == i:
            # Off-diagonal blocks are mirrored exactly; only these need symmetrising.
            blk = (blk + (blk.T if trace else blk.permute(1, 0, 3, 2))) / 2
        K[a0:a1, b0:b1] = blk
        if symmetric and j > i:
            K[b0:b1, a0:a1] = blk.transpose(0, 1) if trace else blk.permute(1, 0, 3, 2)

    first = row_fn(slice_inputs(x1, *rows[0]))
    if not isinstance(cache_cols, bool):  # decided from the first block's features
        cache_cols = bool(cache_cols(first))
    if not isinstance(panel, int):
        panel = int(panel(first))
    panel = max(1, min(int(panel), len(rows)))

    for g0 in range(0, len(rows), panel):
        held: dict[int, Any] = {}
        for i in range(g0, min(g0 + panel, len(rows))):
            held[i] = first if i == 0 else row_fn(slice_inputs(x1, *rows[i]))
            if shared and cache_cols:
                cache[i] = held[i]
        first = None
        for j in range(g0 if symmetric else 0, len(cols)):
            if shared and j in held:
                c = held[j]
            elif j in cache:
                c = cache[j]
            else:
                c = col_fn(slice_inputs(xc, *cols[j]))
                if cache_cols:
                    cache[j] = c
            for i, r in held.items():
                if not (symmetric and j < i):
                    put(i, j, r, c)
            del c
        del held
    return K


def _jacobian_rows(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[Tensor]:
    """Per-sample Jacobians of a block, one ``[c, O, n_p]`` tensor per parameter."""
    in_dims = (None, *([0] * len(xs)))
    if n_out == 1:
        # One output: a plain gradient skips jacrev's vmap over output cotangents.
        fn = grad(lambda p, *x: fm.single(p, *x)[0])
        jac = vmap(fn, in_dims=in_dims, randomness="different")(fm.params, *xs)
        return [j.reshape(j.shape[0], 1, -1) for j in jac.values()]
    jac = vmap(jacrev(fm.single), in_dims=in_dims, randomness="different")(fm.params, *xs)
    return [j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()]


def _contract(J1: list[Tensor], J2: list[Tensor], trace: bool) -> Tensor:
    """``sum_p <J1_p, J2_p>`` over parameters: traced ``[c1, c2]`` or ``[c1, c2, O, O]``."""
    out = None
    for a, b in zip(J1, J2, strict=True):
        c1, n_out, _ = a.shape
        c2 = b.shape[0]
        if trace:
            blk = a.reshape(c1, -1) @ b.reshape(c2, -1).T
        else:
            blk = (a.reshape(c1 * n_out, -1) @ b.reshape(c2 * n_out, -1).T).reshape(
                c1, n_out, c2, n_out
            )
            blk = blk.permute(0, 2, 1, 3)
        out = blk if out is None else out + blk
    assert out is not None
    return out


@register_engine("jacobian")
def jacobian_contraction(fm, x1, x2, *, n_out, trace, chunk_size, budget):
    """Jacobian contraction: ``K = J(x1) J(x2)^T`` block by block.

    Cost: ``O (P1 + P2)`` backward passes plus ``P1 P2 O n`` (traced) or
    ``P1 P2 O^2 n`` (untraced) multiply-adds. Memory: two ``[chunk, O, n]``
    Jacobian blocks, or all of them when they fit in ``budget`` bytes (the
    symmetric kernel then computes every Jacobian exactly once).
    """
    total = num_samples(x1 if x2 is None else x2) * n_out * fm.n_params * fm.dtype.itemsize
    rows = lambda xs: _jacobian_rows(fm, xs, n_out)  # noqa: E731
    return blocked_kernel(
        x1,
        x2,
        chunk_size,
        trace=trace,
        n_out=n_out,
        like=next(iter(fm.params.values())),
        row_fn=rows,
        col_fn=rows,
        pair_fn=lambda a, b: _contract(a, b, trace),
        cache_cols=total <= budget,
    )


@register_engine("ntvp")
def ntk_vector_products(fm, x1, x2, *, n_out, trace, chunk_size, budget):
    """NTK-vector products: ``K[:, j] = J(x1) . (J(x2_j)^T e)`` via ``vjp`` then ``jvp``.

    Each row Jacobian (from ``vjp``) is pushed forward through the model at the
    column samples with ``jvp``, so the column Jacobians are never formed.
    Cost: ``O P1`` backward passes plus ``O P1`` batched forward-mode passes
    over ``P2`` samples; it wins when a forward pass costs less than the
    parameter count (weight sharing: convolutions, long sequences).
    """
    params = fm.params

    def rows(xs: tuple[Tensor, ...]) -> dict[str, Tensor]:
        def one(*x: Tensor) -> dict[str, Tensor]:
            out, pullback = vjp(lambda p: fm.single(p, *x), params)
            basis = torch.eye(out.shape[0], dtype=out.dtype, device=out.device)
            return vmap(pullback)(basis)[0]

        tangents = vmap(one, randomness="different")(*xs)  # {name: [c, O, *shape]}
        return {k: v.flatten(0, 1) for k, v in tangents.items()}  # [c*O, *shape]

    def pair(tangents: dict[str, Tensor], xs: tuple[Tensor, ...]) -> Tensor:
        def push(t: dict[str, Tensor]) -> Tensor:
            return jvp(lambda p: fm.batched(p, xs), (params,), (t,))[1]  # [c2, O]

        out = vmap(push, randomness="different")(tangents)  # [c1*O, c2, O]
        c2 = out.shape[1]
        out = out.reshape(-1, n_out, c2, n_out).permute(0, 2, 1, 3)  # [c1, c2, O, O]
        return out.diagonal(dim1=2, dim2=3).sum(-1) if trace else out

    try:
        return blocked_kernel(
            x1,
            x2,
            chunk_size,
            trace=trace,
            n_out=n_out,
            like=next(iter(params.values())),
            row_fn=rows,
            col_fn=lambda xs: xs,
            pair_fn=pair,
            cache_cols=False,
        )
    except NotImplementedError as e:
        if "forward AD" not in str(e):
            raise
        raise NotImplementedError(
            "method='ntvp': the model uses an operation without forward-mode AD ("
            + str(e).splitlines()[0]
            + "); use method='jacobian' or 'structured' (method='auto' does so itself)"
        ) from e
