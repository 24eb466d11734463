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

Example::

    make_bundle("models", "fusion/f4-audio+visual", "bundle")
    load_bundle("bundle").fusion.method  # 'f4'
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from avsc import __version__
from avsc.config import (
    BACKBONES,
    MODALITY_SETS,
    VISUAL_BACKBONES,
    FeatureConfig,
    config_hash,
    feature_config_from_dict,
    to_dict,
)
from avsc.errors import ConfigError, DataError
from avsc.labels import LABELS
from avsc.records import BundleFusion, BundleInfo, BundleProvenance, FusionInfo, Lineage, ModelInfo
from avsc.storage.files import (
    backbone_paths,
    sha256_file,
)

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


def _read_fusion_dir(fusion_dir: Path) -> FusionInfo:
    """fusion.json of a fusion folder, checked for what a bundle relies on."""
    model_path = fusion_dir / "model.keras"
    if not model_path.is_file():
        raise DataError(model_path, "not found", "give the output folder of `avsc fuse`")
    meta = FusionInfo.read(fusion_dir)
    meta_path = fusion_dir / FusionInfo.FILE_NAME
    unknown = [b for b in meta.backbones if b not in BACKBONES]
    if unknown or not meta.backbones:
        raise DataError(
            meta_path, f"unknown backbone(s) {unknown or '(none listed)'}; expected some of {', '.join(BACKBONES)}"
        )
    if meta.level not in FUSION_LEVELS:
        raise DataError(
            meta_path, f"unknown embedding level {meta.level!r}; expected one of {', '.join(FUSION_LEVELS)}"
        )
    if list(meta.labels) != list(LABELS):
        raise DataError(meta_path, f"label order {list(meta.labels)} differs from avsc's {list(LABELS)}")
    return meta


def _bundle_fusion(meta: FusionInfo, rel: str) -> BundleFusion:
    return BundleFusion(
        method=meta.method,
        modalities=meta.modalities,
        level=meta.level,
        backbones=tuple(meta.backbones),
        path=rel,
        config_hash=meta.config_hash,
        temperature=float(meta.calibration.temperature),
        calibration_method=meta.calibration.method,
        val_scores={
            "accuracy": float(meta.val_metrics["accuracy"]),
            "log_loss": float(meta.val_metrics["log_loss"]),
            "selection_log_loss": float(meta.calibration.selection_log_loss or float("nan")),
        },
        val_distance_quantiles=dict(meta.val_distance_quantiles),
    )


def _provenance(
    meta: FusionInfo,
    fusion_dir: Path,
    model_dirs: Mapping[str, Path],
    configs: Mapping[str, ModelInfo],
    manifest: str | Path | None,
) -> BundleProvenance:
    from avsc.evaluation.provenance import collect_provenance

    facts = collect_provenance(
        metas={fusion_dir: meta.to_dict()},
        split="test",
        selection=meta.selection,
        manifest=manifest,
        models=dict(model_dirs),
    )
    dataset = facts["dataset"]
    lineages = [meta.lineage, *(c.lineage for c in configs.values())]
    lineage: Lineage | None = next((x for x in lineages if x is not None), None)
    return BundleProvenance(
        dataset=dataset.get("name") or (lineage.dataset if lineage else None),
        synthetic=dataset.get("synthetic"),
        clips_per_split={k: int(v) for k, v in dict(dataset.get("clips_per_split") or meta.clips_per_split).items()},
        preset=facts["preset"],
        differences_from_paper=tuple(facts["differences_from_paper"]),
        selection=dict(facts["selection"]),
        lineage=lineage,
    )


# The fusion models a bundle holds: key in bundle.json -> (source folder, fusion.json, file in the bundle).
_Fusions = dict[str, tuple[Path, FusionInfo, str]]


def _fusion_inputs(fusion_dir: Path, visual_fusion_dir: Path | None) -> _Fusions:
    """The fusion models to bundle, each read and checked."""
    fusions = {"fusion": (fusion_dir, _read_fusion_dir(fusion_dir), "fusion.keras")}
    if visual_fusion_dir is not None:
        meta = _read_fusion_dir(visual_fusion_dir)
        if any(b not in VISUAL_BACKBONES for b in meta.backbones):
            raise ConfigError(
                f"{visual_fusion_dir}: not a visual-only fusion model (it reads "
                f"{', '.join(meta.backbones)}); train one with `avsc fuse --modalities visual`"
            )
        fusions["visual_fusion"] = (visual_fusion_dir, meta, "fusion-visual.keras")
    return fusions


def _backbone_infos(needed: list[str], model_dirs: Mapping[str, Path], fusion_dir: Path) -> dict[str, ModelInfo]:
    """The ``config.json`` of every backbone a fusion model reads; its files must be there."""
    configs: dict[str, ModelInfo] = {}
    for backbone in needed:
        if backbone not in model_dirs:
            raise DataError(
                fusion_dir / "fusion.json",
                f"reads {backbone}, but no model of {backbone} was given",
                "give the models of every backbone the fusion model reads",
            )
        for name in ("model.keras", "config.json"):
            if not (model_dirs[backbone] / name).is_file():
                raise DataError(
                    model_dirs[backbone] / name,
                    f"not found; the fusion model needs {backbone}",
                    f"train it with `avsc train {backbone} ... -o {model_dirs[backbone]}`",
                )
        configs[backbone] = ModelInfo.read(model_dirs[backbone])
    return configs


def _shared_feature_config(
    configs: Mapping[str, ModelInfo], needed: list[str], model_dirs: Mapping[str, Path]
) -> tuple[FeatureConfig, str]:
    """The one feature config (and its hash) every needed backbone was trained on."""
    hashes = {b: c.feature_config_hash for b, c in configs.items()}
    if len(set(hashes.values())) != 1 or None in hashes.values():
        listing = ", ".join(f"{b}: {h}" for b, h in hashes.items())
        odd = next((b for b in needed if hashes[b] != hashes[needed[0]] or hashes[b] is None), needed[0])
        raise DataError(
            model_dirs[odd] / "config.json",
            f"backbones were trained on different feature configs ({listing})",
            "train all of them on the same feature store",
        )
    feature_config = feature_config_from_dict(dict(configs[needed[0]].features))
    if config_hash(feature_config) != hashes[needed[0]]:
        raise DataError(
            model_dirs[needed[0]] / "config.json",
            "recorded feature config does not match its recorded hash",
            "retrain the backbone",
        )
    return feature_config, hashes[needed[0]]


def _check_fusion_trained_on(fusions: _Fusions, model_dirs: Mapping[str, Path]) -> None:
    """Each fusion model was trained on embeddings of exactly these backbone models."""
    for _, meta, _ in fusions.values():
        recorded = {b: e["model_sha256"] for b, e in meta.embeddings.items() if e.get("model_sha256")}
        for backbone in meta.backbones:
            if backbone in recorded and recorded[backbone] != sha256_file(model_dirs[backbone] / "model.keras"):
                raise DataError(
                    model_dirs[backbone] / "model.keras",
                    "differs from the model whose embeddings trained the fusion model",
                    "bundle the backbones the fusion was trained with, or re-run embed and fuse",
                )


def _write_bundle(
    folder: Path,
    fusions: _Fusions,
    model_dirs: Mapping[str, Path],
    configs: Mapping[str, ModelInfo],
    feature_config: FeatureConfig,
    feature_hash: str,
    manifest: str | Path | None,
) -> None:
    """Copy the models into ``folder`` and write its ``bundle.json``."""
    (folder / "backbones").mkdir(parents=True)
    sha256: dict[str, str] = {}
    backbone_files = {}
    for backbone in configs:
        rel = f"backbones/{backbone}.keras"
        shutil.copyfile(model_dirs[backbone] / "model.keras", folder / rel)
        sha256[rel] = sha256_file(folder / rel)
        backbone_files[backbone] = rel
    entries: dict[str, BundleFusion] = {}
    for key, (source, meta, rel) in fusions.items():
        shutil.copyfile(source / "model.keras", folder / rel)
        sha256[rel] = sha256_file(folder / rel)
        entries[key] = _bundle_fusion(meta, rel)
    shapes: dict[str, tuple[int, ...]] = {}
    for config in configs.values():
        shapes.update({k: tuple(v) for k, v in config.feature_shapes.items()})
    fusion_dir, fusion_meta, _ = fusions["fusion"]
    BundleInfo(
        avsc_version=__version__,
        labels=tuple(LABELS),
        feature_config=to_dict(feature_config),
        feature_config_hash=feature_hash,
        feature_shapes=shapes,
        clip_seconds=feature_config.audio.clip_seconds,
        backbones=backbone_files,
        train_config_hashes={b: c.config_hash for b, c in configs.items()},
        fusion=entries["fusion"],
        visual_fusion=entries.get("visual_fusion"),
        provenance=_provenance(fusion_meta, fusion_dir, {b: model_dirs[b] for b in configs}, configs, manifest),
        sha256=sha256,
    ).write(folder)


def make_bundle(
    models: str | Path | Mapping[str, str | Path],
    fusion_dir: str | Path,
    out_dir: str | Path,
    *,
    visual_fusion_dir: str | Path | None = None,
    manifest: str | Path | None = None,
) -> str | Path:
    """Assemble a self-contained bundle from trained backbones and a fusion model.

    Args:
        models: a folder holding ``<backbone>/model.keras`` and ``<backbone>/config.json``
            (outputs of ``avsc train``) for every backbone the fusion model reads, or a
            mapping backbone -> its model folder (a pipeline step's artifacts). This and
            every other folder argument may be an ``s3://`` prefix (read through a
            temporary local copy, :func:`avsc.storage.locations.local_copy`).
        fusion_dir: output of ``avsc fuse`` (``model.keras``, ``fusion.json``).
        out_dir: the bundle folder to write. Built beside it under a temporary name and
            published whole (:func:`avsc.storage.publish.staged_output`, with ``outputs.json``
            naming the run), so it is the previous bundle or this one, never a mix; an
            existing bundle there is replaced.
        visual_fusion_dir: optional visual-only fusion model (``--modalities visual``),
            used by ``avsc predict --allow-visual-only`` on videos without an audio track.
        manifest: the manifest of ``avsc ingest`` the models were trained from: the dataset's
            name, whether it is synthetic and its clips per split go into the provenance
            (without it they are recorded as unknown, and predict warns so).

    Returns:
        ``out_dir``: a :class:`~pathlib.Path` for a folder, the URI for an ``s3://`` prefix.

    Raises:
        DataError: a missing model or config file; backbones trained on different feature
            configs; a fusion model trained on embeddings of other backbone models;
            ``out_dir`` is a non-empty folder that is not a bundle.
        ConfigError: ``visual_fusion_dir`` is not a visual-only fusion model; a key of a
            ``models`` mapping that is not a backbone.
    """
    from avsc.records.output_manifest import new_run_id
    from avsc.storage import locations
    from avsc.storage.publish import staged_output

    with contextlib.ExitStack() as stack:
        local = functools.partial(locations.local_inputs, stack)
        model_dirs = backbone_paths(
            local(models),
            "{backbone}",
            what="models",
            hint="give the folder holding one `avsc train` output per backbone",
        )
        visual, manifest = local(visual_fusion_dir), local(manifest)
        fusions = _fusion_inputs(Path(local(fusion_dir)), None if visual is None else Path(visual))
        needed = [b for b in BACKBONES if any(b in meta.backbones for _, meta, _ in fusions.values())]
        configs = _backbone_infos(needed, model_dirs, fusions["fusion"][0])
        feature_config, feature_hash = _shared_feature_config(configs, needed, model_dirs)
        _check_fusion_trained_on(fusions, model_dirs)
        if locations.is_remote(str(out_dir)):
            target: str | Path = str(out_dir)
        else:
            target = Path(out_dir)
            if (
                target.exists()
                and not (target / BUNDLE_FILE).is_file()
                and (not target.is_dir() or any(target.iterdir()))
            ):
                raise DataError(
                    target, "exists and is not a bundle; refusing to replace it", "choose a new or empty output folder"
                )
        with staged_output(target, kind="bundle", run_id=new_run_id(), replaces=BUNDLE_FILE) as folder:
            _write_bundle(folder, fusions, model_dirs, configs, feature_config, feature_hash, manifest)
    return target


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
