"""Row keys -> TensorBoard tags under ``lazymeter/`` (:func:`tag_for`), grouped by what they
measure, and the custom-scalar charts; the quantities register theirs, the TensorBoard,
MLflow and W&B sinks name their metrics with them."""

from __future__ import annotations

from typing import Any

#: Row key -> TensorBoard tag under ``lazymeter/``. Filled by the quantities that produce
#: the keys (:class:`lazymeter.Quantity` ``tags``), not kept here by hand; the losses the
#: user passes to ``step`` follow the naming rules of :func:`tag_for`.
_TAGS: dict[str, str] = {}
#: Key prefix (ending in ``_`` or ``/``) -> tag group, from the quantities likewise.
_PREFIXES: dict[str, str] = {}
#: TensorBoard custom-scalar charts ``{title: [row keys]}``; the quantities add theirs.
_CHARTS: dict[str, list[str]] = {"losses (network, linearised)": ["train_loss", "test_loss"]}


def register_tags(tags: dict[str, str] | Any) -> None:
    """Add ``{key: tag}`` (exact keys) or ``{prefix: group/}`` (keys ending in ``_`` or ``/``)
    entries to the tag table used by :func:`tag_for`."""
    for key, tag in dict(tags).items():
        if key.endswith(("_", "/")):
            _PREFIXES[key] = tag
        else:
            _TAGS[key] = tag


def register_chart(title: str, keys: list[str]) -> None:
    """Put ``keys`` on the TensorBoard custom-scalar chart ``title`` (created if new)."""
    chart = _CHARTS.setdefault(title, [])
    chart.extend(k for k in keys if k not in chart)


def custom_scalars() -> dict[str, Any]:
    """TensorBoard's CUSTOM SCALARS layout: one multiline chart per registered title."""
    return {
        "lazymeter": {
            title: ["Multiline", [tag_for(k) for k in keys]] for title, keys in _CHARTS.items()
        }
    }


def tag_for(key: str) -> str:
    """TensorBoard tag of a row key, e.g. ``train_loss -> lazymeter/loss/train``,
    ``ntk_drift -> lazymeter/ntk/drift`` (tags registered by the quantities)."""
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
