"""``lazymeter.fsdp``: the public path of :mod:`lazymeter.ntk.fsdp` (measuring a model
sharded with ``fully_shard``), where it lived before the NTK layer took it in (it gathers
the model for the kernels, so ``ntk`` needs it and it must not need ``ntk``'s top)."""

from .ntk.fsdp import (
    call_at_snapshot,
    full_model,
    gathered,
    is_dtensor,
    is_fsdp,
    needs_gather,
    reshard_all,
)

__all__ = [
    "call_at_snapshot",
    "full_model",
    "gathered",
    "is_dtensor",
    "is_fsdp",
    "needs_gather",
    "reshard_all",
]
