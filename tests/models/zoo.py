"""The models users bring, at CPU-small sizes: ``ZOO[name]() -> (model, x, y, output_fn)``.

Each is built in train mode (dropout active, BatchNorm on batch statistics), as it is
while training; ``benchmarks/models.py`` times the meter on the same set.
"""

from __future__ import annotations

import torch
from torch import nn


class GPT2Block(nn.Module):
    """A GPT-2-style pre-LN block with attention dropout passed as ``p if self.training else
    0`` (no ``nn.Dropout`` module for it), GELU MLP, residual dropout; last-token readout."""

    def __init__(self, vocab: int = 11, d: int = 16, heads: int = 2, p: float = 0.1) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(8, d)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop, self.heads, self.p = nn.Dropout(p), heads, p
        self.head = nn.Linear(d, vocab)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        B, T = t.shape
        h = self.wte(t) + self.wpe(torch.arange(T, device=t.device))
        q, k, v = self.c_attn(self.ln1(h)).view(B, T, 3, self.heads, -1).unbind(2)
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        a = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True
        )
        h = h + self.drop(self.c_proj(a.transpose(1, 2).reshape(B, T, -1)))
        h = h + self.drop(self.mlp(self.ln2(h)))
        return self.head(self.lnf(h))[:, -1]


class MHA(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(d, 2, dropout=0.1, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.mha(x, x, x, need_weights=False)
        return self.head(out[:, -1])


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], batch_first: bool) -> None:
        super().__init__()
        self.rnn, self.batch_first = cell(3, 8, batch_first=batch_first), batch_first
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, T, 3]
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        return self.head(out[:, -1] if self.batch_first else out[-1])


def _data(shape, n=12, out=2, seed=0, tokens=None):
    g = torch.Generator().manual_seed(seed)
    if tokens is not None:
        x = torch.randint(0, tokens, (n, *shape), generator=g)
    else:
        x = torch.randn(n, *shape, generator=g)
    return x, torch.randn(n, out, generator=g)


def gpt2_block():
    torch.manual_seed(0)
    return (GPT2Block(), *_data((6,), out=11, tokens=11), None)


def transformer_encoder_layer():
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    return (layer, *_data((5, 8)), lambda y: y[:, -1, :2])


def mha_train():
    torch.manual_seed(2)
    return (MHA(), *_data((5, 8)), None)


def mha_eval():
    model, x, y, fn = mha_train()
    return model.eval(), x, y, fn


def batchnorm_cnn():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2),
    )  # fmt: skip
    return (model, *_data((1, 8, 8)), None)


def gru_batch_first():
    torch.manual_seed(4)
    return (Recurrent(nn.GRU, True), *_data((6, 3)), None)


def lstm_seq_first():
    torch.manual_seed(5)
    return (Recurrent(nn.LSTM, False), *_data((6, 3)), None)


def autocast_mlp():
    """Trained under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (see ``AUTOCAST``)."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(10, 64), nn.GELU(), nn.Linear(64, 2))
    return (model, *_data((10,)), None)


ZOO = {
    f.__name__: f
    for f in (
        gpt2_block,
        transformer_encoder_layer,
        mha_train,
        mha_eval,
        batchnorm_cnn,
        gru_batch_first,
        lstm_seq_first,
        autocast_mlp,
    )
}
#: Models whose training steps run inside a bfloat16 autocast region.
AUTOCAST = {"autocast_mlp"}


def hf_gpt2(n_layer: int = 2, vocab: int = 50, d: int = 32, heads: int = 2):
    """HuggingFace ``GPT2LMHeadModel`` on a tiny config built in code (no download; needs
    ``transformers``): ``Conv1D`` weights through ``addmm``, the token table tied to the
    unembedding, positions looked up without the batch dimension; last-token logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(7)
    config = GPT2Config(
        vocab_size=vocab, n_positions=16, n_embd=d, n_layer=n_layer, n_head=heads,
        attn_implementation="eager",
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    return (model, *_data((6,), out=vocab, tokens=vocab), lambda out: out.logits[:, -1])


def raw_transformer():
    """The grokking transformer with raw parameters in einsums (TransformerLens layout)."""
    from paper.transformer import RawTransformer

    torch.manual_seed(8)
    model = RawTransformer(13, 16, 2, 32, 3, n_classes=13)
    return (model, *_data((3,), out=13, tokens=13), lambda y: y[:, -1])


#: Models whose every parameter some rule covers (module or operator rules).
FULLY_RULED = {
    f.__name__: f
    for f in (gpt2_block, transformer_encoder_layer, mha_train, mha_eval, hf_gpt2, raw_transformer)
}
