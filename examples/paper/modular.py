"""Modular addition data: all pairs ``(a, b)`` with label ``(a + b) mod p``.

Shared by the MLP (one-hot pair inputs, Figure 2) and the transformer (token sequences
``[a, b, =]``) experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ModularSplit:
    """Index pairs and labels of a train/test split of the ``p^2`` pairs."""

    a: Tensor  # [p^2] first operands, in split order (train first)
    b: Tensor  # [p^2]
    labels: Tensor  # [p^2] (a + b) mod p
    n_train: int
    p: int

    def one_hot_pairs(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Concatenated one-hot encodings ``[p^2, 2p]`` (the MLP's inputs, D = 2p)."""
        eye = torch.eye(self.p, dtype=dtype)
        return torch.cat([eye[self.a], eye[self.b]], dim=1)

    def tokens(self) -> Tensor:
        """Token sequences ``[a, b, =]`` with ``=`` encoded as ``p``: ``[p^2, 3]``."""
        eq = torch.full_like(self.a, self.p)
        return torch.stack([self.a, self.b, eq], dim=1)


def modular_addition(p: int, train_frac: float, seed: int = 0) -> ModularSplit:
    """All ``p^2`` pairs in a seeded random order; the first ``train_frac`` of them train."""
    if p < 2:
        raise ValueError(f"p: expected a modulus >= 2, got {p}")
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac: expected a fraction in (0, 1), got {train_frac}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(p * p, generator=g)
    a, b = perm // p, perm % p
    return ModularSplit(a, b, (a + b) % p, int(round(train_frac * p * p)), p)
