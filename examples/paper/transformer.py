"""The one-layer grokking transformer (Nanda et al. 2023), built from nn.Linear/Embedding.

Token and position embeddings, one attention block (causal, ``n_heads`` heads of
``d_model / n_heads``), one ReLU MLP, an unembedding, optional LayerNorm (off, as in
the paper). Input ``[a, b, =]`` token ids ``[B, 3]``; output logits ``[B, 3, vocab]``
(``n_classes`` logits when given: the answers ``0..p-1`` without ``=``; use
``output_fn=lambda y: y[:, -1]`` for the answer position). Every weight lives in
an ``nn.Linear``/``nn.Embedding``, so the structured NTK engine's module rules cover it.

:class:`RawTransformer` is the same network written the way Nanda et al. and
TransformerLens write it: raw ``nn.Parameter`` tensors (``W_E``, ``W_pos``, ``W_Q``, ...)
used in ``einsum``, ``@`` and indexing; the structured engine's operator rules cover it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Transformer(nn.Module):
    def __init__(
        self,
        vocab: int = 114,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        n_ctx: int = 3,
        *,
        layer_norm: bool = False,
        bias: bool = False,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads: {n_heads} must divide d_model={d_model}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.k = nn.Linear(d_model, d_model, bias=bias)
        self.v = nn.Linear(d_model, d_model, bias=bias)
        self.o = nn.Linear(d_model, d_model, bias=bias)
        self.mlp_in = nn.Linear(d_model, d_mlp, bias=True)
        self.mlp_out = nn.Linear(d_mlp, d_model, bias=True)
        self.unembed = nn.Linear(d_model, n_classes or vocab, bias=False)
        self.ln1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.register_buffer("mask", torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril())
        for lin in (self.q, self.k, self.v, self.o, self.mlp_in, self.mlp_out, self.unembed):
            nn.init.normal_(lin.weight, std=1 / math.sqrt(lin.in_features))
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d_model))
        nn.init.normal_(self.pos.weight, std=1 / math.sqrt(d_model))

    def forward(self, tokens: Tensor) -> Tensor:
        B, T = tokens.shape
        # Positions indexed per sample ([B, T]), so the lookup is a per-sample layer too.
        h = self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device).expand(B, T))
        a = self.ln1(h)
        split = lambda t: t.reshape(B, T, self.n_heads, self.d_head).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(a)), split(self.k(a)), split(self.v(a))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1)
        h = h + self.o((scores @ v).transpose(1, 2).reshape(B, T, -1))
        h = h + self.mlp_out(torch.relu(self.mlp_in(self.ln2(h))))
        return self.unembed(h)


class RawTransformer(nn.Module):
    """:class:`Transformer` (without LayerNorm and attention biases) with raw parameters in
    TransformerLens' layout: ``W_E [vocab, d]``, ``W_pos [n_ctx, d]``,
    ``W_Q/W_K/W_V [heads, d, d_head]``, ``W_O [heads, d_head, d]``, ``W_in [d, d_mlp]``,
    ``b_in``, ``W_out [d_mlp, d]``, ``b_out``, ``W_U [d, vocab]``; ``[B, T]`` tokens to
    ``[B, T, vocab]`` logits. :meth:`from_modules` copies a :class:`Transformer`'s
    weights, so that both compute the same function (and have the same NTK: the
    layouts differ by a permutation of the entries)."""

    def __init__(
        self,
        vocab: int = 114,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        n_ctx: int = 3,
        *,
        n_classes: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads: {n_heads} must divide d_model={d_model}")
        dh = d_model // n_heads

        def param(*shape: int, fan_in: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))

        self.W_E = param(vocab, d_model, fan_in=d_model)
        self.W_pos = param(n_ctx, d_model, fan_in=d_model)
        self.W_Q = param(n_heads, d_model, dh, fan_in=d_model)
        self.W_K = param(n_heads, d_model, dh, fan_in=d_model)
        self.W_V = param(n_heads, d_model, dh, fan_in=d_model)
        self.W_O = param(n_heads, dh, d_model, fan_in=d_model)
        self.W_in = param(d_model, d_mlp, fan_in=d_model)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = param(d_mlp, d_model, fan_in=d_mlp)
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.W_U = param(d_model, n_classes or vocab, fan_in=d_model)
        self.register_buffer("mask", torch.ones(n_ctx, n_ctx, dtype=torch.bool).tril())

    @classmethod
    def from_modules(cls, t: Transformer) -> RawTransformer:
        """The raw-parameter twin of ``t`` (which must have no LayerNorm or attention
        biases), with ``t``'s current weights, dtype and device."""
        if not isinstance(t.ln1, nn.Identity) or t.q.bias is not None:
            raise ValueError(
                "from_modules: only a Transformer without LayerNorm or attention biases"
            )
        d, h, dh = t.q.in_features, t.n_heads, t.d_head
        raw = cls(
            t.embed.num_embeddings, d, h, t.mlp_in.out_features, t.pos.num_embeddings,
            n_classes=t.unembed.out_features,
        ).to(t.embed.weight)  # fmt: skip
        with torch.no_grad():
            raw.W_E.copy_(t.embed.weight)
            raw.W_pos.copy_(t.pos.weight)
            for W, lin in ((raw.W_Q, t.q), (raw.W_K, t.k), (raw.W_V, t.v)):
                W.copy_(lin.weight.reshape(h, dh, d).transpose(1, 2))
            raw.W_O.copy_(t.o.weight.T.reshape(h, dh, d))
            raw.W_in.copy_(t.mlp_in.weight.T)
            raw.b_in.copy_(t.mlp_in.bias)
            raw.W_out.copy_(t.mlp_out.weight.T)
            raw.b_out.copy_(t.mlp_out.bias)
            raw.W_U.copy_(t.unembed.weight.T)
        return raw

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[-1]
        x = self.W_E[tokens] + self.W_pos[:T]
        q = torch.einsum("btd,hde->bhte", x, self.W_Q)
        k = torch.einsum("btd,hde->bhte", x, self.W_K)
        v = torch.einsum("btd,hde->bhte", x, self.W_V)
        scores = torch.einsum("bhte,bhse->bhts", q, k) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1)
        z = torch.einsum("bhts,bhse->bhte", scores, v)
        x = x + torch.einsum("bhte,hed->btd", z, self.W_O)
        x = x + torch.relu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out
        return x @ self.W_U
