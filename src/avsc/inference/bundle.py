"""A model bundle: everything ``avsc predict`` needs, in one folder that can be copied as is.

Layout::

    BUNDLE_DIR/
      bundle.json              format, labels, feature config, clip length, file list + SHA-256
      backbones/<name>.keras   the Phase I backbones the fusion model reads (uncompiled)
      fusion.keras             the Phase II fusion model
      fusion-visual.keras      optional: a visual-only fusion model (videos without sound)

``bundle.json`` is a :class:`avsc.records.BundleInfo` (format ``avsc-bundle``, version 2): the
labels, feature config, clip length, every file with its SHA-256, each fusion model's method,
inputs, temperature, val scores and the quantiles of its val clips' distance from the
training data, and the **provenance** of the models: the dataset (name, manifest hash,
synthetic or not, clips per split), the preset and the settings that differ from the paper's,
the selection rule, and the avsc version. ``avsc predict`` copies the provenance into its
output and warns on every video when the bundle was trained on synthetic data.

``temperature`` is the fusion model's calibration temperature (fitted on the val split,
``fusion.json["calibration"]``): ``avsc predict`` reports ``softmax(logits / temperature)``.
A bundle without it (made before calibration existed) reads as temperature 1.

Paths are relative to the bundle, so the folder can move to another machine or an object
store; :func:`load_bundle` checks every file against its checksum before anything uses it.
Bundles are made by :func:`avsc.inference.bundle_writer.make_bundle`.

Example::

    load_bundle("bundle").fusion.method  # 'f4'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from avsc.config import (
    MODALITY_SETS,
    FeatureConfig,
    feature_config_from_dict,
)
from avsc.errors import ConfigError, DataError
from avsc.labels import LABELS
from avsc.records import BundleFusion, BundleInfo
from avsc.storage.files import sha256_file

BUNDLE_FILE = BundleInfo.FILE_NAME
FUSION_LEVELS: tuple[str, ...] = ("fc1024", "fc10")
_REBUILD = "copy the bundle again, or rebuild it with `avsc bundle`"


@dataclass(frozen=True)
class Bundle:
    """A loaded (and checksum-verified) bundle; model files are not opened here.

    Attributes:
        root: the bundle folder.
        backbones: backbone name -> absolute path of its ``.keras`` file.
        feature_shapes: feature name -> shape of one clip's array, as the backbones were
            trained on (e.g. ``mel`` -> ``(128, 715, 2)``).
        fusion: the main fusion model (its ``path`` relative to ``root``: :meth:`model_path`).
        visual_fusion: a visual-only fusion model, or None.
        info: all of ``bundle.json``.
    """

    root: Path
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    feature_config_hash: str
    feature_shapes: dict[str, tuple[int, ...]]
    clip_seconds: float
    backbones: dict[str, Path]
    train_config_hashes: dict[str, str]
    fusion: BundleFusion
    visual_fusion: BundleFusion | None
    info: BundleInfo

    def model_path(self, fusion: BundleFusion) -> Path:
        """The ``.keras`` file of one of the bundle's fusion models."""
        return self.root / fusion.path

    def provenance_warnings(self) -> list[str]:
        """Warnings every prediction with this bundle carries: synthetic or unknown training data."""
        provenance = self.info.provenance
        name = provenance.dataset or "an unnamed dataset"
        if provenance.synthetic:
            return [
                (
                    f"the bundle was trained on synthetic data ({name}, made by `avsc demo-data`): its "
                    "classes and probabilities say nothing about real scenes"
                )
            ]
        if provenance.synthetic is None:
            return [
                (
                    "the bundle does not record whether it was trained on real recordings (it was made "
                    "without the manifest); treat its probabilities with care"
                )
            ]
        return []


def _bundle_file(root: Path, rel: Any, where: str) -> Path:
    """Resolve a path listed in bundle.json; it must stay inside the bundle."""
    if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise DataError(root / BUNDLE_FILE, f"{where}: invalid file path {rel!r}", _REBUILD)
    return root / rel


def _checked_fusion(root: Path, data: BundleFusion, where: str) -> BundleFusion:
    """A fusion model of ``bundle.json``, checked: its file inside the bundle, a positive
    temperature, a known level and modality set."""
    _bundle_file(root, data.path, where)
    temperature = float(data.temperature)
    if not temperature > 0:
        raise DataError(root / BUNDLE_FILE, f"{where}: temperature must be positive, got {temperature}", _REBUILD)
    if data.level not in FUSION_LEVELS or data.modalities not in MODALITY_SETS:
        raise DataError(
            root / BUNDLE_FILE, f"{where}: unknown level {data.level!r} or modalities {data.modalities!r}", _REBUILD
        )
    return data


def check_bundle_location(bundle_dir: str | Path) -> None:
    """Fail at once, before any model loads, unless ``bundle_dir`` (a folder or ``s3://``
    prefix) holds a ``bundle.json``. Reads nothing else; :func:`load_bundle` checks the rest.

    Raises:
        DataError: no bundle there.
        StoreError: an ``s3://`` bundle without the store's settings, or an unreachable store.
    """
    if not BundleInfo.exists_in(bundle_dir):
        raise DataError(bundle_dir, f"not a model bundle (no {BUNDLE_FILE})", "build one with `avsc bundle`")


def load_bundle(bundle_dir: str | Path, *, verify: bool = True) -> Bundle:
    """Read ``bundle.json`` and check every listed file against its SHA-256.

    Args:
        bundle_dir: a folder written by :func:`make_bundle`.
        verify: check checksums (reads every model file once; about a second for the
            paper-sized models).

    Raises:
        DataError: no bundle there, an unknown format, a missing file, or a file whose
            checksum differs from the recorded one (the message names the file).
    """
    root = Path(bundle_dir)
    meta_path = root / BUNDLE_FILE
    if not meta_path.is_file():
        raise DataError(root, f"not a model bundle (no {BUNDLE_FILE})", "build one with `avsc bundle`")
    meta = BundleInfo.read(root)
    try:
        sha256 = dict(meta.sha256)
        backbones = {b: _bundle_file(root, rel, f"backbone {b}") for b, rel in meta.backbones.items()}
        fusion = _checked_fusion(root, meta.fusion, "fusion")
        visual_fusion = _checked_fusion(root, meta.visual_fusion, "visual_fusion") if meta.visual_fusion else None
        feature_config = feature_config_from_dict(dict(meta.feature_config))
        labels = tuple(meta.labels)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataError(meta_path, f"bundle.json is incomplete or malformed ({exc})", _REBUILD) from None
    for entry in filter(None, (fusion, visual_fusion)):
        missing = [b for b in entry.backbones if b not in backbones]
        if missing:
            raise DataError(
                meta_path,
                f"{PurePosixPath(entry.path).name} reads {', '.join(missing)}, which the bundle lacks",
                _REBUILD,
            )
    listed = {root / rel for rel in sha256}
    fusion_files = [root / entry.path for entry in filter(None, (fusion, visual_fusion))]
    for path in [*backbones.values(), *fusion_files]:
        if path not in listed:
            raise DataError(meta_path, f"no checksum recorded for {path.relative_to(root)}", _REBUILD)
    for rel, digest in sha256.items():
        path = _bundle_file(root, rel, "sha256")
        if not path.is_file():
            raise DataError(path, "missing from the bundle", _REBUILD)
        if verify and sha256_file(path) != digest:
            raise DataError(
                path, "checksum mismatch: the file differs from the one bundled (corrupt or modified)", _REBUILD
            )
    if list(labels) != list(LABELS):
        raise DataError(meta_path, f"label order {list(labels)} differs from avsc's {list(LABELS)}", _REBUILD)
    return Bundle(
        root=root,
        labels=labels,
        feature_config=feature_config,
        feature_config_hash=meta.feature_config_hash,
        feature_shapes={k: tuple(v) for k, v in meta.feature_shapes.items()},
        clip_seconds=float(meta.clip_seconds),
        backbones=backbones,
        train_config_hashes=dict(meta.train_config_hashes),
        fusion=fusion,
        visual_fusion=visual_fusion,
        info=meta,
    )
