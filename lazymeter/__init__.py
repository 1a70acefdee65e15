"""lazymeter: is your network training lazily (kernel-like) or richly (learning features)?

Public API (DESIGN.md section 2).
"""

from . import quantities, regime  # noqa: F401 - lm.quantities.DEFAULT, lm.regime.classify
from .baselines import Linearized, kernel_regression
from .decompose import Decomposition, QuadraticDecomposition, decompose_quadratic
from .deprecations import LazymeterDeprecationWarning
from .estimators import Estimate
from .failures import SlowWarning
from .grokking import GrokTime, time_to_grok
from .live import LiveView
from .meter import LazyMeter
from .metrics import (
    alignment_change,
    alignment_estimate,
    center_kernel,
    cka,
    cka_estimate,
    kernel_alignment,
    kernel_spectrum,
    linear_cka,
    ntk_drift,
    parameter_movement,
    weight_norm,
)
from .ntk import NTKOptions, empirical_ntk
from .ntk.alignment import ntk_alignment, ntk_change
from .plots import plot_run
from .probes import ProbeSet, ProbeSize
from .quantities import MeasureContext, Quantity
from .schedules import Every, LogSpaced, make_schedule
from .sinks import Sink, TensorBoardSink, read_jsonl, tag_for

__version__ = "0.1.0"

__all__ = [
    "Decomposition",
    "GrokTime",
    "Linearized",
    "QuadraticDecomposition",
    "decompose_quadratic",
    "time_to_grok",
    "Every",
    "LazyMeter",
    "MeasureContext",
    "NTKOptions",
    "ProbeSet",
    "ProbeSize",
    "TensorBoardSink",
    "LazymeterDeprecationWarning",
    "Quantity",
    "LogSpaced",
    "make_schedule",
    "read_jsonl",
    "tag_for",
    "Sink",
    "SlowWarning",
    "LiveView",
    "plot_run",
    "Estimate",
    "alignment_change",
    "alignment_estimate",
    "center_kernel",
    "cka",
    "cka_estimate",
    "empirical_ntk",
    "ntk_alignment",
    "ntk_change",
    "kernel_alignment",
    "kernel_regression",
    "kernel_spectrum",
    "linear_cka",
    "ntk_drift",
    "parameter_movement",
    "weight_norm",
]
