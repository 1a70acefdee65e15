"""Products with a parameter: ``F.linear``, ``@``/``matmul``, ``mm``, ``bmm``, ``addmm``,
two-operand ``einsum``.

Every such product is an einsum ``y = einsum("x,w->y", x, W)`` of one sample's tensors.
Its letters sort into: ``I``, in ``W`` and ``x`` only (contracted: the layer's input
dimension); ``D``, in ``W`` and ``y`` only (the output dimension, e.g. heads and head
size of ``btd,hde->bhte``); ``S``, in ``x`` and ``y`` only (positions). Then

    J_W = sum_s g_s (x) h_s,   h = x summed to [S, I],   g = dy summed to [S, D],

an :class:`~lazymeter.ntk.forms.Outer` form in the layout ``[D, I]`` (with the index of
each entry in ``W``). Refused: letters in all three operands (per-head weights applied
to per-head inputs), letters of ``W`` summed away, repeated letters. Either operand may
be the parameter (both may be: each gets its own use, the other held fixed).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ..forms import Outer
from .elementwise import broadcast_use
from .trace import Tracked, Use, register_op_rule

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def product(x: Any, xl: str, w: Tracked, wl: str, yl: str, y: Tensor) -> Use | str:
    """The :class:`Use` of ``w`` in ``y = einsum(f"{xl},{wl}->{yl}", x, w)``, or why not."""
    if not isinstance(x, Tensor):
        return "the other operand is not a tensor"
    if len(set(wl)) != len(wl) or len(set(xl)) != len(xl):
        return "repeated letters (a diagonal) are not handled"
    heads = [ch for ch in wl if ch in xl and ch in yl]
    if heads:
        return f"letters {''.join(heads)} are in the parameter, the input and the output"
    if any(ch not in xl and ch not in yl for ch in wl):
        return "the parameter is summed over some of its dimensions"
    D = "".join(ch for ch in wl if ch in yl)
    I_ = "".join(ch for ch in wl if ch in xl)
    S = "".join(ch for ch in yl if ch not in wl)
    if any(ch not in xl for ch in S):
        return "an output letter comes from neither operand"
    size = {**dict(zip(wl, w.tensor.shape, strict=True)), **dict(zip(xl, x.shape, strict=True))}
    dout = math.prod(size[ch] for ch in D)
    din = math.prod(size[ch] for ch in I_)
    n_pos = math.prod(size[ch] for ch in S)
    h = torch.einsum(f"{xl}->{S}{I_}", x).reshape(n_pos, din)
    index = w.index.permute([wl.index(ch) for ch in D + I_]).reshape(-1)
    spec = f"ZY{yl}->ZY{S}{D}"

    def build(ts: tuple[Tensor, ...], g: Tensor) -> Outer:
        c, n_out = g.shape[:2]
        g2 = torch.einsum(spec, g).reshape(c, n_out, n_pos, dout)
        return Outer(g=g2, h=ts[0], din=din, index=index)

    return Use(w.name, index, (h,), build)


def _expand(eq: str, shapes: list[torch.Size]) -> list[str] | None:
    """Operand and output letters of an einsum equation, ``...`` expanded; None if the
    equation uses a form this rule does not parse."""
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    ops = lhs.split(",")
    if len(ops) != len(shapes):
        return None
    free = [ch for ch in _LETTERS if ch not in eq and ch not in "ZY"]
    n_ell = max(
        (
            len(s) - len(o.replace("...", ""))
            for o, s in zip(ops, shapes, strict=True)
            if "..." in o
        ),
        default=0,
    )
    ell = "".join(free[:n_ell])
    out = []
    for o, s in zip(ops, shapes, strict=True):
        if "..." in o:
            k = len(s) - len(o.replace("...", ""))
            o = o.replace("...", ell[n_ell - k :] if k else "")
        if len(o) != len(s) or not o.isalpha():
            return None
        out.append(o)
    if not arrow:
        once = sorted(ch for ch in set("".join(out)) if "".join(out).count(ch) == 1)
        rhs = ell + "".join(ch for ch in once if ch not in ell)
    else:
        rhs = rhs.replace("...", ell)
    if not rhs.isalpha() and rhs:
        return None
    if any(ch in "ZY" for ch in "".join(out) + rhs):
        return None
    return [*out, rhs]


def _pair(a: Any, al: str, b: Any, bl: str, yl: str, find: Any, y: Tensor) -> list[Use] | str:
    """Uses of the followed operands of ``y = einsum(f"{al},{bl}->{yl}", a, b)``."""
    uses = []
    for x, xl, w, wl in ((b, bl, find(a), al), (a, al, find(b), bl)):
        if w is None:
            continue
        u = product(x, xl, w, wl, yl, y)
        if isinstance(u, str):
            return u
        uses.append(u)
    return uses


def _matmul_letters(a: Tensor, b: Tensor) -> tuple[Tensor, str, Tensor, str, str] | str:
    """Letters of ``a @ b`` (with broadcasting over batch dimensions); a size-1 batch
    dimension broadcast against a larger one is squeezed away from its operand."""
    if a.dim() == 0 or b.dim() == 0:
        return "a 0-d operand"
    al = "k" if a.dim() == 1 else "m" + "k"
    bl = "k" if b.dim() == 1 else "k" + "n"
    yl = ("m" if a.dim() > 1 else "") + ("n" if b.dim() > 1 else "")
    ab, bb = a.shape[: max(a.dim() - 2, 0)], b.shape[: max(b.dim() - 2, 0)]
    nb = max(len(ab), len(bb))
    pool = [ch for ch in _LETTERS if ch not in "kmnZY"][:nb]
    a_lead, b_lead, squeeze_a, squeeze_b = "", "", [], []
    for pos in range(nb):
        ia, ib = pos - (nb - len(ab)), pos - (nb - len(bb))
        sa = ab[ia] if ia >= 0 else None
        sb = bb[ib] if ib >= 0 else None
        ch = pool[pos]
        if sa is not None and sb is not None and sa != sb:
            if sa == 1:
                squeeze_a.append(ia)
                sa = None
            else:
                squeeze_b.append(ib)
                sb = None
        a_lead += ch if sa is not None else ""
        b_lead += ch if sb is not None else ""
    for d in reversed(squeeze_a):
        a = a.squeeze(d)
    for d in reversed(squeeze_b):
        b = b.squeeze(d)
    return a, a_lead + al, b, b_lead + bl, "".join(pool) + yl


def _matmul(a: Any, b: Any, find: Any, y: Tensor) -> list[Use] | str:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return "an operand is not a tensor"
    ta, tb = find(a), find(b)
    found = _matmul_letters(a, b)
    if isinstance(found, str):
        return found
    a2, al, b2, bl, yl = found
    # A squeezed parameter operand is followed through the same squeeze of its index.
    if ta is not None and a2.shape != a.shape:
        ta = Tracked(a2, ta.name, ta.index.reshape(a2.shape))
    if tb is not None and b2.shape != b.shape:
        tb = Tracked(b2, tb.name, tb.index.reshape(b2.shape))
    known = {id(a2): ta, id(b2): tb}
    return _pair(a2, al, b2, bl, yl, lambda t: known.get(id(t)), y)


@register_op_rule("matmul", "__matmul__", "mm", "bmm")
def matmul(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``a @ b`` with either operand a parameter."""
    if kwargs.get("out") is not None:
        return "out= is not handled"
    return _matmul(args[0], args[1], find, out)


@register_op_rule("__rmatmul__")
def rmatmul(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``other @ self``."""
    return _matmul(args[1], args[0], find, out)


@register_op_rule("linear")
def linear(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``F.linear(x, W, b) = x W^T + b``."""
    names = ("input", "weight", "bias")
    a = dict(zip(names, args, strict=False)) | kwargs
    x, w, b = a.get("input"), a.get("weight"), a.get("bias")
    if not isinstance(x, Tensor) or not isinstance(w, Tensor):
        return "an operand is not a tensor"
    lead = "".join(ch for ch in _LETTERS if ch not in "oiZY")[: x.dim() - 1]
    if w.dim() == 1:
        uses = _pair(x, lead + "i", w, "i", lead, find, out)
    else:
        uses = _pair(x, lead + "i", w, "oi", lead + "o", find, out)
    if isinstance(uses, str):
        return uses
    tb, tw = find(b), find(w)
    if tb is not None:
        if tw is not None and w.dim() == 2:  # the bias may be folded into W's form
            for u in uses:
                if u.name == tw.name:
                    u.build = _with_bias(u.build, tb.name)
        uses.append(broadcast_use(tb, out, 1.0))
    return uses


def _with_bias(build: Any, bias: str) -> Any:
    """``build`` whose :class:`~lazymeter.ntk.forms.Outer` names the bias its operation
    adds (:attr:`~lazymeter.ntk.forms.Outer.bias`)."""
    return lambda ts, g: replace(build(ts, g), bias=bias)


@register_op_rule("addmm")
def addmm(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """``addmm(b, x, W) = b + x @ W`` (HuggingFace GPT-2's ``Conv1D``)."""
    names = ("input", "mat1", "mat2")
    a = dict(zip(names, args, strict=False)) | kwargs
    if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
        return "beta or alpha other than 1"
    uses = _matmul(a["mat1"], a["mat2"], find, out)
    if isinstance(uses, str):
        return uses
    tb = find(a["input"])
    if tb is not None:
        uses.append(broadcast_use(tb, out, 1.0))
    return uses


@register_op_rule("einsum")
def einsum(args: tuple[Any, ...], kwargs: dict[str, Any], find: Any, out: Any) -> list[Use] | str:
    """Two-operand ``torch.einsum(equation, a, b)`` (operands also as one list)."""
    if not args or not isinstance(args[0], str):
        return "only the equation form of einsum is handled"
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    if len(ops) != 2 or not all(isinstance(t, Tensor) for t in ops):
        return "only two-operand einsums are handled"
    letters = _expand(args[0], [t.shape for t in ops])
    if letters is None:
        return "equation not understood"
    al, bl, yl = letters
    return _pair(ops[0], al, ops[1], bl, yl, find, out)
