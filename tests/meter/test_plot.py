"""``meter.plot()`` / ``lazymeter.plots.plot_run``: a matplotlib figure of a run so far (from
the meter, a run directory or rows), the K0 baseline kept off a loss it is not comparable
to, and ``meter.live()``'s redraws (with a stand-in for IPython's ``display``)."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import pytest
import torch
from torch import nn

import lazymeter as lm
from lazymeter.live import LiveView
from lazymeter.plots import plot_run
from lazymeter.regime import RegimeThresholds, classify

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

D, P, PT = 3, 12, 10
PANELS = ["loss", "NTK: drift and CKA to init", "alignment", "parameter movement"]


# ---------------------------------------------------------------------------- helpers
def regression_run(steps: int = 12, log_dir=None, schedule="log", sinks=(), **kwargs):
    """A short full-batch GD run on regression targets; returns the meter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    g = torch.Generator().manual_seed(1)
    x, xt = (torch.randn(n, D, generator=g, dtype=torch.float64) for n in (P, PT))
    y, yt = torch.sin(x.sum(1)), torch.sin(xt.sum(1))
    meter = lm.LazyMeter(
        model, alpha=2.0, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=schedule,
        log_dir=log_dir, sinks=[lm.TensorBoardSink(enabled=False), *sinks],
        output_fn=lambda out: out.squeeze(-1), **kwargs,
    )  # fmt: skip
    opt = torch.optim.SGD(meter.parameters(), lr=meter.scaled_lr(0.5))
    for _ in range(steps):
        loss = ((meter(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test = ((meter(xt) - yt) ** 2).mean().item()
        meter.step(train_loss=loss.item(), test_loss=test)
    return meter


def classification_run(steps: int = 6):
    """A short cross-entropy run on 3 classes (the baseline is an MSE on one-hot targets)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(2)
    x, xt = (torch.randn(n, D, generator=g, dtype=torch.float64) for n in (P, PT))
    y, yt = (v[:, 0].ge(0).long() + v[:, 1].ge(0).long() for v in (x, xt))
    meter = lm.LazyMeter(model, probe=lm.ProbeSet((x, y), test=(xt, yt)), schedule=1)
    opt = torch.optim.SGD(meter.parameters(), lr=0.5)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(meter(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            out = meter(xt)
            test = nn.functional.cross_entropy(out, yt).item()
            acc = (out.argmax(1) == yt).double().mean().item()
        meter.step(train_loss=loss.item(), test_loss=test, test_acc=acc)
    return meter


def panel(fig: Figure, title: str):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def levels(ax) -> list[float]:
    """y of the horizontal lines (axhline) of ``ax``."""
    out = []
    for line in ax.get_lines():
        xs, ys = line.get_xdata(), line.get_ydata()
        if list(xs) == [0, 1] and ys[0] == ys[1]:
            out.append(float(ys[0]))
    return out


def curves(ax) -> dict[str, int]:
    """Label -> number of points of each data curve of ``ax`` (not the levels)."""
    lines = [ln for ln in ax.get_lines() if list(ln.get_xdata()) != [0, 1]]
    return {ln.get_label(): len(ln.get_xdata()) for ln in lines}


def rows(n: int = 6, **extra) -> list[dict[str, float]]:
    out = []
    for i in range(n):
        step = 2**i
        out.append({"step": step, "train_loss": 1.0 / step, "test_loss": 2.0 / step, **extra})
    return out


# ---------------------------------------------------------------------------- meter.plot()
def test_meter_plot_draws_one_panel_per_measured_group_with_data_and_se_bands():
    meter = regression_run()
    fig = meter.plot()
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == PANELS
    measured = sum(1 for r in meter.history if r["step"] > 0)
    assert measured >= 5 and meter.history[-1]["step"] < meter.last_step == 12
    loss = panel(fig, "loss")
    # Each measured row, and the last step's scalars (unmeasured): the losses reach step 12.
    assert curves(loss) == {"train": measured + 1, "test": measured + 1}
    assert max(loss.get_lines()[0].get_xdata()) == 12
    assert levels(loss) == [pytest.approx(meter.baseline["k0_test_mse"])]
    assert loss.get_ylabel() == "MSE" and loss.get_xlabel() == "step"
    kernel = panel(fig, "NTK: drift and CKA to init")
    assert set(curves(kernel)) == {"ntk drift", "test ntk drift", "1 − CKA(K, K0) ± 1 SE"}
    # The alignment panel: one curve and one band of +-1 SE per split, each band of
    # positive width where the row has a finite standard error.
    align = panel(fig, "alignment")
    assert set(curves(align)) == {"train ± 1 SE", "test ± 1 SE"}
    bands = [c for c in align.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for band in bands:
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.max() - ys.min() > 0
    assert panel(fig, "parameter movement").get_yscale() == "log"
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.get_suptitle().startswith("regime at step ")


def test_meter_plot_regime_title_and_background_follow_the_regime_read_out():
    meter = regression_run()
    last = classify(meter.history[-1], meter.regime_thresholds)
    fig = meter.plot()
    assert f": {last} (" in fig.get_suptitle()
    spans = [p for p in panel(fig, "loss").patches]
    assert len(spans) == sum(1 for r in meter.history if r["step"] > 0)
    # Thresholds that make every measurement rich repaint the whole background.
    rich = RegimeThresholds(rich_movement=0.0)
    fig = meter.plot(thresholds=rich)
    assert ": rich (" in fig.get_suptitle()
    colors = {tuple(p.get_facecolor()[:3]) for p in panel(fig, "loss").patches}
    assert colors == {matplotlib.colors.to_rgb("#c44e52")}


def test_meter_plot_before_any_measurement_says_so():
    torch.manual_seed(0)
    meter = lm.LazyMeter(
        nn.Linear(D, 1).double(), probe=(torch.randn(5, D).double(), torch.randn(5))
    )
    fig = meter.plot()
    assert fig.axes == [] and "no measurement" in fig.texts[0].get_text()


def test_figure_renders_to_png():
    from lazymeter.live import render_png

    png = render_png(regression_run(steps=4).plot(), dpi=40)
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


# ---------------------------------------------------------------------------- plot_run
def test_plot_run_of_a_run_directory_matches_the_meter_and_uses_its_step_label(tmp_path):
    meter = regression_run(log_dir=tmp_path)
    expect = curves(panel(meter.plot(), "loss"))
    meter.close()
    fig = plot_run(tmp_path)
    assert [ax.get_title() for ax in fig.axes] == PANELS
    assert curves(panel(fig, "loss")) == expect
    assert plot_run(os.path.join(tmp_path, "history.jsonl")).axes[0].get_xlabel() == "step"
    # The run's own step unit, when its meta.json names one, labels the x axis.
    meta_path = os.path.join(tmp_path, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(meta_path, "w") as f:
        json.dump({**meta, "step_label": "epochs (lr-equivalent)"}, f)
    fig = plot_run(tmp_path)
    assert {ax.get_xlabel() for ax in fig.axes} == {"epochs (lr-equivalent)"}
    assert "epochs (lr-equivalent)" in fig.get_suptitle()
    assert plot_run(tmp_path, step_label="epoch").axes[0].get_xlabel() == "epoch"


def test_plot_run_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no history.jsonl"):
        plot_run(tmp_path)
    with pytest.raises(TypeError, match="sequence of rows"):
        plot_run({"step": 1, "train_loss": 1.0})


def test_plot_run_leaves_out_panels_without_data_and_step_zero():
    fig = plot_run([{"step": 0, "train_loss": 5.0}, *rows(4, param_movement=0.1)])
    assert [ax.get_title() for ax in fig.axes] == ["loss", "parameter movement"]
    assert curves(panel(fig, "loss"))["train"] == 4  # step 0 is off a log-x axis


# ---------------------------------------------------------------------------- CE vs MSE
def test_mse_baseline_shares_the_axes_of_an_mse_loss_only():
    regression = rows(k0_test_mse=0.3)
    assert levels(panel(plot_run(regression), "loss")) == [0.3]  # regression: MSE
    ce = panel(plot_run(regression, loss="cross_entropy"), "loss")
    assert levels(ce) == [] and ce.get_ylabel() == "cross-entropy"
    assert "0.3" in ce.texts[0].get_text() and "not drawn" in ce.texts[0].get_text()
    # Class labels (the baseline has an accuracy): the loss is not assumed to be an MSE.
    classes = rows(k0_test_mse=0.3, k0_test_acc=0.7, test_acc=0.8)
    fig = plot_run(classes)
    assert levels(panel(fig, "loss")) == [] and panel(fig, "loss").get_ylabel() == "loss"
    assert "one-hot" in panel(fig, "loss").texts[0].get_text()
    assert levels(panel(fig, "accuracy")) == [0.7]
    assert levels(panel(plot_run(classes, loss="mse"), "loss")) == [0.3]
    assert levels(panel(plot_run(classes, meta={"loss": "mse"}), "loss")) == [0.3]


def test_a_cross_entropy_run_keeps_its_mse_baseline_off_the_loss_axes():
    meter = classification_run()
    assert {"k0_test_mse", "k0_test_acc"} <= set(meter.baseline)
    fig = meter.plot()
    loss = panel(fig, "loss")
    assert levels(loss) == [] and curves(loss) == {"train": 6, "test": 6}  # steps 1..6
    assert f"{meter.baseline['k0_test_mse']:.3g}" in loss.texts[0].get_text()
    acc = panel(fig, "accuracy")
    assert levels(acc) == [pytest.approx(meter.baseline["k0_test_acc"])]
    assert meter.plot(loss="cross_entropy").axes[0].get_ylabel() == "cross-entropy"


# ---------------------------------------------------------------------------- live
class FakeDisplay:
    """IPython's ``display(obj, display_id=True)`` and its handle's ``update(obj)``."""

    def __init__(self) -> None:
        self.shown: list[object] = []
        self.updates: list[object] = []

    def __call__(self, obj, display_id=False):
        assert display_id is True
        self.shown.append(obj)
        return self

    def update(self, obj) -> None:
        self.updates.append(obj)


def tiny_figure() -> Figure:
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def test_live_view_displays_once_then_updates_every_kth_measurement():
    fake = FakeDisplay()
    view = LiveView(tiny_figure, every=2, display=fake, dpi=20)
    view.refresh()
    for step in range(5):
        view.write_row({"step": step, "train_loss": 1.0}, step)
    assert len(fake.shown) == 1 and len(fake.updates) == 2 and len(view.rows) == 5
    assert fake.updates[-1]._repr_png_().startswith(b"\x89PNG")
    view.close()
    view.write_row({"step": 5, "train_loss": 1.0}, 5)
    view.write_row({"step": 6, "train_loss": 1.0}, 6)
    assert len(fake.updates) == 2
    with pytest.raises(ValueError, match="every"):
        LiveView(tiny_figure, every=0, display=fake)


@pytest.fixture
def drawn(monkeypatch):
    """Figures "rendered" by the live views: the figure objects (no PNG encoding)."""
    import lazymeter.live as live

    figures = []

    def render(fig, dpi):
        figures.append(fig)
        return b"\x89PNG"

    monkeypatch.setattr(live, "render_png", render)
    return figures


def test_meter_live_shows_now_and_redraws_at_each_measurement_until_closed(drawn):
    meter = regression_run(steps=2, schedule=1)
    fake = FakeDisplay()
    view = meter.live(display=fake, loss="cross_entropy")
    assert len(fake.shown) == 1 and fake.updates == []  # shown in the cell calling live()
    x = torch.randn(4, D, dtype=torch.float64)
    for _ in range(3):
        meter.step(train_loss=meter(x).pow(2).mean().item())
    assert len(fake.updates) == 3 and view.redraws == 4 and len(meter.history) == 6
    last = drawn[-1]
    assert curves(panel(last, "loss"))["train"] == 5  # rows 1..5 (step 0: off, no loss)
    assert panel(last, "loss").get_ylabel() == "cross-entropy"  # plot_kwargs reach plot()
    # A second view replaces the first; closing it stops the redraws; the meter goes on.
    other = FakeDisplay()
    second = meter.live(display=other, every=2)
    assert view.closed
    meter.step(train_loss=1.0)
    meter.step(train_loss=1.0)
    assert len(fake.updates) == 3 and len(other.updates) == 1
    second.close()
    meter.step(train_loss=1.0)
    assert len(other.updates) == 1 and len(meter.history) == 9


def test_a_live_view_passed_as_a_sink_plots_the_rows_it_receives(drawn):
    fake = FakeDisplay()
    view = LiveView(display=fake, every=3, loss="mse")
    meter = regression_run(steps=6, schedule=1, sinks=[view])
    assert view.rows == meter.history and view.redraws == 2 and len(fake.updates) == 1
    loss = panel(drawn[-1], "loss")
    assert curves(loss)["train"] == 6 - 1  # rows 0..5, step 0 off the log axis
    assert levels(loss) == [pytest.approx(meter.baseline["k0_test_mse"])]
    meter.close()
    assert view.closed


def test_a_live_figure_that_cannot_be_drawn_warns_once_and_training_goes_on():
    def broken() -> Figure:
        raise RuntimeError("no figure today")

    view = LiveView(broken, display=FakeDisplay())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meter = regression_run(steps=3, schedule=1, sinks=[view])
    said = [str(w.message) for w in caught if "live figure" in str(w.message)]
    assert len(said) == 1 and "no figure today" in said[0]
    assert isinstance(view.error, RuntimeError) and len(meter.history) == 4  # 0..3
    assert view.redraws == 0 and view.measurements == 4


def test_live_without_ipython_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    meter = regression_run(steps=1)
    with pytest.raises(ImportError, match="needs IPython.*meter.plot"):
        meter.live()
    with pytest.raises(ImportError, match="needs IPython"):
        LiveView()
    meter.step(train_loss=1.0)
    assert math.isfinite(meter.history[-1]["train_loss"])
