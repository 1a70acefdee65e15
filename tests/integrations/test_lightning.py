"""LazyMeterCallback with a real Lightning Trainer on CPU."""

import csv

import pytest
import torch
from torch import nn

import lazymeter as lm

L = pytest.importorskip("lightning.pytorch", reason="Lightning is an optional dependency")

from lazymeter.integrations.lightning import LazyMeterCallback  # noqa: E402


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.lazymeter(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lazymeter.scaled_lr(0.5))


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, torch.sin(x.sum(1))


def probes():
    return lm.ProbeSet(data(), test=data(seed=1))


def loader():
    x, y = data()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def trainer(tmp_path, max_steps, callback):
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        logger=L.loggers.CSVLogger(tmp_path, name="logs", version=0),
        log_every_n_steps=4,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_callback_measures_logs_through_the_loggers_and_resumes(tmp_path):
    torch.manual_seed(0)
    cb = LazyMeterCallback(alpha=2.0, probe=probes(), schedule=5)
    model = Net()
    trainer(tmp_path, 12, cb).fit(model, loader())
    steps = [r["step"] for r in cb.meter.history]
    # trainer.global_step after the optimiser step (HuggingFace's state.global_step): 0
    # before any update, every 5 updates, and the last step (12) at the end of training.
    assert steps == [0, 5, 10, 12]
    first = cb.meter.history[0]
    assert first["ntk_drift"] == 0.0 and first["param_movement"] == 0.0
    assert "train_loss" not in first
    rows = list(csv.DictReader(open(tmp_path / "logs" / "version_0" / "metrics.csv")))
    drift = [r for r in rows if r.get("lazymeter/ntk/drift")]
    assert [int(r["step"]) for r in drift] == [0, 5, 10, 12]
    losses = sorted({int(r["step"]) for r in rows if r.get("lazymeter/loss/train")})
    # Every log_every_n_steps = 4 updates (4, 8, 12), plus along with each measurement.
    assert losses == [4, 5, 8, 10, 12]
    # Only the meter's own state goes into the checkpoint (the weights are there anyway).
    state = cb.state_dict()
    assert state and not any(k.startswith("model.") for k in state)

    # Resume: train 7 steps, checkpoint, continue in a new Trainer with a new callback.
    ckpt = tmp_path / "mid.ckpt"
    torch.manual_seed(0)
    first_cb = LazyMeterCallback(alpha=2.0, probe=probes(), schedule=5)
    first = trainer(tmp_path / "first", 7, first_cb)
    first.fit(Net(), loader())
    first.save_checkpoint(ckpt)
    resumed_cb = LazyMeterCallback(alpha=2.0, probe=probes(), schedule=5)
    trainer(tmp_path / "resume", 12, resumed_cb).fit(Net(), loader(), ckpt_path=ckpt)
    # Restored (with the first fit's last row, 7) and continued.
    assert [r["step"] for r in first_cb.meter.history] == [0, 5, 7]
    assert [r["step"] for r in resumed_cb.meter.history] == [0, 5, 7, 10, 12]
    assert resumed_cb.meter.history[0] == first_cb.meter.history[0]
    # The snapshot (theta0) came from the checkpoint, not from the new module's init.
    assert torch.equal(resumed_cb.meter.snapshot.t0, first_cb.meter.snapshot.t0)


class AliasedNet(Net):
    """A submodule under two names: measurements must not orphan its Parameters."""

    def __init__(self):
        super().__init__()
        self.fc = self.net[0]


def test_callback_leaves_an_aliased_module_training_every_parameter(tmp_path):
    torch.manual_seed(0)
    model = AliasedNet()
    before = [(n, p, p.detach().clone()) for n, p in model.named_parameters(remove_duplicate=False)]
    cb = LazyMeterCallback(alpha=2.0, probe=probes(), schedule=2)
    trainer(tmp_path, 6, cb).fit(model, loader())
    assert len(cb.meter.history) >= 3  # measured several times while training
    after = list(model.named_parameters(remove_duplicate=False))
    assert [n for n, _ in after] == [n for n, *_ in before]
    for (n, p, v), (_, q) in zip(before, after, strict=True):
        assert q is p and isinstance(q, torch.nn.Parameter), f"{n}: replaced"
        assert not torch.equal(q.detach(), v), f"{n}: never trained"


class SelfLogging(Net):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("mine/loss", loss)
        return loss


def test_rows_carry_the_step_self_log_uses_and_a_run_without_log_dir_can_be_reported(tmp_path):
    from lazymeter.cli import main

    torch.manual_seed(0)
    cb = LazyMeterCallback(alpha=2.0, probe=probes(), schedule=5)
    trainer(tmp_path, 12, cb).fit(SelfLogging(), loader())
    run_dir = tmp_path / "logs" / "version_0"
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    mine = {int(r["step"]): float(r["mine/loss"]) for r in rows if r.get("mine/loss")}
    ours = {
        int(r["step"]): float(r["lazymeter/loss/train"])
        for r in rows
        if r.get("lazymeter/loss/train")
    }
    # self.log logs a batch at global_step before its update, the meter after it: one up.
    assert {k + 1 for k in mine} <= set(ours)  # every batch self.log wrote, the callback too
    assert all(ours[k + 1] == pytest.approx(v, rel=1e-6) for k, v in mine.items())
    assert (run_dir / "history.jsonl").exists()  # no log_dir given: the logger's directory
    assert not list(run_dir.glob("events.out.tfevents*"))  # scalars went through the loggers
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0


def test_lazymeter_0_1_keywords_pass_through_to_the_meter_with_its_warning(tmp_path):
    from types import SimpleNamespace

    cb = LazyMeterCallback(alpha=2.0, probe=data(), test_probe=data(seed=1), max_probe=8)
    fake = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path), default_root_dir=None)
    with pytest.warns(lm.LazymeterDeprecationWarning, match="test_probe"):
        cb.setup(fake, Net(), "fit")
    assert cb.meter.probe_x.shape[0] == 8 and cb.meter.test_x.shape[0] == 8
    assert not cb.meter._log.tb.enabled  # the trainer's loggers have the scalars
    cb.meter.close()
