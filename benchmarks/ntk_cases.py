"""The models and inputs of the NTK speed benchmark (cases a-f of docs/performance.md)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# The paper's tasks are examples (package `paper` in examples/), not part of the library.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)
from paper.polynomial import QuadraticNet  # noqa: E402
from paper.transformer import RawTransformer, Transformer  # noqa: E402


@dataclass
class Case:
    name: str
    description: str
    model: nn.Module
    x: torch.Tensor
    output_fn: Callable[[Any], torch.Tensor] | None
    trace: bool
    threads: int | None = None  # None: the machine's default


def cnn(side: int = 28) -> nn.Module:
    """conv16-conv32 (3x3, max-pool) + linear on ``side x side`` images, 10 outputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (side // 4) ** 2, 10),
    )


def _mlp(*widths: int) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _tokens(P: int, p: int, eq: int) -> torch.Tensor:
    ab = torch.randint(0, p, (P, 2))
    return torch.cat([ab, torch.full((P, 1), eq)], dim=1)


def make(name: str) -> Case:
    torch.manual_seed(0)
    last = lambda y: y[:, -1]  # noqa: E731
    if name == "a":
        return Case(
            "a",
            "paper net D=100 N=500, P=550, O=1",
            QuadraticNet(100, 500, 0.02),
            torch.randn(550, 100) / 10,
            None,
            True,
        )
    if name == "b":
        return Case(
            "b",
            "MLP 784-200-200-10 ReLU, P=256, 10 outputs traced",
            _mlp(784, 200, 200, 10),
            torch.randn(256, 784),
            None,
            True,
        )
    if name == "c":
        model = Transformer(vocab=114, d_model=128, n_heads=4, d_mlp=512, n_classes=113)
        return Case(
            "c",
            "1-layer transformer d128 mlp512, last-position logits (113) traced, P=256",
            model,
            _tokens(256, 113, 113),
            last,
            True,
        )
    if name == "d":
        return Case(
            "d",
            "CNN conv16-conv32 (3x3, pool) on 28x28, 10 outputs, P=128",
            cnn(),
            torch.randn(128, 1, 28, 28),
            None,
            True,
        )
    if name in ("e", "e-traced"):
        return Case(
            name,
            "MLP 64-512-512-512-8, N=32, O=8, "
            + ("traced" if name == "e-traced" else "full [N,N,O,O]"),
            _mlp(64, 512, 512, 512, 8),
            torch.randn(32, 64),
            None,
            name == "e-traced",
            threads=1,
        )
    if name in ("f", "f-traced"):
        model = Transformer(vocab=98, d_model=64, n_heads=4, d_mlp=256, n_classes=97)
        return Case(
            name,
            "transformer d64 mlp256 vocab 97, [a,b,=], N=16, O=97, "
            + ("traced" if name == "f-traced" else "full [N,N,O,O]"),
            model,
            _tokens(16, 97, 97),
            last,
            name == "f-traced",
            threads=1,
        )
    if name == "g":  # (c) with raw parameters: operator rules instead of module rules
        model = Transformer(vocab=114, d_model=128, n_heads=4, d_mlp=512, n_classes=113)
        return Case(
            "g",
            "(c) written with raw nn.Parameters in einsum/@/indexing (TransformerLens layout)",
            RawTransformer.from_modules(model),
            _tokens(256, 113, 113),
            last,
            True,
        )
    if name == "h":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2,
            attn_implementation="eager",
        )  # fmt: skip
        return Case(
            "h",
            "HF GPT2LMHeadModel, tiny config (2 layers, d32, vocab 50), 6 tokens, "
            "last-token logits (50) traced, P=64",
            GPT2LMHeadModel(config).eval(),
            torch.randint(0, 50, (64, 6)),
            lambda out: out.logits[:, -1],
            True,
        )
    if name == "i":
        layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True).eval()
        return Case(
            "i",
            "nn.TransformerEncoderLayer d64 4 heads ff256, 8 positions, last position's "
            "first 10 features traced, P=128",
            layer,
            torch.randn(128, 8, 64),
            lambda y: y[:, -1, :10],
            True,
        )
    raise ValueError(f"unknown case {name!r}")


CASES = ["a", "b", "c", "d", "e", "e-traced", "f", "f-traced", "g", "h", "i"]
