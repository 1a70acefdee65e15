"""MLflow as a :class:`lazymeter.Sink`: each measurement's scalars as metrics at its step.

``pip install lazymeter[mlflow]`` (``mlflow-skinny``: file stores and tracking servers;
the full ``mlflow`` package adds ``sqlite://`` stores, mlflow 3's default). Usage::

    from lazymeter.integrations.mlflow import MlflowSink

    meter = lm.LazyMeter(model, ..., sinks=[MlflowSink(experiment="lazy-vs-rich")])

MLflow 3 refuses a plain file store (``file://...`` or ``./mlruns``) unless the environment
has ``MLFLOW_ALLOW_FILE_STORE=true``; this sink does not set it (an environment variable
is the user's choice).
"""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from ..sinks import tag_for
from ..validation import int_at_least

# MLflow's own limits: metrics, and params or tags, per log_batch call; characters of a
# name; characters of a param value (tags take 8000).
_METRICS_PER_BATCH = 1000
_PER_BATCH = 100
_MAX_NAME = 250
_MAX_VALUE = 6000
# Characters MLflow accepts in a metric, tag or param name (others become "_").
_BAD_NAME = re.compile(r"[^\w\-. :/]")
# Seconds the construction check waits for a tracking server to answer.
_REACH_TIMEOUT = 5.0
_STORES = (
    "a tracking server (tracking_uri='http://localhost:5000'), 'sqlite:///mlflow.db' (the "
    "full mlflow package; mlflow-skinny has no SQL stores), or a file store "
    "(tracking_uri='file:./mlruns', with the environment variable MLFLOW_ALLOW_FILE_STORE=true "
    "under MLflow 3)"
)


def _name(key: str) -> str:
    return _BAD_NAME.sub("_", key)[:_MAX_NAME]


def _flatten(meta: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"<prefix>a.b": "1"}`` (values as text, cut to MLflow's limit)."""
    out: dict[str, str] = {}
    for k, v in meta.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[_name(f"{prefix}{k}")] = str(v)[:_MAX_VALUE]
    return out


class MlflowSink:
    """Measurements to an MLflow run, through ``MlflowClient`` (no global MLflow state is
    changed: no ``set_tracking_uri``, no ``start_run``).

    * Each row's values (and the scalars passed to ``step()`` every ``scalar_every``
      steps, 10 by default) are metrics at the meter's step, named like the TensorBoard tags
      (``ntk_drift -> lazymeter/ntk/drift``; ``name=`` changes that), in one
      ``log_batch`` call per row. NaN (a value that could not be computed) is logged as NaN.
    * The run's meta (NTK engine, modes, estimators) becomes tags ``lazymeter.<key>``; the
      lazy/rich read-out the tag ``lazymeter/regime`` (the latest one); the hparams of
      ``meter.close(hparams=...)`` params.

    Which run: ``run_id`` if given; else the active run (``mlflow.start_run()`` before the
    meter's first measurement), left open; else a new run in ``experiment`` (default: env
    ``MLFLOW_EXPERIMENT_NAME``, else ``"Default"``), ended (FINISHED) at ``meter.close()``.
    No run is started (or experiment created) before the first measurement, so a sink
    given to a rank that never writes (a distributed meter's other ranks) starts no run.

    ``tracking_uri``: where (default: MLflow's, e.g. env ``MLFLOW_TRACKING_URI``).

    Checked at construction (``check=True``), so that a run does not go on logging nothing
    to MLflow: a store MLflow cannot open (an unsupported scheme, ``sqlite://`` with
    mlflow-skinny, a file store without ``MLFLOW_ALLOW_FILE_STORE=true`` under MLflow 3, a
    file in the path), an unwritable file store, a tracking server that does not answer
    within 5 s, a deleted ``experiment`` or an unknown ``run_id`` is a ``ValueError``
    naming ``tracking_uri`` (``experiment``, ``run_id``) and the fix. A local store is only
    read (MLflow's file store creates its folder); a server is only asked for ``/health``.

    Resuming: the meter's checkpoint keeps the id of a run this sink started, and a meter
    that loads it continues that run (set back to RUNNING, ended FINISHED at ``close()``)
    instead of opening one per restart; a given ``run_id`` or an active run is the
    user's and is not replaced. MLflow keeps every value logged at a step: what a crashed
    run logged past the checkpoint stays in MLflow (it cannot be deleted).
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        name: Callable[[str], str] = tag_for,
        scalar_every: int = 10,
        check: bool = True,
    ) -> None:
        self.scalar_every = int_at_least(scalar_every, "scalar_every", 1)
        try:
            import mlflow  # noqa: F401 - fail here, not at the first measurement
        except ImportError:
            raise ImportError(
                "MlflowSink needs MLflow: pip install lazymeter[mlflow] (or mlflow-skinny)"
            ) from None
        self.run_id = run_id
        self._given = run_id is not None
        self._reopen = False
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.name = name
        self._client: Any = None
        self._owned = False
        self._meta: dict[str, Any] | None = None
        if check:
            self._check_store()

    def _experiment_name(self) -> str:
        return self.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"

    def _check_store(self) -> None:
        """A ``ValueError`` now for a store the first measurement could not log to (see
        the class docstring); starts no run and creates no experiment."""
        import mlflow
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri or mlflow.get_tracking_uri()
        shown = repr(uri) if self.tracking_uri else f"{uri!r} (MLflow's default)"
        scheme = urllib.parse.urlparse(uri).scheme.lower()
        if scheme in ("http", "https"):
            why = _unreachable(uri)
            if why is not None:
                raise ValueError(
                    f"tracking_uri: no MLflow tracking server answers at {shown} ({why}); "
                    f"start it (mlflow server ...), fix the URL, or pass {_STORES}; "
                    "check=False skips this check"
                )
            return
        if scheme.startswith("databricks") or scheme == "uc":
            return  # checked by MLflow with the workspace's credentials, at the first write
        try:
            client = MlflowClient(tracking_uri=uri)
            name = self._experiment_name()
            exp = client.get_experiment_by_name(name) if self.run_id is None else None
        except Exception as e:  # noqa: BLE001 - MLflow's errors vary by store and version
            msg = str(e).strip().rstrip(".")
            raise ValueError(
                f"tracking_uri: MLflow cannot use the store {shown}: {type(e).__name__}: "
                f"{msg}. Pass {_STORES}"
            ) from e
        if exp is not None and exp.lifecycle_stage != "active":
            raise ValueError(
                f"experiment: {name!r} is deleted in tracking_uri={uri!r}, so MLflow cannot "
                f"start a run in it; restore it (mlflow experiments restore --experiment-id "
                f"{exp.experiment_id}) or pass another experiment="
            )
        if self.run_id is not None:
            try:
                client.get_run(self.run_id)
            except Exception as e:  # noqa: BLE001
                raise ValueError(
                    f"run_id: {self.run_id!r} is not a run in tracking_uri={uri!r} ({e}); "
                    "pass one of its runs, or no run_id (a new run)"
                ) from e
        if scheme in ("", "file"):
            from mlflow.utils.file_utils import local_file_uri_to_path

            root = local_file_uri_to_path(uri)
            if not os.access(root, os.W_OK):
                raise ValueError(
                    f"tracking_uri: the file store {shown} ({os.path.abspath(root)}) is not "
                    f"writable; pass a writable folder or {_STORES}"
                )

    @property
    def client(self) -> Any:
        """The ``MlflowClient``, and the run (``run_id``) chosen, on first use."""
        if self._client is None:
            import mlflow
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            if self.run_id is None:
                active = mlflow.active_run()
                if active is not None and self.tracking_uri in (None, mlflow.get_tracking_uri()):
                    self.run_id = active.info.run_id
                else:
                    self.run_id = self._create_run(client)
                    self._owned = True
            elif self._reopen:  # a resumed run of ours: running again
                client.update_run(self.run_id, status="RUNNING")
                self._reopen = False
            self._client = client
        return self._client

    def _create_run(self, client: Any) -> str:
        name = self._experiment_name()
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(exp_id, tags=self.tags or None, run_name=self.run_name)
        return run.info.run_id

    def _metrics(self, values: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(_name(self.name(k)), float(v), now, int(step))
            for k, v in values.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        client = self.client
        if self._meta is not None:  # kept until the run exists (see the class docstring)
            self.write_tags(_flatten(self._meta, "lazymeter."))
            self._meta = None
        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])

    def write_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (mutable in MLflow: a later value replaces an earlier one)."""
        from mlflow.entities import RunTag

        items = [RunTag(_name(k), str(v)[:_MAX_VALUE]) for k, v in tags.items()]
        for i in range(0, len(items), _PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _PER_BATCH])

    # ------------------------------------------------------------------ Sink
    def write_row(self, row: dict[str, float], step: int) -> None:
        """One measurement: every value but ``step`` as a metric at ``step``."""
        self._metrics(row, step)

    def write_scalars(self, values: dict[str, float], step: int) -> None:
        """The user's scalars between measurements, as metrics at ``step``."""
        self._metrics(values, step)

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Kept, and set as ``lazymeter.<key>`` tags with the first row."""
        self._meta = dict(meta)

    def write_text(self, tag: str, text: str, step: int) -> None:
        """A text (the lazy/rich read-out) as the tag ``tag`` (its latest value)."""
        self.write_tags({tag: text})

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """``hparams`` as run params (the metrics are logged already, row by row)."""
        from mlflow.entities import Param

        params = [Param(_name(k), str(v)[:_MAX_VALUE]) for k, v in hparams.items()]
        for i in range(0, len(params), _PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + _PER_BATCH])

    def state_dict(self) -> dict[str, Any]:
        """:class:`~lazymeter.Sink` ``state_dict``: the run this sink started, if any."""
        return {"run_id": self.run_id if self._owned else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run a checkpointed sink started (unless this one was given a
        ``run_id``); a run this sink had started meanwhile is ended first."""
        saved = state.get("run_id")
        if saved is None or self._given or saved == self.run_id:
            return
        if self._client is not None and self._owned:
            self._client.set_terminated(self.run_id, "FINISHED")
            self._client = None
        self.run_id, self._owned, self._reopen = saved, True, True

    def close(self) -> None:
        """End the run if this sink started it (an active or given run is left open)."""
        if self._client is not None and self._owned:
            self._client.set_terminated(self.run_id, "FINISHED")
            self._owned = False


def _unreachable(uri: str) -> str | None:
    """Why nothing answers at the tracking server ``uri`` (None: something does; any HTTP
    status counts, as servers behind a login refuse ``/health``)."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=_REACH_TIMEOUT):  # noqa: S310 - http(s) only
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (ConnectionError, TimeoutError, socket.gaierror)):
            return f"{type(reason).__name__}: {reason}"
        return None  # e.g. a certificate MLflow may be told to accept: its call to judge
    except (ConnectionError, TimeoutError) as e:
        return f"{type(e).__name__}: {e}"
