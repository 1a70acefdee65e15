"""MNIST (or scikit-learn's 8x8 digits): delayed generalisation after a large-initialisation start.

Setting (the MNIST experiment of Omnigrok, Liu et al. 2022, Fig. 3, on a CPU budget): a
ReLU MLP input-200-200-10 on 1000 training images, MSE on one-hot labels, PyTorch's default init
with every parameter multiplied by an initialisation scale ``s``, full-batch AdamW with weight
decay. Each run is wrapped in :class:`lazymeter.LazyMeter` (output scale ``alpha``, centring
off by default), which sets the learning rate (``meter.scaled_lr``), logs the curves and the
lazy/rich diagnostics, and computes the lazy baseline: kernel regression with the initial NTK
``K0`` (of the residual ``y - f0``, plus ``f0``, when uncentred): ``k0_test_acc``/``k0_test_mse``.

What the default shows (digits, seed 0, ``s`` = 1 vs 8). At ``s = 8`` the initial output is
large (std ~27 against one-hot targets) and the lazy baseline is poor (30% test accuracy):
kernel regression fits the training labels but leaves the random initial function on unseen
images. The run fits the training set first (train accuracy 80% at step ~800, 99% at ~1600)
while its test accuracy trails (45% and 65% at those steps) and reaches 80% only at ~3200 and
96% at 8000, as weight decay shrinks the weights (norm 94 -> 62). At ``s = 1`` both cross 80%
at step 16. LazyMeter's diagnostics say what the ``s = 8`` escape is not: the NTK keeps its
shape (CKA to ``K0`` stays ~0.92, kernel-target alignment stays at its initial 0.52-0.56), so
it is not the NTK aligning with the task (at ``s = 1`` the alignment rises from 0.57 to ~0.8);
the output moves away from the lazy solution's leftover initial function while the weight norm
falls. Weight decay speeds this up but is not needed for it: without it the ``s = 8`` test
accuracy still rises, more slowly (43% when train crosses 80% at step 1000, 78% at step 8000,
the weight norm growing from 94 to 108).

The paper's own knob, a centred output scale alpha with full-batch GD (``optimizer="sgd"``,
``center=True``, ``alphas=(1, 100)``, ``init_scales=(1,)``), shows no delay on the digits: the
centred lazy baseline is already 98.6% accurate (the initial NTK of a ReLU MLP is aligned with
digit labels), so the lazy run tracks it, train and test crossing 80% together at step 4 for
both alphas; after 2000 steps only the levels differ (alpha=1: 98.9% test, test MSE 0.0068,
below the ``K0`` line 0.0109; alpha=100: 96.2% and 0.021, still descending towards it). The
paper's condition (1), an initial kernel misaligned with the task, is what the large
uncentred initial function supplies here.

Data: the standard IDX files (``train-images-idx3-ubyte`` etc., optionally ``.gz``) in
``data_dir`` or torchvision's ``data_dir/MNIST/raw/``; when they are absent, scikit-learn's
bundled 8x8 digits (1797 images: 1000 train, 797 test), and the summary says so.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..history import series
from .results import first_step_at_or_above, write_json

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


# ------------------------------------------------------------------------------------- config


@dataclass
class MnistConfig:
    """The runs of the MNIST/digits experiment. Defaults: the delayed generalisation on a CPU
    budget (full-batch AdamW at a higher lr and weight decay than Omnigrok's, so that it
    happens within 8000 steps); :meth:`paper` gives Omnigrok's MNIST schedule.

    One run per ``(init_scale, alpha)`` pair, all centred or all not (``center``). The
    learning rate is ``meter.scaled_lr(lr)``: ``lr / alpha`` for AdamW, ``lr / alpha^2`` for
    SGD (full-batch GD); ``lr=None``: 1e-2 for AdamW, half the GD stability edge estimated
    from the initial NTK for SGD. ``weight_decay=None``: 0.01 for AdamW (decoupled), 0 for
    SGD. ``acc_threshold=None``: 0.9 on MNIST, 0.8 on the digits.

    Weight decay pulls the parameters to 0, so with ``center=True`` it pulls the output towards
    ``-alpha f(x; theta0)``, a random function: centred runs should use ``weight_decay=0``.
    """

    data_dir: str | None = "data"
    n_train: int = 1000
    n_test: int | None = None
    width: int = 200
    depth: int = 2
    alphas: Sequence[float] = (1.0,)
    init_scales: Sequence[float] = (1.0, 8.0)
    center: bool = False
    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    steps: int = 8000
    batch_size: int | None = None  # None: full batch
    per_decade: int = 10
    max_probe: int = 64
    max_baseline: int = 2048
    acc_threshold: float | None = None
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def paper(cls, **overrides: object) -> MnistConfig:
        """Omnigrok's MNIST grokking run (Liu et al. 2022, Fig. 3): init scale 8 (and 1 for
        comparison), AdamW lr 1e-3, weight decay 0.01, batch 200, 100k steps."""
        base: dict[str, Any] = dict(lr=1e-3, weight_decay=0.01, batch_size=200, steps=100_000)
        return cls(**{**base, **overrides})  # type: ignore[arg-type]

    def run_list(self) -> list[dict[str, Any]]:
        """``[{"alpha", "init_scale", "center", "name"}, ...]`` in the order they run."""
        runs = [
            dict(alpha=float(a), init_scale=float(s), center=self.center)
            for s in self.init_scales
            for a in self.alphas
        ]
        for r in runs:
            r["name"] = f"alpha{r['alpha']:g}_init{r['init_scale']:g}" + (
                "_centred" if r["center"] else ""
            )
        return runs


# ------------------------------------------------------------------------------------ running


def accuracy_threshold(cfg: MnistConfig, data: ImageData) -> float:
    """``cfg.acc_threshold``, or by default 0.9 on MNIST and 0.8 on the easier-to-fit but
    lower-resolution digits (where a lazy run's test accuracy sits far below either)."""
    if cfg.acc_threshold is not None:
        return cfg.acc_threshold
    return 0.9 if data.dataset == "mnist" else 0.8


def gd_stability_lr(model: nn.Module, x: Tensor, n_classes: int, max_points: int = 256) -> float:
    """Full-batch GD stability edge of the MSE ``mean((f - onehot)^2)`` at ``alpha = 1``.

    ``lr < P C^2 / lambda_max(K)`` with ``K`` the output-traced NTK on the ``P`` training
    points (the per-output kernel is ~``K / C`` for an MLP at init). ``lambda_max`` is
    estimated on a seeded subsample of ``max_points`` as ``lambda_max(K_m) * P / m`` (the
    top, mean-like mode of the Gram matrix grows linearly with the number of points)."""
    import lazymeter as lm

    P = x.shape[0]
    m = min(P, max_points)
    idx = torch.randperm(P, generator=torch.Generator().manual_seed(0))[:m].to(x.device)
    lam = lm.kernel_spectrum(lm.empirical_ntk(model, x[idx]), k=1)["eig_1"] * P / m
    return P * n_classes**2 / lam


def train_run(
    cfg: MnistConfig,
    data: ImageData,
    run: Mapping[str, Any],
    log_dir: str | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one MLP (``run``: alpha, init_scale, center) and return its summary with its
    ``history`` (one row per measurement: ``step``, ``train_loss``, ``test_loss``,
    ``train_acc``, ``test_acc``, NTK drift, alignment, parameter movement, weight norm, ...)."""
    import lazymeter as lm

    from .progress import progress_bar

    model = make_mlp(
        data.x.shape[1],
        cfg.width,
        cfg.depth,
        data.n_classes,
        init_scale=run["init_scale"],
        seed=cfg.seed,
        device=cfg.device,
    )
    meter = lm.LazyMeter(
        model,
        alpha=run["alpha"],
        center=run["center"],
        probe=(data.x, data.y),
        test_probe=(data.x_test, data.y_test),
        schedule=f"log:{cfg.per_decade}",
        log_dir=log_dir,
        max_probe=cfg.max_probe,
        max_baseline=cfg.max_baseline,
    )
    if cfg.optimizer == "adamw":
        lr0 = 1e-2 if cfg.lr is None else cfg.lr
        lr = meter.scaled_lr(lr0, "adam")
        wd = 0.01 if cfg.weight_decay is None else cfg.weight_decay
        opt: torch.optim.Optimizer = torch.optim.AdamW(meter.parameters(), lr=lr, weight_decay=wd)
    elif cfg.optimizer == "sgd":
        lr0 = 0.5 * gd_stability_lr(model, data.x, data.n_classes) if cfg.lr is None else cfg.lr
        lr = meter.scaled_lr(lr0)
        wd = 0.0 if cfg.weight_decay is None else cfg.weight_decay
        opt = torch.optim.SGD(meter.parameters(), lr=lr, weight_decay=wd)
    else:
        raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {cfg.optimizer!r}")
    if run["center"] and wd > 0:
        warnings.warn(
            f"weight_decay: {wd:g} with a centred run pulls the output towards the random "
            "function -alpha * f(x; theta0); use weight_decay=0 with center=True",
            RuntimeWarning,
            stacklevel=2,
        )

    C = data.n_classes
    onehot = torch.nn.functional.one_hot(data.y, C).to(data.x.dtype)
    onehot_test = torch.nn.functional.one_hot(data.y_test, C).to(data.x.dtype)
    P = data.x.shape[0]
    full = cfg.batch_size is None or cfg.batch_size >= P
    g = torch.Generator().manual_seed(cfg.seed + 1)
    perm, pos = torch.randperm(P, generator=g), 0

    def evaluate(x: Tensor, y: Tensor, target: Tensor) -> tuple[float, float]:
        with torch.no_grad():
            out = meter(x)
            return ((out - target) ** 2).mean().item(), (out.argmax(1) == y).double().mean().item()

    bar = progress_bar(cfg.steps, progress, run["name"])
    t0 = time.perf_counter()
    for step in range(cfg.steps + 1):
        if full:
            xb, yb, tb = data.x, data.y, onehot
        else:
            if pos + cfg.batch_size > P:
                perm, pos = torch.randperm(P, generator=g), 0
            idx = perm[pos : pos + cfg.batch_size].to(data.x.device)
            pos += cfg.batch_size
            xb, yb, tb = data.x[idx], data.y[idx], onehot[idx]
        out = meter(xb)
        loss = ((out - tb) ** 2).mean()
        if meter.will_measure(step):
            # The state before this step's update, as the train loss above.
            if full:
                scalars = {
                    "train_loss": loss.item(),
                    "train_acc": (out.argmax(1) == yb).double().mean().item(),
                }
            else:
                tl, ta = evaluate(data.x, data.y, onehot)
                scalars = {"train_loss": tl, "train_acc": ta, "batch_loss": loss.item()}
            scalars["test_loss"], scalars["test_acc"] = evaluate(
                data.x_test, data.y_test, onehot_test
            )
            meter.step(step=step, **scalars)
        else:
            meter.step(step=step, train_loss=loss.item())
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
    bar.close()
    meter.close()
    seconds = time.perf_counter() - t0

    hist = meter.history
    steps = [r["step"] for r in hist]
    thr = accuracy_threshold(cfg, data)
    train_step = first_step_at_or_above(steps, [r["train_acc"] for r in hist], thr)
    test_step = first_step_at_or_above(steps, [r["test_acc"] for r in hist], thr)
    at_train = [r["test_acc"] for r in hist if r["step"] == train_step]
    grok = lm.time_to_grok(
        steps, [r["train_loss"] for r in hist], [r["test_loss"] for r in hist], threshold=0.1
    )
    last = hist[-1]
    return {
        **{k: run[k] for k in ("name", "alpha", "init_scale", "center")},
        "lr": lr,
        "weight_decay": wd,
        "k0_test_acc": meter.baseline.get("k0_test_acc"),
        "k0_test_mse": meter.baseline.get("k0_test_mse"),
        "train_acc_step": train_step,
        "test_acc_step": test_step,
        "acc_delay_ratio": test_step / train_step if train_step > 0 else math.nan,
        "test_acc_when_train_crossed": at_train[0] if at_train else math.nan,
        "final_train_acc": last["train_acc"],
        "final_test_acc": last["test_acc"],
        "final_train_loss": last["train_loss"],
        "final_test_loss": last["test_loss"],
        "final_param_movement": last.get("param_movement"),
        "final_weight_norm": last.get("weight_norm"),
        "initial_weight_norm": hist[0].get("weight_norm"),
        "loss_time_to_grok": grok.as_dict(),
        "seconds": seconds,
        "history": hist,
    }


def train(
    cfg: MnistConfig,
    out_dir: str | None = None,
    *,
    progress: bool = True,
    figure: bool = True,
) -> dict[str, Any]:
    """Load the data, train every run of ``cfg`` and return the summary.

    Writes to ``out_dir`` (when given): ``<run name>/history.jsonl`` and TensorBoard events
    per run, ``summary.json`` (dataset, thresholds and per run: ``k0_test_acc``, the steps at
    which train and test accuracy first reach ``acc_threshold``, final accuracies and losses)
    and ``figure.png``.

    Returns:
        ``{"dataset", "config", "acc_threshold", "n_train", "n_test", "input_dim", "runs":
        [per-run summary with "history"], "seconds"}``.
    """
    t0 = time.perf_counter()
    data = load_data(cfg.data_dir, cfg.n_train, cfg.n_test, seed=cfg.seed, device=cfg.device)
    thr = accuracy_threshold(cfg, data)
    cfg = replace(cfg, acc_threshold=thr)
    results = []
    for run in cfg.run_list():
        log_dir = None if out_dir is None else os.path.join(out_dir, run["name"])
        results.append(train_run(cfg, data, run, log_dir, progress=progress))
    summary: dict[str, Any] = {
        "dataset": data.dataset,
        "n_train": int(data.x.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "input_dim": int(data.x.shape[1]),
        "acc_threshold": thr,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in results],
        "seconds": time.perf_counter() - t0,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "summary.json"), summary, indent=2)
        if figure:
            plot(results, summary, os.path.join(out_dir, "figure.png"))
    summary["runs"] = results
    return summary


# ------------------------------------------------------------------------------------- figure


def plot(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: str) -> None:
    """Accuracy (train dashed, test solid, the lazy ``K0`` baseline dotted), MSE (log-log,
    ``K0`` test MSE dotted) and the lazy/rich diagnostics (weight norm relative to init,
    parameter movement, CKA of the NTK to ``K0``, kernel-target alignment) per run, against
    steps on a log axis. (NTK drift is left out: it mixes the kernel's shape with its scale,
    which weight decay changes.)"""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.6))
    ax_acc, ax_loss, ax_diag = fig.subplots(1, 3)
    thr = summary["acc_threshold"]
    for i, r in enumerate(results):
        c = f"C{i}"
        label = f"init {r['init_scale']:g}, alpha {r['alpha']:g}" + (
            ", centred" if r["center"] else ""
        )
        for ax, key, k0 in (
            (ax_acc, "acc", r.get("k0_test_acc")),
            (ax_loss, "loss", r.get("k0_test_mse")),
        ):
            ax.plot(*series(r["history"], f"train_{key}"), color=c, ls="--", lw=1.2)
            ax.plot(*series(r["history"], f"test_{key}"), color=c, lw=2, label=label)
            if k0 is not None and math.isfinite(k0):
                ax.axhline(k0, color=c, ls=":", lw=1.2)
        for key, ls in (("train_acc_step", "--"), ("test_acc_step", "-")):
            v = r[key]
            if math.isfinite(v) and v > 0:
                ax_acc.axvline(v, color=c, ls=ls, alpha=0.25, lw=2.5)
        w0 = r.get("initial_weight_norm") or 1.0
        xs, ys = series(r["history"], "weight_norm")
        ax_diag.plot(xs, [y / w0 for y in ys], color=c, lw=2)
        ax_diag.plot(*series(r["history"], "param_movement"), color=c, ls="--", lw=1.2)
        ax_diag.plot(*series(r["history"], "ntk_cka"), color=c, ls="-.", lw=1.2)
        ax_diag.plot(*series(r["history"], "alignment_test"), color=c, ls=":", lw=1.5)
    ax_acc.axhline(thr, color="gray", lw=0.8)
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(
        f"{summary['dataset'].split(' (')[0]}, {summary['n_train']} train: accuracy\n"
        f"test solid, train dashed, K0 regression dotted; bands: first >= {thr:g}",
        fontsize=9,
    )
    ax_acc.legend(fontsize=8, loc="upper left")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("MSE")
    ax_loss.set_title("loss (test solid, train dashed, K0 test MSE dotted)", fontsize=9)
    ax_diag.set_yscale("log")
    ax_diag.set_title(
        "||theta|| / ||theta0|| (solid), ||theta - theta0|| / ||theta0|| (dashed),\n"
        "CKA(K, K0) (dash-dot), NTK-label alignment on test (dotted)",
        fontsize=9,
    )
    for ax in (ax_acc, ax_loss, ax_diag):
        ax.set_xscale("log")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
