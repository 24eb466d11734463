"""Lineage: which data an output was made from, so outputs of different data never mix.

Hashes are SHA-256 over canonical JSON (sorted keys, rows sorted by clip id), shortened to
16 hex digits (64 bits: a collision between two real manifests is not a practical concern).
:func:`hash_rows` is the one way avsc hashes a table of rows; the manifest
(:func:`avsc.data.manifest.manifest_lineage`) and the feature store
(:meth:`avsc.features.store.FeatureStore.lineage`) both use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from avsc.errors import DataError

__all__ = ["Lineage", "hash_rows", "hash_value"]

HASH_DIGITS = 16


def hash_value(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys), 16 hex digits."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]


def hash_rows(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> str:
    """Hash of ``columns`` of every row, independent of row order (rows are sorted first)."""
    columns = list(columns)
    table = sorted(json.dumps([row[c] for c in columns], default=str) for row in rows)
    return hash_value([columns, table])


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The data behind an output (a model folder, embeddings, a fusion model, a report).

    Attributes:
        dataset: the dataset's name, as the manifest records it.
        manifest_hash: hash of the manifest's rows (clip ids, media paths, segment offsets,
            labels, splits); two manifests with the same hash describe the same data. It is
            the hash of the three below.
        store_hash: hash of the feature store's index the output read: the feature settings
            and, per clip, its label, split and source fingerprint (None before features).
        clips_hash: hash of the clips alone (ids, media paths, segment offsets).
        labels_hash: hash of every clip's label.
        splits_hash: hash of every clip's split.
    """

    dataset: str
    manifest_hash: str
    store_hash: str | None = None
    clips_hash: str | None = None
    labels_hash: str | None = None
    splits_hash: str | None = None

    def differences(self, other: Lineage) -> list[str]:
        """What differs in ``other`` (an earlier output's lineage) from this one, in words,
        e.g. ``["labels differ", "splits differ"]``; empty when they agree. A field that
        either side does not know (None) is not a difference."""

        def known(a: Any, b: Any) -> bool:
            return a is not None and b is not None and a != b

        out = []
        if known(self.dataset, other.dataset):
            out.append(f"dataset {other.dataset!r} there, {self.dataset!r} here")
        if known(self.manifest_hash, other.manifest_hash):
            parts = [
                name
                for name in ("clips", "labels", "splits")
                if known(getattr(self, f"{name}_hash"), getattr(other, f"{name}_hash"))
            ]
            out.extend(f"{name} differ" for name in parts)
            if not parts:
                out.append(f"manifest {other.manifest_hash} there, {self.manifest_hash} here")
        elif known(self.store_hash, other.store_hash):
            # Same manifest, other features: a source file changed, or other feature settings.
            out.append(
                f"feature store {other.store_hash} there, {self.store_hash} here "
                "(a source file or the feature settings changed)"
            )
        return out

    def check_same(self, other: Lineage | None, *, source: str | os.PathLike[str], what: str, hint: str) -> None:
        """Raise :class:`~avsc.errors.DataError` naming ``source`` when ``other`` (the lineage
        recorded at ``source``) differs from this one, or is not recorded at all.

        Args:
            other: the lineage recorded with the earlier output (None: it has none).
            source: where ``other`` was read from.
            what: what the earlier output is, e.g. ``"checkpoint"``.
            hint: what the user can do.
        """
        if other is None:
            raise DataError(source, f"{what} records no data lineage (written by an older avsc)", hint)
        differences = self.differences(other)
        if differences:
            raise DataError(source, f"{what} was made from other data ({'; '.join(differences)})", hint)

    def to_json(self) -> str:
        """The lineage as one JSON object (for Parquet metadata and JSON files)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any], *, source: str | os.PathLike[str]) -> Lineage:
        """The lineage :meth:`to_json` wrote.

        Raises:
            DataError: not a lineage (naming ``source``).
        """
        try:
            data = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - names)
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(unknown)}")
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise DataError(source, f"unreadable data lineage ({exc})", "write it anew") from None
