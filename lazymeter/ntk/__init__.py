"""Empirical NTK engines behind one function, :func:`empirical_ntk`.

Extension points: :func:`register_engine` (an :class:`Engine`: applicability, cost,
chunk plan, compute; ``method="auto"`` takes the applicable one with the lowest cost)
and :func:`register_rule` (a structured per-layer rule returning :class:`Outer` or
:class:`Dense` forms; looked up along the layer type's MRO) and
:func:`register_op_rule` (a rule per operation, for parameters used directly in
``einsum``, ``@``, indexing, ...). :func:`explain` names each parameter's route;
:func:`clear_caches` forgets what the engines remembered. :class:`Sketch` and
:func:`sketched_ntk` estimate the traced kernel of many-output models.
``empirical_ntk(..., per_layer=True)`` splits the kernel by :func:`parameter_groups`.
"""

from .api import empirical_ntk
from .budget import (
    DEFAULT_MEMORY_BUDGET,
    MEMORY_BUDGET_ENV,
    default_memory_budget,
    parse_bytes,
    resolve_budget,
)
from .cache import CACHE, NTKCache, clear_caches
from .engines import (
    ENGINES,
    Engine,
    auto_chunk_size,
    choose_engine,
    register_engine,
    unregister_engine,
)
from .exact import choose_method, kernel_dtype, kernel_plan, select_method
from .explain import Explanation, ParamRoute, explain
from .forms import Dense, Outer
from .functional import FunctionalModel
from .groups import parameter_groups
from .ops import OP_RULES, register_op_rule
from .registry import DECLINES, RULES, register_rule, unregister_rule
from .routing import coverage
from .sketch import Sketch, SketchedKernel, sketched_ntk
from .structured import StructuredEngine

__all__ = [
    "CACHE",
    "DECLINES",
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "ENGINES",
    "OP_RULES",
    "RULES",
    "Dense",
    "Engine",
    "Explanation",
    "FunctionalModel",
    "NTKCache",
    "Outer",
    "ParamRoute",
    "Sketch",
    "SketchedKernel",
    "StructuredEngine",
    "auto_chunk_size",
    "choose_engine",
    "choose_method",
    "clear_caches",
    "coverage",
    "default_memory_budget",
    "kernel_plan",
    "resolve_budget",
    "empirical_ntk",
    "explain",
    "kernel_dtype",
    "parameter_groups",
    "parse_bytes",
    "register_engine",
    "register_op_rule",
    "register_rule",
    "select_method",
    "sketched_ntk",
    "unregister_engine",
    "unregister_rule",
]
