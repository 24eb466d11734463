"""Clips cut into fixed-length segments: the DCASE 2021 Task 1B 1-second protocol.

The challenge scored systems on 1-second segments of the 10-second clips (log loss first,
accuracy second); the paper reports accuracy on whole clips. ``avsc ingest
--segment-seconds S`` (:func:`segment_records`) turns each manifest row into
``floor(duration / S)`` rows of ``S`` seconds, and every later stage works on those rows
unchanged: a segment is a clip with its own id.

- Segment ``k`` of clip ``P`` has the id ``P_sKKK`` (:func:`segment_id`, three digits or
  more), starts at ``k * S`` seconds (``offset_s``) and lasts ``S`` (``segment_s``); the
  manifest's ``parent_clip`` column names ``P``. The parent is also recoverable from the id
  alone (:func:`parent_clip`), which is how the evaluation, reading only prediction files,
  groups a clip's segments.
- Segments inherit their parent's label, city, location and split. Cutting happens after
  the train/val/test split, so the split is by parent clip (and by location) and never
  puts two segments of one recording on different sides.
- A clip shorter than one segment (beyond a 2.5 % tolerance) is rejected with its reason;
  a tail shorter than a segment is dropped.
- :func:`average_segments`: clip-level probabilities as the mean of a clip's segment
  probabilities (the paper's whole-clip view of a segment-level run).

The feature config's clip length must equal ``S`` (:func:`check_segment_length`, called by
preprocessing): a 10-s config on 1-s segments would pad every segment with 9 s of silence.
Where one config drives both ingest and preprocessing (the pipeline), its
``data.segment_seconds`` is checked against ``features.audio.clip_seconds`` before any work
(:func:`check_segment_setting`).

Example:
    >>> segment_offsets(10.0, 1.0)
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    >>> segment_id("airport-lisbon-1000-40000", 3), parent_clip("airport-lisbon-1000-40000_s003")
    ('airport-lisbon-1000-40000_s003', 'airport-lisbon-1000-40000')
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avsc.errors import ConfigError, DataError

if TYPE_CHECKING:
    from avsc.config import Config

__all__ = [
    "SEGMENT_TOLERANCE",
    "segment_id",
    "parent_clip",
    "is_segment",
    "segment_offsets",
    "segment_records",
    "average_segments",
    "check_segment_length",
    "check_segment_setting",
]

# A segment may lack this share of its length at the clip's end (containers report a few
# milliseconds less or more than the nominal length); decoding pads it.
SEGMENT_TOLERANCE = 0.025
_SEGMENT_ID = re.compile(r"^(?P<parent>.+)_s(?P<index>\d{3,})$")


def segment_id(parent: str, index: int) -> str:
    """The id of segment ``index`` (0-based) of clip ``parent``: ``<parent>_s<index:03d>``."""
    if index < 0:
        raise ValueError(f"segment index must be >= 0, got {index}")
    return f"{parent}_s{index:03d}"


def parent_clip(clip_id: str) -> str:
    """The clip a segment id belongs to; a whole clip's id is its own parent."""
    match = _SEGMENT_ID.match(clip_id)
    return match["parent"] if match else clip_id


def is_segment(clip_id: str) -> bool:
    """Whether ``clip_id`` names a segment (``<parent>_sKKK``)."""
    return _SEGMENT_ID.match(clip_id) is not None


def segment_offsets(duration_s: float | None, segment_s: float) -> list[float]:
    """Start times (seconds) of the whole segments of a clip of ``duration_s`` seconds.

    ``n = floor(duration_s / segment_s + SEGMENT_TOLERANCE)`` segments at ``0, S, 2S, ...``;
    an unknown or too-short duration gives none.

    Raises:
        ConfigError: ``segment_s`` is not positive.
    """
    if not (isinstance(segment_s, (int, float)) and math.isfinite(segment_s) and segment_s > 0):
        raise ConfigError(f"segment length must be a positive number of seconds, got {segment_s!r}")
    if duration_s is None or not math.isfinite(duration_s) or duration_s <= 0:
        return []
    n = math.floor(duration_s / segment_s + SEGMENT_TOLERANCE)
    return [round(k * segment_s, 6) for k in range(n)]


def segment_records(records: Sequence[dict], segment_s: float) -> tuple[list[dict], list[dict]]:
    """Cut manifest records (dicts with ``clip_id``, ``video``, ``duration_s``, ...) into segments.

    Every other key (label, city, location, split, media facts) is copied from the parent.

    Returns:
        ``(segments, rejected)``: segment records with ``clip_id``, ``parent_clip``,
        ``offset_s`` and ``segment_s`` set, in parent then offset order; and one
        ``{"file", "reason"}`` per clip too short for a single segment.

    Raises:
        ConfigError: ``segment_s`` is not positive.
    """
    segments: list[dict] = []
    rejected: list[dict] = []
    for record in records:
        offsets = segment_offsets(record.get("duration_s"), segment_s)
        if not offsets:
            duration = record.get("duration_s")
            known = f"{duration:.3f} s long" if isinstance(duration, (int, float)) else "of unknown length"
            rejected.append(
                {
                    "file": record.get("video") or record["clip_id"],
                    "reason": f"{known}, shorter than one {segment_s:g}-s segment",
                }
            )
            continue
        for index, offset in enumerate(offsets):
            segments.append(
                {
                    **record,
                    "clip_id": segment_id(record["clip_id"], index),
                    "parent_clip": record["clip_id"],
                    "offset_s": offset,
                    "segment_s": float(segment_s),
                }
            )
    return segments, rejected


def average_segments(
    clip_ids: Sequence[str], labels: Sequence[str], probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip-level probabilities: the mean of each parent clip's segment probabilities.

    Args:
        clip_ids: [shape=(n,)] segment (or clip) ids.
        labels: [shape=(n,)] their true labels.
        probs: [shape=(n, k)] their class probabilities.

    Returns:
        ``(parent_ids, labels, probs)`` [shape=(m,)], [shape=(m,)], [shape=(m, k)], sorted
        by parent id. A whole clip (no segment suffix) stands for itself.

    Raises:
        DataError: two segments of one clip carry different labels.
    """
    parents = np.asarray([parent_clip(c) for c in clip_ids])
    label_array = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    unique, inverse = np.unique(parents, return_inverse=True)
    sums = np.zeros((len(unique), probs.shape[1]))
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(unique))
    first = np.zeros(len(unique), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]  # first row of each parent
    parent_labels = label_array[first]
    clash = np.flatnonzero(label_array != parent_labels[inverse])
    if len(clash):
        row = clash[0]
        raise DataError(
            str(clip_ids[row]),
            f"label {label_array[row]!r} differs from {parent_labels[inverse[row]]!r} "
            f"of another segment of {unique[inverse[row]]}",
        )
    return unique, parent_labels, sums / counts[:, None]


def check_segment_length(segment_s: float | None, clip_seconds: float, manifest: str | Path) -> None:
    """Refuse a feature config whose clip length differs from the manifest's segments.

    Args:
        segment_s: the manifest's segment length (None: whole clips, anything goes).
        clip_seconds: ``features.audio.clip_seconds`` of the feature config.
        manifest: named in the error.

    Raises:
        ConfigError: the two lengths differ.
    """
    if segment_s is None or (isinstance(segment_s, float) and math.isnan(segment_s)):
        return
    if not math.isclose(segment_s, clip_seconds, rel_tol=1e-6, abs_tol=1e-9):
        raise ConfigError(
            f"{manifest}: holds {segment_s:g}-s segments, but the feature config's clip length "
            f"(features.audio.clip_seconds) is {clip_seconds:g} s; set it to {segment_s:g} "
            f"(--set features.audio.clip_seconds={segment_s:g}, or [features.audio] "
            f"clip_seconds = {segment_s:g} in the --config file)"
        )


def check_segment_setting(config: Config) -> None:
    """Refuse a config whose ``data.segment_seconds`` differs from ``features.audio.clip_seconds``.

    For runs whose one config drives ingest and preprocessing (the pipeline): the mismatch
    would otherwise surface only after ingest, when preprocessing refuses the manifest.

    Raises:
        ConfigError: ``data.segment_seconds`` is not positive, or differs from the clip length.
    """
    segment_s = config.data.segment_seconds
    if segment_s is None:
        return
    segment_offsets(None, segment_s)  # a positive number of seconds
    clip_seconds = config.features.audio.clip_seconds
    if not math.isclose(segment_s, clip_seconds, rel_tol=1e-6, abs_tol=1e-9):
        raise ConfigError(
            f"data.segment_seconds is {segment_s:g}, but features.audio.clip_seconds is {clip_seconds:g}: "
            f"a segment is the clip every later stage sees; set both to {segment_s:g} "
            f"(--set features.audio.clip_seconds={segment_s:g})"
        )
