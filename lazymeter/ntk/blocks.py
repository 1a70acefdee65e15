"""Blocked kernel assembly and per-sample Jacobian blocks, shared by the engines.

:func:`blocked_kernel` fills ``K`` block by block from per-block features (any engine's),
:func:`jacobian_rows` gives the per-sample Jacobians of a block and :func:`contract` sums
their inner products over parameters. Shapes: ``K`` is ``[P1, P2]`` traced (outputs
summed), else ``[P1, P2, O, O]`` with ``K[i, j, o, q] = <J_o(x_i), J_q(x_j)>``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, jacrev, vmap

from ..failures import SlowWarning
from .functional import FunctionalModel, num_samples, slice_inputs

try:  # optional (lazymeter[experiments]): a progress bar over the blocks of a long kernel
    import tqdm
except ImportError:  # pragma: no cover - depends on the environment
    tqdm = None

#: A blocked kernel predicted to take longer than this many seconds (from its first
#: block) warns once with the estimate and the knobs that shorten it, and shows a progress
#: bar when tqdm is installed; ``$LAZYMETER_SLOW_SECONDS`` overrides it.
SLOW_SECONDS = 30.0


def slow_seconds() -> float:
    """:data:`SLOW_SECONDS`, or ``$LAZYMETER_SLOW_SECONDS`` when set to a number."""
    try:
        return float(os.environ.get("LAZYMETER_SLOW_SECONDS", SLOW_SECONDS))
    except ValueError:
        return SLOW_SECONDS


@dataclass
class SlowScope:
    """What a slow-kernel warning names: the engine, the engines the FLOP model thinks
    cheaper (asked only when warning), a caller's own knob (``hint``); ``warned`` is shared
    with nested scopes, so one call warns once however many kernels it computes."""

    engine: str | None = None
    cheaper: Callable[[], list[str]] | None = None
    hint: str | None = None
    warned: list[bool] = field(default_factory=lambda: [False])


_SCOPE: contextvars.ContextVar[SlowScope | None] = contextvars.ContextVar(
    "lazymeter_slow_scope", default=None
)


@contextlib.contextmanager
def slow_scope(
    *,
    engine: str | None = None,
    cheaper: Callable[[], list[str]] | None = None,
    hint: str | None = None,
) -> Iterator[SlowScope]:
    """Tell the blocked kernels inside what to name when one is slow; nested scopes fill
    in what the outer one left out and share its once-only flag."""
    outer = _SCOPE.get()
    if outer is None:
        scope = SlowScope(engine, cheaper, hint)
    else:
        scope = SlowScope(
            engine or outer.engine, cheaper or outer.cheaper, hint or outer.hint, outer.warned
        )
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


#: Frames in these directories (and contextlib's) are not the user's: a slow-kernel warning
#: points past them.
_INTERNAL = (
    str(Path(__file__).resolve().parents[1]) + os.sep,
    str(Path(torch.__file__).resolve().parent) + os.sep,
    str(Path(contextlib.__file__).resolve()),
)


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside lazymeter, torch and contextlib, as
    seen from the function that calls :func:`warnings.warn` (the caller of this one)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        if not str(Path(frame.f_code.co_filename).resolve()).startswith(_INTERNAL):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _warn_slow(expected: float, first: float, shape: str, blocks: int, n_out: int) -> None:
    """The one warning of a slow kernel: how long, which kernel, and what shortens it."""
    scope = _SCOPE.get() or SlowScope()
    engine = f"engine {scope.engine!r}" if scope.engine else "engine"
    knobs = []
    if scope.hint:  # the caller's own size knob (the lazy baseline's max_points)
        knobs.append(scope.hint)
    else:
        knobs.append("fewer probe points (ProbeSet(max_points=...), or fewer inputs)")
    if n_out >= 32:  # Sketch(16): at least 2x fewer backward passes
        knobs.append(
            f"NTKOptions(outputs=Sketch(16)) (the model has {n_out} outputs per sample: "
            f"~{n_out / 16:.0f}x fewer backward passes)"
        )
    cheaper = scope.cheaper() if scope.cheaper is not None else []
    if cheaper:
        names = ", ".join(repr(n) for n in cheaper)
        knobs.append(f"NTKOptions(method=...) with an engine the FLOP model rates cheaper: {names}")
    warnings.warn(
        f"lazymeter: the NTK kernel {shape} ({engine}, {blocks} blocks) will take about "
        f"{_duration(expected)} (its first block took {first:.2g} s; this warning shows "
        f"above {slow_seconds():g} s, $LAZYMETER_SLOW_SECONDS). Faster: " + "; ".join(knobs),
        SlowWarning,
        stacklevel=user_stacklevel(),
    )


def _column_calls(
    n_rows: int, n_cols: int, symmetric: bool, shared: bool, cache_cols: bool, panel: int
) -> int:
    """How many times :func:`blocked_kernel` computes column features (its loop, counted)."""
    calls, cached = 0, set()
    for g0 in range(0, n_rows, panel):
        held = range(g0, min(g0 + panel, n_rows))
        if shared and cache_cols:
            cached.update(held)
        for j in range(g0 if symmetric else 0, n_cols):
            if not ((shared and j in held) or j in cached):
                calls += 1
                if cache_cols:
                    cached.add(j)
    return calls


def _sync(like: Tensor) -> None:
    if like.is_cuda:  # the clock must see the block's work, not its launch
        torch.cuda.synchronize(like.device)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of consecutive blocks of ``size`` samples covering ``n``."""
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
    groups: int = 0,
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

    ``groups > 0``: ``pair_fn`` returns per-group blocks ``[G, c1, c2(, O, O)]`` (a kernel
    split by parameter group) and ``K`` is ``[G, n1, n2(, O, O)]``; each group is
    assembled and symmetrised as above.
    """
    lead = (slice(None),) if groups else ()

    def swap(blk: Tensor) -> Tensor:  # the block of (x2, x1) from that of (x1, x2)
        return blk.transpose(-1, -2) if trace else blk.transpose(-4, -3).transpose(-2, -1)

    symmetric = x2 is None
    xc = x1 if symmetric else x2
    n1, n2 = num_samples(x1), num_samples(xc)
    if n1 <= chunk_size and n2 <= chunk_size:  # one block: no assembly
        r = row_fn(x1)
        blk = pair_fn(r, r if symmetric and row_fn is col_fn else col_fn(xc))
        if symmetric:
            blk = (blk + swap(blk)) / 2
        return blk
    shape = (n1, n2) if trace else (n1, n2, n_out, n_out)
    shape = (groups, *shape) if groups else shape
    K = torch.zeros(shape, dtype=like.dtype, device=like.device)
    rows, cols = blocks(n1, chunk_size), blocks(n2, chunk_size)
    cache: dict[int, Any] = {}
    shared = symmetric and row_fn is col_fn  # a row block's features serve as its column's

    def put(i: int, j: int, r: Any, c: Any) -> None:
        (a0, a1), (b0, b1) = rows[i], cols[j]
        blk = pair_fn(r, c)
        if symmetric and j == i:
            # Off-diagonal blocks are mirrored exactly; only these need symmetrising.
            blk = (blk + swap(blk)) / 2
        K[(*lead, slice(a0, a1), slice(b0, b1))] = blk
        if symmetric and j > i:
            K[(*lead, slice(b0, b1), slice(a0, a1))] = swap(blk)

    # The first block is timed (row features, column features, one pair) to predict the
    # whole kernel; past slow_seconds() it warns once and shows a progress bar.
    n_pairs = len(rows) * (len(rows) + 1) // 2 if symmetric else len(rows) * len(cols)
    clock = {"row": time.perf_counter()}
    done, bar = 0, None

    first = row_fn(slice_inputs(x1, *rows[0]))
    _sync(like)
    clock["row"] = time.perf_counter() - clock["row"]
    if not isinstance(cache_cols, bool):  # decided from the first block's features
        cache_cols = bool(cache_cols(first))
    if not isinstance(panel, int):
        panel = int(panel(first))
    panel = max(1, min(int(panel), len(rows)))

    def column(j: int) -> Any:
        if done or "col" in clock:
            return col_fn(slice_inputs(xc, *cols[j]))
        t0 = time.perf_counter()
        c = col_fn(slice_inputs(xc, *cols[j]))
        _sync(like)
        clock["col"] = time.perf_counter() - t0
        return c

    def timed_put(i: int, j: int, r: Any, c: Any) -> None:
        nonlocal done, bar
        if done:
            put(i, j, r, c)
            done += 1
            if bar is not None:
                bar.update(1)
            return
        t0 = time.perf_counter()
        put(i, j, r, c)
        _sync(like)
        t_pair = time.perf_counter() - t0
        done = 1
        if n_pairs < 2:
            return
        t_col = clock.get("col", clock["row"])
        cols_left = _column_calls(len(rows), len(cols), symmetric, shared, cache_cols, panel)
        cols_left -= "col" in clock
        expected = clock["row"] * len(rows) + t_col * cols_left + t_pair * n_pairs
        first_block = clock["row"] + clock.get("col", 0.0) + t_pair
        if expected <= slow_seconds():
            return
        scope = _SCOPE.get()
        if scope is None or not scope.warned[0]:
            if scope is not None:
                scope.warned[0] = True
            _warn_slow(expected, first_block, f"{n1} x {n2}", n_pairs, n_out)
        if tqdm is not None:
            bar = tqdm.tqdm(
                total=n_pairs, initial=1, file=sys.stderr, leave=False, unit="block",
                desc=f"lazymeter NTK {n1}x{n2}",
            )  # fmt: skip

    try:
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
                    c = column(j)
                    if cache_cols:
                        cache[j] = c
                for i, r in held.items():
                    if not (symmetric and j < i):
                        timed_put(i, j, r, c)
                del c
            del held
    finally:
        if bar is not None:
            bar.close()
    return K


def jacobian_rows(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[Tensor]:
    """Per-sample Jacobians of a block, one ``[c, O, n_p]`` tensor per parameter.

    ``J[i, o] = d f_o(x_i) / d theta_p`` by ``vmap`` over the ``c`` samples of ``grad``
    (one output) or ``jacrev``; cost ``c O`` backward passes, memory ``c O n`` entries."""
    in_dims = (None, *([0] * len(xs)))
    if n_out == 1:
        # One output: a plain gradient skips jacrev's vmap over output cotangents.
        fn = grad(lambda p, *x: fm.single(p, *x)[0])
        jac = vmap(fn, in_dims=in_dims, randomness="different")(fm.params, *xs)
        return [j.reshape(j.shape[0], 1, -1) for j in jac.values()]
    jac = vmap(jacrev(fm.single), in_dims=in_dims, randomness="different")(fm.params, *xs)
    return [j.reshape(j.shape[0], j.shape[1], -1) for j in jac.values()]


#: Inner-dimension length of one float32 GEMM in :func:`contract`; the partial products are
#: summed in float64, so a sum over millions of Jacobian entries keeps float32's precision
#: (one float32 GEMM over all of them loses ~1e-4 relative on a 100-output MLP).
SPLIT = 8192


def _gram(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` over the last dimension, accumulated in float64 for float32 or lower."""
    if a.dtype == torch.float64 or a.shape[1] <= SPLIT:
        out = a @ b.T
        return out if a.dtype == torch.float64 else out.double()
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[1], SPLIT):
        out += (a[:, s : s + SPLIT] @ b[:, s : s + SPLIT].T).double()
    return out


def _contract_one(a: Tensor, b: Tensor, trace: bool) -> Tensor:
    """``<a, b>`` of one parameter's Jacobians ``[c1, O, n_p]``, ``[c2, O, n_p]``, in float64:
    ``[c1, c2]`` traced or ``[c1, c2, O, O]``."""
    c1, n_out, _ = a.shape
    c2 = b.shape[0]
    if trace:
        return _gram(a.reshape(c1, -1), b.reshape(c2, -1))
    blk = _gram(a.reshape(c1 * n_out, -1), b.reshape(c2 * n_out, -1))
    return blk.reshape(c1, n_out, c2, n_out).permute(0, 2, 1, 3)


def contract_groups(
    J1: list[Tensor], J2: list[Tensor], trace: bool, owners: list[int], groups: int
) -> Tensor:
    """:func:`contract` split by parameter group: ``out[g] = sum_{p: owners[p] == g}
    <J1_p, J2_p>``, ``[G, c1, c2]`` traced or ``[G, c1, c2, O, O]``; the groups sum to
    :func:`contract`'s result (same float64 accumulation, other order)."""
    a0 = J1[0]
    c1, n_out, _ = a0.shape
    c2 = J2[0].shape[0]
    shape = (groups, c1, c2) if trace else (groups, c1, c2, n_out, n_out)
    out = torch.zeros(shape, dtype=torch.float64, device=a0.device)
    for a, b, g in zip(J1, J2, owners, strict=True):
        out[g] += _contract_one(a, b, trace)
    return out.to(a0.dtype)


def contract(J1: list[Tensor], J2: list[Tensor], trace: bool) -> Tensor:
    """``sum_p <J1_p, J2_p>`` over parameters: traced ``[c1, c2]`` or ``[c1, c2, O, O]``.

    ``J1``, ``J2``: per parameter ``[c1, O, n_p]`` and ``[c2, O, n_p]``; cost
    ``2 c1 c2 O n`` FLOPs traced, ``2 c1 c2 O^2 n`` untraced (GEMMs of at most
    :data:`SPLIT` inner entries each). Partial sums are accumulated in float64 and the
    result returned in the Jacobians' dtype: relative error ~1e-7 in float32 however many
    parameters and outputs are summed."""
    out = None
    for a, b in zip(J1, J2, strict=True):
        blk = _contract_one(a, b, trace)
        out = blk if out is None else out + blk
    assert out is not None
    return out.to(J1[0].dtype)
