"""The model-integrity invariant: lazymeter never changes the user's model.

:class:`ModelState` records everything a call could disturb (Parameter objects under
every name, their ``requires_grad``, values and ``.grad``, buffers, training flags,
hooks, tensor attributes set by hooks); :meth:`ModelState.assert_same` names the first
difference. :func:`trains_every_used_parameter` checks that one optimiser step, with an
optimiser built before the calls, moves every parameter the forward uses.
"""

from __future__ import annotations

import torch
from torch import nn

_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def _copy(t):
    return None if t is None else t.detach().clone()


class ModelState:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = [
            (n, p, type(p), p.requires_grad, _copy(p), _copy(p.grad))
            for n, p in model.named_parameters(remove_duplicate=False)
        ]
        self.buffers = [(n, b, _copy(b)) for n, b in model.named_buffers(remove_duplicate=False)]
        self.modules = [
            (n, m, m.training, {h: list(getattr(m, h, {})) for h in _HOOKS})
            for n, m in model.named_modules(remove_duplicate=False)
        ]
        self.attrs = [
            (n, k, v)
            for n, m in model.named_modules()
            for k, v in vars(m).items()
            if isinstance(v, (torch.Tensor, int, float))
        ]
        self.threads = torch.get_num_threads()
        self.rng = torch.get_rng_state()
        self.autocast = torch.is_autocast_enabled("cpu")

    def assert_same(self, attributes: bool = True, own_forward: bool = False) -> None:
        """``attributes=False`` after the model's own training forward, which may set
        tensor attributes (weight_norm's hook) as any forward of the user's would;
        ``own_forward=True`` after a call that runs the user's forward (``meter(x)``),
        which may update buffers, set attributes and draw dropout masks as it would alone."""
        attributes = attributes and not own_forward
        now = ModelState(self.model)
        assert [n for n, *_ in now.params] == [n for n, *_ in self.params], "parameter names"
        for (n, p, kind, rg, v, g), (_, p2, kind2, rg2, v2, g2) in zip(
            self.params, now.params, strict=True
        ):
            assert p2 is p, f"{n}: no longer the same Parameter object ({kind2.__name__})"
            assert kind2 is kind and rg2 == rg, f"{n}: type or requires_grad changed"
            assert torch.equal(v2, v), f"{n}: values changed"
            assert (g is None) == (g2 is None), f"{n}: .grad appeared or vanished"
            assert g is None or torch.equal(g, g2), f"{n}: .grad changed"
        assert [n for n, *_ in now.buffers] == [n for n, *_ in self.buffers], "buffer names"
        for (n, b, v), (_, b2, v2) in zip(self.buffers, now.buffers, strict=True):
            assert b2 is b or own_forward, f"buffer {n}: replaced"
            assert torch.equal(v2, v) or own_forward, f"buffer {n}: values changed"
        for (n, m, tr, hooks), (_, m2, tr2, hooks2) in zip(self.modules, now.modules, strict=True):
            assert m2 is m, f"module {n!r}: replaced"
            assert tr2 == tr, f"module {n!r}: training flag changed"
            assert hooks2 == hooks, f"module {n!r}: hooks changed"
        if own_forward:
            return
        names = [(n, k) for n, k, _ in now.attrs]
        assert names == [(n, k) for n, k, _ in self.attrs], "attributes added or removed"
        for (n, k, v), (_, _, v2) in zip(self.attrs, now.attrs, strict=True):
            same = v2 is v if isinstance(v, torch.Tensor) else v2 == v
            assert same or not attributes, f"module {n!r}: attribute {k!r} replaced"
        assert now.threads == self.threads, "torch.get_num_threads() changed"
        assert torch.equal(now.rng, self.rng), "the global RNG advanced"
        assert now.autocast == self.autocast, "autocast switched"


def trains_every_used_parameter(model: nn.Module, opt: torch.optim.Optimizer, x, output_fn=None):
    """One SGD step on ``sum(out^2)`` moves every parameter that got a gradient, and every
    trainable parameter the optimiser holds is the one the model uses."""
    used = {id(p) for p in model.parameters()}
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert used == held, "the optimiser holds Parameters the model no longer uses"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    out = model(x)
    out = output_fn(out) if output_fn else out
    (out**2).sum().backward()
    opt.step()
    for n, p in model.named_parameters():
        if p.grad is not None and bool(p.grad.ne(0).any()):
            assert not torch.equal(p.detach(), before[n]), f"{n}: did not move in a step"
