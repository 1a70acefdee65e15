"""Weights & Biases as a :class:`lazymeter.Sink`: each measurement as one ``run.log`` call.

``pip install lazymeter[wandb]``. Usage::

    from lazymeter.integrations.wandb import WandbSink

    meter = lm.LazyMeter(model, ..., sinks=[WandbSink(project="lazy-vs-rich")])
    # offline (no account, no network): WandbSink(mode="offline", dir="runs/a")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..sinks import tag_for
from ..validation import int_at_least

#: The meter's step, logged with every row: the x-axis of every ``lazymeter/*`` chart.
STEP_KEY = "lazymeter/step"
#: W&B's modes (``mode=`` or env ``WANDB_MODE``); W&B also takes ``"dryrun"`` (offline),
#: ``"run"`` (online) and ``"shared"`` (online, one run written by several processes).
MODES = ("online", "offline", "disabled")
_OTHER_MODES = {"dryrun": "offline", "run": "online", "shared": "online"}


class WandbSink:
    """Measurements to a W&B run.

    * Each row's values (and the scalars passed to ``step()`` every ``scalar_every``
      steps, 10 by default) go in one ``run.log`` call, named like the TensorBoard tags
      (``ntk_drift -> lazymeter/ntk/drift``), with the meter's step as
      ``lazymeter/step``, which is declared (``define_metric``) the step metric of
      ``lazymeter/*``. The rows are logged without ``step=``, so they never collide with
      the W&B step of the user's own ``wandb.log`` calls (as long as those do not pass
      ``step=`` either: W&B drops a ``step=`` below its current step).
    * The run's meta (NTK engine, modes, estimators) goes in the config under
      ``lazymeter``; the lazy/rich read-out in the summary as ``lazymeter/regime``; the
      hparams of ``meter.close(hparams=...)`` in the config.

    Which run: ``run`` if given; else the current one (``wandb.run``, from the user's
    ``wandb.init``), left open; else ``wandb.init(**init_kwargs)`` (e.g.
    ``project=..., mode="offline", dir=...``) at the first measurement, finished at
    ``meter.close()``. Nothing is started before the first measurement, so a sink given
    to a rank that never writes (a distributed meter's other ranks) starts no run.

    Resuming: the meter's checkpoint keeps the id of a run this sink started, and a meter
    that loads it continues that run (``wandb.init(id=..., resume="allow")``) instead of
    starting one per restart; a given or current run is the user's and is kept.

    Checked at construction, so that a run does not go on logging nothing to W&B: the mode
    (``mode=``, ``settings=wandb.Settings(mode=...)``, env ``WANDB_MODE``, ``wandb
    offline``) must be ``"online"``, ``"offline"`` or ``"disabled"`` (or W&B's aliases),
    and a sink that will start an online run needs an API key (``WANDB_API_KEY``,
    ``wandb login``, ``wandb.login(key=...)``): else a ``ValueError`` naming ``mode`` and
    the fix (``mode="offline"``: no account, no network; ``wandb sync`` uploads later).
    """

    def __init__(self, run: Any = None, *, scalar_every: int = 10, **init_kwargs: Any) -> None:
        self.scalar_every = int_at_least(scalar_every, "scalar_every", 1)
        try:
            import wandb  # noqa: F401 - fail here, not at the first measurement
        except ImportError:
            raise ImportError("WandbSink needs wandb: pip install lazymeter[wandb]") from None
        self._run = run
        self.init_kwargs = init_kwargs
        self._owned = False
        self._ready = False
        self._meta: dict[str, Any] | None = None
        self._check_mode(run is None)

    def _check_mode(self, starts: bool) -> None:
        """A ``ValueError`` now for a mode W&B does not have, or for an online run this
        sink would start without an API key (``wandb.init`` would prompt, or fail at the
        first measurement)."""
        import wandb

        mode, source = _mode(self.init_kwargs)
        if mode is not None and mode not in MODES and mode not in _OTHER_MODES:
            raise ValueError(
                f"mode: expected one of {', '.join(map(repr, MODES))} (W&B's modes), got "
                f"{mode!r} (from {source})"
            )
        mode = _OTHER_MODES.get(mode, mode) if mode is not None else "online"
        if not starts or wandb.run is not None or mode != "online":
            return  # a given run, the user's current one, or no network
        if _has_credentials(self.init_kwargs) is False:
            raise ValueError(
                f"mode: W&B would run online (from {source}) but no API key was found "
                "(WANDB_API_KEY, the ~/.netrc of 'wandb login', wandb.login(key=...)), so "
                "wandb.init would prompt for one or fail at the first measurement; pass "
                'mode="offline" (no account, no network: "wandb sync" uploads the run later) '
                'or mode="disabled", or log in first'
            )

    @property
    def run(self) -> Any:
        """The W&B run, chosen (or started) on first use."""
        if self._run is None:
            import wandb

            if wandb.run is not None:
                self._run = wandb.run
            else:
                self._run = wandb.init(**self.init_kwargs)
                self._owned = True
        if not self._ready:
            self._ready = True
            self._run.define_metric(STEP_KEY)
            self._run.define_metric("lazymeter/*", step_metric=STEP_KEY)
        return self._run

    def _log(self, values: Mapping[str, Any], step: int) -> None:
        data: dict[str, Any] = {
            tag_for(k): float(v)
            for k, v in values.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        data[STEP_KEY] = int(step)
        run = self.run
        if self._meta is not None:  # kept until the run exists (see the class docstring)
            run.config.update({"lazymeter": self._meta}, allow_val_change=True)
            self._meta = None
        run.log(data)

    # ------------------------------------------------------------------ Sink
    def write_row(self, row: dict[str, float], step: int) -> None:
        """One measurement: every value but ``step``, with ``lazymeter/step = step``."""
        self._log(row, step)

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """The user's scalars between measurements, with ``lazymeter/step = step``."""
        self._log(values, step)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Kept, and put in the config under ``lazymeter`` with the first row."""
        self._meta = dict(meta)

    def write_text(self, tag: str, text: str, step: int) -> None:
        """A text (the lazy/rich read-out) in the run's summary (its latest value)."""
        self.run.summary[tag] = text

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """``hparams`` in the config (the last row's values are in the summary already)."""
        self.run.config.update(dict(hparams), allow_val_change=True)

    def state_dict(self) -> dict[str, Any]:
        """:class:`~lazymeter.Sink` ``state_dict``: the run this sink started, if any."""
        started = self._run is not None and self._owned
        return {"run_id": self._run.id if started else self.init_kwargs.get("id")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run a checkpointed sink started (unless this one was given a run
        or logs into the user's current one); a run this sink had started is finished."""
        saved = state.get("run_id")
        if saved is None or (self._run is not None and not self._owned):
            return
        if self._run is not None:
            if self._run.id == saved:
                return
            self._run.finish()
            self._run, self._owned, self._ready = None, False, False
        self.init_kwargs.update(id=saved, resume="allow")

    def close(self) -> None:
        """Finish the run if this sink started it (a given or current run is left open)."""
        if self._run is not None and self._owned:
            self._run.finish()
            self._owned = False


def _settings_value(init_kwargs: Mapping[str, Any], key: str) -> Any:
    """``key`` of the ``settings=`` passed to ``wandb.init``, where set explicitly."""
    settings = init_kwargs.get("settings")
    if isinstance(settings, Mapping):
        return settings.get(key)
    if settings is not None and key in getattr(settings, "model_fields_set", ()):
        return getattr(settings, key, None)
    return None


def _wandb_setting(key: str) -> Any:
    """W&B's own setting (environment and settings files, as ``wandb.init`` reads them);
    None where this version of wandb does not say."""
    try:
        from wandb.sdk import wandb_setup

        return getattr(wandb_setup.singleton().settings, key, None)
    except Exception:  # noqa: BLE001 - an internal API: unknown, not an error
        return None


def _mode(init_kwargs: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(mode, where it comes from)``, in ``wandb.init``'s order (None: W&B's default)."""
    if init_kwargs.get("mode") is not None:
        return str(init_kwargs["mode"]), "mode="
    if (mode := _settings_value(init_kwargs, "mode")) is not None:
        return str(mode), "settings.mode"
    if "WANDB_MODE" in os.environ:
        return os.environ["WANDB_MODE"], "the environment variable WANDB_MODE"
    mode = _wandb_setting("mode")
    return (None, "W&B's default") if mode is None else (str(mode), "W&B's settings")


def _has_credentials(init_kwargs: Mapping[str, Any]) -> bool | None:
    """Whether ``wandb.init`` will find credentials (None: cannot tell)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    if _settings_value(init_kwargs, "api_key") or _wandb_setting("api_key"):
        return True
    host = (
        _settings_value(init_kwargs, "base_url")
        or os.environ.get("WANDB_BASE_URL")
        or _wandb_setting("base_url")
    )
    if host is None:
        return None
    try:
        from wandb.sdk.lib.wbauth import authenticate, wbnetrc

        return bool(
            authenticate.session_credentials(host=host) or wbnetrc.read_netrc_auth(host=host)
        )
    except Exception:  # noqa: BLE001 - an internal API that moves between versions
        return None
