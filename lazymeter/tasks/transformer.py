"""The one-layer grokking transformer (Nanda et al. 2023), built from nn.Linear/Embedding.

Token and position embeddings, one attention block (causal, ``n_heads`` heads of
``d_model / n_heads``), one ReLU MLP, an unembedding, optional LayerNorm (off, as in
the paper). Input ``[a, b, =]`` token ids ``[B, 3]``; output logits ``[B, 3, vocab]``
(``n_classes`` logits when given: the answers ``0..p-1`` without ``=``; use
``output_fn=lambda y: y[:, -1]`` for the answer position). Every weight lives in
an ``nn.Linear``/``nn.Embedding``, so the structured NTK engine covers all of it.
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
