"""Lineage: which data an output was made from, so outputs of different data never mix."""

from __future__ import annotations

import dataclasses
import os

from avsc.errors import DataError

__all__ = ["Lineage"]


@dataclasses.dataclass(frozen=True)
class Lineage:
    """The data behind an output (a model folder, embeddings, a fusion model, a report).

    Attributes:
        dataset: the dataset's name, as the manifest records it.
        manifest_hash: hash of the manifest's rows (clip ids, sources, labels, splits); two
            manifests with the same hash describe the same data.
        store_hash: hash of the feature store's index the output read (None before features).
    """

    dataset: str
    manifest_hash: str
    store_hash: str | None = None

    def differences(self, other: Lineage) -> list[str]:
        """Human-readable differences from ``other`` (empty when they agree); a field that
        either side does not know (None) is not a difference."""
        out = []
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine is not None and theirs is not None and mine != theirs:
                out.append(f"{field.name.replace('_', ' ')} {theirs} != {mine}")
        return out

    def check_same(self, other: Lineage, *, source: str | os.PathLike[str], what: str, hint: str) -> None:
        """Raise :class:`~avsc.errors.DataError` naming ``source`` when ``other`` (the lineage
        recorded at ``source``) differs from this one.

        Args:
            other: the lineage recorded with the earlier output.
            source: where ``other`` was read from.
            what: what the earlier output is, e.g. ``"checkpoint"``.
            hint: what the user can do.
        """
        differences = self.differences(other)
        if differences:
            raise DataError(source, f"{what} was made from other data ({'; '.join(differences)})", hint)
