"""One hooked forward and one batched backward: every ruled layer's forms for a block.

The forward runs with a hook on each layer whose rule covers a trainable parameter; the
hook hands the layer's (detached) inputs and output to its rule. One backward pass,
vmapped over the ``O`` output cotangents (``is_grads_batched``), then gives every such
layer's output gradient ``g [c, O, *out.shape[1:]]``, from which the rules build each
parameter's form. Cost: one forward and the equivalent of ``O`` backward passes over the
block; memory: the activations autograd keeps (``O`` copies in ``"replicate"`` mode) and
the forms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .forms import Form
from .functional import FunctionalModel, call_with, num_samples
from .registry import find_rule

#: How output gradients for ``O`` outputs are obtained: "replicate" runs one forward and
#: one backward on the block repeated ``O`` times (plain kernels, ``O`` x activations);
#: "vmap" runs one forward and a backward vmapped over the ``O`` cotangents.
GRADIENT_MODE = "vmap"

#: Why a hooked layer gave no forms for a call (see :func:`capture`).
UNBATCHED = (
    "the layer ran on something without the batch dimension (or its output is not a "
    "Tensor that depends on the parameters), so it has no per-sample rule"
)
#: Why a ruled layer gave no forms at all.
NEVER_RAN = (
    "the layer never ran as a module during the forward (its parameters are used "
    "directly, e.g. F.linear(x, layer.weight), or by another module)"
)


def capture(
    fm: FunctionalModel,
    xs: tuple[Tensor, ...],
    covered: dict[str, tuple[str, str]],
    n_out: int,
) -> tuple[dict[str, list[Form]], Tensor, dict[str, str]]:
    """One forward with hooks on the ruled layers, one backward for all ``O`` outputs.

    ``covered``: ``{param name: (module name, local name)}`` of the parameters to capture.
    Returns ``(forms, out, notes)``: ``forms[param name]`` a list of forms (one per call
    of its layer), the flattened output ``[c, O]`` (kept for the exactness guard) and
    ``notes[param name]``: why a covered parameter got no form (its rule declined at run
    time, its layer ran without the batch dimension or never ran as a module, or the
    rule gives no form for it), or what else happened to its layer when it got forms
    from some calls but not from others.
    """
    model = fm.model
    c = num_samples(xs)
    rep = n_out if (n_out > 1 and GRADIENT_MODE == "replicate") else 1
    if rep > 1:
        xs = tuple(t.repeat(rep, *[1] * (t.dim() - 1)) for t in xs)
    batch = c * rep
    modules = {mn for mn, _ in covered.values()}
    calls: list[tuple[str, Any, Tensor]] = []
    skipped: dict[str, str] = {}  # module name -> why a call of it gave no forms
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
                found = find_rule(type(mod))
                assert found is not None
                rules = found[1](mod, args, out[:c])
                if rules is not None and not isinstance(rules, str):
                    calls.append((mname, rules, out))
                else:
                    why = rules or "the rule returned None for this call"
                    skipped.setdefault(mname, f"the rule for {found[0].__name__} declined: {why}")
            else:
                skipped.setdefault(mname, UNBATCHED)

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.enable_grad():  # on copies of the buffers: a forward never updates them
            out = call_with(fm.model, {}, xs)
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
    notes: dict[str, str] = {}
    for full, (mname, local) in covered.items():
        if mname in skipped:
            notes[full] = skipped[mname]
        elif full not in forms:
            ran = any(mn == mname for mn, _, _ in calls)
            notes[full] = f"its rule gives no form for {local!r}" if ran else NEVER_RAN
    return forms, out, notes
