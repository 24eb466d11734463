"""The feature store's format: names, and how one clip's feature is stored and verified.

:class:`FeatureSpec` says how a feature is stored (shape, dtype, encoding);
:func:`encode_feature` and :func:`decode_feature` turn one clip's array into its stored value
(the C-ordered ``float16`` bytes of a spectrogram, or a list of JPEG frames) and back;
:func:`value_digest` is the SHA-256 every part and index records for that value;
:func:`read_store_meta` reads ``store.json`` and refuses a store of a previous format with
what to do. The layout of a store and the reasons for it are in :mod:`avsc.features.store`.

Example:
    >>> import numpy as np
    >>> spec = FeatureSpec("mel", (4, 3, 2), SPECTROGRAM_DTYPE)
    >>> value = encode_feature(np.ones((4, 3, 2)), spec)
    >>> len(value), decode_feature(value, spec).dtype.name
    (48, 'float16')
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from avsc.config import FeatureConfig
from avsc.errors import DataError
from avsc.storage import locations

STORE_FORMAT = "avsc-features/3"
PREVIOUS_FORMATS = {
    "avsc-features/1": "one uncompressed .npz file per clip",
    "avsc-features/2": "parts without clip fingerprints or content digests",
}
DIGEST_SUFFIX = "_sha256"  # a part's and an index's column of each feature's digests
FEATURE_NAMES: tuple[str, ...] = ("mel", "gam", "cqt", "frames")
SPECTROGRAM_DTYPE = "<f2"  # little-endian float16
META_FILE = "store.json"
# A folder holding only this file stands for the store it names: a pipeline step's small
# artifact pointing at a store on s3:// ({"uri": ..., "config_hash": ...}), so that a
# step downloads a few bytes before it starts, not the store.
REF_FILE = "feature-store.json"
# What to do about a store this version cannot use.
REPREPROCESS = "re-run `avsc preprocess MANIFEST -o NEW_FOLDER`"


def shard_name(shard: tuple[int, int]) -> str:
    """``shard-00002-of-00004``: how a shard's parts, index and summary are named."""
    return f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


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

    def to_json(self) -> dict[str, Any]:
        """The spec as ``store.json`` and a part's field metadata hold it."""
        out: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype, "encoding": self.encoding}
        if self.jpeg_quality is not None:
            out["jpeg_quality"] = self.jpeg_quality
        return out

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> FeatureSpec:
        """The spec :meth:`to_json` wrote (a missing encoding is ``raw``)."""
        return cls(
            name=name,
            shape=tuple(int(v) for v in data["shape"]),
            dtype=data["dtype"],
            encoding=data.get("encoding", "raw"),
            jpeg_quality=data.get("jpeg_quality"),
        )


def feature_specs(config: FeatureConfig, shapes: Mapping[str, Sequence[int]]) -> dict[str, FeatureSpec]:
    """The spec of each feature in ``shapes`` under ``config`` (frames encoding and quality)."""
    specs: dict[str, FeatureSpec] = {}
    for name, shape in shapes.items():
        if name == "frames":
            jpeg = config.frames.encoding == "jpeg"
            specs[name] = FeatureSpec(
                name, tuple(shape), "|u1", "jpeg" if jpeg else "raw", config.frames.jpeg_quality if jpeg else None
            )
        else:
            specs[name] = FeatureSpec(name, tuple(shape), SPECTROGRAM_DTYPE)
    return specs


# --------------------------------------------------------------------------- values


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """One ``[shape=(H, W, 3), uint8]`` RGB frame as JPEG bytes (4:4:4, no chroma subsampling)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB").save(
        buffer, format="JPEG", quality=int(quality), subsampling=0
    )
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
        return np.stack([decode_jpeg(frame) for frame in cast(Sequence[bytes], value)])
    return np.frombuffer(cast(bytes, value), dtype=spec.dtype).reshape(spec.shape)


def read_store_meta(root: str) -> dict[str, Any]:
    """``store.json`` of a store, checked to be of the current format.

    Raises:
        DataError: not a store, or one of a previous format (saying how to get a current one).
    """
    meta_location = locations.join(root, META_FILE)
    if not locations.exists(meta_location):
        raise DataError(
            root, f"not a feature store (no {META_FILE})", "run `avsc preprocess MANIFEST -o FEATURES` first"
        )
    try:
        meta = locations.read_json(meta_location)
    except ValueError as exc:
        raise DataError(meta_location, f"not valid JSON ({exc})", REPREPROCESS) from None
    found = meta.get("format")
    if found in PREVIOUS_FORMATS:
        convert = (
            f', or convert it: python -c "from avsc.features.store_writer '
            f"import convert_store; convert_store('{root}', 'NEW_FOLDER')\""
            if found == "avsc-features/1"
            else ""
        )
        raise DataError(
            root,
            f"feature store of the previous format {found} "
            f"({PREVIOUS_FORMATS[found]}), which this version no longer reads",
            f"{REPREPROCESS}{convert}",
        )
    if found != STORE_FORMAT:
        raise DataError(
            meta_location, f"unknown store format {found!r} (this version reads {STORE_FORMAT})", REPREPROCESS
        )
    return meta
