"""Kernel-target alignment of the NTK, now and at initialisation, with standard errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .. import estimators as E, metrics as M
from ..probes import targets
from ..sinks import register_tags
from .base import Quantity
from .context import SPLITS, MeasureContext


class Alignment(Quantity):
    """``alignment_<split> = kernel_alignment(K_t, Y, centering, estimator)`` on each probe,
    its jackknife standard error ``alignment_<split>_se``, the reference
    ``alignment0_<split>`` (``_se``) of ``K_0`` (computed once, at setup), and the change
    ``alignment_rise_<split> = alignment_<split> - alignment0_<split>`` with its paired
    jackknife error (:func:`lazymeter.alignment_change`).

    The default estimator is the unbiased (U-statistic) one: its expectation does not
    depend on the probe size, it is about 0 for a kernel unrelated to the labels, and its
    error bar says whether a change is real. ``estimator="biased"`` gives the plain ratio
    (the paper's definition with ``centering="rows"``), which depends on the probe size:
    quote it with ``points``.

    Args:
        centering: ``"double"`` (centred kernel-target alignment), ``"rows"`` (the paper's
            code) or ``"none"``; see :func:`lazymeter.kernel_alignment`. The unbiased
            estimator needs ``"double"``.
        estimator: ``"unbiased"`` or ``"biased"``.
        points: None (the meter's probes), or the number of points of each probe the user
            passed to measure on (a seeded subset chosen at setup; a kernel on them at every
            measurement), e.g. the 1000 test points on which the paper measures.
        prefix: the key prefix (``alignment``); another instance with another prefix can
            run next to the default one, e.g. ``Alignment("rows", "biased", points=1000,
            prefix="alignment_paper")``.
        splits: the probes to measure on (``("train", "test")``, or one of them).
    """

    name = "ntk.alignment"
    needs = "kernel"
    tags = {
        **{
            f"alignment{t}_{s}{e}": f"ntk/alignment{t}_{s}{e}"
            for t in ("", "0")
            for s in SPLITS
            for e in ("", "_se")
        },
        **{
            f"alignment_rise_{s}{e}": f"ntk/alignment_rise_{s}{e}"
            for s in SPLITS
            for e in ("", "_se")
        },
    }
    doc = {
        "alignment_train": "`kernel_alignment(K_t, Y)` on the train probe (`estimator=`, "
        "default unbiased; `centering=`)",
        "alignment_train_se": "its jackknife standard error over the probe points",
        "alignment_test": "the same on the test probe (and `alignment_test_se`)",
        "alignment0_train": "`kernel_alignment(K_0, Y)`: the reference at initialisation "
        "(and `alignment0_train_se`)",
        "alignment0_test": "the same on the test probe",
        "alignment_rise_train": "`alignment_train - alignment0_train` with `_se`, its paired "
        "jackknife error (same points: far smaller than the two errors combined)",
    }

    def __init__(
        self,
        centering: str = "double",
        estimator: str = "unbiased",
        points: int | None = None,
        prefix: str = "alignment",
        splits: tuple[str, ...] = SPLITS,
    ) -> None:
        M._check_centering(centering)
        M._check_estimator(estimator)
        if estimator == "unbiased" and centering != "double":
            raise ValueError(
                f"centering: the unbiased estimator estimates the double-centred alignment; "
                f"pass centering='double' (got {centering!r}) or estimator='biased'"
            )
        if points is not None and (isinstance(points, bool) or int(points) < 5):
            raise ValueError(f"points: expected None or an int >= 5, got {points!r}")
        self.centering, self.estimator, self.points = centering, estimator, points
        if not set(splits) <= set(SPLITS) or not splits:
            raise ValueError(f"splits: expected a non-empty subset of {SPLITS}, got {splits!r}")
        if not (isinstance(prefix, str) and prefix.startswith("alignment")):
            raise ValueError(f"prefix: expected a string starting with 'alignment', got {prefix!r}")
        self.prefix, self.splits = prefix, tuple(splits)
        if prefix != "alignment":
            self.name = f"ntk.{prefix}"  # type: ignore[misc]
            group = {f"{prefix}_": f"ntk/{prefix}_"}
            for head in (self._head("0"), self._head("rise")):
                group[f"{head}_"] = f"ntk/{head}_"
            register_tags(group)
        self.reference: dict[str, float] = {}
        self._own: dict[str, tuple[Tensor, Tensor]] = {}
        self._K0_own: dict[str, Tensor] = {}
        self._loo0: dict[str, Tensor] = {}

    def _head(self, what: str = "") -> str:
        """``alignment`` (now), ``alignment0`` (init), ``alignment_rise`` with the prefix."""
        if what == "0":
            return self.prefix.replace("alignment", "alignment0", 1)
        if what == "rise":
            return self.prefix.replace("alignment", "alignment_rise", 1)
        return self.prefix

    def probe_points(self) -> int:
        return 0 if self.points is None else int(self.points)

    def min_points(self) -> int:
        """The estimator's fewest points for a value and its error bar (unbiased: 5); with
        ``points`` the alignment has points of its own."""
        return 3 if self.points is not None else E.min_points(self.estimator)

    def _key(self, split: str, at: str = "") -> str:
        return f"{self._head(at)}_{split}"

    def _rise_key(self, split: str) -> str:
        return f"{self._head('rise')}_{split}"

    def _splits(self, ctx: MeasureContext) -> list[str]:
        return [s for s in self.splits if ctx.has(s)]

    def _data(self, ctx: MeasureContext, split: str, at: str = "now") -> tuple[Tensor, Tensor]:
        """``(K, Y)`` on this quantity's points of ``split``, now or at initialisation."""
        if self.points is None:
            return ctx.kernel(split, at), ctx.targets(split)
        x, y = self._own[split]
        K = self._K0_own[split] if at == "init" and split in self._K0_own else ctx.ntk(x)
        return K, targets(y, ctx.num_classes)

    def _replicates(self, K: Tensor, Y: Tensor) -> tuple[float, Tensor]:
        value, loo = M.alignment_replicates(K, Y, self.centering, self.estimator)
        assert loo is not None
        return value, loo

    def setup(self, ctx: MeasureContext) -> None:
        for s in self._splits(ctx):
            if self.points is not None:
                self._own[s] = ctx.probe(s, self.points)
                self._K0_own[s] = ctx.ntk(self._own[s][0])
            K0, Y = self._data(ctx, s, "init")
            key = self._key(s, "0")
            try:
                value, loo = self._replicates(K0, Y)
            except ValueError:  # too few points, a constant target: NaN, warned at measurement
                self.reference[key] = self.reference[key + "_se"] = float("nan")
                continue
            # K_0's leave-one-out values: every later rise's paired error reuses them
            self._loo0[s] = loo
            self.reference[key], self.reference[key + "_se"] = value, E.jackknife_se(loo)

    def keys(self, ctx: MeasureContext) -> list[str]:
        out = []
        for s in self._splits(ctx):
            out += [
                self._key(s),
                self._key(s) + "_se",
                self._rise_key(s),
                self._rise_key(s) + "_se",
            ]
        return out

    def compute(self, ctx: MeasureContext) -> Mapping[str, float]:
        out: dict[str, float] = {}
        for s in self._splits(ctx):
            K, Y = self._data(ctx, s)
            held: dict[str, tuple[float, Tensor]] = {}

            def run(K: Tensor = K, Y: Tensor = Y, h: dict = held) -> float:
                h["r"] = self._replicates(K, Y)
                return h["r"][0]

            ctx.attempt(out, self._key(s), run)
            nan = float("nan")
            value, loo = held.get("r", (nan, None))
            a0, loo0 = self.reference.get(self._key(s, "0"), nan), self._loo0.get(s)
            out[self._key(s) + "_se"] = nan if loo is None else E.jackknife_se(loo)
            paired = loo is not None and loo0 is not None and loo0.shape == loo.shape
            out[self._rise_key(s)] = value - a0
            out[self._rise_key(s) + "_se"] = E.jackknife_se(loo - loo0) if paired else nan
        out.update(self.reference)
        return out

    def describe(self) -> dict[str, Any]:
        """What the numbers depend on (written to the run's metadata)."""
        return {
            "keys": f"{self.prefix}_<split>",
            "estimator": self.estimator,
            "centering": self.centering,
            "points": self.points if self.points is not None else "probe",
        }

    def state_dict(self) -> dict[str, Any]:
        # with own points, K_0 on them (the rise needs it; a resumed model is no longer K_0's)
        return {"reference": dict(self.reference), "K0": dict(self._K0_own), "loo0": self._loo0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reference = dict(state["reference"])
        self._K0_own.update(state.get("K0", {}))
        self._loo0 = dict(state.get("loo0", {}))
