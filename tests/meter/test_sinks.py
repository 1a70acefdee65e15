"""The sink protocol (``LazyMeter(..., sinks=[...])``), what ``TensorBoardSink(writer=...)``
accepts, and the MLflow and W&B sinks, each against the real library writing locally and
read back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import fit as train
from torch import nn

import lazymeter as lm
from lazymeter.sinks import JsonlSink, Sink, TensorBoardSink, tag_for

D, P, PT = 3, 12, 10


def make_meter(log_dir=None, schedule=2, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(P, D, generator=g, dtype=torch.float64)
    xt = torch.randn(PT, D, generator=g, dtype=torch.float64)
    meter = lm.LazyMeter(
        model,
        alpha=2.0,
        probe=lm.ProbeSet((x, torch.sin(x.sum(1))), test=(xt, torch.sin(xt.sum(1)))),
        schedule=schedule,
        log_dir=log_dir,
        output_fn=lambda out: out.squeeze(-1),
        **kwargs,
    )
    return meter, x, torch.sin(x.sum(1))


class Recorder:
    """A sink with every optional hook, recording the calls."""

    def __init__(self):
        self.calls = []

    def write_row(self, row, step):
        self.calls.append(("row", dict(row), step))

    def write_scalars(self, values, step):
        self.calls.append(("scalars", dict(values), step))

    def write_meta(self, meta):
        self.calls.append(("meta", meta))

    def write_text(self, tag, text, step):
        self.calls.append(("text", tag, step))

    def write_hparams(self, hparams, metrics):
        self.calls.append(("hparams", dict(hparams), dict(metrics)))

    def flush(self):
        self.calls.append(("flush",))

    def rewind(self, history, step):
        self.calls.append(("rewind", len(list(history)), step))

    def close(self):
        self.calls.append(("close",))

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]


# ---------------------------------------------------------------------------- protocol
def test_jsonl_tensorboard_and_a_two_method_class_are_sinks(tmp_path):
    class Minimal:
        def write_row(self, row, step): ...

        def close(self): ...

    jsonl = JsonlSink(str(tmp_path / "h.jsonl"))
    assert isinstance(jsonl, Sink)
    assert isinstance(TensorBoardSink(str(tmp_path)), Sink)
    assert isinstance(Minimal(), Sink)
    assert not isinstance(object(), Sink)
    jsonl.close()


def test_a_sink_receives_each_measurement_row_at_its_step_and_the_scalars_between():
    rec = Recorder()
    rec.scalar_every = 1  # the scalars at every step (a sink without it: every 10)
    meter, x, y = make_meter(schedule=2, sinks=[rec])
    train(meter, x, y, steps=4, lr=0.5)  # steps 1..4 (0: the row before any update)
    meter.close(hparams={"lr": 0.5})
    rows = rec.of("row")
    assert [r[1] for r in rows] == meter.history  # the very rows of the history
    assert [r[2] for r in rows] == [0, 2, 4]
    assert [s[2] for s in rec.of("scalars")] == [1, 3]  # steps without a measurement
    assert set(rec.of("scalars")[0][1]) == {"train_loss"}
    (meta,) = rec.of("meta")
    assert meta[1]["measure_mode"] == "eval" and "ntk_engine" in meta[1]
    assert rec.of("text") == [("text", "lazymeter/regime", s) for s in (0, 2, 4)]
    (hp,) = rec.of("hparams")
    assert hp[1]["lr"] == 0.5 and hp[1]["alpha"] == 2.0
    assert hp[2]["ntk_drift"] == meter.history[-1]["ntk_drift"]
    assert rec.calls[-1] == ("close",)


def test_a_closed_meter_writes_no_more_to_its_sinks():
    rec = Recorder()
    meter, x, y = make_meter(schedule=1, sinks=[rec])
    train(meter, x, y, steps=2, lr=0.5)
    meter.close()
    meter.close()
    n = len(rec.calls)
    train(meter, x, y, steps=2, lr=0.5)  # the meter goes on in memory
    assert len(meter.history) == 5  # steps 0 (before training) to 4
    assert len(rec.calls) == n and len(rec.of("close")) == 1


def test_a_sink_is_flushed_for_a_checkpoint_and_rewound_on_loading_one():
    rec = Recorder()
    meter, x, y = make_meter(schedule=1, sinks=[rec])
    train(meter, x, y, steps=3, lr=0.5)
    state = meter.state_dict()
    assert rec.of("flush")
    train(meter, x, y, steps=2, lr=0.5)
    meter.load_state_dict(state)
    assert rec.of("rewind") == [("rewind", 4, 3)]  # steps 0 (before training) to 3


def test_a_sink_with_only_write_row_and_close_gets_the_rows():
    class Minimal:
        def __init__(self):
            self.rows, self.closed = [], False

        def write_row(self, row, step):
            self.rows.append(step)

        def close(self):
            self.closed = True

    sink = Minimal()
    meter, x, y = make_meter(schedule=2, sinks=[sink])
    train(meter, x, y, steps=4, lr=0.5)
    meter.state_dict()
    meter.close(hparams={"lr": 1})
    assert sink.rows == [0, 2, 4] and sink.closed


def test_a_failing_sink_warns_once_and_training_and_the_other_sinks_go_on(tmp_path):
    class Broken:
        def write_row(self, row, step):
            raise ConnectionError("tracking server unreachable")

        def close(self):
            pass

    rec = Recorder()
    meter, x, y = make_meter(tmp_path, schedule=1, sinks=[Broken(), rec])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(meter, x, y, steps=4, lr=0.5)
    mine = [w for w in caught if "Broken.write_row" in str(w.message)]
    assert len(mine) == 1 and "tracking server unreachable" in str(mine[0].message)
    assert len(rec.of("row")) == 5 and len(meter.history) == 5  # 0 (before training) to 4
    assert len(lm.read_jsonl(str(tmp_path / "history.jsonl"))) == 5
    meter.close()


def test_sinks_that_lack_write_row_or_close_are_rejected_naming_the_position(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with pytest.raises(TypeError, match=r"sinks\[1\]: .*write_row"):
        make_meter(sinks=[Recorder(), object()])
    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(TypeError, match="writer="):
        make_meter(sinks=[writer])
    writer.close()
    with pytest.raises(TypeError, match="list of sinks"):
        make_meter(sinks=Recorder())


# ---------------------------------------------------------------------------- writer=
class ScalarWriter:
    """Only add_scalar: the least TensorBoardSink(writer=...) accepts."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


def test_a_writer_with_only_add_scalar_gets_the_scalars_and_survives_hparams():
    writer = ScalarWriter()
    meter, x, y = make_meter(schedule=2, sinks=[TensorBoardSink(writer=writer, figures=True)])
    train(meter, x, y, steps=3, lr=0.5)
    meter.close(hparams={"lr": 0.5})
    drift = [(s, v) for t, v, s in writer.scalars if t == "lazymeter/ntk/drift"]
    assert drift == [(r["step"], r["ntk_drift"]) for r in meter.history]


class DuckWriter:
    """add_scalar and add_text, no flush: a writer that also takes texts."""

    def __init__(self):
        self.scalars, self.texts = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text, step):
        self.texts.append((tag, step))


def test_a_writer_with_only_add_scalar_and_add_text_gets_scalars_and_texts():
    writer = DuckWriter()
    meter, x, y = make_meter(schedule=2, sinks=[TensorBoardSink(writer=writer, scalar_every=1)])
    train(meter, x, y, steps=3, lr=0.5)
    meter.state_dict()  # flushes: a writer without flush() must not break it
    meter.close()
    drift = [(s, v) for t, v, s in writer.scalars if t == "lazymeter/ntk/drift"]
    assert drift == [(r["step"], r["ntk_drift"]) for r in meter.history]
    # Steps 1..3 once each (step 0, before training, has no loss; 3 is measured by close()).
    assert [s for t, _, s in writer.scalars if t == "lazymeter/loss/train"] == [1, 2, 3]
    assert ("lazymeter/meta", 0) in writer.texts and ("lazymeter/regime", 2) in writer.texts


def test_a_writer_without_add_scalar_is_rejected_and_a_sink_is_pointed_to_sinks():
    with pytest.raises(TypeError, match="writer: expected a TensorBoard SummaryWriter"):
        TensorBoardSink(writer="runs/a")
    with pytest.raises(TypeError, match=r"a lazymeter Sink: pass it in the meter's sinks=\["):
        TensorBoardSink(writer=Recorder())


# ---------------------------------------------------------------------------- MLflow
@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow file store (mlflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use one;
    sqlite stores need the full mlflow package, not mlflow-skinny)."""
    pytest.importorskip("mlflow", reason="MLflow is an optional dependency")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_sink_logs_each_row_as_metrics_at_its_step_and_meta_as_tags(mlflow_store):
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    sink = MlflowSink(
        tracking_uri=mlflow_store, experiment="lazymeter-test", run_name="a", scalar_every=1
    )
    meter, x, y = make_meter(schedule=2, sinks=[sink])
    assert sink.run_id is None  # nothing started before the first measurement
    train(meter, x, y, steps=4, lr=0.5)
    meter.close(hparams={"lr": 0.5, "width": 8})

    client = MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(sink.run_id)
    assert run.info.status == "FINISHED"  # the sink started the run, so it ended it
    assert client.get_experiment(run.info.experiment_id).name == "lazymeter-test"
    drift = client.get_metric_history(sink.run_id, tag_for("ntk_drift"))
    assert [(m.step, m.value) for m in drift] == [
        (r["step"], r["ntk_drift"]) for r in meter.history
    ]
    # The train loss at every update: in the rows (2, 4) and between them (1, 3); the row
    # at step 0 (before any update) has none.
    train_loss = client.get_metric_history(sink.run_id, "lazymeter/loss/train")
    assert sorted(m.step for m in train_loss) == [1, 2, 3, 4]
    tags, params = run.data.tags, run.data.params
    assert tags["lazymeter.measure_mode"] == "eval"
    assert tags["lazymeter.ntk_engine.engine"] == meter.ntk_engine["engine"]
    assert tags["lazymeter/regime"]
    assert params["lr"] == "0.5" and params["width"] == "8" and params["alpha"] == "2.0"


def test_mlflow_sink_logs_into_the_active_run_and_leaves_it_open(mlflow_store):
    import mlflow
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    with mlflow.start_run() as active:
        meter, x, y = make_meter(schedule=1, sinks=[MlflowSink()])
        train(meter, x, y, steps=3, lr=0.5)
        meter.close()
        assert mlflow.active_run() is not None
        run = MlflowClient().get_run(active.info.run_id)
        assert run.info.status == "RUNNING"
        steps = [
            m.step for m in MlflowClient().get_metric_history(run.info.run_id, tag_for("ntk_cka"))
        ]
        assert steps == [0, 1, 2, 3]


def test_mlflow_sink_keeps_nan_for_a_value_that_could_not_be_computed(mlflow_store):
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    sink = MlflowSink(tracking_uri=mlflow_store)
    sink.write_row({"step": 3.0, "ntk_drift": math.nan, "my/odd[key]": 1.0}, 3)
    sink.close()
    client = MlflowClient(tracking_uri=mlflow_store)
    (m,) = client.get_metric_history(sink.run_id, "lazymeter/ntk/drift")
    assert m.step == 3 and math.isnan(m.value)
    # A character MLflow refuses in a name becomes "_" instead of failing the whole row.
    (odd,) = client.get_metric_history(sink.run_id, "lazymeter/scalars/my/odd_key_")
    assert odd.value == 1.0


def test_a_resumed_meter_continues_the_mlflow_run_and_ends_it_finished(mlflow_store):
    """Was: one run per restart, the crashed ones left RUNNING: the run id is in the
    meter's checkpoint, and the resumed meter logs into that run and ends it."""
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    kw = {"tracking_uri": mlflow_store, "experiment": "resume"}
    meter, x, y = make_meter(schedule=1, sinks=[MlflowSink(**kw)])
    train(meter, x, y, steps=3, lr=0.5)
    sd = meter.state_dict()  # then the process dies: no close()
    resumed, x, y = make_meter(schedule=1, sinks=[MlflowSink(**kw)])
    resumed.load_state_dict(sd)
    train(resumed, x, y, steps=2, lr=0.5)
    resumed.close()
    client = MlflowClient(tracking_uri=mlflow_store)
    exp = client.get_experiment_by_name("resume")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, tag_for("ntk_drift"))]
    assert steps == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- W&B
def wandb_records(path):
    """The records of a run's .wandb transaction log, read by W&B's own reader
    (``wandb leet inspect --json``: one JSON object per record)."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip(f"this wandb cannot read back a .wandb file: {out.stderr[-300:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """``(wandb, sink)``: W&B offline in ``tmp_path`` (its own cache and config folders),
    and a factory of offline :class:`WandbSink` objects for a project."""
    wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")
    from lazymeter.integrations.wandb import WandbSink

    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    settings = wandb.Settings(console="off", x_disable_stats=True, save_code=False)

    def sink(project, scalar_every=10):
        return WandbSink(
            mode="offline", dir=str(tmp_path), project=project, settings=settings,
            scalar_every=scalar_every,
        )  # fmt: skip

    return wandb, sink


def test_wandb_sink_offline_logs_each_row_with_the_meters_step(tmp_path, offline_wandb):
    wandb, make_sink = offline_wandb
    sink = make_sink("lazymeter-test", scalar_every=1)
    meter, x, y = make_meter(schedule=2, sinks=[sink])
    train(meter, x, y, steps=4, lr=0.5)
    meter.close(hparams={"lr": 0.5})
    assert wandb.run is None  # the sink started the run, so it finished it

    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(path)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [h["lazymeter/step"] for h in history] == [0, 1, 2, 3, 4]
    measured = [h for h in history if "lazymeter/ntk/drift" in h]
    assert [h["lazymeter/step"] for h in measured] == [0, 2, 4]
    assert [h["lazymeter/ntk/drift"] for h in measured] == pytest.approx(
        [r["ntk_drift"] for r in meter.history], rel=1e-12
    )
    assert [h["lazymeter/loss/train"] for h in history if h["lazymeter/step"] in (2, 4)] == (
        pytest.approx([r["train_loss"] for r in meter.history[1:]])  # 0: before any update
    )
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update(r["config"].get("update", {}))
    assert config["lazymeter"]["measure_mode"] == "eval" and config["lr"] == 0.5
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert {"glob_name": "lazymeter/*", "step_metric": "lazymeter/step"}.items() <= next(
        m for m in metrics if m.get("glob_name") == "lazymeter/*"
    ).items()
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    assert summary["lazymeter/regime"]


def test_a_resumed_meter_continues_the_wandb_run(tmp_path, offline_wandb):
    wandb, make_sink = offline_wandb
    first = make_sink("resume")
    meter, x, y = make_meter(schedule=1, sinks=[first])
    train(meter, x, y, steps=2, lr=0.5)
    sd = meter.state_dict()
    run_id = first.run.id
    first.close()  # what a crash leaves: a run to continue (offline: its files)
    resumed, x, y = make_meter(schedule=1, sinks=[make_sink("resume")])
    resumed.load_state_dict(sd)
    train(resumed, x, y, steps=2, lr=0.5)
    resumed.close()
    assert wandb.run is None
    dirs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    # one directory per process (W&B adds "-1" to a second one in the same second), one id
    assert len(dirs) == 2 and all(d.split("-")[3] == run_id for d in dirs), dirs


# ---------------------------------------------------------------------------- ranks
class FileSink:
    """Writes each row's step to ``<root>/rank<r>.steps``: what each rank's sinks received."""

    def __init__(self, path):
        self.path = path

    def write_row(self, row, step):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{step}\n")

    def close(self):
        pass


def _ddp_worker(rank, world, root):
    from spawned import run_rank

    run_rank(lambda out: _ddp_body(rank, root), rank, world, root)


def _ddp_body(rank, root):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(8, D, dtype=torch.float64)
    meter = lm.LazyMeter(
        DDP(model),
        probe=(x, x.sum(1)),
        schedule=1,
        output_fn=lambda out: out.squeeze(-1),
        sinks=[FileSink(f"{root}/rank{rank}.steps")],
    )
    for _ in range(3):
        meter.step()
    meter.close()


def test_only_rank_0_of_a_distributed_meter_writes_to_its_sinks(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed gloo")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    for r in range(2):
        assert "error" not in torch.load(tmp_path / f"rank{r}.pt"), r
    assert (tmp_path / "rank0.steps").read_text().split() == ["0", "1", "2", "3"]
    assert not (tmp_path / "rank1.steps").exists()


# ------------------------------------------------------------- checked at construction
def test_an_mlflow_sink_checks_its_store_at_construction_and_starts_nothing(mlflow_store):
    """Was: a store MLflow cannot use failed only at the first measurement, with a warning,
    and the run went on logging nothing there."""
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    sink = MlflowSink(tracking_uri=mlflow_store, experiment="checked")
    client = MlflowClient(tracking_uri=mlflow_store)
    assert sink.run_id is None and client.get_experiment_by_name("checked") is None
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_an_mlflow_store_that_cannot_be_used_is_a_clear_error_naming_tracking_uri(
    tmp_path, mlflow_store
):
    from lazymeter.integrations.mlflow import MlflowSink

    (tmp_path / "a_file").write_text("")
    bad = (tmp_path / "a_file" / "mlruns").as_uri()  # a file in the path
    with pytest.raises(ValueError, match=r"^tracking_uri: MLflow cannot use the store .*a_file"):
        MlflowSink(tracking_uri=bad)
    with pytest.raises(ValueError, match=r"^tracking_uri: .*Pass a tracking server"):
        MlflowSink(tracking_uri="nosuchscheme://x")
    MlflowSink(tracking_uri=bad, check=False)  # the check can be skipped


def test_an_mlflow_server_that_does_not_answer_is_a_clear_error_at_construction(mlflow_store):
    import socket

    from lazymeter.integrations.mlflow import MlflowSink

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match=r"^tracking_uri: no MLflow tracking server answers at"):
        MlflowSink(tracking_uri=f"http://127.0.0.1:{port}")


def test_a_deleted_mlflow_experiment_or_an_unknown_run_id_is_a_clear_error(mlflow_store):
    from mlflow.tracking import MlflowClient

    from lazymeter.integrations.mlflow import MlflowSink

    client = MlflowClient(tracking_uri=mlflow_store)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(ValueError, match=r"^experiment: 'gone' is deleted .*restore it"):
        MlflowSink(tracking_uri=mlflow_store, experiment="gone")
    with pytest.raises(ValueError, match=r"^run_id: 'no-such-run' is not a run in"):
        MlflowSink("no-such-run", tracking_uri=mlflow_store)


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """No W&B credentials anywhere: no key in the environment, an empty home and netrc."""
    wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return wandb


def test_a_wandb_sink_refuses_a_mode_wandb_does_not_have(no_wandb_login, monkeypatch):
    from lazymeter.integrations.wandb import WandbSink

    with pytest.raises(ValueError, match=r"^mode: expected one of 'online', 'offline', 'disab"):
        WandbSink(mode="ofline")
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ValueError, match=r"got 'ofline' \(from the environment variable WAN"):
        WandbSink(project="x")
    assert WandbSink(mode="offline")._run is None  # a mode given wins over WANDB_MODE
    assert WandbSink(mode="dryrun")._run is None  # W&B's own alias of offline


def test_an_online_wandb_sink_without_an_api_key_suggests_offline(no_wandb_login, monkeypatch):
    from lazymeter.integrations.wandb import WandbSink

    with pytest.raises(ValueError, match=r'^mode: W&B would run online .*mode="offline"'):
        WandbSink(project="x", mode="online")
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ValueError, match=r"no API key was found"):
        WandbSink(project="x")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    WandbSink(project="x")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # a key: online is fine (nothing contacted)
    sink = WandbSink(project="x", mode="online")
    assert sink._run is None and no_wandb_login.run is None
    sink.close()


def test_an_offline_wandb_sink_starts_nothing_before_the_first_measurement(offline_wandb):
    wandb, make_sink = offline_wandb
    sink = make_sink("checked")
    assert sink._run is None and wandb.run is None
    sink.close()
