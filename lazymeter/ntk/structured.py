"""Structured NTK engine: per-layer rules instead of per-sample Jacobians.

For a dense layer ``y = W h``, the per-sample gradient of output ``o`` w.r.t. ``W`` is
``sum_s g_os h_s^T`` (``s``: sequence/spatial positions, ``g``: gradient of the output
w.r.t. the layer output), so that layer's NTK block is

    K_W[i, j] = sum_o sum_{s,t} (h_is . h_jt) (g_ios . g_jot),

which is ``(H H^T) * (G G^T)`` without positions. Nothing of size ``n_params`` per
sample is formed. This is the "structured derivatives" idea of neural-tangents (Novak,
Sohl-Dickstein, Schoenholz, ICML 2022) and the per-layer trick of nngeometry/Opacus.

:data:`RULES` maps a layer type to a small function that, given the layer's captured
input and output, describes each of its parameters' per-sample Jacobian in one of two
forms: :class:`Outer` (a sum of outer products, as above) or :class:`Dense` (an explicit
``[c, O, n_p]`` Jacobian, for small parameters such as biases and norm scales). One
forward pass with hooks captures every ruled layer's input; one backward pass batched
over the ``O`` outputs gives every ``g``. Parameters no rule covers (raw parameters in
einsums, custom layers, weights shared between layers) go through the generic
Jacobian engine for those parameters alone, and the parts add up, so the engine is
exact for every model. Each call checks, on its first block, that the rules reproduce
autograd's gradient of a random output combination; a parameter that fails (used
outside its layer as well) is moved to the generic part.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engines import _contract, _jacobian_rows, blocked_kernel, register_engine
from .functional import (
    FunctionalModel,
    OutputFn,
    as_inputs,
    num_samples,
    slice_inputs,
    tensor_attributes_kept,
)


@dataclass
class Outer:
    """``J_o(x_i) = sum_s g[i, o, s] (x) h[i, s]``, a ``[dout, din]`` parameter.

    ``h``: ``[c, S, din]`` inputs, or ``idx``: ``[c, S]`` indices into ``din`` rows
    (an embedding: ``h`` is one-hot); ``g``: ``[c, O, S, dout]`` output gradients.
    """

    g: Tensor
    h: Tensor | None = None
    idx: Tensor | None = None
    din: int = 0
    transpose: bool = False  # parameter stored as [din, dout] (an embedding table)
    bias: str | None = None  # the layer's bias, foldable into this form as an input of 1s


@dataclass
class Dense:
    """An explicit per-sample Jacobian ``[c, O, n_p]``."""

    J: Tensor


Form = Outer | Dense
#: A rule gets (module, inputs, output) of one call and returns, per parameter name
#: local to the module, a function of the output gradient ``g [c, O, *out.shape[1:]]``.
Rule = Callable[[nn.Module, tuple[Any, ...], Tensor], dict[str, Callable[[Tensor], Form]] | None]

RULES: dict[type, Rule] = {}
#: Static limits of a rule: ``DECLINES[type](module)`` names what the rule does not
#: handle in this module's configuration (its parameters then go to the generic engine),
#: or returns None. Checked before the layer runs, so coverage can say it in advance.
DECLINES: dict[type, Callable[[nn.Module], str | None]] = {}


def register_rule(
    *types: type, declines: Callable[[nn.Module], str | None] | None = None
) -> Callable[[Rule], Rule]:
    """Decorator adding a rule for the given module types to :data:`RULES`; ``declines``
    (optional) returns the reason a module of these types is not covered, or None."""

    def deco(fn: Rule) -> Rule:
        for t in types:
            RULES[t] = fn
            if declines is not None:
                DECLINES[t] = declines
            else:
                DECLINES.pop(t, None)
        return fn

    return deco


def declined(m: nn.Module) -> str | None:
    """Why the rule for ``type(m)`` does not cover ``m`` (None: covered, or no rule)."""
    check = DECLINES.get(type(m))
    return None if check is None else check(m)


@register_rule(nn.Linear)
def _linear(m: nn.Linear, args: tuple[Any, ...], out: Tensor):
    h = args[0]
    c = h.shape[0]
    h = h.reshape(c, -1, m.in_features)

    def g3(g: Tensor) -> Tensor:
        return g.reshape(c, g.shape[1], -1, m.out_features)

    bias = "bias" if m.bias is not None else None
    rules = {"weight": lambda g: Outer(g=g3(g), h=h, din=m.in_features, bias=bias)}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g3(g).sum(2))
    return rules


def _dims(m: nn.Module, one_d: bool) -> tuple[tuple[int, ...], ...]:
    """``(kernel, stride, dilation)`` of a 1-d or 2-d convolution as 2-d tuples."""
    if one_d:
        return (1, *m.kernel_size), (1, *m.stride), (1, *m.dilation)
    return tuple(m.kernel_size), tuple(m.stride), tuple(m.dilation)


def _grouped(g: Tensor, h: Tensor, groups: int) -> Dense:
    """Per-sample Jacobian of a grouped weight ``[G * dout_g, din_g]`` (group ``k`` maps
    input block ``k`` to output block ``k``): ``J[i, o, k] = sum_s g[i, o, s, k] (x) h[i, s, k]``
    from ``g [c, O, S, dout]`` and ``h [c, S, G * din_g]``; cost ``c O S dout din_g``."""
    c, no, S, dout = g.shape
    g5 = g.reshape(c, no, S, groups, dout // groups)
    h4 = h.reshape(c, S, groups, -1)
    return Dense(torch.einsum("iosgd,isge->iogde", g5, h4).reshape(c, no, -1))


@register_rule(nn.Conv1d, nn.Conv2d)
def _conv(m: nn.Conv1d | nn.Conv2d, args: tuple[Any, ...], out: Tensor):
    """Unfolded patches of the padded input (zero, reflect, replicate or circular padding,
    ``padding="same"`` included), with ``groups`` as a block-diagonal weight."""
    x = args[0]
    c = x.shape[0]
    one_d = isinstance(m, nn.Conv1d)
    pad = tuple(m._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        x = F.pad(x, pad, mode=mode)
    if one_d:
        x = x.unsqueeze(2)
    k, st, dl = _dims(m, one_d)
    h = F.unfold(x, k, dilation=dl, stride=st).transpose(1, 2)  # [c, L, Cin * k]
    din = h.shape[2] // m.groups

    def g4(g: Tensor) -> Tensor:  # [c, O, Cout, *spatial] -> [c, O, L, Cout]
        return g.reshape(c, g.shape[1], m.out_channels, -1).transpose(2, 3)

    if m.groups == 1:
        bias = "bias" if m.bias is not None else None
        rules = {"weight": lambda g: Outer(g=g4(g), h=h, din=din, bias=bias)}
    else:
        rules = {"weight": lambda g: _grouped(g4(g), h, m.groups)}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g.reshape(c, g.shape[1], m.out_channels, -1).sum(3))
    return rules


@register_rule(nn.ConvTranspose1d, nn.ConvTranspose2d)
def _conv_transpose(m: nn.ConvTranspose1d | nn.ConvTranspose2d, args: tuple[Any, ...], out):
    """``y = conv_transpose(x, W)`` with ``W [Cin, Cout/G, *k]``: the gradient w.r.t. ``W``
    pairs each input position ``p`` with the output-gradient patch that ``p`` wrote to,
    ``dW[cin, cout, k] = sum_p x[cin, p] g[cout, p * stride - padding + k * dilation]``, i.e.
    ``g`` unfolded with the layer's own kernel, stride, padding and dilation (positions
    past the input, from ``output_padding``/``output_size``, are dropped)."""
    x = args[0]
    c, cin = x.shape[0], x.shape[1]
    one_d = isinstance(m, nn.ConvTranspose1d)
    spatial = (1, *x.shape[2:]) if one_d else tuple(x.shape[2:])
    k, st, dl = _dims(m, one_d)
    pd = (0, *m.padding) if one_d else tuple(m.padding)
    h = x.reshape(c, cin, -1).transpose(1, 2)  # [c, S_in, Cin]

    def patches(g: Tensor) -> Tensor:  # [c, O, Cout, *out] -> [c, O, S_in, Cout * k]
        no = g.shape[1]
        g2 = g.reshape(c * no, m.out_channels, *((1,) if one_d else ()), *g.shape[3:])
        u = F.unfold(g2, k, dilation=dl, padding=pd, stride=st)
        rows = [
            (o + 2 * p - d * (kk - 1) - 1) // s + 1
            for o, p, d, kk, s in zip(g2.shape[2:], pd, dl, k, st, strict=True)
        ]
        u = u.reshape(c * no, -1, *rows)[:, :, : spatial[0], : spatial[1]]
        return u.reshape(c, no, u.shape[1], -1).transpose(2, 3)

    if m.groups == 1:
        rules = {"weight": lambda g: Outer(g=patches(g), h=h, din=cin, transpose=True)}
    else:
        # Weight rows are input channels: swap the roles of ``g`` and ``h`` per group.
        def grouped(g: Tensor) -> Dense:
            u = patches(g)  # [c, O, S, Cout * k]
            G = m.groups
            u5 = u.reshape(c, u.shape[1], u.shape[2], G, -1)
            h4 = h.reshape(c, h.shape[1], G, -1)
            J = torch.einsum("isgd,iosge->iogde", h4, u5)
            return Dense(J.reshape(c, u.shape[1], -1))

        rules = {"weight": grouped}
    if m.bias is not None:
        rules["bias"] = lambda g: Dense(g.reshape(c, g.shape[1], m.out_channels, -1).sum(3))
    return rules


def _embedding_declines(m: nn.Embedding) -> str | None:
    if m.max_norm is not None:
        return "max_norm renormalises the looked-up rows inside forward"
    if m.scale_grad_by_freq:
        return "scale_grad_by_freq rescales gradients by in-batch frequencies"
    return None


@register_rule(nn.Embedding, declines=_embedding_declines)
def _embedding(m: nn.Embedding, args: tuple[Any, ...], out: Tensor):
    idx = args[0]
    c = idx.shape[0]
    idx = idx.reshape(c, -1)
    keep = None if m.padding_idx is None else (idx != m.padding_idx)

    def form(g: Tensor) -> Outer:
        g = g.reshape(c, g.shape[1], -1, m.embedding_dim)
        if keep is not None:  # the padding row gets no gradient
            g = g * keep[:, None, :, None].to(g.dtype)
        return Outer(g=g, idx=idx, din=m.num_embeddings, transpose=True)

    return {"weight": form}


def _affine(c: int, xhat: Tensor, weight: Tensor | None, bias: Tensor | None):
    """Elementwise affine ``y = xhat * weight + bias`` broadcast over positions.
    ``xhat``: ``[c, S, d]`` with ``d`` = number of affine entries."""
    d = xhat.shape[2]
    rules: dict[str, Callable[[Tensor], Form]] = {}
    if weight is not None:
        rules["weight"] = lambda g: Dense(torch.einsum("iosd,isd->iod", _pos(g, c, d), xhat))
    if bias is not None:
        rules["bias"] = lambda g: Dense(_pos(g, c, d).sum(2))
    return rules


def _pos(g: Tensor, c: int, d: int) -> Tensor:
    return g.reshape(c, g.shape[1], -1, d)


@register_rule(nn.LayerNorm)
def _layer_norm(m: nn.LayerNorm, args: tuple[Any, ...], out: Tensor):
    x = args[0]
    c = x.shape[0]
    xhat = F.layer_norm(x, m.normalized_shape, eps=m.eps)
    d = math.prod(m.normalized_shape)
    return _affine(c, xhat.reshape(c, -1, d), m.weight, getattr(m, "bias", None))


if hasattr(nn, "RMSNorm"):  # torch >= 2.4

    @register_rule(nn.RMSNorm)
    def _rms_norm(m: nn.Module, args: tuple[Any, ...], out: Tensor):
        """``y = x / sqrt(mean(x^2) + eps) * weight``: an elementwise scale of the
        normalised input, like LayerNorm without centring or bias."""
        x = args[0]
        c = x.shape[0]
        xhat = F.rms_norm(x, m.normalized_shape, eps=m.eps)
        d = math.prod(m.normalized_shape)
        return _affine(c, xhat.reshape(c, -1, d), m.weight, None)


def _channels_last(c: int, C: int, rules: dict[str, Callable[[Tensor], Form]]):
    """Rules of a per-channel affine written for ``[c, positions, C]`` gradients, applied
    to channel-first outputs ``[c, O, C, *spatial]``."""
    return {
        k: (lambda g, fn=fn: fn(g.reshape(c, g.shape[1], C, -1).transpose(2, 3)))
        for k, fn in rules.items()
    }


@register_rule(nn.GroupNorm)
def _group_norm(m: nn.GroupNorm, args: tuple[Any, ...], out: Tensor):
    """Per-channel ``weight``/``bias`` after normalising each sample's channel groups
    (per sample, so unlike BatchNorm it has an NTK in training mode too)."""
    x = args[0]
    c, C = x.shape[0], x.shape[1]
    xhat = F.group_norm(x, m.num_groups, eps=m.eps).reshape(c, C, -1).transpose(1, 2)
    return _channels_last(c, C, _affine(c, xhat, m.weight, m.bias))


def _batch_norm_declines(m: nn.modules.batchnorm._BatchNorm) -> str | None:
    if m.training or m.running_mean is None:
        return "normalises with batch statistics (train mode or no running stats)"
    return None


@register_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, declines=_batch_norm_declines)
def _batch_norm(m: nn.modules.batchnorm._BatchNorm, args: tuple[Any, ...], out: Tensor):
    x = args[0]
    c, C = x.shape[0], x.shape[1]
    shape = (1, C) + (1,) * (x.dim() - 2)
    xhat = (x - m.running_mean.reshape(shape)) / torch.sqrt(m.running_var.reshape(shape) + m.eps)
    xhat = xhat.reshape(c, C, -1).transpose(1, 2)  # [c, positions, C]
    return _channels_last(c, C, _affine(c, xhat, m.weight, m.bias))


# --------------------------------------------------------------------------- coverage
def _ruled_params(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{param full name: (module name, local name)}`` for trainable parameters of ruled
    modules, excluding parameters held by more than one module slot (tied weights).

    Slots are counted by module identity, not by name: a submodule registered under two
    names (``self.fc`` and ``self.net[0]``) holds its parameters once."""
    slots: dict[int, set[tuple[int, str]]] = {}
    for m in model.modules():
        for local, p in m._parameters.items():
            if p is not None:
                slots.setdefault(id(p), set()).add((id(m), local))
    out: dict[str, tuple[str, str]] = {}
    for mname, m in model.named_modules():
        if type(m) not in RULES or declined(m) is not None:
            continue
        for local, p in m.named_parameters(recurse=False):
            full = f"{mname}.{local}" if mname else local
            if p.requires_grad and len(slots[id(p)]) == 1:
                out[full] = (mname, local)
    return out


def coverage(model: nn.Module, x: Any = None, *, output_fn: OutputFn | None = None) -> float:
    """Fraction of trainable parameter entries whose NTK the per-layer rules compute.

    With ``x`` (inputs, as for :func:`~lazymeter.empirical_ntk`): the route the structured
    engine actually takes on them, i.e. after rules that decline at run time (a layer
    applied without the batch dimension, a configuration a rule does not handle) and the
    exactness guard (a parameter also used outside its layer) have moved parameters to
    the generic engine. Without ``x``: the parameters of layers that have a rule,
    counted once however many names they have and excluding tied weights; an upper
    bound of the run-time figure.
    """
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not total:
        return 0.0
    named = dict(model.named_parameters())
    if x is None:
        names = list(_ruled_params(model))
    else:
        fm = FunctionalModel(model, output_fn)
        xs = as_inputs(x, "x", fm.device)
        names = route(fm, slice_inputs(xs, 0, min(2, num_samples(xs))), fm.num_outputs(xs))
    return sum(named[n].numel() for n in names) / total


# --------------------------------------------------------------------------- features
#: How output gradients for ``O`` outputs are obtained: "replicate" runs one forward and
#: one backward on the block repeated ``O`` times (plain kernels, ``O`` x activations);
#: "vmap" runs one forward and a backward vmapped over the ``O`` cotangents.
GRADIENT_MODE = "vmap"


def _capture(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    covered: dict[str, tuple[str, str]],
    n_out: int,
):
    """One forward with hooks on the ruled layers, one backward for all ``O`` outputs.

    Returns ``(forms, out)``: ``forms[param name]`` a list of forms (one per call of its
    layer) and the flattened output ``[c, O]`` (kept for the validation pass).
    """
    model = fm.model
    c = num_samples(xs)
    rep = n_out if (n_out > 1 and GRADIENT_MODE == "replicate") else 1
    if rep > 1:
        xs = tuple(t.repeat(rep, *[1] * (t.dim() - 1)) for t in xs)
    batch = c * rep
    modules = {mn for mn, _ in covered.values()}
    calls: list[tuple[str, Any, Tensor]] = []
    handles = []
    for mname in modules:
        m = model.get_submodule(mname)

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, mname: str = mname) -> None:
            # A layer applied to something without the batch dimension (a position table
            # looked up once for all samples) has no per-sample rule: generic engine.
            if (
                isinstance(out, Tensor)
                and out.requires_grad
                and out.dim() > 0
                and (out.shape[0] == batch)
            ):
                args = tuple(
                    a[:c].detach() if isinstance(a, Tensor) and a.dim() > 0 else a for a in args
                )
                rules = RULES[type(mod)](mod, args, out[:c])
                if rules is not None:
                    calls.append((mname, rules, out))

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.enable_grad(), tensor_attributes_kept(model):
            out = fm.model(*xs)
            out = fm.output_fn(out) if fm.output_fn is not None else out
            out = out.reshape(out.shape[0], -1)
    finally:
        for h in handles:
            h.remove()
    ys = [y for _, _, y in calls]
    if ys and rep > 1:
        # Copy o of the block carries the cotangent of output o.
        cot = torch.eye(n_out, dtype=out.dtype, device=out.device).repeat_interleave(c, 0)
        flat = torch.autograd.grad(out, ys, cot, retain_graph=True, allow_unused=True)
        grads = [None if g is None else g.reshape(n_out, c, *g.shape[1:]) for g in flat]
        with torch.enable_grad():  # the validation pass differentiates this slice
            out = out[:c]
    elif ys and n_out == 1:
        grads = [
            None if g is None else g.unsqueeze(0)
            for g in torch.autograd.grad(
                out, ys, torch.ones_like(out), retain_graph=True, allow_unused=True
            )
        ]
    elif ys:
        basis = torch.eye(n_out, dtype=out.dtype, device=out.device)
        cot = basis[:, None, :].expand(n_out, c, n_out)  # [O, c, O]: output o of every sample
        try:
            grads = torch.autograd.grad(
                out, ys, cot, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
        except RuntimeError:  # an op without a batching rule: one backward per output
            per = [
                torch.autograd.grad(out, ys, cot[o], retain_graph=True, allow_unused=True)
                for o in range(n_out)
            ]
            grads = [
                None if per[0][k] is None else torch.stack([p[k] for p in per])
                for k in range(len(ys))
            ]
    if not ys:
        with torch.enable_grad():
            out = out[:c]
    forms: dict[str, list[Form]] = {}
    for (mname, rules, y), g in zip(calls, grads if ys else [], strict=True):
        if g is None:
            g = torch.zeros((n_out, c, *y.shape[1:]), dtype=y.dtype, device=y.device)
        g = g.movedim(0, 1).detach()  # [c, O, *y.shape[1:]]
        for local, make in rules.items():
            full = f"{mname}.{local}" if mname else local
            if full in covered:
                forms.setdefault(full, []).append(make(g))
    return forms, out


def _merge(forms: list[Form]) -> Form:
    """One form for a parameter whose layer ran several times (positions concatenate)."""
    if len(forms) == 1:
        return forms[0]
    if all(isinstance(f, Dense) for f in forms):
        return Dense(sum(f.J for f in forms))  # type: ignore[misc]
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
        )
    raise TypeError("mixed forms")


def _predicted_grad(form: Form, r: Tensor, shape: torch.Size) -> Tensor:
    """``sum_{i,o} r[i, o] J_o(x_i)`` reshaped to the parameter: what autograd must match."""
    if isinstance(form, Dense):
        return torch.einsum("io,ion->n", r, form.J).reshape(shape)
    gr = torch.einsum("io,iosd->isd", r, form.g)  # [c, S, dout]
    if form.idx is not None:
        W = torch.zeros(form.din, gr.shape[2], dtype=gr.dtype, device=gr.device)
        W.index_add_(0, form.idx.reshape(-1), gr.reshape(-1, gr.shape[2]))
        return W.reshape(shape)
    assert form.h is not None
    spec = "isd,ise->ed" if form.transpose else "isd,ise->de"
    return torch.einsum(spec, gr, form.h).reshape(shape)


def _materialize(form: Outer) -> Dense:
    c, no, S, dout = form.g.shape
    if form.idx is not None:
        onehot = F.one_hot(form.idx, form.din).to(form.g.dtype)  # [c, S, V]
        J = torch.einsum("iosd,isv->iovd", form.g, onehot)  # table layout [V, dout]
    else:
        assert form.h is not None
        spec = "iosd,ise->ioed" if form.transpose else "iosd,ise->iode"
        J = torch.einsum(spec, form.g, form.h)  # the parameter's layout
    return Dense(J.reshape(c, no, -1))


def _outer_costs(f: Outer, c: int, trace: bool) -> tuple[float, float]:
    """FLOPs of (pairwise, materialised) contraction of a ``c x c`` block."""
    _, no, S, dout = f.g.shape
    din = f.din
    o2 = no if trace else no * no
    a_cost = 0 if f.idx is not None else c * c * S * S * din
    pairwise = 2.0 * (a_cost + c * c * S * S * dout * o2)
    materialised = 2.0 * (c * no * S * dout * din + c * c * o2 * dout * din)
    return pairwise, materialised


@dataclass
class Pairwise:
    """An :class:`Outer` form laid out for pairwise contraction: ``gs [c, S, O, dout]``
    contiguous, with positions whose output gradient is zero for the whole block dropped
    (a last-position readout makes most positions of most layers irrelevant)."""

    gs: Tensor
    h: Tensor | None
    idx: Tensor | None


def _fold_bias(f: Outer) -> Outer:
    """Weight and bias as one form: ``y = W h + b = [W, b] [h; 1]``, so the bias costs one
    more input column instead of a contraction of its own."""
    assert f.h is not None
    ones = torch.ones((*f.h.shape[:-1], 1), dtype=f.h.dtype, device=f.h.device)
    return Outer(g=f.g, h=torch.cat([f.h, ones], -1), din=f.din + 1)


def _pairwise(f: Outer) -> Pairwise:
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


def _pair_outer(a: Pairwise, b: Pairwise, trace: bool) -> Tensor:
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


def _pair(fa: list[Form], fb: list[Form], generic: tuple[list[Tensor], list[Tensor]], trace: bool):
    out = None
    for a, b in zip(fa, fb, strict=True):
        if isinstance(a, Dense):
            assert isinstance(b, Dense)
            blk = _contract([a.J], [b.J], trace)
        else:
            assert isinstance(b, Pairwise)
            blk = _pair_outer(a, b, trace)
        out = blk if out is None else out + blk
    if generic[0]:
        blk = _contract(generic[0], generic[1], trace)
        out = blk if out is None else out + blk
    assert out is not None
    return out


# Parameters that passed the exactness guard, per model and call signature: the check
# costs a backward pass, and a meter calls the engine with the same shapes many times.
_VALIDATED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, list[str]]] = (
    weakref.WeakKeyDictionary()
)


def _signature(fm: FunctionalModel, xs: tuple[Tensor, ...], trace: bool) -> tuple:
    """What a remembered route or plan depends on: mode, output reduction, trainable
    parameters, the parameters the rule table covers now (a rule registered or removed
    later changes it) and the per-sample input shapes."""
    return (
        fm.model.training,
        id(fm.output_fn),
        tuple(sorted(fm.params)),
        tuple(sorted(_ruled_params(fm.model))),
        tuple((t.shape[1:], t.dtype, t.device) for t in xs),
    )


def _validate(fm: FunctionalModel, covered: Collection[str], forms: dict, out: Tensor) -> list[str]:
    """The covered parameters whose rules reproduce autograd exactly on this block.

    Exactness guard: autograd's gradient of a fixed random combination of the outputs
    must equal the rules' prediction; a parameter that is also used outside its layer
    (or whose layer a rule declined, or never ran as a module) fails and is left to the
    generic engine."""
    bad = set(covered) - set(forms)
    merged = {n: _merge(f) for n, f in forms.items()}
    if merged:
        gen = torch.Generator(device=out.device).manual_seed(0)  # the user's RNG untouched
        r = torch.randn(out.shape, dtype=out.dtype, device=out.device, generator=gen)
        names = sorted(merged)
        named = dict(fm.model.named_parameters())
        with torch.enable_grad():
            actual = torch.autograd.grad((out * r).sum(), [named[n] for n in names])
        for n, act in zip(names, actual, strict=True):
            pred = _predicted_grad(merged[n], r, act.shape)
            low = act.dtype in (torch.float16, torch.bfloat16, torch.float32)
            tol = 1e-4 if low else 1e-9
            if float((pred - act).norm()) > tol * (float(act.norm()) + 1e-30):
                bad.add(n)
    return [n for n in sorted(covered) if n not in bad]


def route(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> list[str]:
    """Names of the trainable parameters whose kernel the rules compute on inputs shaped
    like ``xs`` (the rest go to the generic engine): one hooked forward and backward on
    ``xs`` and the exactness guard, remembered per model and input signature."""
    key = _signature(fm, xs, True)
    known = _VALIDATED.get(fm.model, {}).get(key)
    if known is not None:
        return known
    covered = {n: v for n, v in _ruled_params(fm.model).items() if n in fm.params}
    forms, out = _capture(fm, xs, covered, n_out)
    names = _validate(fm, covered, forms, out)
    _VALIDATED.setdefault(fm.model, {})[key] = names
    return names


@register_engine("structured")
def structured(fm, x1, x2, *, n_out, trace, chunk_size, budget):
    """Per-layer structured NTK (see module docstring); exact for every model."""
    covered = {n: v for n, v in _ruled_params(fm.model).items() if n in fm.params}
    state: dict[str, Any] = {"checked": False, "generic": None}
    key = _signature(fm, x1, trace)
    known = _VALIDATED.get(fm.model, {}).get(key)
    if known is not None:
        state["checked"] = True
        state["covered"] = known
        rest = [n for n in fm.params if n not in known]
        state["generic"] = FunctionalModel(fm.model, fm.output_fn, only=rest) if rest else None

    def rows(xs: tuple[Tensor, ...]):
        forms, out = _capture(fm, xs, covered, n_out)
        if not state["checked"]:
            state["checked"] = True
            state["covered"] = _validate(fm, covered, forms, out)
            _VALIDATED.setdefault(fm.model, {})[key] = state["covered"]
            rest = [n for n in fm.params if n not in state["covered"]]
            state["generic"] = FunctionalModel(fm.model, fm.output_fn, only=rest) if rest else None
        del out
        chosen = []
        c = num_samples(xs)
        covered_now = set(state["covered"])
        folded = set()
        merged = {}
        for n in state["covered"]:
            f = _merge(forms[n])
            if isinstance(f, Outer) and f.bias is not None and f.h is not None:
                bias_name = n.rsplit(".", 1)[0] + "." + f.bias if "." in n else f.bias
                if bias_name in covered_now:
                    f = _fold_bias(f)
                    folded.add(bias_name)
            merged[n] = f
        for n, f in merged.items():
            if n in folded:
                continue
            if isinstance(f, Outer):
                pairwise, materialised = _outer_costs(f, max(c, chunk_size), trace)
                f = _materialize(f) if materialised < pairwise else _pairwise(f)
            chosen.append(f)
        gfm = state["generic"]
        gen = _jacobian_rows(gfm, xs, n_out) if gfm is not None else []
        return chosen, gen

    n_cols = num_samples(x1 if x2 is None else x2)
    n_blocks = math.ceil(n_cols / chunk_size)

    def work() -> int:
        # Transient work of one block (its row and column features, their production, the
        # pair products) as the plan counts it; features kept across blocks come on top.
        return _block_work(fm, x1, n_out=n_out, trace=trace, c=chunk_size)

    def cache_all(first: Any) -> bool:
        # Keep every column block's features when all of them fit beside one block's work.
        return _feature_bytes(first) * n_blocks + work() <= budget

    def panel(first: Any) -> int:
        # Otherwise hold, besides the one row block that work() counts, as many more row
        # blocks as fit the rest of the budget: each column block is then computed once
        # per panel of row blocks instead of once per row block.
        return 1 + max(0, (budget - work()) // max(_feature_bytes(first), 1))

    return blocked_kernel(
        x1,
        x2,
        chunk_size,
        trace=trace,
        n_out=n_out,
        like=next(iter(fm.params.values())),
        row_fn=rows,
        col_fn=rows,
        pair_fn=lambda a, b: _pair(a[0], b[0], (a[1], b[1]), trace),
        cache_cols=cache_all,
        panel=panel,
    )


def _feature_bytes(features: Any) -> int:
    forms, gen = features
    total = sum(t.numel() * t.element_size() for t in gen)
    for f in forms:
        if isinstance(f, Dense):
            ts = [f.J]
        else:
            ts = [f.gs if isinstance(f, Pairwise) else f.g, f.h, f.idx]
        total += sum(t.numel() * t.element_size() for t in ts if t is not None)
    return total


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def _plan_chunk(fm, xs, *, n_out, trace, budget, n_samples):
    """Largest block whose row and column features and pair intermediates fit ``budget``,
    from the features of one sample (and the route each layer will take); remembered
    per model and input signature."""
    if n_samples <= 32:
        return n_samples
    key = (_signature(fm, xs, trace), trace, budget, n_samples)
    known = _PLANS.get(fm.model, {}).get(key)
    if known is not None:
        return known
    c = _plan(fm, xs, n_out=n_out, trace=trace, budget=budget, n_samples=n_samples)
    _PLANS.setdefault(fm.model, {})[key] = c
    return c


_COSTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[int, int, int]]] = (
    weakref.WeakKeyDictionary()
)


def _costs(fm, xs, *, n_out, trace) -> tuple[int, int, int]:
    """``(features, work, pair)`` bytes from the features of one sample: the features a
    block keeps per sample, the transient work per sample of producing them (generic
    Jacobians, ``O`` copies of the activations), and the pair intermediates per pair of
    samples. Remembered per model and input signature."""
    key = (_signature(fm, xs, trace), trace, n_out)
    known = _COSTS.get(fm.model, {}).get(key)
    if known is not None:
        return known
    covered = {n: v for n, v in _ruled_params(fm.model).items() if n in fm.params}
    forms, out = _capture(fm, slice_inputs(xs, 0, 1), covered, n_out)
    del out
    itemsize = fm.dtype.itemsize
    o2 = 1 if trace else n_out**2
    n_generic = fm.n_params - sum(fm.params[n].numel() for n in forms)
    features = n_out * itemsize * n_generic
    work = 2 * n_out * itemsize * n_generic
    work += n_out * fm.activation_bytes(xs)  # the block is replicated O times
    pair = 0
    c_guess = 128
    for f in map(_merge, forms.values()):
        if isinstance(f, Dense):
            features += f.J.numel() * itemsize
            continue
        pairwise, materialised = _outer_costs(f, c_guess, trace)
        if materialised < pairwise:
            features += f.g.shape[1] * f.g.shape[3] * f.din * itemsize
        else:
            features += (f.g.numel() + (0 if f.h is None else f.h.numel())) * itemsize
            S = f.g.shape[2]
            pair = max(pair, (2 * S * S if trace else S * S + 3 * o2) * itemsize)
    _COSTS.setdefault(fm.model, {})[key] = (features, work, pair)
    return features, work, pair


def _block_work(fm, xs, *, n_out, trace, c) -> int:
    """Bytes of one ``c``-sample block's transient work: its row and column features and
    their production, plus the pair intermediates (the plan's model of a block)."""
    features, work, pair = _costs(fm, xs, n_out=n_out, trace=trace)
    return 3 * c * (features + work) + c * c * pair


def _plan(fm, xs, *, n_out, trace, budget, n_samples):
    """Block size: all of ``n_samples`` when one block's work fits ``budget``; else the
    largest block whose work fits beside every sample's features (which are then
    computed once and kept); else the largest block whose work takes at most half of
    ``budget``, leaving the other half for a panel of row blocks held at once."""
    features = _costs(fm, xs, n_out=n_out, trace=trace)[0]
    work = lambda c: _block_work(fm, xs, n_out=n_out, trace=trace, c=c)  # noqa: E731
    c = n_samples
    if work(c) <= budget:
        return c
    keep = n_samples * features
    while c > 1 and work(c) + keep > budget:
        c = (c + 1) // 2
    if work(c) + keep <= budget and c >= min(32, n_samples):
        return c
    c = n_samples
    while c > 1 and work(c) > budget // 2:
        c = (c + 1) // 2
    return c


def _applicable(fm: FunctionalModel, xs: tuple[Tensor, ...], n_out: int) -> bool:
    """At least half of the trainable entries take a rule on these inputs (as routed at
    run time: after declines and the exactness guard)."""
    if sum(fm.params[n].numel() for n in _ruled_params(fm.model) if n in fm.params) < (
        fm.n_params / 2
    ):
        return False  # not even the rule table covers half: skip the trial pass
    names = route(fm, slice_inputs(xs, 0, min(2, num_samples(xs))), n_out)
    return 2 * sum(fm.params[n].numel() for n in names) >= fm.n_params


structured.applicable = _applicable  # type: ignore[attr-defined]
structured.plan_chunk = _plan_chunk  # type: ignore[attr-defined]
