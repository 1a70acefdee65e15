"""``method="auto"`` that knows the device: time the candidate engines once, keep the fastest.

The engines' FLOP estimates (:meth:`~lazymeter.ntk.engines.Engine.cost`) rank them well on
a CPU, where time follows arithmetic. On a GPU it follows kernel launches and memory
traffic instead: there the structured engine's many small per-layer contractions lost 12x
to one large Jacobian contraction on a small CNN, while the FLOP model ranked it first.
So, as ``torch.backends.cudnn.benchmark`` does for convolutions, the first ``"auto"`` kernel
of a (model and input signature, device, size bucket) times the applicable engines on a
trial block of the inputs and remembers the fastest; later calls of that signature run it
directly (``lazymeter.ntk.CACHE.methods``; the timings in ``CACHE.tunings``).

Cost and limits:

* the first call of a signature runs every candidate (at most :data:`MAX_CANDIDATES`, the
  FLOP model's best first) twice on :data:`TRIAL_POINTS` samples: a warm-up (routes,
  plans, kernel caches) and a timed call. A candidate whose warm-up took
  :data:`GIVE_UP` times the best time so far is not timed (it has lost);
* where the trial block is the whole symmetric problem (at most :data:`TRIAL_POINTS`
  samples), the winner's trial kernel is the answer: nothing is computed twice;
* the trial times a block of the real inputs, not the whole kernel: an engine whose cost
  grows faster with the number of samples than its rival's can win the trial and lose at
  full size. Sizes are bucketed by powers of two so a much larger probe is re-tuned;
* every engine computes the same kernel (to rounding), so the choice changes speed, not
  the numbers; ``method=`` forces an engine and skips all of this.

Where it runs: ``$LAZYMETER_AUTOTUNE`` (:data:`AUTOTUNE_ENV`) is ``"auto"`` (default: on
CUDA devices only: on the CPU the FLOP model's choice was the fastest or within noise on
every benchmark case, and a trial of a slow engine there costs seconds), ``"on"`` or
``"off"``; read at each call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

#: Environment variable: ``auto`` (tune on CUDA), ``on`` (every device) or ``off``.
AUTOTUNE_ENV = "LAZYMETER_AUTOTUNE"

#: Samples in a trial block (fewer when the inputs have fewer).
TRIAL_POINTS = 64

#: At most this many applicable engines are timed, the FLOP model's cheapest first.
MAX_CANDIDATES = 3

#: A candidate whose untimed warm-up took this many times the best timed trial is dropped.
GIVE_UP = 10.0

_ON = {"1", "on", "true", "yes", "always"}
_OFF = {"0", "off", "false", "no", "never"}


@dataclass(frozen=True)
class Trial:
    """One candidate's trial: ``seconds`` of its timed call on ``points`` samples, or
    None with ``note`` saying why it was not timed (failed, non-finite, dropped)."""

    engine: str
    points: int
    seconds: float | None
    note: str = ""

    def describe(self) -> str:
        if self.seconds is None:
            return f"{self.engine} {self.note}"
        return f"{self.engine} {self.seconds * 1e3:.1f} ms"


def enabled(device: torch.device | str) -> bool:
    """Whether ``"auto"`` times engines on ``device`` (:data:`AUTOTUNE_ENV`)."""
    value = os.environ.get(AUTOTUNE_ENV, "auto").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    if value == "auto":
        return torch.device(device).type == "cuda"
    raise ValueError(
        f"${AUTOTUNE_ENV}: cannot read {value!r}; use 'auto' (tune on CUDA), 'on' or 'off'"
    )


def size_bucket(n_samples: int) -> int:
    """The power-of-two bucket of a kernel size: ``b`` with ``2^(b-1) <= n < 2^b``."""
    return max(int(n_samples), 1).bit_length()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engines(
    candidates: Sequence[str],
    run: Callable[[str], Tensor],
    *,
    points: int,
    device: torch.device,
    finite: Callable[[Tensor], bool],
) -> tuple[list[Trial], Tensor | None]:
    """Time each of ``candidates`` on the trial block: ``run(name)`` computes that engine's
    kernel of the block. Returns the trials, fastest first (untimed ones last, in the order
    given), and the fastest engine's kernel of the block (None when none was timed)."""
    trials: list[Trial] = []
    best: tuple[float, Tensor] | None = None
    for name in candidates:
        try:
            _sync(device)
            start = time.perf_counter()
            K = run(name)  # warm-up: routes, plans and caches of this signature
            _sync(device)
            warm = time.perf_counter() - start
            if not finite(K):
                trials.append(Trial(name, points, None, "non-finite"))
                continue
            if best is not None and warm > GIVE_UP * best[0]:
                trials.append(Trial(name, points, None, f"dropped (warm-up {warm * 1e3:.0f} ms)"))
                continue
            start = time.perf_counter()
            K = run(name)
            _sync(device)
            seconds = time.perf_counter() - start
        except (RuntimeError, NotImplementedError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            trials.append(Trial(name, points, None, f"failed ({first})"))
            continue
        trials.append(Trial(name, points, seconds))
        if best is None or seconds < best[0]:
            best = (seconds, K)
    timed = sorted((t for t in trials if t.seconds is not None), key=lambda t: t.seconds or 0.0)
    return timed + [t for t in trials if t.seconds is None], None if best is None else best[1]


def describe(trials: Sequence[Trial], device: torch.device) -> str:
    """How ``"auto"`` chose, in a phrase: ``fastest in a trial on 64 samples (cuda):
    jacobian 3.1 ms, structured 12.0 ms``, or ``the lowest estimated cost (FLOP model)``."""
    if not trials:
        return "the lowest estimated cost (FLOP model)"
    return f"fastest in a trial on {trials[0].points} samples ({device.type}): " + ", ".join(
        t.describe() for t in trials
    )
