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


# ---------------------------------------------------------------- the model-integrity zoo
# Ways of building models that lazymeter must leave exactly as it found them.


class Aliased(nn.Module):
    """One submodule registered under two names (``self.linear1`` and ``self.net[0]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(4, 8)
        self.linear2 = nn.Linear(8, 2)
        self.net = nn.Sequential(self.linear1, nn.Tanh(), self.linear2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TiedLM(nn.Module):
    """Embedding tied to the unembedding, and a layer aliased inside a block list."""

    def __init__(self, vocab: int = 6, d: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.blocks = nn.ModuleList([self.mix, nn.LayerNorm(d)])
        self.unembed = nn.Linear(d, vocab, bias=False)
        self.unembed.weight = self.emb.weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.emb(t)
        for b in self.blocks:
            h = torch.tanh(b(h))
        return self.unembed(h)[:, -1]


def aliased():
    torch.manual_seed(5)
    return Aliased().double(), torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


def tied():
    torch.manual_seed(6)
    return TiedLM().double(), torch.randint(0, 6, (5, 3)), torch.randint(0, 6, (3, 3)), None


def weight_norm_parametrized():
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(7)
    m = nn.Sequential(weight_norm(nn.Linear(4, 6)), nn.Tanh(), nn.Linear(6, 2)).double()
    return m, torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


def weight_norm_hook():
    """The older ``torch.nn.utils.weight_norm``: a pre-hook sets ``module.weight``."""
    import warnings

    torch.manual_seed(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of the parametrisation
        lin = nn.utils.weight_norm(nn.Linear(4, 6))
    m = nn.Sequential(lin, nn.Tanh(), nn.Linear(6, 2)).double()
    return m, torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


def norms():
    """RMSNorm and GroupNorm (per-sample norms: fine in training mode)."""
    torch.manual_seed(9)
    m = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding="same", padding_mode="reflect"),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 6, 5),
        nn.RMSNorm(5),
        nn.Linear(5, 2),
    ).double()
    return m, torch.randn(5, 2, 6).double(), torch.randn(3, 2, 6).double(), None


def decoder():
    """Grouped and padded convolutions feeding transposed convolutions."""
    torch.manual_seed(10)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=2, padding_mode="circular"),
        nn.Tanh(),
        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        nn.Tanh(),
        nn.ConvTranspose2d(2, 1, 2, groups=1),
        nn.Flatten(),
    ).double()
    return m, torch.randn(5, 2, 3, 3).double(), torch.randn(3, 2, 3, 3).double(), None


class RawTiedLM(nn.Module):
    """Raw parameters in einsum, ``@``, indexing and broadcasting (operator rules), the
    token table also the unembedding (``W_E.T``), the positions sliced (``W_pos[:T]``)."""

    def __init__(self, vocab: int = 7, d: int = 8, heads: int = 2, d_mlp: int = 16) -> None:
        super().__init__()
        p = lambda *s: nn.Parameter(torch.randn(*s) / s[-1] ** 0.5)  # noqa: E731
        self.W_E, self.W_pos = p(vocab, d), p(4, d)
        self.W_Q, self.W_O = p(heads, d, d // heads), p(heads, d // heads, d)
        self.W_in, self.b_in, self.W_out = p(d, d_mlp), p(d_mlp), p(d_mlp, d)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = self.W_E[t] + self.W_pos[: t.shape[-1]]
        q = torch.einsum("btd,hde->bhte", x, self.W_Q)
        x = x + torch.einsum("bhte,hed->btd", torch.tanh(q), self.W_O)
        x = x + torch.relu(x @ self.W_in + self.b_in) @ self.W_out
        return (x @ self.W_E.T)[:, -1]


def raw_parameters():
    torch.manual_seed(11)
    m = RawTiedLM().double()
    return m, torch.randint(0, 7, (5, 3)), torch.randint(0, 7, (3, 3)), None


INTEGRITY_ARCHITECTURES = {
    **ARCHITECTURES,
    "aliased": aliased,
    "tied": tied,
    "weight_norm_parametrized": weight_norm_parametrized,
    "weight_norm_hook": weight_norm_hook,
    "norms": norms,
    "decoder": decoder,
    "raw_parameters": raw_parameters,
}


class Counted(nn.Module):
    """An MLP whose forward updates buffers: a call counter on every call (its output depends
    on it), and a running input mean only in train mode (not BatchNorm). Built in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("calls", torch.tensor(5.0))
        self.register_buffer("running", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.training:
            # Rebinding (not in place): a batched value cannot be written into a buffer
            # under vmap; the engines' forwards still see and drop the new value.
            self.running = 0.9 * self.running + 0.1 * x.detach().mean(0)
        scale = 1 + 0.01 * torch.tanh(self.calls / 10)
        return self.fc2(torch.tanh(self.fc1(x - self.running))) * scale


class HookAttributes(nn.Module):
    """Forward hooks that leave a new tensor attribute (the last activation) and a number
    (a call count) on their modules; dropout active in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 2)

        def keep(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            mod.last_out = out.detach()
            mod.seen = getattr(mod, "seen", 0) + 1

        self.fc1.register_forward_hook(keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


def counted():
    torch.manual_seed(12)
    return Counted().double(), torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


def hook_attributes():
    torch.manual_seed(13)
    return HookAttributes().double(), torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


def dropout_train():
    """A train-mode MLP with dropout (a user's model as it trains)."""
    torch.manual_seed(14)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2))
    return m.double(), torch.randn(5, 4).double(), torch.randn(3, 4).double(), None


#: Models whose forward changes their own state or draws random numbers (train mode): every
#: public call must leave them exactly as they were (forwards see copies of the buffers,
#: the RNG is forked, measurements run in eval mode).
STATEFUL_ARCHITECTURES = {
    "counted": counted,
    "hook_attributes": hook_attributes,
    "dropout_train": dropout_train,
}
