"""Reading one part of a feature store: one feature of its clips, verified.

A part (layout in :mod:`avsc.features.store`) holds clips of one split as one Parquet row
group, one row a clip. A reader asks for one feature's column (column projection, so ``mel`` is read without
a byte of ``gam``, ``cqt`` or ``frames``; from ``s3://`` with ranged GETs) and gets it as
one array, every value checked against the SHA-256 its part records and, for a
:class:`Part` of an opened store, the one the store's index records. How a value is
encoded and hashed is in :mod:`avsc.features.store_format`; writing parts is in
:mod:`avsc.features.part_writer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avsc.errors import DataError
from avsc.features.store_format import DIGEST_SUFFIX, REPREPROCESS, FeatureSpec, decode_feature, value_digest
from avsc.storage import locations

__all__ = ["Part", "read_part", "read_part_feature"]


@dataclass(frozen=True)
class Part:
    """The clips of one split in one part file that a reader should take.

    Attributes:
        location: the part file (path or ``s3://`` URI).
        rows: row numbers in the file, in file order.
        clip_ids, labels: of those rows (labels from the store's index, i.e. the manifest).
        digests: feature name -> the SHA-256 the index records for each of those rows;
            :func:`read_part_feature` checks the values read against them.
    """

    location: str
    rows: np.ndarray
    clip_ids: tuple[str, ...]
    labels: tuple[str, ...]
    digests: dict = field(default_factory=dict)


def read_part(location: str, columns: Sequence[str]):
    """The named columns of one part file (a ``pyarrow.Table``), reading only their bytes.

    From ``s3://`` the footer and the column chunks are fetched with ranged GETs
    (``pre_buffer`` coalesces neighbouring ranges into one request).

    Raises:
        DataError: the part is missing or not readable Parquet (naming it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with locations.open_input(location) as handle:
            return pq.read_table(
                handle, columns=list(columns), use_threads=False, pre_buffer=True, page_checksum_verification=True
            )
    except FileNotFoundError:
        raise DataError(
            location,
            "feature part listed in the index is missing",
            f"the store is incomplete: {REPREPROCESS} for its shard",
        ) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            location,
            f"unreadable feature part ({str(exc).splitlines()[0]})",
            "delete it and re-run preprocess for its shard",
        ) from None


def read_part_feature(
    part: str | Part, spec: FeatureSpec, rows: Sequence[int] | np.ndarray | None = None, *, decode: bool = True
) -> Any:
    """One feature of the clips of a part, in part order (or the given ``rows``), verified.

    Every value read is checked against the SHA-256 its part records, and, when ``part`` is a
    :class:`Part` of an opened store, against the digest in the store's index (so a part
    replaced by another is caught too). Parquet's page checksums are verified while reading.

    Args:
        part: a :class:`Part` (its rows are read unless ``rows`` is given) or a part's location.

    Returns:
        ``[shape=(n, *spec.shape)]`` array (``float16`` spectrograms, ``uint8`` frames) when
        ``decode``; with ``decode=False`` and JPEG frames, a list of per-clip lists of JPEG
        bytes (for decoders that run elsewhere, e.g. in TensorFlow).

    Raises:
        DataError: the part is missing or unreadable, a page checksum fails, a value's digest
            differs from the recorded one, or a JPEG frame does not decode (naming the part
            and the clip).
    """
    expected_digests: Sequence[str] | None = None
    if isinstance(part, Part):
        location = part.location
        if rows is None:
            rows, expected_digests = part.rows, part.digests.get(spec.name)
    else:
        location = str(part)
    digest_name = spec.name + DIGEST_SUFFIX
    table = read_part(location, ["clip_id", spec.name, digest_name])
    column = table.column(spec.name).combine_chunks()
    clip_ids = table.column("clip_id").to_pylist()
    recorded = table.column(digest_name).to_pylist()
    selected = range(len(column)) if rows is None else [int(r) for r in rows]

    def check(number: int, row: int, value) -> None:
        digest = value_digest(value)
        if digest != recorded[row] or (expected_digests is not None and digest != expected_digests[number]):
            raise DataError(
                location,
                f"clip {clip_ids[row]!r}: its {spec.name} bytes do not match their "
                "recorded SHA-256 (the part is corrupted or was replaced)",
                f"delete the part and {REPREPROCESS.replace('NEW_FOLDER', 'FEATURES')} to redo it",
            )

    if spec.encoding == "raw":
        expected = spec.nbytes
        if column.type.byte_width != expected:
            raise DataError(
                location,
                f"{spec.name} values are {column.type.byte_width} bytes, store.json says {expected}",
                "the part belongs to another store",
            )
        buffer = memoryview(column.buffers()[1])[column.offset * expected : (column.offset + len(column)) * expected]
        for number, row in enumerate(selected):
            check(number, row, buffer[row * expected : (row + 1) * expected])
        data = np.frombuffer(buffer, dtype=spec.dtype)
        array = data.reshape(len(column), *spec.shape)
        if rows is None or np.array_equal(rows, np.arange(len(column))):
            return array  # every row in order (the usual case): a view, no copy
        return array[np.asarray(rows)]
    values = column.to_pylist()
    values = [values[i] for i in selected]
    for number, (row, value) in enumerate(zip(selected, values, strict=True)):
        check(number, row, value)
    if not decode:
        return values
    out = []
    for row, value in zip(selected, values, strict=True):
        try:
            out.append(decode_feature(value, spec))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(
                location,
                f"clip {clip_ids[row]!r}: a frame does not decode as JPEG ({exc})",
                "delete the part and re-run preprocess for its shard",
            ) from None
    return np.stack(out) if out else np.zeros((0, *spec.shape), np.uint8)
