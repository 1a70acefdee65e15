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
    DEFAULT_MEMORY_BUDGET as DEFAULT_MEMORY_BUDGET,
    MEMORY_BUDGET_ENV,
    default_memory_budget as default_memory_budget,
    parse_bytes,
    resolve_budget,
)
from .cache import CACHE as CACHE, NTKCache as NTKCache, clear_caches
from .engines import (
    ENGINES as ENGINES,
    Engine,
    auto_chunk_size as auto_chunk_size,
    choose_engine as choose_engine,
    register_engine,
    unregister_engine,
)
from .exact import choose_method as choose_method, kernel_dtype, kernel_plan, select_method
from .explain import Explanation, ParamRoute as ParamRoute, explain
from .forms import Dense, Outer
from .functional import FunctionalModel
from .groups import parameter_groups
from .ops import OP_RULES as OP_RULES, register_op_rule
from .options import NTKOptions
from .registry import DECLINES as DECLINES, RULES as RULES, register_rule, unregister_rule
from .routing import coverage
from .sketch import Sketch, SketchedKernel, sketched_ntk
from .structured import StructuredEngine as StructuredEngine

#: What users call. The registries (``ENGINES``, ``RULES``, ``OP_RULES``, ``DECLINES``),
#: the memo tables (``CACHE``) and the planner's internals stay importable by name, but are
#: not the interface: extend through ``register_*``, inspect through ``explain`` and
#: ``kernel_plan``.
__all__ = [
    "MEMORY_BUDGET_ENV",
    "NTKOptions",
    "Dense",
    "Engine",
    "Explanation",
    "FunctionalModel",
    "Outer",
    "Sketch",
    "SketchedKernel",
    "clear_caches",
    "coverage",
    "empirical_ntk",
    "explain",
    "kernel_dtype",
    "kernel_plan",
    "parameter_groups",
    "parse_bytes",
    "register_engine",
    "register_op_rule",
    "register_rule",
    "resolve_budget",
    "select_method",
    "sketched_ntk",
    "unregister_engine",
    "unregister_rule",
]
