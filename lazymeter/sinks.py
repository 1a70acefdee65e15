"""Where measurements go: JSON lines on disk and TensorBoard scalars.

Both sinks take flat ``{key: float}`` rows. :func:`tag_for` maps a row key to
a TensorBoard tag under ``lazymeter/``, grouped by what it measures.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from typing import Any

_TAGS = {
    "ntk_drift": "ntk/drift",
    "ntk_cka": "ntk/cka_to_init",
    "alignment_train": "ntk/alignment_train",
    "alignment_test": "ntk/alignment_test",
    "alignment0_train": "ntk/alignment0_train",
    "alignment0_test": "ntk/alignment0_test",
    "test_ntk_drift": "ntk/test_drift",
    "param_movement": "params/movement",
    "weight_norm": "params/weight_norm",
    "k0_test_mse": "baseline/k0_test_mse",
    "k0_test_acc": "baseline/k0_test_acc",
    "k0_train_mse": "baseline/k0_train_mse",
}
_PREFIXES = {
    "spectrum_": "spectrum/",
    "feature_cka/": "features/",
    "lin_": "linearized/",
    "decomp_": "decomposition/",
}


#: TensorBoard's CUSTOM SCALARS tab: losses on one chart, kernel diagnostics on another.
CUSTOM_SCALARS = {
    "lazymeter": {
        "losses (network, linearised)": [
            "Multiline",
            [
                "lazymeter/loss/train",
                "lazymeter/loss/test",
                "lazymeter/linearized/train_loss",
                "lazymeter/linearized/test_loss",
                "lazymeter/baseline/k0_test_mse",
            ],
        ],
        "kernel (drift, alignment, CKA)": [
            "Multiline",
            [
                "lazymeter/ntk/drift",
                "lazymeter/ntk/alignment_train",
                "lazymeter/ntk/alignment_test",
                "lazymeter/ntk/cka_to_init",
            ],
        ],
        "weights": ["Multiline", ["lazymeter/params/movement", "lazymeter/params/weight_norm"]],
    }
}


def tag_for(key: str) -> str:
    """TensorBoard tag of a row key, e.g. ``train_loss -> lazymeter/loss/train``."""
    if key in _TAGS:
        return "lazymeter/" + _TAGS[key]
    for prefix, group in _PREFIXES.items():
        if key.startswith(prefix):
            return f"lazymeter/{group}{key[len(prefix) :]}"
    if key.endswith("_loss"):
        return "lazymeter/loss/" + key[: -len("_loss")]
    if key.endswith(("_acc", "_accuracy")):
        return "lazymeter/accuracy/" + key.rsplit("_", 1)[0]
    return "lazymeter/scalars/" + key


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN/Inf
    return v


class JsonlSink:
    """Appends one JSON object per measurement to ``path``, flushed and fsynced each time,
    so a crash loses nothing already measured. Non-finite values are written as ``null``."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file with ``rows`` (atomically), e.g. after resuming from a checkpoint."""
        self._file.close()
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (``null`` read back as NaN); a torn last line is skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows


class TensorBoardSink:
    """Scalars to a ``SummaryWriter`` (``torch.utils.tensorboard``), created lazily.

    Pass ``writer`` to reuse the user's own writer (it is then not closed here).
    Without the ``tensorboard`` package this sink disables itself with one warning.
    """

    def __init__(self, log_dir: str | None = None, writer: Any = None) -> None:
        self.log_dir = log_dir
        self._writer = writer
        self._owned = writer is None
        self._purge_step: int | None = None
        self._layout_done = False
        self.enabled = writer is not None or log_dir is not None

    def purge_after(self, step: int) -> None:
        """Drop events after ``step`` from an earlier run (resume from a checkpoint)."""
        if self._owned:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._purge_step = step + 1

    @property
    def writer(self) -> Any:
        if self._writer is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard is not installed, so no event files are written "
                    "(pip install tensorboard, or lazymeter[tensorboard]); the JSON-lines "
                    f"history in {self.log_dir} is still written.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self.enabled = False
                return None
            self._writer = SummaryWriter(self.log_dir, purge_step=self._purge_step)
        if self._writer is not None and not self._layout_done:
            self._layout_done = True
            try:
                self._writer.add_custom_scalars(CUSTOM_SCALARS)
            except Exception:  # noqa: BLE001 - a writer without layouts still takes scalars
                pass
        return self._writer

    def write_text(self, tag: str, text: str, step: int) -> None:
        w = self.writer
        if w is not None:
            w.add_text(tag, text, step)

    def write_figure(self, tag: str, figure: Any, step: int) -> None:
        w = self.writer
        if w is not None:
            w.add_figure(tag, figure, step, close=True)

    def write_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the run's final metrics (TensorBoard's HPARAMS tab)."""
        w = self.writer
        if w is None:
            return
        clean = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()
        }
        finals = {
            f"hparam/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        w.add_hparams(clean, finals, run_name=".")

    def write(self, row: dict[str, Any], step: int, flush: bool = False) -> None:
        w = self.writer
        if w is None:
            return
        values = {
            tag_for(k): float(v)
            for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        try:
            # One event holding every value: an event costs ~50 us, a value almost nothing.
            from tensorboard.compat.proto.summary_pb2 import Summary

            summary = Summary(
                value=[Summary.Value(tag=t, simple_value=v) for t, v in values.items()]
            )
            w._get_file_writer().add_summary(summary, step)
        except (ImportError, AttributeError):  # another SummaryWriter implementation
            for t, v in values.items():
                w.add_scalar(t, v, step)
        if flush:
            w.flush()

    def close(self) -> None:
        if self._writer is not None:
            if self._owned:
                self._writer.close()
            else:
                self._writer.flush()
