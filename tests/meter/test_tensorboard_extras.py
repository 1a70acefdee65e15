"""TensorBoard niceties: custom-scalars layout, regime text, figures, hparams."""

import torch
from paper.polynomial import QuadraticNet
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lazymeter as lm


def run(tmp_path, thresholds=None, **kw):
    torch.manual_seed(0)
    x, y = torch.randn(12, 5).double(), torch.randn(12).double()
    model = QuadraticNet(5, 4, 0.5, dtype=torch.float64)
    meter = lm.LazyMeter(
        model, probe=lm.ProbeSet((x, y), test=(x, y)), schedule=2, log_dir=str(tmp_path), **kw
    )
    if thresholds is not None:
        meter.regime_thresholds = thresholds
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.1))
    for _ in range(5):
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        meter.step(train_loss=loss.item())
    meter.close(hparams={"eps": 0.5, "lr": 0.1})
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return meter, acc


def test_layout_regime_text_and_hparams_are_written(tmp_path):
    meter, acc = run(tmp_path)
    tags = acc.Tags()
    assert "lazymeter/regime/text_summary" in tags["tensors"]
    texts = [
        e.tensor_proto.string_val[0].decode() for e in acc.Tensors("lazymeter/regime/text_summary")
    ]
    assert len(texts) == len(meter.history)
    for text, row in zip(texts, meter.history, strict=True):
        assert text.startswith(f"step {row['step']}: **{lm.regime.classify(row)}**")
    # The custom-scalars layout and the hparams summary are plugin data in the event files.
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("events.out.tfevents*"))
    assert b"custom_scalars" in raw and b"lazymeter/loss/train" in raw
    assert b"_hparams_/session_start_info" in raw and b"max_probe" in raw


def test_figures_of_spectrum_are_optional(tmp_path):
    _, acc = run(tmp_path / "off")
    assert not acc.Tags()["images"]
    _, acc = run(tmp_path / "on", sinks=[lm.TensorBoardSink(figures=True)])
    assert "lazymeter/figures/spectrum" in acc.Tags()["images"]


def test_regime_text_uses_the_given_thresholds(tmp_path):
    from lazymeter.regime import RegimeThresholds

    strict = RegimeThresholds(lazy_kernel=0.0, lazy_movement=0.0, lazy_alignment=0.0, z=0.0)
    meter, acc = run(tmp_path, thresholds=strict)
    texts = [
        e.tensor_proto.string_val[0].decode() for e in acc.Tensors("lazymeter/regime/text_summary")
    ]
    assert any("transitioning" in t or "rich" in t for t in texts[1:])
