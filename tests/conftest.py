"""Shared test set-up: the helper modules in this folder (``architectures`` for small
models and the naive per-sample autograd NTK, ``integrity`` for the model-integrity
guard) are importable from every test sub-folder."""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
