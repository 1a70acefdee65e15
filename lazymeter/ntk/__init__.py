"""Empirical NTK engines behind one function, :func:`empirical_ntk`."""

from .api import (
    DEFAULT_MEMORY_BUDGET,
    auto_chunk_size,
    choose_method,
    empirical_ntk,
    select_method,
)
from .engines import ENGINES, register_engine
from .functional import FunctionalModel
from .structured import RULES, coverage, register_rule

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
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
