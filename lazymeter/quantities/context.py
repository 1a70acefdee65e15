"""What a quantity sees of the run: the model, the step, the probes and the kernels."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ..probes import Probe, subsample, targets

SPLITS = ("train", "test")


class MeasureContext:
    """The run as one measurement (or the construction, for ``setup``) sees it.

    Everything is computed on first use and cached for this one measurement, so one
    kernel serves every quantity that asks for it.

    Attributes:
        model: the user's network (unwrapped from DistributedDataParallel).
        step: the step being measured (-1 before the first :meth:`LazyMeter.step`).
        alpha, center: the meter's output scale and centring.
        num_classes: the class count when probe labels are integer classes, else None.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        step: int,
        alpha: float,
        center: bool,
        probes: Mapping[str, Probe],
        num_classes: int | None,
        ntk: Callable[..., Tensor],
        init_kernels: Mapping[str, Tensor | None],
        params0: Callable[[], dict[str, Tensor]],
        initial_output: Callable[[Tensor], Tensor],
        output: Callable[[Tensor], Tensor],
        check: Callable[[], None] = lambda: None,
        full_probes: Mapping[str, Probe] | None = None,
        seed: int = 0,
        kept: int | None = None,
    ) -> None:
        self.model, self.step, self.alpha, self.center = model, step, alpha, center
        self.num_classes = num_classes
        self._probes = dict(probes)
        self._ntk = ntk
        self._init = dict(init_kernels)
        self._params0 = params0
        self._initial_output = initial_output
        self._output = output
        self._check = check
        self._full = dict(full_probes or {})
        self._seed = seed
        self._kept = kept
        self._kernels: dict[str, Tensor] = {}
        self._targets: dict[str, Tensor] = {}
        self._subsets: dict[tuple[str, int], Probe] = {}
        self._shared: dict[tuple[int, int], tuple[Tensor, Tensor | None, Tensor]] = {}
        self.soft_failures: list[tuple[str, Exception]] = []
        self.current = ""  # the quantity being computed (for failure reports)

    # ------------------------------------------------------------------ data
    def has(self, split: str) -> bool:
        """Whether the meter has a probe for ``split`` (``"train"`` or ``"test"``)."""
        return self._probes.get(split) is not None

    def probe(self, split: str = "train", max_points: int | None = None) -> Probe:
        """``(x, y)`` of the ``split`` probe. With ``max_points`` (at setup only): a seeded
        subset of at most that many points of the whole probe the user passed, instead of
        the measurement probe (e.g. the lazy baseline's larger set). The meter keeps as many
        points as the quantities declare (:meth:`Quantity.probe_points`); asking for more
        than that is a ``ValueError``, not a silently smaller set."""
        _check_split(split)
        if max_points is not None and split in self._full:
            have = int(self._full[split][0].shape[0])
            if self._kept is not None and max_points > self._kept and have >= self._kept:
                raise ValueError(
                    f"{self.current or 'a quantity'}: asks for {max_points} points of the "
                    f"{split} probe, but the meter kept {self._kept} (the most any quantity "
                    "declares in probe_points()); return at least that many from its "
                    "probe_points()"
                )
            # the same tensors for every quantity that asks, so that their kernels are shared
            key = (split, max_points)
            if key not in self._subsets:
                self._subsets[key] = subsample(
                    self._full[split], max_points, self._seed + (split == "test")
                )
            return self._subsets[key]
        p = self._probes.get(split)
        if p is None:
            raise KeyError(f"split: the meter has no {split!r} probe")
        return p

    def targets(self, split: str = "train") -> Tensor:
        """Regression targets ``[P, C]`` (float64) of the probe: one-hot for class labels."""
        if split not in self._targets:
            self._targets[split] = targets(self.probe(split)[1], self.num_classes)
        return self._targets[split]

    # ------------------------------------------------------------------ kernels
    def kernel(self, split: str = "train", at: str = "now") -> Tensor:
        """Traced empirical NTK ``[P, P]`` of the probe, now or at initialisation."""
        _check_split(split)
        if at == "init":
            K0 = self._init.get(split)
            if K0 is None:
                raise RuntimeError(
                    f"no initial NTK of the {split} probe (it could not be computed at "
                    "construction)"
                )
            return K0
        if at != "now":
            raise ValueError(f"at: expected 'now' or 'init', got {at!r}")
        if split not in self._kernels:
            if not self._kernels:
                self._check()
            self._kernels[split] = self._ntk(self.probe(split)[0])
        return self._kernels[split]

    def ntk(self, x1: Tensor, x2: Tensor | None = None) -> Tensor:
        """The meter's kernel function on any inputs (same engine, dtype and budget); computed
        once per measurement for the same input tensors."""
        key = (id(x1), id(x2))
        hit = self._shared.get(key)
        if hit is None or hit[0] is not x1 or hit[1] is not x2:
            hit = (x1, x2, self._ntk(x1, x2))  # the inputs are kept: their ids stay theirs
            self._shared[key] = hit
        return hit[2]

    def initial_output(self, x: Tensor) -> Tensor:
        """``model0(x)``: the initial network's (reduced) output, no graph."""
        return self._initial_output(x)

    def output(self, x: Tensor) -> Tensor:
        """The meter's output on ``x``: ``alpha (f(x) - f0(x))`` (centred) or ``alpha f(x)``,
        reduced by ``output_fn``, without a graph (buffers untouched)."""
        return self._output(x)

    # ------------------------------------------------------------------ parameters
    def params(self) -> dict[str, Tensor]:
        """``{name: parameter}`` of the trainable parameters, now."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def params0(self) -> dict[str, Tensor]:
        """The same names at initialisation (the meter's snapshot)."""
        return self._params0()

    # ------------------------------------------------------------------ failures
    def attempt(self, out: dict[str, float], key: str, fn: Callable[[], Any]) -> None:
        """``out[key] = float(fn())``; a ``ValueError`` (a degenerate value) makes that
        one key NaN and is reported in the measurement's warning, not its neighbours."""
        try:
            out[key] = float(fn())
        except ValueError as e:
            out[key] = math.nan
            self.soft_failures.append((self.current, e))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
