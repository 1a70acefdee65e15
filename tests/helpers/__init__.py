"""Helpers shared by the tests (importable from every test folder: see ``tests/conftest.py``).

* :func:`fit`: the training loop a user writes around a meter (full-batch gradient descent on
  the MSE, ``meter.step`` once per update).
"""

from .loops import fit

__all__ = ["fit"]
