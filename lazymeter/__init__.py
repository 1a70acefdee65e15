"""lazymeter: is your network training lazily (kernel-like) or richly (learning features)?

Public API (DESIGN.md section 2).
"""

from .baselines import kernel_regression
from .metrics import (
    center_kernel,
    cka,
    kernel_alignment,
    kernel_spectrum,
    linear_cka,
    ntk_drift,
    parameter_movement,
    weight_norm,
)
from .ntk import empirical_ntk

__version__ = "0.1.0"

__all__ = [
    "center_kernel",
    "cka",
    "empirical_ntk",
    "kernel_alignment",
    "kernel_regression",
    "kernel_spectrum",
    "linear_cka",
    "ntk_drift",
    "parameter_movement",
    "weight_norm",
]
