"""The feature store: what ``avsc preprocess`` writes and training, embedding and evaluation stream.

A store is a folder or an ``s3://`` prefix (any number of them can be opened together, e.g.
one per preprocessing shard)::

    FEATURES/
      store.json                       format, full feature config and its hash, and for each
                                       feature its shape, dtype and encoding
      parts/<split>/<shard>-<run>-<seq>.parquet
                                       up to ``part_clips`` (32) clips of one split, one row a
                                       clip: clip_id, label, split, source (the clip's
                                       fingerprint), mel, gam, cqt, frames, and the SHA-256 of
                                       each feature's stored bytes (mel_sha256, ...)
      index/<shard>.parquet            clip_id, label, split, part (relative), row, source and
                                       the SHA-256 digests: the clips of one preprocessing
                                       shard as the manifest of its latest run lists them;
                                       its metadata holds that manifest's lineage
      summary-<shard>.json, summary.json

Why this layout (measured in docs/features.md):

- **One feature, read alone, sequentially, in large reads.** A part is one Parquet row group,
  so each feature of its clips is one contiguous column chunk (about 12 MB of ``mel`` for 32
  clips at the paper preset). A reader asks for one column (column projection): the
  ``aud-mel`` stream reads the ``mel`` chunks and never a byte of ``gam``, ``cqt`` or
  ``frames``; from ``s3://`` that is one ranged GET per part, plus its footer.
- **Splits in their own parts**, so the val pass of every epoch reads val clips only.
- **Spectrograms** as ``fixed_size_binary`` values: the C-ordered ``float16`` bytes of
  ``[shape=(n_bins, frames, channels)]`` (``np.frombuffer(value, "<f2").reshape(shape)``), so a
  part's column decodes to one array without per-element work. Delta and delta-delta are not
  stored: the audio models compute them (:class:`avsc.models.backbones.Deltas`).
- **Frames** as a list of JPEG images per clip (Pillow/libjpeg-turbo, quality
  ``features.frames.jpeg_quality``, no chroma subsampling), about 7x smaller than raw RGB;
  ``features.frames.encoding = "raw"`` stores the uint8 pixels instead.
- **Self-describing**: each part's schema carries the shapes, dtypes and encodings as field
  metadata, and ``store.json`` the full config; ``pandas.read_parquet(part, columns=[...])`` or
  DuckDB (``select clip_id, label from 'FEATURES/parts/*/*.parquet'``) read it without avsc.
- **Atomic per file and resumable**: each part is written whole (a temporary file renamed, or
  one object PUT), so a killed run leaves whole parts; a re-run skips the clips that are in
  a part already (:mod:`avsc.features.store_writer`).
- **Keyed by what a clip is, labelled by the current manifest.** A part row's ``source`` is
  the clip's fingerprint (its id, media path, the video's size and modification time or
  ETag, its segment offset): a clip whose source changed is processed again, whatever its
  id. Labels and splits are taken from the manifest of the latest preprocess run and kept
  in the index (the label and split in a part are those it was first written with and are
  not read): relabelling a clip or moving it between splits costs no decoding and reaches
  every reader. The index's lineage and a hash of its rows identify the data
  (:attr:`FeatureStore.lineage`), which every model, embedding file and report records.
- **Verified on read**: Parquet page checksums (CRC-32) are written and checked, and every
  clip's value of the feature read is checked against the SHA-256 recorded in its part
  and in the index; a mismatch is a :class:`~avsc.errors.DataError` naming the part and
  the clip. JPEG frames that do not decode cleanly are an error too.

Writing is in :mod:`avsc.features.store_writer`; this module holds the format and reading.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsc.config import BACKBONE_FEATURE, FeatureConfig, feature_config_from_dict
from avsc.errors import DataError
from avsc.records.lineage import Lineage, hash_rows, hash_value
from avsc.storage import locations

log = logging.getLogger(__name__)

STORE_FORMAT = "avsc-features/3"
PREVIOUS_FORMATS = {"avsc-features/1": "one uncompressed .npz file per clip",
                    "avsc-features/2": "parts without clip fingerprints or content digests"}
DIGEST_SUFFIX = "_sha256"  # a part's and an index's column of each feature's digests
FEATURE_NAMES: tuple[str, ...] = ("mel", "gam", "cqt", "frames")
SPECTROGRAM_DTYPE = "<f2"  # little-endian float16
META_FILE = "store.json"
# A folder holding only this file stands for the store it names: a pipeline step's small
# artifact pointing at a store on s3:// ({"uri": ..., "config_hash": ...}), so that a
# step downloads a few bytes before it starts, not the store.
REF_FILE = "feature-store.json"
_REPREPROCESS = "re-run `avsc preprocess MANIFEST -o NEW_FOLDER`"


@dataclass(frozen=True)
class FeatureSpec:
    """How one feature is stored.

    Attributes:
        name: ``mel``, ``gam``, ``cqt`` or ``frames``.
        shape: one clip's array, e.g. ``(128, 715, 2)`` or ``(20, 224, 224, 3)``.
        dtype: NumPy dtype of the decoded array (``<f2`` or ``|u1``).
        encoding: ``raw`` (the array's C-ordered bytes) or ``jpeg`` (frames: one JPEG each).
        jpeg_quality: the JPEG quality the frames were encoded with (``jpeg`` only).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str = "raw"
    jpeg_quality: int | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of one clip's decoded array."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        out = {"shape": list(self.shape), "dtype": self.dtype, "encoding": self.encoding}
        if self.jpeg_quality is not None:
            out["jpeg_quality"] = self.jpeg_quality
        return out

    @classmethod
    def from_json(cls, name: str, data: dict) -> FeatureSpec:
        return cls(name=name, shape=tuple(int(v) for v in data["shape"]), dtype=data["dtype"],
                   encoding=data.get("encoding", "raw"), jpeg_quality=data.get("jpeg_quality"))


def feature_specs(config: FeatureConfig, shapes: dict[str, Sequence[int]]) -> dict[str, FeatureSpec]:
    """The spec of each feature in ``shapes`` under ``config`` (frames encoding and quality)."""
    specs = {}
    for name, shape in shapes.items():
        if name == "frames":
            jpeg = config.frames.encoding == "jpeg"
            specs[name] = FeatureSpec(name, tuple(shape), "|u1", "jpeg" if jpeg else "raw",
                                      config.frames.jpeg_quality if jpeg else None)
        else:
            specs[name] = FeatureSpec(name, tuple(shape), SPECTROGRAM_DTYPE)
    return specs


def required_feature(backbone: str, specs: dict, source: str | os.PathLike = "<feature store>") -> str:
    """The feature ``backbone`` reads, checked to be in ``specs`` (or shapes).

    The one check of "does this store hold what this backbone needs", used by training,
    embedding, the streams and the model builder.

    Raises:
        DataError: the feature is missing (naming the store and what to do).
    """
    from avsc.config import BACKBONES

    if backbone not in BACKBONE_FEATURE:
        raise DataError(source, f"unknown backbone {backbone!r}", f"choose one of {', '.join(BACKBONES)}")
    feature = BACKBONE_FEATURE[backbone]
    if feature not in specs:
        raise DataError(source, f"feature store has no {feature!r} feature, needed by {backbone}",
                        "re-run preprocess with that feature")
    return feature


# --------------------------------------------------------------------------- JPEG frames

def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """One ``[shape=(H, W, 3), uint8]`` RGB frame as JPEG bytes (4:4:4, no chroma subsampling)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB").save(
        buffer, format="JPEG", quality=int(quality), subsampling=0)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> ``[shape=(H, W, 3), uint8]`` RGB (Pillow; the same pixels as ``tf.io.decode_jpeg``
    with ``dct_method="INTEGER_ACCURATE"``).

    Raises:
        OSError: the data is not a JPEG that decodes completely (Pillow refuses truncated
            images unless told otherwise).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def value_digest(value: bytes | memoryview | Sequence[bytes]) -> str:
    """SHA-256 (hex) of one clip's stored value of a feature: its bytes, or for a list of JPEG
    frames each frame's length (8 bytes, little-endian) and bytes in turn."""
    import hashlib

    digest = hashlib.sha256()
    if isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(value)
    else:
        for frame in value:
            digest.update(len(frame).to_bytes(8, "little"))
            digest.update(frame)
    return digest.hexdigest()


def encode_feature(array: np.ndarray, spec: FeatureSpec) -> bytes | list[bytes]:
    """One clip's array as stored: raw bytes, or a list of JPEG frames.

    Raises:
        ValueError: the array's shape is not ``spec.shape``.
    """
    array = np.asarray(array)
    if tuple(array.shape) != spec.shape:
        raise ValueError(f"{spec.name}: shape {array.shape}, the store expects {spec.shape}")
    if spec.encoding == "jpeg":
        return [encode_jpeg(frame, spec.jpeg_quality or 90) for frame in array]
    return np.ascontiguousarray(array, dtype=spec.dtype).tobytes()


def decode_feature(value: bytes | Sequence[bytes], spec: FeatureSpec) -> np.ndarray:
    """One stored value back to ``[shape=spec.shape]`` (``float16`` spectrogram, ``uint8`` frames)."""
    if spec.encoding == "jpeg":
        return np.stack([decode_jpeg(frame) for frame in value])
    return np.frombuffer(value, dtype=spec.dtype).reshape(spec.shape)


# --------------------------------------------------------------------------- reading parts

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
            return pq.read_table(handle, columns=list(columns), use_threads=False, pre_buffer=True,
                                 page_checksum_verification=True)
    except FileNotFoundError:
        raise DataError(location, "feature part listed in the index is missing",
                        f"the store is incomplete: {_REPREPROCESS} for its shard") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(location, f"unreadable feature part ({str(exc).splitlines()[0]})",
                        "delete it and re-run preprocess for its shard") from None


def read_part_feature(part: str | Part, spec: FeatureSpec, rows: Sequence[int] | None = None,
                      *, decode: bool = True):
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
            raise DataError(location, f"clip {clip_ids[row]!r}: its {spec.name} bytes do not match their "
                            "recorded SHA-256 (the part is corrupted or was replaced)",
                            f"delete the part and {_REPREPROCESS.replace('NEW_FOLDER', 'FEATURES')} to redo it")

    if spec.encoding == "raw":
        expected = spec.nbytes
        if column.type.byte_width != expected:
            raise DataError(location, f"{spec.name} values are {column.type.byte_width} bytes, "
                            f"store.json says {expected}", "the part belongs to another store")
        buffer = memoryview(column.buffers()[1])[column.offset * expected:(column.offset + len(column)) * expected]
        for number, row in enumerate(selected):
            check(number, row, buffer[row * expected:(row + 1) * expected])
        data = np.frombuffer(buffer, dtype=spec.dtype)
        array = data.reshape(len(column), *spec.shape)
        if rows is None or np.array_equal(rows, np.arange(len(column))):
            return array  # every row in order (the usual case): a view, no copy
        return array[np.asarray(rows)]
    values = column.to_pylist()
    values = [values[i] for i in selected]
    for number, (row, value) in enumerate(zip(selected, values)):
        check(number, row, value)
    if not decode:
        return values
    out = []
    for row, value in zip(selected, values):
        try:
            out.append(decode_feature(value, spec))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(location, f"clip {clip_ids[row]!r}: a frame does not decode as JPEG ({exc})",
                            "delete the part and re-run preprocess for its shard") from None
    return np.stack(out) if out else np.zeros((0, *spec.shape), np.uint8)


# --------------------------------------------------------------------------- the store

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


@dataclass(frozen=True)
class FeatureStore:
    """One or more store folders (or ``s3://`` prefixes) opened together, e.g. one per shard.

    Attributes:
        roots: the store locations.
        config: the feature config they share; ``config_hash`` its hash.
        specs: feature name -> :class:`FeatureSpec`.
        index: pandas DataFrame with clip_id, label, split, part (full location), row, source
            (the clip's fingerprint) and each feature's SHA-256 (``mel_sha256``, ...), in
            store order (part by part, row by row); streams read clips in this order.
        lineage: the data the store holds: the dataset and manifest its index was written
            from, and ``store_hash``, a hash of the feature config and of every clip's id,
            label, split and fingerprint.
    """

    roots: tuple[str, ...]
    config: FeatureConfig
    config_hash: str
    specs: dict[str, FeatureSpec]
    index: object = field(repr=False)  # pandas.DataFrame
    lineage: Lineage | None = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Feature name -> shape of one clip's array."""
        return {name: spec.shape for name, spec in self.specs.items()}

    @classmethod
    def open(cls, roots: str | os.PathLike | Sequence[str | os.PathLike]) -> FeatureStore:
        """Open store folders or ``s3://`` prefixes; they must share one feature config.

        Reads ``store.json`` and the shard indexes only (no feature bytes).

        Raises:
            DataError: a location is not a store or one of a previous format (with what to
                do), the configs differ, or no clip is indexed.
            StoreError: the object store refused or could not be reached.
        """
        import pandas as pd

        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        roots = tuple(dict.fromkeys(resolve_store(r) for r in roots))  # shards may share one store
        if not roots:
            raise DataError("<none>", "no feature store given")
        meta = None
        frames = []
        lineages: dict[str, Lineage] = {}
        for root in roots:
            this = read_store_meta(root)
            if meta is None:
                meta = this
            elif this["config_hash"] != meta["config_hash"]:
                raise DataError(root, f"feature config {this['config_hash']} differs from "
                                f"{meta['config_hash']} of {roots[0]}")
            for shard_file in locations.list_files(locations.join(root, "index"), suffix=".parquet"):
                part, lineage = _read_index(shard_file)
                _check_same_manifest(lineages, shard_file, lineage)
                part["part"] = [locations.join(root, *p.split("/")) for p in part["part"]]
                frames.append(part)
        if not frames:
            raise DataError(roots[0], "feature store has no indexed clips",
                            "run `avsc preprocess` into it (every shard) first")
        index = pd.concat(frames, ignore_index=True).drop_duplicates("clip_id", keep="last")
        index = index.sort_values(["part", "row"], kind="stable").reset_index(drop=True)
        specs = {name: FeatureSpec.from_json(name, spec) for name, spec in meta["features"].items()}
        lineage = next(iter(lineages.values()))
        store_hash = hash_value([meta["config_hash"],
                                 hash_rows(index.to_dict("records"), ("clip_id", "label", "split", "source"))])
        return cls(roots=roots, config=feature_config_from_dict(meta["config"]),
                   config_hash=meta["config_hash"], specs=specs, index=index,
                   lineage=dataclasses.replace(lineage, store_hash=store_hash))

    def clips(self, split: str | None = None):
        """Index rows of one split (``train``, ``val``, ``test``) or of all clips, in store order."""
        if split is None:
            return self.index
        return self.index[self.index["split"] == split].reset_index(drop=True)

    def parts(self, split: str | None = None) -> list[Part]:
        """The parts holding the clips of ``split`` (or all), each with the rows to take."""
        rows = self.clips(split)
        out = []
        for location, group in rows.groupby("part", sort=False):
            out.append(Part(location=location, rows=group["row"].to_numpy(np.int64),
                            clip_ids=tuple(group["clip_id"]), labels=tuple(group["label"]),
                            digests={name: tuple(group[name + DIGEST_SUFFIX]) for name in self.specs
                                     if name + DIGEST_SUFFIX in group}))
        return out

    def read_clip(self, clip_id: str, feature: str) -> np.ndarray:
        """One clip's decoded array of ``feature`` (reads that feature's column of its part).

        Raises:
            DataError: no such clip or feature in the store.
        """
        if feature not in self.specs:
            raise DataError(self.roots[0], f"feature store has no {feature!r} feature")
        found = self.index[self.index["clip_id"] == clip_id]
        if not len(found):
            raise DataError(self.roots[0], f"clip {clip_id!r} is not in the feature store")
        row = found.iloc[0]
        part = Part(location=row["part"], rows=np.array([int(row["row"])]), clip_ids=(clip_id,),
                    labels=(row["label"],), digests={feature: (row[feature + DIGEST_SUFFIX],)})
        return read_part_feature(part, self.specs[feature])[0]

    def spec_for(self, backbone: str) -> FeatureSpec:
        """The spec of the feature ``backbone`` reads (:func:`required_feature` checks it)."""
        return self.specs[required_feature(backbone, self.specs, self.roots[0])]


def resolve_store(location: str | os.PathLike) -> str:
    """The store a location stands for: itself, or the store its ``feature-store.json`` names.

    Raises:
        DataError: the reference file is unreadable.
    """
    location = str(location)
    ref = locations.join(location, REF_FILE)
    if locations.exists(locations.join(location, META_FILE)) or not locations.exists(ref):
        return location
    try:
        return str(locations.read_json(ref)["uri"])
    except (ValueError, KeyError) as exc:
        raise DataError(ref, f"not a feature-store reference ({exc})", "re-run preprocess") from None


def read_store_meta(root: str) -> dict:
    """``store.json`` of a store, checked to be of the current format.

    Raises:
        DataError: not a store, or one of a previous format (saying how to get a current one).
    """
    meta_location = locations.join(root, META_FILE)
    if not locations.exists(meta_location):
        raise DataError(root, f"not a feature store (no {META_FILE})",
                        "run `avsc preprocess MANIFEST -o FEATURES` first")
    try:
        meta = locations.read_json(meta_location)
    except ValueError as exc:
        raise DataError(meta_location, f"not valid JSON ({exc})", _REPREPROCESS) from None
    found = meta.get("format")
    if found in PREVIOUS_FORMATS:
        convert = (f", or convert it: python -c \"from avsc.features.store_writer "
                   f"import convert_store; convert_store('{root}', 'NEW_FOLDER')\""
                   if found == "avsc-features/1" else "")
        raise DataError(root, f"feature store of the previous format {found} "
                        f"({PREVIOUS_FORMATS[found]}), which this version no longer reads",
                        f"{_REPREPROCESS}{convert}")
    if found != STORE_FORMAT:
        raise DataError(meta_location, f"unknown store format {found!r} (this version reads {STORE_FORMAT})",
                        _REPREPROCESS)
    return meta


def _read_index(location: str):
    """A shard index as (pandas DataFrame, the :class:`Lineage` of the manifest it lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with locations.open_input(location) as handle:
            table = pq.read_table(handle, page_checksum_verification=True)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(location, f"unreadable store index ({str(exc).splitlines()[0]})",
                        "re-run preprocess for that shard") from None
    text = (table.schema.metadata or {}).get(b"avsc.lineage")
    if text is None or "source" not in table.column_names:
        raise DataError(location, "store index without clip fingerprints or lineage (an older avsc)",
                        "re-run preprocess for that shard")
    return table.to_pandas(), Lineage.from_json(text, source=location)


def _check_same_manifest(seen: dict[str, Lineage], location: str, lineage: Lineage) -> None:
    """Shard indexes opened together must list one manifest's clips."""
    for other_location, other in seen.items():
        if other.manifest_hash != lineage.manifest_hash:
            differ = "; ".join(lineage.differences(other))
            raise DataError(location, f"lists the clips of another manifest than {other_location} ({differ})",
                            "re-run preprocess for every shard with the same manifest "
                            "(or remove the index of a shard that no longer exists)")
    seen[location] = lineage


def read_summary(root: str | Path) -> dict:
    """The store's ``summary.json`` (processed clips, rejected clips with reasons, shapes)."""
    return locations.read_json(locations.join(str(root), "summary.json"))
