"""MNIST (or scikit-learn's 8x8 digits offline): the paper's alpha sweep on a large initialisation.

The paper's MNIST experiment (Kumar et al., after Omnigrok, Liu et al. 2022): a bias-free ReLU
MLP ``784-200-200-200-10`` in the NTK parametrisation (each hidden layer
``h = relu(W h_prev / sqrt(fan_in))``, readout ``f = W_out h / width``) with a very large
initialisation (every weight ``init_scale * sqrt(2 / fan_in) * N(0, 1)``, ``init_scale =
150``), its output multiplied by an *uncentred* ``alpha`` (``f = alpha * net(x)``, no
``- f0``), trained on the MSE to one-hot labels by AdamW at one fixed lr for every alpha
(``meter.scaled_lr(lr, "none")``), weight decay 0.01, batch 200 of 1000 training images.
The bias-free net is 4-homogeneous in its weights, so ``alpha * net(x; theta) =
net(x; alpha^(1/4) theta)``: the alpha sweep is an initialisation-scale sweep, and under Adam
(steps of about ``lr`` per weight whatever the gradient's scale) a larger alpha means larger
weights to move at the same lr: lazier.

Each run is wrapped in :class:`lazymeter.LazyMeter` (``alpha``, ``center=False``), which
logs the curves and the lazy/rich diagnostics and computes the lazy baseline: kernel
regression with the initial NTK ``K0`` of the residual ``y - f0``, plus ``f0``
(``k0_test_acc``/``k0_test_mse``).

Data: the standard IDX files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) in
``data_dir`` or torchvision's ``data_dir/MNIST/raw/``; when they are absent, scikit-learn's
bundled 8x8 digits (1797 images: 1000 train, 797 test; 64 inputs, so the net's input width
is 64), and the summary says so.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import lazymeter as lm

from .harness import Setup, Task, option, run
from .results import delay_grows, first_step_at_or_above, ran_for, series

# ---------------------------------------------------------------------------------------- IDX

#: IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions [N, rows, cols]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension [N]

#: The four MNIST files, by role.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike[str], magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed when the name ends in ``.gz``).

    Format: a big-endian 32-bit magic number ``0x0000TTDD`` (``TT`` the element type,
    ``0x08`` = unsigned byte ... ``0x0E`` = float64; ``DD`` the number of dimensions), then
    ``DD`` big-endian 32-bit sizes, then the elements in C order, big-endian.

    Args:
        path: the file.
        magic: the exact magic number required (e.g. :data:`IDX_IMAGES_MAGIC`), or None to
            accept any valid IDX type.

    Returns:
        An array of the stored shape, in native byte order.

    Raises:
        ValueError: naming the file, for a wrong magic number, a truncated or oversized file,
            or a ``.gz`` file that is not gzip data.
    """
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot be read as a gzip-compressed IDX file ({e})") from e
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = struct.unpack(">I", data[:4])[0]
    want = "" if magic is None else f"; expected {magic:#010x}"
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path}: bad IDX magic number {found:#010x}{want} (not an IDX file?)")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: IDX magic number {found:#010x}{want}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(IDX_DTYPES[data[2]])
    size = math.prod(shape) * dtype.itemsize
    if len(data) - header != size:
        raise ValueError(
            f"{path}: the header declares shape {shape} ({size} bytes of data) but the file "
            f"holds {len(data) - header} bytes after the header"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in codes:
        raise TypeError(f"array: dtype {array.dtype} has no IDX type code")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array: IDX holds 1 to 255 dimensions, got {array.ndim}")
    blob = struct.pack(">BBBB", 0, 0, codes[native], array.ndim)
    blob += struct.pack(f">{array.ndim}I", *array.shape)
    blob += np.ascontiguousarray(array, dtype=np.dtype(IDX_DTYPES[codes[native]])).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(blob)


def find_mnist(data_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """Paths of the four MNIST IDX files under ``data_dir`` or ``data_dir/MNIST/raw``
    (torchvision's layout), plain or ``.gz``; None unless all four are in one directory."""
    for d in (os.fspath(data_dir), os.path.join(os.fspath(data_dir), "MNIST", "raw")):
        found = {}
        for role, name in MNIST_FILES.items():
            for candidate in (name, name + ".gz"):
                p = os.path.join(d, candidate)
                if os.path.isfile(p):
                    found[role] = p
                    break
        if len(found) == len(MNIST_FILES):
            return found
    return None


def load_mnist(data_dir: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The MNIST arrays (``train_images [60000, 28, 28]`` uint8, ``train_labels [60000]``,
    ``test_images``, ``test_labels``) from the IDX files, or None when they are not there."""
    paths = find_mnist(data_dir)
    if paths is None:
        return None
    out = {}
    for role, p in paths.items():
        out[role] = read_idx(p, IDX_IMAGES_MAGIC if role.endswith("images") else IDX_LABELS_MAGIC)
    for split in ("train", "test"):
        n_img, n_lab = len(out[f"{split}_images"]), len(out[f"{split}_labels"])
        if n_img != n_lab:
            raise ValueError(
                f"{paths[f'{split}_images']}: {n_img} images but {paths[f'{split}_labels']} "
                f"has {n_lab} labels"
            )
    return out


@dataclass
class ImageData:
    """Flattened images in [0, 1] and integer labels, on one device."""

    x: Tensor  # [P, D]
    y: Tensor  # [P] int64
    x_test: Tensor  # [Q, D]
    y_test: Tensor  # [Q]
    dataset: str  # "mnist" or "sklearn-digits (MNIST not found in ...)"
    n_classes: int = 10


def load_data(
    data_dir: str | os.PathLike[str] | None,
    n_train: int = 1000,
    n_test: int | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> ImageData:
    """``n_train`` training images (a seeded random subset) and ``n_test`` test images.

    MNIST from its IDX files when :func:`find_mnist` finds them (pixels / 255, 784 inputs;
    ``n_test=None``: all 10000 test images); otherwise scikit-learn's 8x8 digits (pixels / 16,
    64 inputs; 1797 images shuffled with ``seed``, the first ``n_train`` train, the rest (or
    ``n_test`` of them) test), with ``dataset`` saying why.
    """
    g = np.random.default_rng(seed)
    arrays = None if data_dir is None else load_mnist(data_dir)
    if arrays is not None:
        tr = g.choice(len(arrays["train_images"]), size=n_train, replace=False)
        n_q = len(arrays["test_images"]) if n_test is None else n_test
        te = np.sort(g.choice(len(arrays["test_images"]), size=n_q, replace=False))
        x = arrays["train_images"][tr].reshape(n_train, -1) / 255.0
        xt = arrays["test_images"][te].reshape(n_q, -1) / 255.0
        y, yt = arrays["train_labels"][tr], arrays["test_labels"][te]
        dataset = "mnist"
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover - scikit-learn is in the dev environment
            raise ImportError(
                f"data_dir: MNIST not found in {data_dir} and scikit-learn (for the digits "
                "fallback) is not installed; pip install scikit-learn, or pass --data-dir with "
                "the four MNIST IDX files"
            ) from e
        digits = load_digits()
        perm = g.permutation(len(digits.target))
        if n_train >= len(perm):
            raise ValueError(f"n_train: digits has {len(perm)} images; pick fewer than that")
        rest = perm[n_train:] if n_test is None else perm[n_train : n_train + n_test]
        x, xt = digits.data[perm[:n_train]] / 16.0, digits.data[rest] / 16.0
        y, yt = digits.target[perm[:n_train]], digits.target[rest]
        dataset = f"sklearn-digits (MNIST not found in {data_dir})"

    def f(a: np.ndarray) -> Tensor:
        return torch.tensor(a, dtype=torch.float32, device=device)

    def i(a: np.ndarray) -> Tensor:
        return torch.tensor(np.asarray(a, dtype=np.int64), device=device)

    return ImageData(f(x), i(y), f(xt), i(yt), dataset)


# -------------------------------------------------------------------------------------- model


def make_mlp(
    d_in: int,
    width: int = 200,
    depth: int = 2,
    n_classes: int = 10,
    *,
    init_scale: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> nn.Sequential:
    """``depth`` ReLU hidden layers of ``width`` and a linear readout (Omnigrok: depth=2, i.e.
    three linear layers). PyTorch's default init, then every parameter (weights and biases)
    multiplied by ``init_scale``, as Omnigrok does; the init does not touch the global RNG."""
    layers: list[nn.Module] = []
    d = d_in
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, n_classes))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(init_scale)
    return net.to(device)


class PaperMLP(nn.Module):
    """The paper's bias-free ReLU MLP in the NTK parametrisation; output ``[B, n_classes]``.

    ``h_1 = relu(W_1 x / sqrt(d_in))``, ``h_l = relu(W_l h_(l-1) / sqrt(width))`` for
    ``l = 2..depth``, ``f = W_out h_depth / width``; every weight drawn
    ``init_scale * sqrt(2 / fan_in) * N(0, 1)`` (Kaiming's variance times ``init_scale^2``).
    With ``init_scale = 150`` the initial output is in the hundreds (MNIST) to thousands
    (digits) against one-hot targets. Weights are plain ``nn.Linear(bias=False)`` layers, so
    per-layer NTK rules apply; the init does not touch the global RNG.
    """

    def __init__(
        self,
        d_in: int,
        width: int = 200,
        depth: int = 3,
        n_classes: int = 10,
        *,
        init_scale: float = 150.0,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: at least one hidden layer, got {depth}")
        dims = [d_in] + [width] * depth
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws globally
            self.hidden = nn.ModuleList(
                nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:], strict=True)
            )
            self.readout = nn.Linear(width, n_classes, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in [*self.hidden, self.readout]:
                std = init_scale * math.sqrt(2.0 / layer.in_features)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
        self.to(device)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.hidden:
            h = torch.relu(layer(h) / math.sqrt(layer.in_features))
        return self.readout(h) / self.readout.in_features


# ------------------------------------------------------------------------------------- config

#: The CPU default (see :class:`MnistConfig`).
DEFAULT_ALPHAS = (1e-3, 0.1, 0.2, 0.5)
DEFAULT_INIT = 50.0
DEFAULT_WIDTH = 128
DEFAULT_LR = 3e-2
DEFAULT_STEPS = 4000
#: The smoke preset: a seconds-long sweep.
SMOKE: dict = dict(
    alphas=(1e-3, 0.05, 0.5),
    init_scale=20.0,
    width=32,
    lr=0.1,
    steps=200,
    n_train=200,
    n_test=200,
    max_probe=16,
    max_baseline=200,
)

#: The paper's alphas (its MNIST figure).
PAPER_ALPHAS = (1e-3, 0.01, 0.05, 0.5)


@dataclass
class MnistConfig:
    """The MNIST alpha sweep (one run per alpha). Defaults: the paper's mechanism on the
    digits on a CPU budget; :meth:`paper`: the authors' protocol.

    The paper (MNIST, 784 inputs): init scale 150, width 200, 3 hidden layers, AdamW lr 1e-3,
    weight decay 0.01, batch 200 of 1000 images, 250k steps, alpha in {1e-3, 0.01, 0.05, 0.5}.
    The CPU default keeps the uncentred alpha, the large Kaiming-times-``init_scale``
    initialisation, AdamW at one lr for every alpha, weight decay 0.01 and batch 200 of 1000
    images, and shrinks the budget to under a minute on the digits: width 128 (the net's
    input width is the data's, 64; at width 32, 4.4k weights against 10000 one-hot targets,
    alphas 0.05 and 0.5 did not fit in 4000 steps), ``init_scale`` 50 (at width 128 the
    initial output is rms 0.035, 3.5, 6.9 and 17 at alphas 1e-3, 0.1, 0.2 and 0.5 on the
    digits, seed 0, against one-hot targets), lr 3e-2 (30x: Adam moves each weight about lr
    per step, so the same path takes fewer steps; the decoupled decay per step,
    lr * weight_decay, grows alike) and 4000 steps. The alphas keep the paper's ends, 1e-3 and
    0.5, and replace its 0.01 and 0.05 by 0.1 and 0.2: on the digits at this width the small
    alphas fit train and test together, and the train-before-test delay, growing with alpha,
    shows from 0.1 on.
    """

    alphas: tuple[float, ...] = option(DEFAULT_ALPHAS, "uncentred output scales, one run each")
    init_scale: float = option(
        DEFAULT_INIT, "initialisation: every weight is init_scale * sqrt(2 / fan_in) * N(0, 1)"
    )
    width: int = option(DEFAULT_WIDTH, "hidden width")
    depth: int = option(3, "hidden layers")
    lr: float = option(DEFAULT_LR, "AdamW learning rate (before lr_rule)")
    lr_rule: str = option(
        "none",
        "meter.scaled_lr rule: none (the paper: one lr for every alpha) or adam (lr / alpha)",
    )
    weight_decay: float = option(0.01, "AdamW's decoupled weight decay")
    batch_size: int = option(200, "minibatch size, a seeded reshuffle per epoch (>= n_train: full)")
    steps: int = option(DEFAULT_STEPS, "optimiser steps")
    n_train: int = option(1000, "training images (a seeded subset)")
    n_test: int | None = option(
        None, "test images (None: all of MNIST's 10000, or the 797 digits left after training)"
    )
    data_dir: str | None = option(
        "data", "folder with the MNIST IDX files (absent: scikit-learn's 8x8 digits)"
    )
    center: bool = option(False, "centre the output, alpha (f - f0); the paper's runs do not")
    acc_threshold: float | None = option(
        None, "accuracy whose first crossing times train and test (None: 0.9 MNIST, 0.8 digits)"
    )
    per_decade: int = option(10, "measurements per decade of steps")
    max_probe: int = option(64, "points of the meter's train/test probes")
    max_baseline: int = option(1000, "training points of the K0 kernel regression")
    seed: int = option(0, "seed of the data subset, the initialisation and the minibatches")
    device: str = option("cpu", "torch device")

    @classmethod
    def paper(cls, **overrides: Any) -> MnistConfig:
        """The authors' protocol: init 150, width 200, AdamW lr 1e-3 at every alpha, weight
        decay 0.01, batch 200 of 1000 images, 2000 test images, 250k steps."""
        base = dict(
            alphas=PAPER_ALPHAS,
            init_scale=150.0,
            width=200,
            lr=1e-3,
            steps=250_000,
            n_test=2000,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> MnistConfig:
        """A seconds-long sweep: alphas 1e-3, 0.05 and 0.5, ``init_scale`` 20, width 32, lr
        0.1, 200 train and 200 test images, 200 steps."""
        return cls(**{**SMOKE, **overrides})


@dataclass
class MnistRunConfig(MnistConfig):
    """One run of the sweep: the same fields, one alpha."""

    alphas: tuple[float, ...] = option((DEFAULT_ALPHAS[-1],), "the run's output scale (one)")

    @classmethod
    def paper(cls, **overrides: Any) -> MnistRunConfig:
        """The authors' protocol at their largest alpha."""
        return super().paper(**{"alphas": (PAPER_ALPHAS[-1],), **overrides})  # type: ignore[return-value]

    @classmethod
    def smoke(cls, **overrides: Any) -> MnistRunConfig:
        return super().smoke(**{"alphas": (SMOKE["alphas"][-1],), **overrides})  # type: ignore[return-value]


def accuracy_threshold(cfg: MnistConfig, data: ImageData) -> float:
    """``cfg.acc_threshold``, or by default 0.9 on MNIST and 0.8 on the lower-resolution
    digits."""
    if cfg.acc_threshold is not None:
        return cfg.acc_threshold
    return 0.9 if data.dataset == "mnist" else 0.8


def batch_indices(seed: int, epoch: int, P: int, device: torch.device | str) -> Tensor:
    """The permutation of the ``P`` training points used in ``epoch`` (seeded by
    ``(seed, epoch)`` alone, so any step's batch can be recomputed)."""
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    return torch.randperm(P, generator=torch.Generator().manual_seed(state)).to(device)


# ------------------------------------------------------------------------------------ one run


def build(cfg: MnistConfig) -> Setup:
    """One alpha: the data, the paper's MLP, AdamW at ``meter.scaled_lr(lr, lr_rule)``, the
    MSE to one-hot labels on minibatches (step ``i`` takes batch ``i mod (P // B)`` of epoch
    ``i // (P // B)``'s seeded permutation) and a measurement of train/test MSE and accuracy on
    the full sets."""
    if len(cfg.alphas) != 1:
        raise ValueError(
            f"alphas: one run trains one alpha, got {len(cfg.alphas)}; the sweep is the task "
            "'mnist'"
        )
    if cfg.lr_rule not in ("none", "adam"):
        raise ValueError(f"lr_rule: expected 'none' or 'adam', got {cfg.lr_rule!r}")
    alpha = float(cfg.alphas[0])
    data = load_data(cfg.data_dir, cfg.n_train, cfg.n_test, seed=cfg.seed, device=cfg.device)
    model = PaperMLP(
        data.x.shape[1],
        cfg.width,
        cfg.depth,
        data.n_classes,
        init_scale=cfg.init_scale,
        seed=cfg.seed,
        device=cfg.device,
    )
    if cfg.center and cfg.weight_decay > 0:
        warnings.warn(
            f"weight_decay: {cfg.weight_decay:g} with a centred run pulls the output towards "
            "the random function -alpha * f(x; theta0); use weight_decay=0 with center=True",
            RuntimeWarning,
            stacklevel=2,
        )
    C = data.n_classes
    onehot = nn.functional.one_hot(data.y, C).to(data.x.dtype)
    onehot_test = nn.functional.one_hot(data.y_test, C).to(data.x.dtype)
    P = data.x.shape[0]
    B = min(cfg.batch_size, P)
    per_epoch = P // B  # a last partial batch is dropped, as a fixed batch size needs
    current: dict[str, Any] = {"epoch": -1}

    def mse(out: Tensor, target: Tensor) -> Tensor:
        return ((out - target) ** 2).mean()

    def acc(out: Tensor, y: Tensor) -> float:
        return (out.argmax(1) == y).double().mean().item()

    def loss(meter: Any, i: int) -> Tensor:
        if B == P:
            return mse(meter(data.x), onehot)
        epoch, j = divmod(i, per_epoch)
        if current["epoch"] != epoch:
            current.update(epoch=epoch, perm=batch_indices(cfg.seed, epoch, P, data.x.device))
        idx = current["perm"][j * B : (j + 1) * B]
        return mse(meter(data.x[idx]), onehot[idx])

    def measure(meter: Any) -> dict[str, float]:
        out, out_test = meter(data.x), meter(data.x_test)
        return {
            "train_loss": mse(out, onehot).item(),
            "test_loss": mse(out_test, onehot_test).item(),
            "train_acc": acc(out, data.y),
            "test_acc": acc(out_test, data.y_test),
        }

    def optimizer(meter: Any) -> torch.optim.Optimizer:
        lr = meter.scaled_lr(cfg.lr, cfg.lr_rule)
        return torch.optim.AdamW(meter.parameters(), lr=lr, weight_decay=cfg.weight_decay)

    with torch.no_grad():
        out0 = alpha * model(data.x)
    return Setup(
        model=model,
        meter=dict(
            alpha=alpha,
            center=cfg.center,
            probe=lm.ProbeSet(
                (data.x, data.y), test=(data.x_test, data.y_test), max_points=cfg.max_probe
            ),
            schedule=f"log:{cfg.per_decade}",
            quantities=lm.quantities.default(max_baseline=cfg.max_baseline),
        ),
        steps=cfg.steps,
        loss=loss,
        measure=measure,
        optimizer=optimizer,
        hparams=dict(
            alpha=alpha,
            init_scale=cfg.init_scale,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            batch_size=B,
            width=cfg.width,
            depth=cfg.depth,
            seed=cfg.seed,
        ),
        desc=f"alpha={alpha:g}",
        data=dict(
            dataset=data.dataset,
            n_train=P,
            n_test=int(data.x_test.shape[0]),
            input_dim=int(data.x.shape[1]),
            acc_threshold=accuracy_threshold(cfg, data),
            batch_size=B,
            initial_output_rms=float(out0.pow(2).mean().sqrt()),
        ),
    )


def summarize(cfg: MnistConfig, meter: Any, setup: Setup) -> dict[str, Any]:
    """The run's numbers: the steps where train and test accuracy first reach
    ``acc_threshold`` (on the log-spaced measurement grid) and their difference and ratio,
    the largest train-minus-test accuracy gap, the ``K0`` baseline, final accuracies and
    losses, weight norm and parameter movement."""
    hist = meter.history
    rows = [r for r in hist if "train_acc" in r]
    steps = [r["step"] for r in rows]
    thr = setup.data["acc_threshold"]
    train_step = first_step_at_or_above(steps, [r["train_acc"] for r in rows], thr)
    test_step = first_step_at_or_above(steps, [r["test_acc"] for r in rows], thr)
    at_train = [r["test_acc"] for r in rows if r["step"] == train_step]
    last = rows[-1]
    return {
        **setup.data,
        "alpha": float(cfg.alphas[0]),
        "lr": meter.scaled_lr(cfg.lr, cfg.lr_rule),
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "train_acc_step": train_step,
        "test_acc_step": test_step,
        "acc_delay": test_step - train_step,
        "acc_delay_ratio": test_step / train_step if train_step > 0 else math.nan,
        "test_acc_when_train_crossed": at_train[0] if at_train else math.nan,
        "max_acc_gap": max(r["train_acc"] - r["test_acc"] for r in rows),
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "initial_weight_norm": rows[0].get("weight_norm"),
        "final_weight_norm": last.get("weight_norm"),
        "final_param_movement": last.get("param_movement"),
    }


def run_headline(summary: Mapping[str, Any]) -> str:
    """One line: the crossings, the gap, the K0 baseline, the final accuracies."""
    s, thr = summary, summary["acc_threshold"]

    def fmt(v: Any, spec: str = "g") -> str:
        return "never" if v is None or not math.isfinite(v) else format(v, spec)

    return (
        f"alpha {s['alpha']:g} (initial output rms {s['initial_output_rms']:.3g}): train acc >= "
        f"{thr:g} at step {fmt(s['train_acc_step'])}, test at {fmt(s['test_acc_step'])} "
        f"(test {fmt(s['test_acc_when_train_crossed'], '.3f')} when train crossed; largest "
        f"gap {s['max_acc_gap']:.3f}; K0 regression {fmt(s['k0_test_acc'], '.3f')}); final "
        f"train {s['final_train_acc']:.3f}, test {s['final_test_acc']:.3f}"
    )


# ---------------------------------------------------------------------------------- the sweep


def runs(cfg: MnistConfig) -> list[tuple[str, Task, MnistRunConfig]]:
    """One sub-run per alpha, named ``alpha<value>``, in the given order."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(MnistConfig)}
    return [
        (f"alpha{float(a):g}", RUN, MnistRunConfig(**{**fields, "alphas": (float(a),)}))
        for a in cfg.alphas
    ]


def combine(cfg: MnistConfig, subs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep's table (per alpha, in increasing alpha) and the claim's two parts, as
    :func:`~paper.results.delay_grows` reads them (a run that never fits its training set,
    or fits and never generalises, is no late grokker: the part fails, and ``*_why`` says
    which run): ``test_step_grows_with_alpha``, the step where test accuracy first reaches the
    threshold grows with alpha; ``delay_grows_with_alpha``, the test-minus-train delay does."""
    ordered = sorted(subs, key=lambda s: s["alpha"])
    first = ordered[0]
    keys = (
        "alpha",
        "initial_output_rms",
        "train_acc_step",
        "test_acc_step",
        "acc_delay",
        "max_acc_gap",
        "k0_test_acc",
        "final_train_acc",
        "final_test_acc",
    )
    args = (
        [f"alpha={s['alpha']:g}" for s in ordered],
        [s["train_acc_step"] for s in ordered],
        [s["test_acc_step"] for s in ordered],
        [ran_for(s) for s in ordered],
    )
    later, later_why = delay_grows(*args, of_test=True)
    grows, grows_why = delay_grows(*args)
    return {
        **{k: first[k] for k in ("dataset", "n_train", "n_test", "input_dim", "acc_threshold")},
        "by_alpha": {k: [s[k] for s in ordered] for k in keys},
        "test_step_grows_with_alpha": later,
        "test_step_grows_why": later_why,
        "delay_grows_with_alpha": grows,
        "delay_grows_why": grows_why,
    }


def headline(summary: Mapping[str, Any]) -> str:
    """The dataset, one line per alpha and whether each part of the claim holds (and why
    not)."""
    subs = summary.get("runs") or [summary]
    lines = [
        f"dataset: {subs[0]['dataset']} ({subs[0]['n_train']} train, {subs[0]['n_test']} test)"
    ]
    lines += [run_headline(s) for s in sorted(subs, key=lambda s: s["alpha"])]
    if "delay_grows_with_alpha" in summary:
        for said, key in (
            ("test crossing later with larger alpha", "test_step_grows"),
            ("test-minus-train delay grows with alpha", "delay_grows"),
        ):
            ok = summary[f"{key}_with_alpha"]
            why = summary.get(f"{key}_why") or ""
            lines.append(f"{said}: {'yes' if ok else 'no'}" + (f" ({why})" if why else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- figure


def plot(cfg: MnistConfig, summary: Mapping[str, Any], path: str) -> None:
    """Per alpha (one colour each): accuracy (train dashed, test solid, the ``K0`` regression's
    test accuracy dotted), MSE (train dashed, test solid) and the lazy/rich diagnostics
    (weight norm relative to init solid, parameter movement dashed, CKA of the NTK to ``K0``
    dash-dot), against steps on a log axis."""
    from matplotlib.figure import Figure

    subs = sorted(summary.get("runs") or [summary], key=lambda s: s["alpha"])
    fig = Figure(figsize=(16, 4.6))
    ax_acc, ax_loss, ax_diag = fig.subplots(1, 3)
    thr = subs[0]["acc_threshold"]
    for i, s in enumerate(subs):
        c, hist = f"C{i}", s["history"]
        for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
            ax.plot(*series(hist, f"train_{key}"), color=c, ls="--", lw=1.2)
            ax.plot(*series(hist, f"test_{key}"), color=c, lw=2, label=f"alpha {s['alpha']:g}")
        k0 = s.get("k0_test_acc")
        if k0 is not None and math.isfinite(k0):
            ax_acc.axhline(k0, color=c, ls=":", lw=1.2)
        w0 = s.get("initial_weight_norm") or 1.0
        xs, ys = series(hist, "weight_norm")
        ax_diag.plot(xs, [y / w0 for y in ys], color=c, lw=2)
        ax_diag.plot(*series(hist, "param_movement"), color=c, ls="--", lw=1.2)
        ax_diag.plot(*series(hist, "ntk_cka"), color=c, ls="-.", lw=1.2)
    ax_acc.axhline(thr, color="gray", lw=0.8)
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(
        f"{subs[0]['dataset'].split(' (')[0]}, {subs[0]['n_train']} train, init scale "
        f"{cfg.init_scale:g}, uncentred alpha\ntest solid, train dashed, K0 regression dotted",
        fontsize=9,
    )
    ax_acc.legend(fontsize=8, loc="upper left")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("MSE")
    ax_loss.set_title("loss (test solid, train dashed)", fontsize=9)
    ax_diag.set_yscale("log")
    ax_diag.set_title(
        "||theta|| / ||theta0|| (solid), ||theta - theta0|| / ||theta0|| (dashed),\n"
        "CKA(K, K0) (dash-dot)",
        fontsize=9,
    )
    for ax in (ax_acc, ax_loss, ax_diag):
        ax.set_xscale("log")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


RUN = Task(
    name="mnist_run",
    description="one alpha of the MNIST sweep: uncentred alpha, init x150 MLP, AdamW fixed lr",
    config=MnistRunConfig,
    build=build,
    summarize=summarize,
    plot=plot,
    headline=headline,
)

TASK = Task(
    name="mnist",
    description="MNIST (digits offline): the alpha sweep on a large init orders the delays",
    config=MnistConfig,
    runs=runs,
    combine=combine,
    plot=plot,
    headline=headline,
)


def train(
    cfg: MnistConfig, out_dir: str | None = None, *, progress: bool = True, figure: bool = True
) -> dict[str, Any]:
    """:func:`paper.harness.run` of the sweep (or of one run, for a
    :class:`MnistRunConfig`): the summary, with each run's ``history`` under ``runs``."""
    task = RUN if isinstance(cfg, MnistRunConfig) else TASK
    return run(task, cfg, out_dir, progress=progress, figure=figure)
