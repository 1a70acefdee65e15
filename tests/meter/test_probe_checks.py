"""Probes checked against the model at construction, before any kernel: a probe the model
cannot take is a ``ValueError`` naming ``probe``/``test_probe``, what it is and what the
model expects (was torch's ``mat1 and mat2 shapes cannot be multiplied`` from deep inside
a kernel); floating ``x`` of another dtype is cast to the model's once, with a note; labels
that do not fit the outputs are refused (were accepted silently)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import lazymeter as lm

P = 24


def mlp(d_in=20, out=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 32), nn.Tanh(), nn.Linear(32, out))


def points(*shape, seed=1, dtype=torch.float32):
    return torch.randn(P, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def squeeze(out):
    return out.squeeze(-1)


# ---------------------------------------------------------------------------- the forward
def test_a_probe_of_the_wrong_width_names_the_probe_its_shape_and_the_models_input_size():
    with pytest.raises(ValueError) as info:
        lm.LazyMeter(mlp(), probe=(points(19), points()), output_fn=squeeze)
    msg = str(info.value)
    assert msg.startswith("probe: the model's forward fails on x of shape (24, 19)")
    assert "last dimension 20" in msg and "in_features=20" in msg and "'0', nn.Linear" in msg
    assert "mat1 and mat2 shapes cannot be multiplied" in msg  # torch's words, kept
    assert isinstance(info.value.__cause__, RuntimeError)  # and its error, chained


def test_a_test_probe_the_model_cannot_take_names_test_probe():
    probe = lm.ProbeSet((points(20), points()), test=(points(21), points()))
    with pytest.raises(ValueError, match=r"^test_probe: .*shape \(24, 21\).*in_features=20"):
        lm.LazyMeter(mlp(), probe=probe, output_fn=squeeze)


def test_a_probe_with_the_wrong_channels_names_the_first_convolutions_in_channels():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = points(1, 8, 8)
    with pytest.raises(ValueError, match=r"^probe: .*\(24, 1, 8, 8\).*\[P, 3, \.\.\., \.\.\.\]"):
        lm.LazyMeter(cnn, probe=(x, points(2)))


def test_token_ids_beyond_the_vocabulary_name_the_embeddings_size():
    torch.manual_seed(0)
    lm_head = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(8 * 5, 3))
    ids = torch.randint(0, 12, (P, 5), generator=torch.Generator().manual_seed(0))
    ids[0, 0] = 11
    with pytest.raises(ValueError, match=r"^probe: .*torch\.int64.*\[0, 10\).*num_embeddings"):
        lm.LazyMeter(lm_head, probe=(ids, points(3)))


def test_a_probe_size_chooser_checks_the_probe_before_its_pilot_kernel():
    spec = lm.ProbeSize(target_se=0.1, pilot=8, max_points=16)
    with pytest.raises(ValueError, match=r"^probe: the model's forward fails .*in_features=20"):
        lm.LazyMeter(mlp(), probe=lm.ProbeSet((points(19), points()), max_points=spec))


# ---------------------------------------------------------------------------- dtypes
def test_a_float64_probe_for_a_float32_model_is_cast_once_with_a_note(caplog):
    x, y = points(20, dtype=torch.float64), points(dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="lazymeter"):
        meter = lm.LazyMeter(mlp(), probe=lm.ProbeSet((x, y), test=(x, y)), output_fn=squeeze)
    notes = [r.getMessage() for r in caplog.records if "cast it once" in r.getMessage()]
    assert len(notes) == 2 and notes[0].startswith("lazymeter: probe: x is torch.float64")
    assert "test_probe" in notes[1]
    assert meter.probe_x.dtype == meter.test_x.dtype == torch.float32
    assert torch.equal(meter.probe_x, x[: meter.probe_x.shape[0]].float())
    assert meter.probe_y.dtype == torch.float64  # labels as given (targets are float64)
    assert meter.measure()["ntk_drift"] == 0.0


def test_a_float32_probe_for_a_float64_model_and_numpy_probes_are_measured():
    x, y = points(20), points()
    meter = lm.LazyMeter(mlp().double(), probe=(x, y), output_fn=squeeze)
    assert meter.probe_x.dtype == torch.float64
    meter = lm.LazyMeter(mlp().double(), probe=(x.numpy(), y.numpy()), output_fn=squeeze)
    assert meter.probe_x.dtype == torch.float64
    assert np.isfinite(meter.measure()["ntk_drift"])


def test_integer_token_ids_are_left_as_they_are(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(8 * 5, 1)).double()
    ids = torch.randint(0, 10, (P, 5), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="lazymeter"):
        meter = lm.LazyMeter(model, probe=(ids, points()), output_fn=squeeze)
    assert meter.probe_x.dtype == torch.int64 and "cast" not in caplog.text


def test_a_half_precision_probe_for_a_float32_model_is_cast():
    meter = lm.LazyMeter(mlp(), probe=(points(20).half(), points()), output_fn=squeeze)
    assert meter.probe_x.dtype == torch.float32


# ---------------------------------------------------------------------------- labels
def test_regression_targets_with_more_values_than_outputs_are_refused_naming_the_labels():
    with pytest.raises(ValueError) as info:
        lm.LazyMeter(mlp(), probe=(points(20), points(3)), output_fn=squeeze)
    assert str(info.value).startswith(
        "probe: the labels y have shape (24, 3), 3 targets per point, but the model has 1 "
        "output per point"
    )
    with pytest.raises(ValueError, match=r"^probe: .*\(24, 2\).*3 outputs per point.*\[P, 3\]"):
        lm.LazyMeter(mlp(out=3), probe=(points(20), points(2)))


def test_test_probe_labels_that_do_not_fit_name_test_probe():
    probe = lm.ProbeSet((points(20), points(2)), test=(points(20), points(3)))
    with pytest.raises(ValueError, match=r"^test_probe: the labels y have shape \(24, 3\)"):
        lm.LazyMeter(mlp(out=2), probe=probe)


def test_class_labels_beyond_the_outputs_are_refused():
    y = torch.arange(P) % 4
    with pytest.raises(ValueError, match=r"^probe: the class labels y go up to 3 \(4 classes\)"):
        lm.LazyMeter(mlp(out=3), probe=(points(20), y))
    with pytest.raises(ValueError, match=r"^probe: the class labels y must be >= 0"):
        lm.LazyMeter(mlp(out=3), probe=(points(20), y - 1))
    with pytest.raises(ValueError, match=r"^probe: integer class labels y must be one per"):
        lm.LazyMeter(mlp(out=3), probe=(points(20), torch.stack([y % 3, y % 2], 1)))


@pytest.mark.parametrize(
    "out, y, fn",
    [
        (1, points(), squeeze),  # [P] targets, one output
        (1, points(1), None),  # [P, 1] targets, [P, 1] output
        (1, points(1), squeeze),  # [P, 1] targets, [P] output
        (1, points(), None),  # [P] targets, [P, 1] output
        (3, points(3), None),  # [P, C] targets, C outputs
        (3, points(1), None),  # one target per point for every output (the loss broadcasts)
        (3, torch.arange(P) % 3, None),  # classes, one output per class
        (1, torch.arange(P) % 2, squeeze),  # two classes, one logit
        (1, (torch.arange(P) % 2).bool(), None),  # bool labels, one logit
    ],
)
def test_labels_that_fit_the_outputs_are_measured(out, y, fn):
    meter = lm.LazyMeter(mlp(out=out), probe=(points(20), y), output_fn=fn)
    assert np.isfinite(meter.measure()["alignment_train"])
