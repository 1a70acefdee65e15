"""Per-sample Jacobian forms of the structured engine, and how pairs of them contract.

A rule describes each parameter's per-sample Jacobian ``J [c, O, n_p]`` (``c`` samples,
``O`` outputs) without forming it, in one of two forms:

* :class:`Outer`: ``J_o(x_i) = sum_s g[i, o, s] (x) h[i, s]`` for a ``[dout, din]`` weight
  (``s``: sequence/spatial positions). The kernel block of two such forms is
  ``K[i, j] = sum_o sum_{s,t} (h_is . h_jt)(g_ios . g_jot)``, i.e. ``(H H^T) * (G G^T)``
  without positions; nothing of size ``n_p`` per sample is formed.
* :class:`Dense`: the explicit ``[c, O, n_p]`` Jacobian (biases, norm scales).

Either form may carry an ``index``: the flat position in the parameter of each entry of
the form's own layout. Operator-level rules (:mod:`lazymeter.ntk.ops`) see a view of a
parameter (``W.T``, ``in_proj_weight[:E]``, ``W_pos[:T]``); the kernel of one use does not
depend on the layout, and :func:`parts` says how several uses of one parameter add up.

Per block, each :class:`Outer` is contracted pairwise (:class:`Pairwise`,
:func:`pair_outer`) or materialised into a :class:`Dense` (:func:`materialize`),
whichever :func:`outer_costs` says is cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import contract, contract_groups


@dataclass
class Outer:
    """``J_o(x_i) = sum_s g[i, o, s] (x) h[i, s]``, a ``[dout, din]`` parameter.

    ``h``: ``[c, S, din]`` inputs, or ``idx``: ``[c, S]`` indices into ``din`` rows
    (an embedding: ``h`` is one-hot); ``g``: ``[c, O, S, dout]`` output gradients.
    Kernel of two blocks: ``c1 c2 S1 S2 (din + O dout)`` multiply-adds pairwise, or
    ``c O S dout din + c1 c2 O dout din`` materialised.
    """

    g: Tensor
    h: Tensor | None = None
    idx: Tensor | None = None
    din: int = 0
    transpose: bool = False  # parameter stored as [din, dout] (an embedding table)
    bias: str | None = None  # the bias the operation adds, foldable as an input of 1s
    index: Tensor | None = None  # flat parameter position of each entry of the layout


@dataclass
class Dense:
    """An explicit per-sample Jacobian ``J [c, O, n_p]`` (in the parameter's layout,
    flattened); kernel of two blocks: ``c1 c2 O n_p`` multiply-adds traced."""

    J: Tensor
    index: Tensor | None = None  # flat parameter position of each of the n_p columns


Form = Outer | Dense


@dataclass
class Pairwise:
    """An :class:`Outer` form laid out for pairwise contraction: ``gs [c, S, O, dout]``
    contiguous, with positions whose output gradient is zero for the whole block dropped
    (a last-position readout makes most positions of most layers irrelevant)."""

    gs: Tensor
    h: Tensor | None
    idx: Tensor | None


@dataclass
class Tied:
    """One parameter used both as a table (a lookup :class:`Outer` given by indices, layout
    ``[V, d]``) and as a product's weight (an :class:`Outer` with inputs, layout
    ``[dout = V, din = d]``) in the same layout, as a token table that is also the
    unembedding. Its kernel is the two forms' kernels plus their cross terms
    (:func:`pair_tied`), so the ``[c, O, V d]`` Jacobian is never formed."""

    lookup: Any  # Outer, or Pairwise once laid out for contraction
    product: Any


def merge(forms: list[Form]) -> Form:
    """One form for a parameter whose layer ran several times (positions concatenate;
    dense Jacobians add)."""
    if len(forms) == 1:
        return forms[0]
    if all(isinstance(f, Dense) for f in forms):
        return Dense(sum(f.J for f in forms), forms[0].index)  # type: ignore[misc]
    if all(isinstance(f, Outer) for f in forms):
        f0 = forms[0]
        assert isinstance(f0, Outer)
        return Outer(
            g=torch.cat([f.g for f in forms], 2),  # type: ignore[union-attr]
            h=None if f0.h is None else torch.cat([f.h for f in forms], 1),  # type: ignore[union-attr]
            idx=None if f0.idx is None else torch.cat([f.idx for f in forms], 1),  # type: ignore[union-attr]
            din=f0.din,
            transpose=f0.transpose,
            bias=f0.bias,
            index=f0.index,
        )
    raise TypeError("mixed forms")


def _layout(f: Form) -> tuple:
    """What must agree for two uses of a parameter to be merged by :func:`merge`."""
    if isinstance(f, Dense):
        return ("dense", f.J.shape[2])
    return ("outer", f.idx is None, f.din, f.g.shape[3], f.transpose)


def _same_index(forms: list[Form]) -> bool:
    first = forms[0].index
    return all(
        (f.index is None and first is None)
        or (f.index is not None and first is not None and torch.equal(f.index, first))
        for f in forms
    )


#: ``{(numel, device): arange(numel)}``: the positions a traced parameter starts from
#: (:func:`positions`), kept so that a form in the parameter's own layout is known to be
#: one without looking at its index; at most :data:`_POSITIONS_CAP` entries in all.
_POSITIONS: dict[tuple[int, torch.device], Tensor] = {}
_POSITIONS_CAP = 1 << 23


def positions(numel: int, device: torch.device) -> Tensor:
    """``arange(numel)`` on ``device``, the same tensor every time while the cache has
    room (read-only: views of it are indices)."""
    key = (numel, torch.device(device))
    t = _POSITIONS.get(key)
    if t is None:
        t = torch.arange(numel, device=device)
        if numel + sum(v.numel() for v in _POSITIONS.values()) <= _POSITIONS_CAP:
            _POSITIONS[key] = t
    return t


def _distinct(index: Tensor, numel: int) -> bool:
    """Whether no parameter position occurs twice in ``index``: at once for the
    parameter's own layout (a contiguous view of :func:`positions`), else linear time."""
    base = _POSITIONS.get((numel, index.device))
    if (
        base is not None
        and index.numel() == numel
        and index.is_contiguous()
        and index.data_ptr() == base.data_ptr()
    ):
        return True
    return bool(torch.bincount(index, minlength=numel).max() <= 1)


def _tied(forms: list[Form]) -> Tied | None:
    """The uses as a :class:`Tied` form when they are lookups and products of one
    parameter in one layout (each kind mergeable), else None."""
    look = [f for f in forms if isinstance(f, Outer) and f.idx is not None]
    prod = [f for f in forms if isinstance(f, Outer) and f.h is not None and not f.transpose]
    if not look or not prod or len(look) + len(prod) != len(forms):
        return None
    if len({_layout(f) for f in look}) != 1 or len({_layout(f) for f in prod}) != 1:
        return None
    if not (_same_index(look + prod) and look[0].index is not None):
        return None
    lo, pr = merge(look), merge(prod)
    if lo.din != pr.g.shape[3] or lo.g.shape[3] != pr.din:  # [V, d] both
        return None
    if not _distinct(lo.index, lo.index.numel()):  # type: ignore[union-attr]
        return None
    return Tied(lo, pr)


def scatter(form: Form, numel: int) -> Dense:
    """``form`` as a dense Jacobian ``[c, O, numel]`` in the parameter's own flat layout
    (entries a use repeats, as in ``W.expand(...)``, add up); cost ``c O numel``."""
    if isinstance(form, Tied):
        total = scatter(form.lookup, numel)
        total.J.add_(scatter(form.product, numel).J)
        return total
    d = form if isinstance(form, Dense) else materialize(form)
    if d.index is None:  # a copy: the caller adds the other uses into it in place
        return Dense(d.J.clone() if d is form else d.J)
    J = torch.zeros((*d.J.shape[:2], numel), dtype=d.J.dtype, device=d.J.device)
    J.index_add_(2, d.index, d.J)
    return Dense(J)


def parts(forms: list[Form], numel: int) -> list[Form]:
    """Forms whose kernels add up to the kernel of one parameter used ``len(forms)`` times.

    * Uses in one layout (a layer run several times, the same view of a parameter in
      several products): one form (:func:`merge`), positions concatenated.
    * Uses of disjoint entries, each touching an entry at most once (the query, key and
      value slices of a packed projection): the forms as they are; the kernel of
      disjoint parts is the sum of their kernels, with no cross terms.
    * Otherwise (overlapping uses in different layouts, e.g. a tied embedding that is
      also the unembedding; a use that repeats entries): every use scattered into one
      dense ``[c, O, numel]`` Jacobian (:func:`scatter`), which sums the cross terms.
    """
    if len(forms) == 1 and forms[0].index is None:
        return forms
    if len({_layout(f) for f in forms}) == 1 and _same_index(forms):
        f = merge(forms)
        if f.index is None or _distinct(f.index, numel):
            return [f]
        return [scatter(f, numel)]
    if all(f.index is not None for f in forms):
        if _distinct(torch.cat([f.index for f in forms]), numel):  # type: ignore[misc]
            return forms
    tied = _tied(forms)
    if tied is not None:
        return [tied]
    total = scatter(forms[0], numel)
    for f in forms[1:]:
        total.J.add_(scatter(f, numel).J)
    return [total]


def predicted_grad(form: Form, r: Tensor, shape: torch.Size) -> Tensor:
    """``sum_{i,o} r[i, o] J_o(x_i)`` reshaped to the parameter: what autograd must match
    (``r [c, O]``); cost ``c O n_p`` for a dense form, ``c O S dout + c S dout din`` else."""
    if isinstance(form, Tied):
        return predicted_grad(form.lookup, r, shape) + predicted_grad(form.product, r, shape)
    if isinstance(form, Dense):
        flat = torch.einsum("io,ion->n", r, form.J)
    else:
        gr = torch.einsum("io,iosd->isd", r, form.g)  # [c, S, dout]
        if form.idx is not None:
            W = torch.zeros(form.din, gr.shape[2], dtype=gr.dtype, device=gr.device)
            W.index_add_(0, form.idx.reshape(-1), gr.reshape(-1, gr.shape[2]))
            flat = W.reshape(-1)
        else:
            assert form.h is not None
            spec = "isd,ise->ed" if form.transpose else "isd,ise->de"
            flat = torch.einsum(spec, gr, form.h).reshape(-1)
    if form.index is None:
        return flat.reshape(shape)
    out = torch.zeros(shape.numel(), dtype=flat.dtype, device=flat.device)
    return out.index_add_(0, form.index, flat).reshape(shape)


def materialize(form: Outer) -> Dense:
    """The explicit per-sample Jacobian ``[c, O, dout din]`` of an :class:`Outer` form, in
    the parameter's layout; cost ``c O S dout din`` multiply-adds."""
    c, no, S, dout = form.g.shape
    if form.idx is not None:
        onehot = F.one_hot(form.idx, form.din).to(form.g.dtype)  # [c, S, V]
        J = torch.einsum("iosd,isv->iovd", form.g, onehot)  # table layout [V, dout]
    else:
        assert form.h is not None
        spec = "iosd,ise->ioed" if form.transpose else "iosd,ise->iode"
        J = torch.einsum(spec, form.g, form.h)  # the parameter's layout
    return Dense(J.reshape(c, no, -1), form.index)


def outer_costs(f: Outer, c: int, trace: bool) -> tuple[float, float]:
    """FLOPs of (pairwise, materialised) contraction of a ``c x c`` block:
    ``2 (c^2 S^2 din + c^2 S^2 dout O')`` against ``2 (c O S dout din + c^2 O' dout din)``
    with ``O' = O`` traced, ``O^2`` untraced (``din`` term dropped for an embedding)."""
    _, no, S, dout = f.g.shape
    din = f.din
    o2 = no if trace else no * no
    a_cost = 0 if f.idx is not None else c * c * S * S * din
    pairwise = 2.0 * (a_cost + c * c * S * S * dout * o2)
    materialised = 2.0 * (c * no * S * dout * din + c * c * o2 * dout * din)
    return pairwise, materialised


def fold_bias(f: Outer) -> Outer:
    """Weight and bias as one form: ``y = W h + b = [W, b] [h; 1]``, so the bias costs one
    more input column instead of a contraction of its own. The kernel of one form does
    not depend on its layout, so the folded form has none (``index`` dropped)."""
    assert f.h is not None
    ones = torch.ones((*f.h.shape[:-1], 1), dtype=f.h.dtype, device=f.h.device)
    return Outer(g=f.g, h=torch.cat([f.h, ones], -1), din=f.din + 1)


def pairwise(f: Outer) -> Pairwise:
    """``f`` laid out for :func:`pair_outer`, positions with zero gradient dropped."""
    gs = f.g.permute(0, 2, 1, 3).contiguous()  # [c, S, O, dout]
    h, idx = f.h, f.idx
    if gs.shape[1] == 1:
        return Pairwise(gs, h, idx)
    live = gs.ne(0).any(3).any(2).any(0)  # [S]
    if not bool(live.all()):
        keep = live.nonzero().squeeze(1)
        gs = gs[:, keep]
        h = None if h is None else h[:, keep]
        idx = None if idx is None else idx[:, keep]
    return Pairwise(gs, h, idx)


def pair_outer(a: Pairwise, b: Pairwise, trace: bool) -> Tensor:
    """Kernel block of two :class:`Pairwise` forms:
    ``K[i, j] = sum_o sum_{s,t} A[i, s, j, t] B_o[i, s, j, t]`` with ``A = H H^T`` (index
    equality for an embedding) and ``B = G G^T``; ``[c1, c2]`` or ``[c1, c2, O, O]``."""
    c1, S1, no, dout = a.gs.shape
    c2, S2 = b.gs.shape[:2]
    if S1 == 0 or S2 == 0:
        shape = (c1, c2) if trace else (c1, c2, no, no)
        return torch.zeros(shape, dtype=a.gs.dtype, device=a.gs.device)
    if a.idx is not None:
        A = (a.idx.reshape(c1, S1, 1, 1) == b.idx.reshape(1, 1, c2, S2)).to(a.gs.dtype)
    else:
        A = (a.h.reshape(c1 * S1, -1) @ b.h.reshape(c2 * S2, -1).T).reshape(c1, S1, c2, S2)
    if trace:
        B = (a.gs.reshape(c1 * S1, -1) @ b.gs.reshape(c2 * S2, -1).T).reshape(c1, S1, c2, S2)
        if S1 == S2 == 1:  # (H H^T) * (G G^T): no position sums
            return A.mul_(B).reshape(c1, c2)
        return (A * B).sum((1, 3))
    out = None
    for s in range(S1):  # one [c1 O, c2 O] product per position pair keeps memory at c^2 O^2
        ga = a.gs[:, s].reshape(c1 * no, dout)
        for t in range(S2):
            B = (ga @ b.gs[:, t].reshape(c2 * no, dout).T).reshape(c1, no, c2, no)
            term = A[:, s, :, t][:, None, :, None] * B
            out = term if out is None else out + term
    assert out is not None
    return out.permute(0, 2, 1, 3)


def _cross(look: Pairwise, prod: Pairwise) -> Tensor:
    """Traced cross term ``sum_o <J_look,o(x_i), J_prod,o(x_j)>`` of a :class:`Tied`
    parameter: ``sum_{o,s,t} gP[j, t, o, idx[i, s]] (gL[i, s, o] . h[j, t])``, in chunks of
    outputs (``c1 S1 c2 S2`` entries per output at a time); ``[c1, c2]``."""
    c1, S1, n_out, _ = look.gs.shape
    c2, S2 = prod.gs.shape[:2]
    out = torch.zeros(c1, c2, dtype=look.gs.dtype, device=look.gs.device)
    if S1 == 0 or S2 == 0:
        return out
    assert look.idx is not None and prod.h is not None
    step = max(1, 2**24 // (c1 * S1 * c2 * S2))
    ids = look.idx.reshape(-1)
    for o0 in range(0, n_out, step):
        o1 = min(o0 + step, n_out)
        M = torch.einsum("isod,jtd->isojt", look.gs[:, :, o0:o1], prod.h)
        G = prod.gs[:, :, o0:o1].index_select(3, ids).reshape(c2, S2, o1 - o0, c1, S1)
        out += (M * G.permute(3, 4, 2, 0, 1)).sum((1, 2, 4))
    return out


def pair_tied(a: Tied, b: Tied) -> Tensor:
    """Traced kernel block of a :class:`Tied` parameter: both forms' own kernels and the
    two cross terms; ``[c1, c2]``."""
    return (
        pair_outer(a.lookup, b.lookup, True)
        + pair_outer(a.product, b.product, True)
        + _cross(a.lookup, b.product)
        + _cross(b.lookup, a.product).T
    )


def _pair_one(a: Dense | Pairwise | Tied, b: Dense | Pairwise | Tied, trace: bool) -> Tensor:
    """Kernel block of one parameter's two forms (the same kind on both sides)."""
    if isinstance(a, Dense):
        assert isinstance(b, Dense)
        return contract([a.J], [b.J], trace)
    if isinstance(a, Tied):
        assert isinstance(b, Tied) and trace
        return pair_tied(a, b)
    assert isinstance(b, Pairwise)
    return pair_outer(a, b, trace)


def pair(
    fa: list[Dense | Pairwise | Tied],
    fb: list[Dense | Pairwise | Tied],
    generic: tuple[list[Tensor], list[Tensor]],
    trace: bool,
) -> Tensor:
    """Kernel block of two blocks' features: the ruled parameters' forms pair by pair,
    plus the generic parameters' Jacobians (:func:`~lazymeter.ntk.blocks.contract`)."""
    out = None
    for a, b in zip(fa, fb, strict=True):
        blk = _pair_one(a, b, trace)
        out = blk if out is None else out + blk
    if generic[0]:
        blk = contract(generic[0], generic[1], trace)
        out = blk if out is None else out + blk
    assert out is not None
    return out


def pair_groups(
    fa: list[Dense | Pairwise | Tied],
    fb: list[Dense | Pairwise | Tied],
    generic: tuple[list[Tensor], list[Tensor]],
    trace: bool,
    owners: tuple[list[int], list[int]],
    groups: int,
) -> Tensor:
    """:func:`pair` split by parameter group: ``owners`` gives the group of each form and of
    each generic Jacobian; ``[G, c1, c2]`` traced or ``[G, c1, c2, O, O]``. The groups sum
    to :func:`pair`'s block (the same terms, added in another order)."""
    out: Tensor | None = None
    for a, b, g in zip(fa, fb, owners[0], strict=True):
        blk = _pair_one(a, b, trace)
        if out is None:
            out = blk.new_zeros((groups, *blk.shape))
        out[g] += blk
    if generic[0]:
        blk = contract_groups(generic[0], generic[1], trace, owners[1], groups)
        out = blk if out is None else out + blk.to(out.dtype)
    assert out is not None
    return out


def feature_bytes(features: Any) -> int:
    """Bytes held by one block's features ``(forms, generic Jacobians)``."""
    forms, gen = features
    total = sum(t.numel() * t.element_size() for t in gen)
    for f in forms:
        if isinstance(f, Tied):
            total += feature_bytes(([f.lookup, f.product], []))
            continue
        if isinstance(f, Dense):
            ts = [f.J]
        else:
            ts = [f.gs if isinstance(f, Pairwise) else f.g, f.h, f.idx]
        total += sum(t.numel() * t.element_size() for t in ts if t is not None)
    return total
