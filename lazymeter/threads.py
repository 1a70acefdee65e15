"""Temporarily running torch on fewer CPU threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count.

    ``n`` of None or <= 0 leaves the count alone. Small models and small kernels run
    fastest on one thread: their ops are too short for intra-op threads to pay off, and on
    a loaded machine oversubscribed threads made them 10-35x slower.
    """
    before = torch.get_num_threads()
    if n is not None and n > 0 and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
