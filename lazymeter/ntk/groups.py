"""Parameter groups for per-layer kernels: which module owns each trainable parameter.

The empirical NTK is a sum over parameters, ``K = sum_p J_p J_p^T``, so it splits exactly
into one kernel per group of parameters, ``K = sum_g K_g`` with
``K_g[i, j] = sum_o sum_{p in g} <J_{o,p}(x_i), J_{o,p}(x_j)>``. A group is the module
that owns the parameter, named as in ``model.named_modules()`` (``"0"``, ``"blocks.1.attn"``);
a parameter registered directly on the root module is a group of its own, named after it
(``"W_E"``). A parametrised weight (``parametrizations.weight.original0``) belongs to the
module it parametrises, and a tied or aliased parameter to the first name
``named_parameters()`` gives it.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def group_of(name: str) -> str:
    """The group of the parameter called ``name`` in ``named_parameters()``: its owning
    module's name (``"net.0.weight" -> "net.0"``), the module a parametrisation belongs to
    (``"fc.parametrizations.weight.original0" -> "fc"``), or the name itself for a
    parameter of the root module (``"W_E" -> "W_E"``)."""
    parts = name.split(".")
    if "parametrizations" in parts:
        cut = parts.index("parametrizations")
        # a root-level parametrisation: group under the parametrised tensor's name
        return ".".join(parts[:cut]) or parts[cut + 1]
    return ".".join(parts[:-1]) or name


def group_names(names: Iterable[str]) -> dict[str, list[str]]:
    """``{group: [parameter name, ...]}`` for parameter names, groups in order of first
    appearance (the order of ``named_parameters()``)."""
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(group_of(n), []).append(n)
    return out


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """``{group: [parameter name, ...]}`` over the trainable parameters of ``model``: the
    keys of ``empirical_ntk(model, x, per_layer=True)`` (see the module docstring).

    Example: ``nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))`` gives
    ``{"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    return group_names(n for n, p in model.named_parameters() if p.requires_grad)
