"""A model bundle's description: ``bundle.json`` (:class:`BundleInfo`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from avsc.records._base import Record
from avsc.records.lineage import Lineage

__all__ = ["BundleFusion", "BundleProvenance", "BundleInfo"]


@dataclasses.dataclass(frozen=True)
class BundleFusion:
    """One fusion model of a bundle.

    Attributes:
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual``, ``audio`` or ``visual``.
        level: the embedding it reads, ``fc1024`` (f1-f3) or ``fc10`` (f4-f6, pre-softmax).
        backbones: its inputs, in the order of the model's inputs.
        path: its ``.keras`` file, relative to the bundle.
        config_hash: hash of its Phase II settings.
        temperature: calibrated probabilities are ``softmax(logits / temperature)``.
        calibration_method: ``temperature`` or ``none`` (see :class:`avsc.records.Calibration`).
        val_scores: its val ``accuracy``, ``log_loss`` (calibrated) and ``selection_log_loss``
            (cross-validated).
        val_distance_quantiles: quantile -> the val clips' distance from the training data
            (:func:`avsc.models.fusion.distance_score`); ``avsc predict`` warns above ``"0.99"``.
    """

    method: str
    modalities: str
    level: str
    backbones: tuple[str, ...]
    path: str
    config_hash: str
    temperature: float
    calibration_method: str
    val_scores: Mapping[str, float]
    val_distance_quantiles: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class BundleProvenance:
    """What the bundle's models were trained on and how they were chosen.

    Attributes:
        dataset: the dataset's name (None when the bundle was made without its manifest).
        synthetic: whether that dataset was made by ``avsc demo-data`` (None: unknown).
        clips_per_split: its clips per split.
        preset: the preset the recorded settings match (``paper``, ``quick`` or ``custom``).
        differences_from_paper: ``{"setting", "value", "paper"}`` of every setting that differs.
        selection: the rule that chose the fusion model and its description.
        lineage: dataset name and manifest hash, as the models record them (None: not recorded).
    """

    dataset: str | None
    synthetic: bool | None
    clips_per_split: Mapping[str, int]
    preset: str
    differences_from_paper: tuple[Mapping[str, Any], ...]
    selection: Mapping[str, str]
    lineage: Lineage | None = None


@dataclasses.dataclass(frozen=True)
class BundleInfo(Record):
    """Everything ``avsc predict`` needs to know about a bundle folder (``BUNDLE_DIR/bundle.json``).

    Attributes:
        avsc_version: the avsc that made it.
        labels: the class names, in the order of the models' outputs.
        feature_config: the feature settings the backbones were trained on; its hash.
        feature_shapes: feature name -> one clip's array shape.
        clip_seconds: the window length predict classifies.
        backbones: backbone -> its ``.keras`` file, relative to the bundle.
        train_config_hashes: backbone -> hash of its training settings.
        fusion: the main fusion model; ``visual_fusion`` an optional visual-only one.
        provenance: the data and the rule behind the models.
        sha256: every file (relative path) -> its SHA-256.
    """

    FILE_NAME: ClassVar[str] = "bundle.json"
    FORMAT: ClassVar[str] = "avsc-bundle"
    VERSION: ClassVar[int] = 2
    WRITTEN_BY: ClassVar[str] = "avsc bundle"

    avsc_version: str
    labels: tuple[str, ...]
    feature_config: Mapping[str, Any]
    feature_config_hash: str
    feature_shapes: Mapping[str, tuple[int, ...]]
    clip_seconds: float
    backbones: Mapping[str, str]
    train_config_hashes: Mapping[str, str]
    fusion: BundleFusion
    visual_fusion: BundleFusion | None
    provenance: BundleProvenance
    sha256: Mapping[str, str]
