"""The keywords ``LazyMeter`` took in lazymeter 0.1, translated to where each option lives now.

Kept for one release: each call that uses one warns once with a
:class:`LazymeterDeprecationWarning` that names every old keyword it used and its new
spelling. An old keyword beside the new object that owns it (``ntk_method=`` with ``ntk=``,
``centering=`` with ``quantities=``, ``max_probe=`` with a :class:`~lazymeter.ProbeSet`) is a
``TypeError``: 0.1 silently ignored the shorthand quantity keywords when ``quantities=`` was
given, and guessing which one the user meant is how a measurement goes silently wrong.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from . import quantities as Q
from .ntk.options import NTKOptions
from .probes import ProbeSet
from .sinks import TensorBoardSink


class LazymeterDeprecationWarning(DeprecationWarning):
    """A lazymeter spelling that still works and will be removed in the next release."""


#: 0.1's positional order after ``(model, alpha)``; now keyword-only.
POSITIONAL = ("center", "probe", "test_probe", "schedule", "log_dir")
#: Probe options -> ProbeSet's.
PROBE = {"test_probe": "test", "max_probe": "max_points", "seed": "seed"}
#: Kernel options -> NTKOptions'.
NTK = {
    "ntk_method": "method",
    "ntk_chunk_size": "chunk_size",
    "memory_budget": "memory_budget",
    "ntk_outputs": "outputs",
}
#: TensorBoard options -> TensorBoardSink's.
BOARD = {
    "writer": "writer",
    "tensorboard": "enabled",
    "scalar_every": "scalar_every",
    "tb_figures": "figures",
}
#: Options of the built-in quantities -> lazymeter.quantities.default's.
QUANTITY = (
    "centering",
    "estimator",
    "spectrum_k",
    "ridge",
    "max_baseline",
    "features",
    "metrics",
    "linearized",
)
LEGACY = (*PROBE, *NTK, *BOARD, *QUANTITY, "regime_thresholds")


def _spell(owner: str, pairs: dict[str, Any]) -> str:
    """``Owner(k=v, ...)`` with numbers, strings and None shown, anything larger as ``...``."""
    simple = (int, float, str, bool, type(None))
    inner = ", ".join(
        f"{k}={v!r}" if isinstance(v, simple) else f"{k}=..." for k, v in pairs.items()
    )
    return f"{owner}({inner})"


def translate(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], Any, list[str]]:
    """``(kwargs, regime_thresholds, said)``: 0.1's positional arguments and keywords
    rewritten as the constructor takes them now, the ``regime_thresholds`` to set after
    construction (or None), and what changed, one phrase per group."""
    if len(args) > len(POSITIONAL):
        raise TypeError(
            f"LazyMeter: takes model and alpha positionally, got {2 + len(args)} positional "
            "arguments"
        )
    kw = dict(kwargs)
    said: list[str] = []
    for name, value in zip(POSITIONAL, args, strict=False):
        if name in kw:
            raise TypeError(f"LazyMeter: got {name!r} both positionally and as a keyword")
        kw[name] = value
    if args:
        said.append(f"{', '.join(POSITIONAL[: len(args)])} by position -> by keyword")

    old_probe = {PROBE[k]: kw.pop(k) for k in list(kw) if k in PROBE}
    if old_probe:
        if isinstance(kw.get("probe"), ProbeSet):
            raise TypeError(
                f"LazyMeter: {sorted(k for k in PROBE if PROBE[k] in old_probe)} beside "
                "probe=ProbeSet(...): put them in the ProbeSet"
            )
        kw["probe"] = ProbeSet(kw.get("probe"), **old_probe)
        said.append(f"test_probe/max_probe/seed -> probe={_spell('ProbeSet', old_probe)}")

    old_ntk = {NTK[k]: kw.pop(k) for k in list(kw) if k in NTK}
    if old_ntk:
        if kw.get("ntk") is not None:
            raise TypeError("LazyMeter: ntk_* / memory_budget beside ntk=: put them in NTKOptions")
        kw["ntk"] = NTKOptions(**old_ntk)
        said.append(
            "ntk_method/ntk_chunk_size/ntk_outputs/memory_budget -> "
            f"ntk={_spell('NTKOptions', old_ntk)}"
        )

    old_board = {BOARD[k]: kw.pop(k) for k in list(kw) if k in BOARD}
    if old_board:
        sinks = list(kw.get("sinks") or [])
        if any(isinstance(s, TensorBoardSink) for s in sinks):
            raise TypeError(
                "LazyMeter: writer/tensorboard/scalar_every/tb_figures beside a "
                "TensorBoardSink in sinks: put them in the TensorBoardSink"
            )
        kw["sinks"] = [TensorBoardSink(**old_board), *sinks]
        said.append(
            "writer/tensorboard/scalar_every/tb_figures -> "
            f"sinks=[{_spell('TensorBoardSink', old_board)}]"
        )

    old_q = {k: kw.pop(k) for k in list(kw) if k in QUANTITY}
    names = ", ".join(sorted(old_q))
    if old_q:
        if kw.get("quantities") is not None:
            raise TypeError(
                f"LazyMeter: {sorted(old_q)} configure the default quantities, but quantities= "
                "was given too (they would be ignored): set them on the quantities, e.g. "
                "Alignment(centering=...), LazyBaseline(max_points=...)"
            )
        if old_q.get("features") is not None and kw.get("probe") is None:
            raise ValueError("features: needs a probe to compute activations on")
        old_q["features"] = old_q.get("features") or ()
        kw["quantities"] = Q.default(**old_q, output_fn=kw.get("output_fn"))
        said.append(
            f"{names} -> quantities=lazymeter.quantities.default({names}), or the "
            "quantities' own arguments"
        )

    thresholds = kw.pop("regime_thresholds", None)
    if thresholds is not None:
        said.append("regime_thresholds= -> meter.regime_thresholds = ...")
    return kw, thresholds, said


def accepts_legacy_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """Let ``LazyMeter.__init__`` take 0.1's arguments (see the module docstring); the
    signature users see stays the new one."""

    @functools.wraps(init)
    def wrapper(self: Any, model: Any, alpha: float = 1.0, *args: Any, **kwargs: Any) -> None:
        if not args and not any(k in kwargs for k in LEGACY):
            return init(self, model, alpha, **kwargs)
        kw, thresholds, said = translate(args, kwargs)
        warnings.warn(
            "LazyMeter: these arguments moved to the object each configures (they work until "
            "the next release): " + "; ".join(said),
            LazymeterDeprecationWarning,
            stacklevel=2,
        )
        init(self, model, alpha, **kw)
        if thresholds is not None:
            self.regime_thresholds = thresholds

    return wrapper
