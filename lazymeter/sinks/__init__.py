"""Where measurements go: JSON lines on disk, TensorBoard scalars, and any :class:`Sink`.

Every sink takes flat ``{key: float}`` rows. :func:`tag_for` maps a row key to
a TensorBoard tag under ``lazymeter/``, grouped by what it measures (the MLflow and
W&B sinks in :mod:`lazymeter.integrations` name their metrics the same way).

One module a concern: :mod:`.protocol` (the :class:`Sink` protocol and the checks of what a
user passes), :mod:`.tags` (row keys -> tags, owned here; the quantities register theirs),
:mod:`.jsonl` (crash-safe ``history.jsonl``), :mod:`.tensorboard` and :mod:`.runlog` (one
run's sinks together, as the meter uses them).
"""

from .jsonl import (
    JsonlSink,
    check_writable,
    fresh_history,
    moved_aside,
    read_jsonl,
)
from .protocol import Sink, check_sinks, check_writer
from .runlog import RunLog, scalar_values
from .tags import custom_scalars, register_chart, register_tags, tag_for
from .tensorboard import TensorBoardSink

__all__ = [
    "JsonlSink",
    "RunLog",
    "Sink",
    "TensorBoardSink",
    "check_sinks",
    "check_writable",
    "check_writer",
    "custom_scalars",
    "fresh_history",
    "moved_aside",
    "read_jsonl",
    "register_chart",
    "register_tags",
    "scalar_values",
    "tag_for",
]
