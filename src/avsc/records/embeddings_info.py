"""A backbone's embedding file: what ``<backbone>.parquet`` holds and how it was made.

The record lives in the file itself, as one JSON value under the Parquet schema metadata key
``avsc.embeddings`` (:attr:`EmbeddingsInfo.METADATA_KEY`), so the file stays one file and
readable as is (``pandas.read_parquet``, DuckDB); the columns are described in
:mod:`avsc.training.embeddings`.

Example:
    >>> from avsc.records import EmbeddingsInfo, Lineage
    >>> info = EmbeddingsInfo(backbone="aud-mel", config_hash="abc", model_sha256="0f" * 32,
    ...                       labels=("airport", "bus"), lineage=Lineage("demo", "0123456789abcdef"),
    ...                       temperature=1.25)
    >>> EmbeddingsInfo.from_metadata(info.to_metadata(), source="aud-mel.parquet") == info
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import ClassVar

from avsc.records._base import Record, RecordError
from avsc.records.lineage import Lineage
from avsc.storage import locations

__all__ = ["EmbeddingsInfo"]


@dataclasses.dataclass(frozen=True)
class EmbeddingsInfo(Record):
    """One backbone's embeddings: the model and data they come from (``<backbone>.parquet``).

    Written by :func:`avsc.training.embeddings.write_embeddings` (``avsc embed``) into the
    Parquet schema's metadata; read by fusion (:func:`avsc.training.fusion_data.load_fusion_data`),
    the evaluation and its provenance check.

    Attributes:
        backbone: the backbone whose embeddings these are (``aud-mel`` .. ``vis-conv``).
        config_hash: hash of the backbone's training settings (its ``config.json``).
        model_sha256: SHA-256 of the ``model.keras`` that made them.
        labels: the class names, in the order of the ``fc10`` columns.
        lineage: the data the clips and the model come from.
        temperature: the backbone's temperature, fitted on val: its calibrated probabilities
            are ``softmax(fc10 / temperature)`` (``fc10`` itself stays raw).
    """

    FILE_NAME: ClassVar[str] = ""  # not a file of its own: Parquet schema metadata
    FORMAT: ClassVar[str] = "avsc-embeddings-info"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc embed"
    METADATA_KEY: ClassVar[str] = "avsc.embeddings"

    backbone: str
    config_hash: str
    model_sha256: str
    labels: tuple[str, ...]
    lineage: Lineage
    temperature: float = 1.0

    def to_metadata(self) -> dict[str, str]:
        """The Parquet schema metadata that holds the record."""
        return {self.METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True)}

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[bytes, bytes] | Mapping[str, str] | None, *, source: str | os.PathLike[str]
    ) -> EmbeddingsInfo:
        """The record in a Parquet file's schema metadata (``source`` names the file).

        Raises:
            RecordError: no record (not an avsc embedding file, or one written by an older
                avsc), not JSON, or a record of another format or version.
        """
        plain = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (metadata or {}).items()
        }
        hint = f"run `{cls.WRITTEN_BY}` again"
        if cls.METADATA_KEY not in plain:
            older = "avsc.backbone" in plain
            raise RecordError(
                source,
                "an embedding file written by an older avsc"
                if older
                else f"not an avsc embedding file (no {cls.METADATA_KEY} metadata)",
                hint,
            )
        try:
            data = json.loads(plain[cls.METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise RecordError(source, f"{cls.METADATA_KEY} metadata is not valid JSON ({exc})", hint) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str]) -> EmbeddingsInfo:
        """The record of the embedding file ``path`` (a local path or ``s3://``), from its
        schema alone (no rows are read).

        Raises:
            RecordError: not a readable Parquet file, or see :meth:`from_metadata`.
            StoreError: the object store refused or could not be reached.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if locations.is_remote(str(path)):
                schema = pq.read_schema(pa.BufferReader(locations.read_bytes(str(path))))
            else:
                schema = pq.read_schema(os.fspath(path))
        except FileNotFoundError:
            raise RecordError(path, "embedding file not found", f"run `{cls.WRITTEN_BY}` first") from None
        except (OSError, pa.ArrowInvalid) as exc:
            raise RecordError(path, f"not a readable embedding file ({exc})", f"run `{cls.WRITTEN_BY}` again") from None
        return cls.from_metadata(schema.metadata, source=path)
