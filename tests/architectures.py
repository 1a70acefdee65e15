"""Small float64 models covering the shapes the NTK engines must handle.

Each factory returns ``(model, x1, x2, output_fn)``.
"""

from __future__ import annotations

import torch
from torch import nn


class QuadraticNet(nn.Module):
    """Paper's net, no readouts: ``f(x) = mean_i phi(w_i . x)``, ``phi(h) = h + eps/2 h^2``."""

    def __init__(self, D: int, N: int, eps: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(N, D, dtype=torch.float64))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.W.T
        return (h + self.eps / 2 * h**2).mean(-1)


class EinsumAttention(nn.Module):
    """Token model with attention written as raw-parameter einsums; logits ``[B, T, V]``."""

    def __init__(self, vocab: int = 7, d: int = 4, T: int = 3) -> None:
        super().__init__()
        g = lambda *s: nn.Parameter(0.5 * torch.randn(*s, dtype=torch.float64))  # noqa: E731
        self.embed = nn.Embedding(vocab, d).double()
        self.pos = g(T, d)
        self.Wq, self.Wk, self.Wv, self.Wo = g(d, d), g(d, d), g(d, d), g(d, d)
        self.unembed = g(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.pos
        q = torch.einsum("btd,de->bte", h, self.Wq)
        k = torch.einsum("btd,de->bte", h, self.Wk)
        v = torch.einsum("btd,de->bte", h, self.Wv)
        T = tokens.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = torch.einsum("bte,bse->bts", q, k).masked_fill(~mask, float("-inf")).softmax(-1)
        h = h + torch.einsum("bts,bse,ef->btf", att, v, self.Wo)
        return torch.einsum("btd,dv->btv", h, self.unembed)


def quadratic():
    torch.manual_seed(0)
    return (
        QuadraticNet(D=6, N=5, eps=0.5),
        torch.randn(5, 6).double(),
        torch.randn(3, 6).double(),
        None,
    )


def mlp():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    return m.double(), torch.randn(5, 4).double(), torch.randn(4, 4).double(), None


def cnn():
    torch.manual_seed(2)
    m = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(2, 3, 3, stride=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 2 * 2, 2),
    )
    return m.double(), torch.randn(4, 1, 6, 6).double(), torch.randn(3, 1, 6, 6).double(), None


def attention():
    torch.manual_seed(3)
    return (
        EinsumAttention(),
        torch.randint(0, 7, (5, 3)),
        torch.randint(0, 7, (3, 3)),
        lambda y: y[:, -1],
    )


def batchnorm_frozen():
    torch.manual_seed(4)
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2)).double()
    m[0].requires_grad_(False)
    m[1].running_mean.normal_()
    m[1].running_var.uniform_(0.5, 2.0)
    m.eval()
    return m, torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


ARCHITECTURES = {
    "quadratic": quadratic,
    "mlp": mlp,
    "cnn": cnn,
    "attention": attention,
    "batchnorm_frozen": batchnorm_frozen,
}


def naive_jacobian(model, x, output_fn=None) -> torch.Tensor:
    """``[P, O, n]`` Jacobian by one ``torch.autograd.grad`` call per sample and output."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])
        out = (output_fn(out) if output_fn else out).reshape(-1)
        per_out = []
        for o in range(out.shape[0]):
            g = torch.autograd.grad(out[o], params, retain_graph=True, allow_unused=True)
            per_out.append(
                torch.cat(
                    [
                        (gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                        for gi, p in zip(g, params, strict=True)
                    ]
                )
            )
        rows.append(torch.stack(per_out))
    return torch.stack(rows)


def naive_ntk(model, x1, x2=None, output_fn=None, trace=True) -> torch.Tensor:
    J1 = naive_jacobian(model, x1, output_fn)
    J2 = J1 if x2 is None else naive_jacobian(model, x2, output_fn)
    if trace:
        return torch.einsum("ion,jon->ij", J1, J2)
    return torch.einsum("ion,jqn->ijoq", J1, J2)
