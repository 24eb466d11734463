"""Phase II's input: the frozen embeddings of several backbones, read and aligned clip by clip.

:func:`load_fusion_data` reads each backbone's ``<backbone>.parquet`` (written by ``avsc
embed``, :mod:`avsc.training.embeddings`) from a folder or a mapping backbone -> file, and
checks that they describe the same clips with the same splits and labels; the result,
:class:`FusionData`, is what :mod:`avsc.training.fusion` trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avsc.errors import DataError
from avsc.labels import LABEL_INDEX, LABELS
from avsc.records import Lineage
from avsc.storage.files import backbone_paths

if TYPE_CHECKING:
    from avsc.training.embeddings import BackboneEmbeddings

__all__ = ["EmbeddingFiles", "FusionData", "load_fusion_data"]

# Where a backbone's embeddings are: a folder of ``<backbone>.parquet`` or backbone -> file.
EmbeddingFiles = str | Path | Mapping[str, str | Path]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionData:
    """The embeddings of several backbones, aligned clip by clip (rows sorted by clip_id).

    Attributes:
        fc1024, fc10: backbone -> [shape=(n_clips, width)] float32.
        model_sha256, config_hash: backbone -> what its Parquet metadata records.
        paths: backbone -> the Parquet file read.
        lineage: the data the embeddings were made from, as their metadata records it
            (None when none of them does).
    """

    backbones: tuple[str, ...]
    clip_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    fc1024: dict[str, np.ndarray]
    fc10: dict[str, np.ndarray]
    model_sha256: dict[str, str]
    config_hash: dict[str, str]
    paths: dict[str, Path] = field(default_factory=dict)
    lineage: Lineage | None = None

    def inputs(self, level: str, mask: np.ndarray | None = None) -> list[np.ndarray]:
        table = self.fc1024 if level == "fc1024" else self.fc10
        return [table[b] if mask is None else table[b][mask] for b in self.backbones]


def _read_one(path: Path, backbone: str) -> tuple[BackboneEmbeddings, np.ndarray]:
    """``backbone``'s embeddings in ``path`` and the order that sorts their rows by clip id.

    Raises:
        DataError: a file of another backbone, without clips, with duplicate clips, or whose
            ``fc10`` is not one column per class.
    """
    from avsc.training.embeddings import read_embeddings

    emb = read_embeddings(path)
    if emb.info.backbone != backbone:
        raise DataError(
            path,
            f"holds embeddings of {emb.info.backbone}, not {backbone}",
            "name each file <backbone>.parquet after the backbone that wrote it",
        )
    order = np.argsort(emb.clip_ids, kind="stable")
    ids = emb.clip_ids[order]
    if len(ids) == 0:
        raise DataError(path, "has no clips")
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise DataError(path, f"clip {dup!r} appears more than once")
    if emb.fc10.shape[1] != len(LABELS):
        raise DataError(path, f"fc10 has width {emb.fc10.shape[1]}, expected {len(LABELS)}")
    return emb, order


def _check_rows_agree(
    loaded: dict[str, tuple[Path, BackboneEmbeddings, np.ndarray]],
    first_backbone: str,
    clip_ids: np.ndarray,
    splits: np.ndarray,
    labels: np.ndarray,
) -> None:
    """Raise :class:`~avsc.errors.DataError` naming the file whose clips, or whose clips'
    splits or labels, differ from ``first_backbone``'s (rows in clip-id order)."""
    first_path = loaded[first_backbone][0]
    for backbone, (path, emb, order) in loaded.items():
        if backbone == first_backbone:
            continue
        ids = emb.clip_ids[order]
        if len(ids) != len(clip_ids) or not np.array_equal(ids, clip_ids):
            only_here = len(set(ids) - set(clip_ids))
            only_there = len(set(clip_ids) - set(ids))
            raise DataError(
                path,
                f"its clips differ from {first_path.name}'s ({only_here} only here, {only_there} only there)",
                "embed every backbone from the same feature store",
            )
        for name, mine, theirs in (("split", emb.splits[order], splits), ("label", emb.labels[order], labels)):
            bad = np.flatnonzero(mine != theirs)
            if len(bad):
                clip = clip_ids[bad[0]]
                raise DataError(
                    path,
                    f"clip {clip!r} has {name} {mine[bad[0]]!r} but {theirs[bad[0]]!r} in "
                    f"{first_path.name} ({len(bad)} clips differ)",
                    "embed every backbone from the same feature store",
                )


def load_fusion_data(embeddings: EmbeddingFiles, backbones: Sequence[str]) -> FusionData:
    """Read each backbone's embeddings and check they describe the same clips.

    Args:
        embeddings: a folder holding ``<backbone>.parquet`` (``avsc embed`` outputs), or a
            mapping backbone -> Parquet file (a pipeline step's artifacts).
        backbones: the backbones to read, in the order of the fusion model's inputs.

    Raises:
        DataError: a missing file (named), a file of another backbone, duplicate clips, or
            files that disagree on clip ids, splits, labels or recorded config hash.
        ConfigError: a mapping key that is not a backbone.
    """
    paths = backbone_paths(
        embeddings, "{backbone}.parquet", what="embeddings", hint="give the folder holding `avsc embed` outputs"
    )
    loaded: dict[str, tuple[Path, BackboneEmbeddings, np.ndarray]] = {}
    for backbone in backbones:
        path = paths.get(backbone)
        if path is None or not path.is_file():
            raise DataError(
                path or backbone,
                f"embedding file of {backbone} is missing",
                f"run `avsc embed` for {backbone}, or fuse a modality set without it",
            )
        emb, order = _read_one(path, backbone)
        loaded[backbone] = (path, emb, order)

    first_backbone = backbones[0]
    first_path, first, first_order = loaded[first_backbone]
    clip_ids, splits, labels = (first.clip_ids[first_order], first.splits[first_order], first.labels[first_order])
    unknown = sorted(set(labels) - set(LABEL_INDEX))
    if unknown:
        raise DataError(
            first_path, f"unknown scene label(s) {', '.join(unknown)}", f"labels must be among {', '.join(LABELS)}"
        )
    _check_rows_agree(loaded, first_backbone, clip_ids, splits, labels)
    recorded = {b: e.info.config_hash for b, (_, e, _) in loaded.items() if e.info.config_hash}
    if len(set(recorded.values())) > 1:
        # Backbones may legitimately be trained with their own settings (e.g. more epochs for
        # the visual ones); the clip, split and label checks above are what fusion needs.
        log.warning(
            "fusing backbones trained with different settings: %s", ", ".join(f"{b} {h}" for b, h in recorded.items())
        )
    lineage = first.info.lineage
    for path, emb, _ in loaded.values():
        differences = lineage.differences(emb.info.lineage)
        if differences:
            raise DataError(
                path,
                f"its embeddings were made from other data than {first_backbone}'s ({'; '.join(differences)})",
                "embed every backbone from the same feature store",
            )
    return FusionData(
        lineage=lineage,
        backbones=tuple(backbones),
        clip_ids=clip_ids,
        splits=splits,
        labels=labels,
        fc1024={b: e.fc1024[o] for b, (_, e, o) in loaded.items()},
        fc10={b: e.fc10[o] for b, (_, e, o) in loaded.items()},
        model_sha256={b: e.info.model_sha256 for b, (_, e, _) in loaded.items()},
        config_hash={b: e.info.config_hash for b, (_, e, _) in loaded.items()},
        paths={b: p for b, (p, _, _) in loaded.items()},
    )
