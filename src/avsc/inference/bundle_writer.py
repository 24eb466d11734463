"""Making a model bundle (:mod:`avsc.inference.bundle`) from trained backbones and fusion models.

:func:`make_bundle` checks that its inputs belong together before it copies anything: every
backbone a fusion model reads is given, all were trained on one feature config, and each is
the very model whose embeddings trained the fusion model (by SHA-256). It then copies the
models in and writes ``bundle.json`` with their checksums and provenance, publishing the
folder whole.

Example::

    make_bundle("models", "fusion/f4-audio+visual", "bundle")
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Mapping
from pathlib import Path

from avsc import __version__
from avsc.config import (
    BACKBONES,
    VISUAL_BACKBONES,
    FeatureConfig,
    config_hash,
    feature_config_from_dict,
    to_dict,
)
from avsc.errors import ConfigError, DataError
from avsc.inference.bundle import BUNDLE_FILE, FUSION_LEVELS
from avsc.labels import LABELS
from avsc.records import BundleFusion, BundleInfo, BundleProvenance, FusionInfo, Lineage, ModelInfo
from avsc.storage.files import (
    backbone_paths,
    sha256_file,
)

__all__ = ["make_bundle"]


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
        for name in ("model.keras", ModelInfo.FILE_NAME):
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
            model_dirs[odd] / ModelInfo.FILE_NAME,
            f"backbones were trained on different feature configs ({listing})",
            "train all of them on the same feature store",
        )
    feature_config = feature_config_from_dict(dict(configs[needed[0]].features))
    if config_hash(feature_config) != hashes[needed[0]]:
        raise DataError(
            model_dirs[needed[0]] / ModelInfo.FILE_NAME,
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
            temporary local copy, :func:`avsc.storage.staging.local_copy`).
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
    from avsc.storage import locations, staging
    from avsc.storage.publish import staged_output

    with contextlib.ExitStack() as stack:
        local = functools.partial(staging.local_inputs, stack)
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
