"""The MNIST experiment: IDX reading, the digits fallback, and the example end to end."""

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from example_scripts import load_example

import lazymeter as lm
from lazymeter.tasks import mnist as M
from lazymeter.tasks.results import first_step_at_or_above


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file written by hand from the format's definition (independent of write_idx)."""
    head = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_fake_mnist(root: Path, n_train: int, n_test: int, gz: bool) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for role, arr in arrays.items():
        name = M.MNIST_FILES[role]
        if gz:
            with gzip.open(root / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(arr))
        else:
            (root / name).write_bytes(idx_bytes(arr))
    return arrays


def test_read_idx_images_and_labels_plain_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 2], dtype=np.uint8)
    (tmp_path / "img").write_bytes(idx_bytes(images))
    with gzip.open(tmp_path / "lab.gz", "wb") as f:
        f.write(idx_bytes(labels))
    # The magic numbers MNIST uses: 0x00000803 (ubyte, 3-D), 0x00000801 (ubyte, 1-D).
    assert (tmp_path / "img").read_bytes()[:4] == b"\x00\x00\x08\x03"
    got = M.read_idx(tmp_path / "img", M.IDX_IMAGES_MAGIC)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(M.read_idx(tmp_path / "lab.gz", M.IDX_LABELS_MAGIC), labels)


def test_read_idx_big_endian_multibyte_types(tmp_path):
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    floats = np.array([1.5, -0.25, 3e8], dtype=np.float64)
    (tmp_path / "i").write_bytes(idx_bytes(ints, 0x0C))
    (tmp_path / "f").write_bytes(idx_bytes(floats, 0x0E))
    assert (tmp_path / "i").read_bytes()[12:16] == b"\x00\x00\x00\x01"  # big-endian 1
    np.testing.assert_array_equal(M.read_idx(tmp_path / "i"), ints)
    np.testing.assert_array_equal(M.read_idx(tmp_path / "f"), floats)


def test_write_idx_round_trips(tmp_path):
    arr = np.arange(12, dtype=np.int16).reshape(3, 4) - 5
    M.write_idx(tmp_path / "a.gz", arr)
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == idx_bytes(arr, 0x0B)
    np.testing.assert_array_equal(M.read_idx(tmp_path / "a.gz"), arr)


def test_read_idx_wrong_magic_raises_naming_the_file(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*0x00000801.*0x00000803"):
        M.read_idx(path, M.IDX_IMAGES_MAGIC)  # a label file where images are expected
    bad = tmp_path / "not-idx"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))  # gzip's magic, uncompressed name
    with pytest.raises(ValueError, match=r"not-idx: bad IDX magic number 0x1f8b0800"):
        M.read_idx(bad)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match="plain.gz"):
        M.read_idx(notgz)


def test_read_idx_size_mismatch_raises(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.zeros((4, 2, 2), dtype=np.uint8))[:-3])
    with pytest.raises(ValueError, match=r"short: the header declares shape \(4, 2, 2\)"):
        M.read_idx(path)


@pytest.mark.parametrize("layout, gz", [("flat", False), ("torchvision", True)])
def test_load_data_reads_mnist_in_both_layouts(tmp_path, layout, gz):
    root = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_fake_mnist(root, n_train=50, n_test=30, gz=gz)
    data = M.load_data(tmp_path, n_train=20, n_test=10, seed=3)
    assert data.dataset == "mnist"
    assert data.x.shape == (20, 784) and data.x_test.shape == (10, 784)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    # Each drawn training image is one of the file's images (scaled to [0, 1]) with its label.
    flat = arrays["train_images"].reshape(50, -1) / 255.0
    for xi, yi in zip(data.x.numpy(), data.y.numpy(), strict=True):
        j = np.nonzero(np.all(np.isclose(flat, xi, atol=1e-6), axis=1))[0]
        assert len(j) == 1 and arrays["train_labels"][j[0]] == yi


def test_load_data_falls_back_to_digits_and_says_so(tmp_path):
    data = M.load_data(tmp_path / "nowhere", n_train=1000, seed=0)
    assert data.dataset == f"sklearn-digits (MNIST not found in {tmp_path / 'nowhere'})"
    assert data.x.shape == (1000, 64) and data.x_test.shape == (797, 64)
    assert float(data.x.max()) <= 1.0 and set(data.y.tolist()) == set(range(10))


def test_load_data_rejects_mismatched_counts(tmp_path):
    write_fake_mnist(tmp_path, n_train=20, n_test=10, gz=False)
    (tmp_path / M.MNIST_FILES["test_labels"]).write_bytes(idx_bytes(np.zeros(9, np.uint8)))
    with pytest.raises(ValueError, match="10 images but .*t10k-labels-idx1-ubyte has 9 labels"):
        M.load_data(tmp_path, n_train=5)


def test_mlp_init_scale_multiplies_every_parameter():
    base = M.make_mlp(64, 16, 2, init_scale=1.0, seed=1)
    big = M.make_mlp(64, 16, 2, init_scale=8.0, seed=1)
    for p, q in zip(base.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(q, 8.0 * p)
    assert sum(isinstance(m, torch.nn.Linear) for m in base) == 3


def test_runs_and_crossings():
    cfg = M.MnistConfig(alphas=(1.0, 10.0), init_scales=(1.0, 8.0))
    names = [r["name"] for r in cfg.run_list()]
    assert names == ["alpha1_init1", "alpha10_init1", "alpha1_init8", "alpha10_init8"]
    centred = M.MnistConfig(init_scales=(2.0,), center=True).run_list()
    assert [r["name"] for r in centred] == ["alpha1_init2_centred"]
    assert first_step_at_or_above([0, 5, 10], [0.1, 0.85, 0.95], 0.8) == 5
    assert np.isnan(first_step_at_or_above([0, 5], [0.1, 0.2], 0.8))


def test_example_smoke_on_digits_writes_runs_summary_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    load_example("mnist").main(
        ["--smoke", "--data-dir", str(tmp_path / "absent"), "--out", str(out), "--no-progress"]
    )
    printed = capsys.readouterr().out
    assert "sklearn-digits (MNIST not found in" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"].startswith("sklearn-digits (MNIST not found in")
    assert summary["acc_threshold"] == 0.8 and summary["input_dim"] == 64
    runs = summary["runs"]
    assert [r["name"] for r in runs] == ["alpha1_init1", "alpha1_init8"]
    for r in runs:
        assert {"train_acc_step", "test_acc_step", "final_train_acc", "final_test_acc"} <= set(r)
        assert 0 <= r["k0_test_acc"] <= 1
        rows = lm.read_jsonl(str(out / r["name"] / "history.jsonl"))
        assert len(rows) > 5
        assert all({"train_acc", "test_acc", "test_loss", "ntk_drift"} <= set(x) for x in rows)
        assert rows[-1]["train_acc"] == r["final_train_acc"]
        assert any(p.name.startswith("events.out.tfevents") for p in (out / r["name"]).iterdir())
    # The init-scale-1 run learns in 60 steps; the large init does not yet, and its lazy
    # baseline (K0 regression of y - f0, plus f0) is spoilt by the large initial function.
    assert runs[0]["final_train_acc"] > 0.8
    assert runs[1]["final_test_acc"] < runs[0]["final_test_acc"]
    assert runs[1]["k0_test_acc"] < runs[0]["k0_test_acc"]
    assert (out / "figure.png").stat().st_size > 10_000


def test_train_on_fake_mnist_with_sgd(tmp_path):
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=100, n_test=40, gz=True)
    cfg = M.MnistConfig(
        data_dir=str(tmp_path),
        n_train=60,
        width=16,
        init_scales=(1.0,),
        alphas=(1.0, 4.0),
        center=True,
        optimizer="sgd",
        lr=None,
        weight_decay=0.0,
        steps=20,
        per_decade=4,
        max_probe=8,
        max_baseline=60,
    )
    s = M.train(cfg, progress=False, figure=False)
    assert s["dataset"] == "mnist" and s["input_dim"] == 784 and s["n_test"] == 40
    assert s["acc_threshold"] == 0.9
    r1, r4 = s["runs"]
    assert r4["lr"] == pytest.approx(r1["lr"] / 16)  # meter.scaled_lr: lr / alpha^2
    for r in s["runs"]:
        losses = [h["train_loss"] for h in r["history"]]
        assert losses[-1] < losses[0]  # half the stability edge: GD descends


def test_centred_run_with_weight_decay_warns():
    cfg = M.MnistConfig(
        data_dir=None,
        n_train=100,
        n_test=50,
        width=8,
        init_scales=(1.0,),
        center=True,
        steps=2,
        per_decade=1,
        max_probe=4,
        max_baseline=20,
    )
    with pytest.warns(RuntimeWarning, match="weight_decay: 0.01 with a centred run"):
        M.train(cfg, progress=False, figure=False)
