"""A feature store's ``summary.json`` (:class:`StoreSummary`): what preprocessing made of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from avsc.records._base import Record
from avsc.records.lineage import Lineage

__all__ = ["RejectedClip", "StoreSummary"]


@dataclasses.dataclass(frozen=True)
class RejectedClip:
    """A clip preprocessing could not use, and why (the reason names the file and the problem)."""

    clip_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class StoreSummary(Record):
    """What a feature store holds, over every shard (``FEATURES/summary.json``).

    Rebuilt by :func:`avsc.features.store_writer.merge_summaries` from the shard indexes and
    shard summaries whenever a shard's preprocessing run ends, so it describes the store as
    the latest run of each shard left it.

    Attributes:
        processed: clips that have features in the store (as their latest run's manifest
            lists them).
        rejected: the clips the latest run of a shard could not process and that still have
            no features, sorted by clip id.
        shapes: feature name -> the shape of one clip's array, e.g. ``(128, 715, 2)``.
        shards: ``(index, count)`` of each shard that has a summary.
        lineage: the data the store holds (:attr:`avsc.features.store.FeatureStore.lineage`);
            None while its shards list different manifests.

    Example:
        >>> summary = StoreSummary(processed=2, rejected=(RejectedClip("bus-lyon-1-1", "no sound"),),
        ...                        shapes={"mel": (128, 715, 2)}, shards=((0, 1),))
        >>> StoreSummary.from_dict(summary.to_dict()) == summary
        True
        >>> summary.to_dict()["rejected"]
        [{'clip_id': 'bus-lyon-1-1', 'reason': 'no sound'}]
    """

    FILE_NAME: ClassVar[str] = "summary.json"
    FORMAT: ClassVar[str] = "avsc-store-summary"
    VERSION: ClassVar[int] = 1
    WRITTEN_BY: ClassVar[str] = "avsc preprocess"

    processed: int
    rejected: tuple[RejectedClip, ...]
    shapes: Mapping[str, tuple[int, ...]]
    shards: tuple[tuple[int, int], ...] = ()
    lineage: Lineage | None = None
