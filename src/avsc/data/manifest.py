"""The clip manifest: one validated row per usable clip, written by ``avsc ingest``.

A Parquet table with the columns of :data:`MANIFEST_SCHEMA`. Media paths are relative to
the dataset root, which is kept in the schema metadata (``avsc.dataset_root``) and can be
overridden when the dataset has moved (a pipeline step sees it at another path).

The media facts are those of :func:`avsc.media.probe.probe_media`, i.e. what a player
presents: ``width`` x ``height`` is the displayed size (pixel aspect ratio and rotation
applied), ``duration_s`` how long the recording plays (the later end of picture and sound,
from the packets, not the header), ``audio_track`` the audio track every later stage
decodes (the default one, else the first; an index among the file's audio tracks, as in
ffmpeg's ``-map 0:a:N``) and ``audio_tracks`` how many the file has. Manifests written
before ``audio_track``/``audio_tracks`` existed still read (those columns are then null).
``audio_source`` says where a clip's sound is read: ``wav`` (the dataset's own audio file,
``audio``; ``audio_channels``/``audio_rate`` are then the WAV's) or ``video`` (the chosen
audio track; also what manifests written before the column existed read as).

A manifest of segments (``avsc ingest --segment-seconds S``, :mod:`avsc.data.segments`) has
one row per segment, with ``parent_clip``, ``offset_s`` and ``segment_s`` set; for whole
clips they are null on disk.

Reading is strict (:func:`read_manifest`, wherever a manifest is read): a split other than
``train``/``val``/``test``, a clip id on two different rows, or a media path that leaves the
dataset root is an error naming the rows; a row repeated exactly is dropped with a warning.
Every manifest read carries its :class:`~avsc.records.Lineage` (``frame.attrs["lineage"]``):
the dataset's name and hashes of its clips, labels and splits.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from avsc.errors import DataError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # file stem, e.g. airport-lisbon-1000-40000
        pa.field("video", pa.string(), nullable=False),  # relative to the dataset root
        pa.field("audio", pa.string()),  # separate WAV, relative; null when missing
        pa.field("label", pa.string(), nullable=False),
        pa.field("city", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),  # <city>-<location_id>
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("audio_channels", pa.int32()),  # of the chosen audio track
        pa.field("audio_rate", pa.int32()),
        pa.field("audio_track", pa.int32()),  # chosen track: index among the audio tracks (0:a:N)
        pa.field("audio_tracks", pa.int32()),  # audio tracks in the file
        # Segments (`avsc ingest --segment-seconds S`, see avsc.data.segments); null for whole clips.
        pa.field("parent_clip", pa.string()),  # the clip a segment was cut from
        pa.field("offset_s", pa.float64()),  # where the segment starts in it
        pa.field("segment_s", pa.float64()),  # its length S
        # Where the clip's sound is read: "wav" (the `audio` file) or "video" (its audio track).
        pa.field("audio_source", pa.string()),
    ]
)
# Columns a manifest written before segments existed lacks; read as whole clips.
SEGMENT_COLUMNS: tuple[str, ...] = ("parent_clip", "offset_s", "segment_s")
# Columns added after the first manifests were written: optional when reading.
_LATER_COLUMNS: frozenset[str] = frozenset({"audio_track", "audio_tracks", "audio_source", *SEGMENT_COLUMNS})


def write_manifest(
    rows: list[dict], path: str | Path, *, dataset_root: str | Path, extra_metadata: dict | None = None
) -> Path | str:
    """Write manifest rows (dicts with the schema's keys) atomically to ``path`` (a path or
    ``s3://`` URI); ``dataset_root`` (a folder or ``s3://`` prefix) is recorded in its metadata.
    Returns where it went: a Path, or the ``s3://`` URI."""
    from avsc.storage import locations

    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    root = str(dataset_root) if locations.is_remote(str(dataset_root)) else str(Path(dataset_root).resolve())
    metadata = {"avsc.dataset_root": root}
    for key, value in (extra_metadata or {}).items():
        metadata[f"avsc.{key}"] = value if isinstance(value, str) else json.dumps(value)
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    locations.write_bytes(path, sink.getvalue().to_pybytes())
    return path if locations.is_remote(str(path)) else Path(path)


def read_manifest(path: str | Path, *, dataset_root: str | Path | None = None):
    """Read a manifest as a pandas DataFrame with absolute ``video_path``/``audio_path`` columns.

    Whole clips read with ``parent_clip`` = their own id, ``offset_s`` = 0 and ``segment_s``
    = NaN (also for manifests written before segments existed).

    Args:
        path: the manifest Parquet file (a path or ``s3://`` URI).
        dataset_root: where the dataset is now (a folder or ``s3://`` prefix); defaults to
            the root recorded at ingest. Media paths are joined to it (``video_path`` is an
            ``s3://`` URI for a remote dataset).
    """
    from avsc.storage import locations

    table = locations.read_parquet(
        path, what="manifest", hint="run `avsc ingest DATASET -o MANIFEST` first", kind="Parquet manifest"
    )
    missing = set(MANIFEST_SCHEMA.names) - set(table.column_names) - _LATER_COLUMNS
    if missing:
        raise DataError(path, f"manifest lacks column(s) {', '.join(sorted(missing))}")
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    root = str(dataset_root) if dataset_root is not None else meta.get("avsc.dataset_root", ".")
    frame = table.to_pandas()
    for name in sorted(_LATER_COLUMNS - set(frame.columns)):
        frame[name] = None
    # Whole clips: their own parent, from 0 s, clip length of the config.
    frame["parent_clip"] = frame["parent_clip"].where(frame["parent_clip"].notna(), frame["clip_id"])
    frame["offset_s"] = frame["offset_s"].astype("float64").fillna(0.0)
    frame["segment_s"] = frame["segment_s"].astype("float64")
    frame = check_manifest_rows(frame, path)
    frame["video_path"] = [locations.join(root, *v.split("/")) for v in frame["video"]]
    frame["audio_path"] = [
        locations.join(root, *a.split("/")) if isinstance(a, str) and a else None for a in frame["audio"]
    ]
    # Manifests written before audio_source existed: every stage read the video's track.
    frame["audio_source"] = frame["audio_source"].where(frame["audio_source"].notna(), "video")
    frame.attrs["dataset_root"] = root
    frame.attrs["lineage"] = manifest_lineage(frame, _dataset_name(meta, root))
    return frame


# Columns that say which clip a row is and where its media are (``clips`` of its lineage).
CLIP_COLUMNS: tuple[str, ...] = ("clip_id", "video", "audio", "audio_source", "parent_clip", "offset_s", "segment_s")


def _dataset_name(meta: dict[str, str], root: str) -> str:
    from avsc.storage import locations

    try:
        return str(json.loads(meta["avsc.dataset"])["name"])
    except (KeyError, ValueError, TypeError):
        return locations.name_of(str(root).rstrip("/")) or str(root)


def _plain(value):
    """A cell as JSON-ready data: NaN and pandas' missing values as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def manifest_lineage(frame, dataset: str):
    """The :class:`~avsc.records.Lineage` of manifest rows (a DataFrame as
    :func:`read_manifest` returns): ``clips_hash`` over :data:`CLIP_COLUMNS`, ``labels_hash``
    over (clip_id, label), ``splits_hash`` over (clip_id, split), and ``manifest_hash`` over
    the three. Independent of row order."""
    from avsc.records.lineage import Lineage, hash_rows, hash_value

    rows = [
        {k: _plain(v) for k, v in row.items()}
        for row in frame[list(dict.fromkeys(CLIP_COLUMNS + ("label", "split")))].to_dict("records")
    ]
    clips = hash_rows(rows, CLIP_COLUMNS)
    labels = hash_rows(rows, ("clip_id", "label"))
    splits = hash_rows(rows, ("clip_id", "split"))
    return Lineage(
        dataset=dataset,
        manifest_hash=hash_value([clips, labels, splits]),
        clips_hash=clips,
        labels_hash=labels,
        splits_hash=splits,
    )


def _outside_root(relative) -> bool:
    if not isinstance(relative, str) or not relative:
        return False
    normal = posixpath.normpath(relative.replace("\\", "/"))
    return posixpath.isabs(normal) or normal == ".." or normal.startswith("../") or ":" in normal.split("/")[0]


def check_manifest_rows(frame, path):
    """Check manifest rows; returns them with exact repeats dropped (warned about).

    Raises:
        DataError: naming ``path`` and the rows (numbered from 0, as in the Parquet file):
            a split other than train/val/test, one clip id on rows that differ, or a media
            path that is absolute or leaves the dataset root (``..``).
    """
    bad = frame.index[~frame["split"].isin(SPLITS)]
    if len(bad):
        shown = ", ".join(f"row {i} ({frame.at[i, 'clip_id']}: {frame.at[i, 'split']!r})" for i in bad[:5])
        raise DataError(
            path,
            f"{len(bad)} row(s) with an unknown split: {shown}",
            f"splits are {', '.join(SPLITS)}; fix the manifest or re-run `avsc ingest`",
        )
    for column in ("video", "audio"):
        outside = [i for i, value in zip(frame.index, frame[column], strict=True) if _outside_root(value)]
        if outside:
            i = outside[0]
            raise DataError(
                path,
                f"row {i} ({frame.at[i, 'clip_id']}): {column} path "
                f"{frame.at[i, column]!r} is outside the dataset root"
                f"{f' (and {len(outside) - 1} more)' if len(outside) > 1 else ''}",
                "media paths are relative to the dataset root, without '..'",
            )
    repeated = frame["clip_id"].duplicated(keep=False)
    if not repeated.any():
        return frame
    columns = [c for c in MANIFEST_SCHEMA.names if c in frame.columns]
    drop = []
    for clip_id, group in frame[repeated].groupby("clip_id", sort=True):
        first = group.index[0]
        for other in group.index[1:]:
            differ = [c for c in columns if _plain(frame.at[first, c]) != _plain(frame.at[other, c])]
            if differ:
                pairs = ", ".join(f"{c} {frame.at[first, c]!r} / {frame.at[other, c]!r}" for c in differ[:3])
                raise DataError(
                    path,
                    f"clip {clip_id!r} is on two different rows, {first} and {other} ({pairs})",
                    "keep one row per clip: fix the manifest or re-run `avsc ingest`",
                )
            drop.append(other)
    log.warning("%s: %d repeated row(s) dropped (rows %s)", path, len(drop), ", ".join(map(str, drop[:10])))
    return frame.drop(index=drop).reset_index(drop=True)
