"""Which clips of a manifest one preprocessing shard processes, and which of them are done.

A manifest is cut into ``n`` shards round-robin (:func:`shard_rows`: clips sorted by id,
every n-th from position ``i``), so shards are disjoint, together complete and the same on
every machine. A clip is done when any part of the store holds its fingerprint
(:func:`clip_fingerprints`: what the clip is, not how it is labelled), so a re-run resumes
and a changed video is processed again (:func:`clips_to_process`); the shard's index lists
the clips that are done (:func:`shard_index_rows`).

Example:
    >>> parse_shard("1/4")
    (1, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avsc.errors import ConfigError
from avsc.storage import locations

__all__ = ["check_shard", "clip_fingerprints", "clips_to_process", "parse_shard", "shard_index_rows", "shard_rows"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        ConfigError: not of that form.
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None
    check_shard((index, count))
    return index, count


def check_shard(shard: tuple[int, int]) -> None:
    """Refuse a shard ``(i, n)`` outside ``0 <= i < n`` (:class:`~avsc.errors.ConfigError`)."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {index}/{count}: need 0 <= I < N (shards are numbered from 0)")


def shard_rows(manifest, shard: tuple[int, int]):
    """Rows of shard ``(i, n)``: sorted by clip id, those at positions ``p`` with ``p % n == i``."""
    index, count = shard
    ordered = manifest.sort_values("clip_id", kind="stable").reset_index(drop=True)
    return ordered.iloc[index::count].reset_index(drop=True)


def clip_fingerprints(rows) -> list[str]:
    """Each manifest row's fingerprint: what the clip is, so a changed source is processed again.

    A hash of the clip id, its media path relative to the dataset root, its video's size and
    modification time (local ``st_mtime``, or an object's Last-Modified on ``s3://``), its
    segment offset and length, and, for a clip whose sound is its WAV (``audio_source`` =
    ``wav``), the WAV's path, size and modification time; a missing file gets a fingerprint
    no part holds. Labels and
    splits are not part of it: they do not change the features (the index takes them from
    the manifest).

    Args:
        rows: manifest rows as :func:`avsc.data.manifest.read_manifest` returns them.
    """
    from avsc.records.lineage import hash_value

    wavs = [row.audio_path for row in rows.itertuples(index=False) if row.audio_source == "wav"]
    stats = locations.file_stats(list(rows["video_path"]) + wavs)
    out = []
    for row in rows.itertuples(index=False):
        segment = None if row.segment_s is None or np.isnan(row.segment_s) else float(row.segment_s)
        sound = [row.audio, stats[row.audio_path]] if row.audio_source == "wav" else None
        out.append(hash_value([row.clip_id, row.video, stats[row.video_path], float(row.offset_s), segment, sound]))
    return out


def clips_to_process(
    rows: Any, sources: list[str], stored: dict[str, Any], shard: tuple[int, int]
) -> list[tuple[Any, str]]:
    """The manifest rows (with their fingerprints) no part holds yet, in a seeded random order.

    A clip is done when a part of any run of any shard holds its fingerprint (same id, source
    file, segment); its label and split are the manifest's whatever the part says (they go
    into the index). In the random order each part holds clips of many scenes and locations,
    not 32 neighbours in clip-id order (one location's segments), which a training stream's
    shuffle buffer of a few parts could not mix.
    """
    todo = [
        (row, source) for row, source in zip(rows.itertuples(index=False), sources, strict=True) if source not in stored
    ]
    return [todo[i] for i in np.random.default_rng([shard[0], shard[1]]).permutation(len(todo))]


def shard_index_rows(rows: Any, sources: list[str], stored: dict[str, Any]) -> list[dict[str, Any]]:
    """The index rows of the shard's clips that have features (``stored``: fingerprint ->
    part row), with the label and split of THIS manifest."""
    return [
        dict(stored[source], clip_id=row.clip_id, label=row.label, split=row.split)
        for row, source in zip(rows.itertuples(index=False), sources, strict=True)
        if source in stored
    ]
