"""Writing a feature store's parts (format in :mod:`avsc.features.store`).

:func:`encode_clip` turns one clip's arrays into what a part holds (float16 bytes, JPEG
frames, their SHA-256); preprocessing workers call it, so the encoding runs in parallel.
:class:`PartWriter` collects encoded clips per split and writes a part file every
``part_clips`` clips, atomically (local: temporary file + rename; ``s3://``: one object).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsc.errors import ConfigError
from avsc.features.store_format import (
    DIGEST_SUFFIX,
    STORE_FORMAT,
    FeatureSpec,
    encode_feature,
    shard_name,
    value_digest,
)
from avsc.records.lineage import hash_value
from avsc.storage import locations

log = logging.getLogger(__name__)

PART_CLIPS = 32  # clips a part holds: ~12 MB per spectrogram column at the paper preset
# Parquet compression of the parts. Spectrograms in float16 gain ~10 % with zstd and read
# ~10 % slower; JPEG frames do not compress further (docs/features.md, the measured choice).
COMPRESSION = "none"


@dataclass(frozen=True)
class EncodedClip:
    """One clip as a part stores it: ``values`` maps a feature to its bytes (or JPEG list),
    ``digests`` to their SHA-256; ``source`` is the clip's fingerprint."""

    clip_id: str
    label: str
    split: str
    values: dict[str, Any]
    source: str = ""
    digests: dict[str, str] = field(default_factory=dict)


def encode_clip(
    clip_id: str,
    label: str,
    split: str,
    arrays: dict[str, np.ndarray],
    specs: dict[str, FeatureSpec],
    *,
    source: str | None = None,
) -> EncodedClip:
    """Encode the arrays of one clip for the store (every feature of ``specs`` is required).

    Args:
        source: the clip's fingerprint (:func:`avsc.features.shards.clip_fingerprints`);
            default: a hash of the clip id and the encoded values (arrays with no file behind).

    Raises:
        ValueError: a feature is missing or has the wrong shape.
    """
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise ValueError(f"{clip_id}: no {', '.join(missing)} array")
    values = {name: encode_feature(arrays[name], spec) for name, spec in specs.items()}
    digests = {name: value_digest(value) for name, value in values.items()}
    if source is None:
        source = "content:" + hash_value([clip_id, digests])
    return EncodedClip(clip_id, label, split, values, source, digests)


def part_schema(specs: dict[str, FeatureSpec]) -> Any:
    """The Arrow schema of a part: ids, then one column per feature with its spec as metadata."""
    import pyarrow as pa

    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
    for name, spec in specs.items():
        kind = pa.list_(pa.binary()) if spec.encoding == "jpeg" else pa.binary(spec.nbytes)
        fields.append(pa.field(name, kind, nullable=False, metadata={"avsc.spec": json.dumps(spec.to_json())}))
    fields.extend(pa.field(name + DIGEST_SUFFIX, pa.string(), nullable=False) for name in specs)
    return pa.schema(fields, metadata={"avsc.format": STORE_FORMAT})


def write_part(location: str, clips: Sequence[EncodedClip], specs: dict[str, FeatureSpec]) -> None:
    """Write ``clips`` as one part file (one row group, page checksums on), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = part_schema(specs)
    columns = {
        "clip_id": [c.clip_id for c in clips],
        "label": [c.label for c in clips],
        "split": [c.split for c in clips],
        "source": [c.source for c in clips],
    }
    for name in specs:
        columns[name] = [c.values[name] for c in clips]
    for name in specs:
        columns[name + DIGEST_SUFFIX] = [c.digests[name] for c in clips]
    table = pa.Table.from_pydict(columns, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        row_group_size=len(clips),
        use_dictionary=["label", "split"],
        write_statistics=["clip_id", "label", "split"],
        write_page_checksum=True,
    )
    locations.write_bytes(location, sink.getvalue().to_pybytes())


class PartWriter:
    """Collects encoded clips per split and writes a part every ``part_clips`` clips, and
    every ``flush_seconds`` whatever it holds (then the parts are shorter).

    Parts are named ``parts/<split>/<shard>-<run>-<seq>.parquet``: ``run`` is random per
    writer, so two runs of one shard never overwrite each other's parts.

    Attributes:
        rows: index rows (clip_id, label, split, part, row, source, digests) of every clip
            written so far.
    """

    def __init__(
        self,
        root: str | Path,
        specs: dict[str, FeatureSpec],
        shard: tuple[int, int],
        part_clips: int = PART_CLIPS,
        *,
        flush_seconds: float | None = None,
    ):
        if part_clips < 1:
            raise ConfigError(f"part_clips must be at least 1, not {part_clips}")
        self.root, self.specs, self.shard, self.part_clips = str(root), specs, shard, part_clips
        self.flush_seconds = flush_seconds
        self.run = secrets.token_hex(3)
        self.rows: list[dict] = []
        self._pending: dict[str, list[EncodedClip]] = {}
        self._seq = 0
        self._written_at = time.monotonic()

    def add(self, clip: EncodedClip) -> None:
        """Take one encoded clip; a part is written when its split has ``part_clips``."""
        pending = self._pending.setdefault(clip.split, [])
        pending.append(clip)
        if len(pending) >= self.part_clips:
            self._write(clip.split)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Write what is pending when ``flush_seconds`` have passed since the last write."""
        if self.flush_seconds is not None and time.monotonic() - self._written_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write every split's pending clips (a last, shorter part each)."""
        for split in sorted(self._pending):
            if self._pending[split]:
                self._write(split)
        self._written_at = time.monotonic()

    def _write(self, split: str) -> None:
        clips = self._pending.pop(split)
        relative = f"parts/{split}/{shard_name(self.shard)}-{self.run}-{self._seq:05d}.parquet"
        self._seq += 1
        write_part(locations.join(self.root, *relative.split("/")), clips, self.specs)
        self.rows.extend(
            {
                "clip_id": c.clip_id,
                "label": c.label,
                "split": c.split,
                "part": relative,
                "row": row,
                "source": c.source,
                **{name + DIGEST_SUFFIX: c.digests[name] for name in self.specs},
            }
            for row, c in enumerate(clips)
        )
        log.debug("wrote %s (%d clips)", relative, len(clips))
