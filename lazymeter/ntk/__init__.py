"""Empirical NTK engines behind one function, :func:`empirical_ntk`."""

from .api import (
    DEFAULT_MEMORY_BUDGET,
    MEMORY_BUDGET_ENV,
    auto_chunk_size,
    choose_method,
    default_memory_budget,
    empirical_ntk,
    kernel_dtype,
    parse_bytes,
    select_method,
)
from .engines import ENGINES, register_engine
from .functional import FunctionalModel
from .structured import RULES, coverage, register_rule

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MEMORY_BUDGET_ENV",
    "default_memory_budget",
    "kernel_dtype",
    "parse_bytes",
    "ENGINES",
    "FunctionalModel",
    "RULES",
    "coverage",
    "register_rule",
    "auto_chunk_size",
    "choose_method",
    "empirical_ntk",
    "register_engine",
    "select_method",
]
