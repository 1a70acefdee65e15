"""Shared test set-up: the helper modules in this folder (``helpers`` for the training loop,
``architectures`` for small models and the naive per-sample autograd NTK, ``integrity`` for
the model-integrity guard) are importable from every test sub-folder; the fixture ``fit``
is the training loop (:func:`helpers.fit`)."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import pytest  # noqa: E402
from helpers import fit as _fit  # noqa: E402


@pytest.fixture
def fit():
    """The tests' training loop around a meter (:func:`helpers.fit`)."""
    return _fit
