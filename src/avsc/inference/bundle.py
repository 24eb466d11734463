"""A model bundle: everything ``avsc predict`` needs, in one folder that can be copied as is.

Layout::

    BUNDLE_DIR/
      bundle.json              format, labels, feature config, clip length, file list + SHA-256
      backbones/<name>.keras   the Phase I backbones the fusion model reads (uncompiled)
      fusion.keras             the Phase II fusion model
      fusion-visual.keras      optional: a visual-only fusion model (videos without sound)

``bundle.json`` (format ``avsc-bundle/1``)::

    {"format": "avsc-bundle/1", "labels": [...10 labels...],
     "feature_config": {"audio": {...}, "frames": {...}}, "feature_config_hash": "...",
     "feature_shapes": {"mel": [128, 715, 2], ...}, "clip_seconds": 10.0,
     "backbones": {"aud-mel": "backbones/aud-mel.keras", ...},
     "train_config_hashes": {"aud-mel": "...", ...},
     "fusion": {"method": "f4", "modalities": "audio+visual", "level": "fc10",
                "backbones": ["aud-mel", ...], "path": "fusion.keras", "config_hash": "...",
                "temperature": 1.37},
     "visual_fusion": {... same keys ...} or null,
     "sha256": {"backbones/aud-mel.keras": "...", "fusion.keras": "...", ...}}

``temperature`` is the fusion model's calibration temperature (fitted on the val split,
``fusion.json["calibration"]``): ``avsc predict`` reports ``softmax(logits / temperature)``.
A bundle without it (made before calibration existed) reads as temperature 1.

Paths are relative to the bundle, so the folder can move to another machine or an object
store; :func:`load_bundle` checks every file against its checksum before anything uses it.

Example:
    >>> make_bundle("models", "fusion/f4-audio+visual", "bundle")
    >>> load_bundle("bundle").fusion.method
    'f4'
"""

from __future__ import annotations

import contextlib
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
from avsc.records import ModelInfo
from avsc.storage.files import (
    backbone_paths,
    read_json,
    sha256_file,
    write_json,
)

BUNDLE_FORMAT = "avsc-bundle/1"
BUNDLE_FILE = "bundle.json"
FUSION_LEVELS: tuple[str, ...] = ("fc1024", "fc10")
_REBUILD = "copy the bundle again, or rebuild it with `avsc bundle`"


@dataclass(frozen=True)
class FusionEntry:
    """One fusion model of a bundle.

    Attributes:
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual``, ``audio`` or ``visual``.
        level: the embedding it reads, ``fc1024`` (f1-f3) or ``fc10`` (f4-f6, pre-softmax).
        backbones: its inputs, in the order of the model's inputs.
        path: absolute path of the ``.keras`` file.
        temperature: calibrated probabilities are ``softmax(logits / temperature)``.
    """

    method: str
    modalities: str
    level: str
    backbones: tuple[str, ...]
    path: Path
    config_hash: str = ""
    temperature: float = 1.0


@dataclass(frozen=True)
class Bundle:
    """A loaded (and checksum-verified) bundle; model files are not opened here.

    Attributes:
        root: the bundle folder.
        backbones: backbone name -> absolute path of its ``.keras`` file.
        feature_shapes: feature name -> shape of one clip's array, as the backbones were
            trained on (e.g. ``mel`` -> ``(128, 715, 2)``).
        visual_fusion: a visual-only fusion model, or None.
    """

    root: Path
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    feature_config_hash: str
    feature_shapes: dict[str, tuple[int, ...]]
    clip_seconds: float
    backbones: dict[str, Path]
    train_config_hashes: dict[str, str]
    fusion: FusionEntry
    visual_fusion: FusionEntry | None
    info: dict[str, Any]


def _read_fusion_dir(fusion_dir: Path) -> dict[str, Any]:
    """fusion.json of a fusion folder, checked for what a bundle relies on."""
    model_path, meta_path = fusion_dir / "model.keras", fusion_dir / "fusion.json"
    for needed in (model_path, meta_path):
        if not needed.is_file():
            raise DataError(needed, "not found", "give the output folder of `avsc fuse`")
    meta = read_json(meta_path)
    missing = [key for key in ("method", "modalities", "backbones", "level") if key not in meta]
    if missing:
        raise DataError(meta_path, f"fusion.json lacks {', '.join(missing)}",
                        "give the output folder of `avsc fuse`")
    unknown = [b for b in meta["backbones"] if b not in BACKBONES]
    if unknown or not meta["backbones"]:
        raise DataError(meta_path, f"unknown backbone(s) {unknown or '(none listed)'}; "
                        f"expected some of {', '.join(BACKBONES)}")
    if meta["level"] not in FUSION_LEVELS:
        raise DataError(meta_path, f"unknown embedding level {meta['level']!r}; "
                        f"expected one of {', '.join(FUSION_LEVELS)}")
    labels = meta.get("labels", list(LABELS))
    if list(labels) != list(LABELS):
        raise DataError(meta_path, f"label order {labels} differs from avsc's {list(LABELS)}")
    return meta


def _embedding_shas(meta: dict[str, Any]) -> dict[str, str]:
    """Backbone -> SHA-256 of the model whose embeddings trained the fusion (if recorded)."""
    embeddings = meta.get("embeddings")
    if isinstance(embeddings, dict):  # {"aud-mel": {"model_sha256": ..., "config_hash": ...}, ...}
        return {b: e["model_sha256"] for b, e in embeddings.items()
                if isinstance(e, dict) and isinstance(e.get("model_sha256"), str) and e["model_sha256"]}
    for key in ("model_sha256", "embedding_model_sha256", "backbone_model_sha256"):
        value = meta.get(key)
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if isinstance(v, str) and v}
    return {}


def make_bundle(
    models: str | Path | Mapping[str, str | Path],
    fusion_dir: str | Path,
    out_dir: str | Path,
    *,
    visual_fusion_dir: str | Path | None = None,
) -> Path:
    """Assemble a self-contained bundle from trained backbones and a fusion model.

    Args:
        models: a folder holding ``<backbone>/model.keras`` and ``<backbone>/config.json``
            (outputs of ``avsc train``) for every backbone the fusion model reads, or a
            mapping backbone -> its model folder (a pipeline step's artifacts). This and
            every other folder argument may be an ``s3://`` prefix.
        fusion_dir: output of ``avsc fuse`` (``model.keras``, ``fusion.json``).
        out_dir: the bundle folder to write. Built beside it under a temporary name and
            published whole (:func:`avsc.storage.publish.staged_output`, with ``outputs.json``
            naming the run), so it is the previous bundle or this one, never a mix; an
            existing bundle there is replaced.
        visual_fusion_dir: optional visual-only fusion model (``--modalities visual``),
            used by ``avsc predict --allow-visual-only`` on videos without an audio track.

    Returns:
        ``out_dir``.

    Raises:
        DataError: a missing model or config file; backbones trained on different feature
            configs; a fusion model trained on embeddings of other backbone models;
            ``out_dir`` is a non-empty folder that is not a bundle.
        ConfigError: ``visual_fusion_dir`` is not a visual-only fusion model; a key of a
            ``models`` mapping that is not a backbone.
    """
    from avsc.evaluation.provenance import new_run_id
    from avsc.storage import locations
    from avsc.storage.publish import staged_output

    if locations.any_remote(models, fusion_dir, out_dir, visual_fusion_dir):
        # Model folders are fetched (and the bundle pushed) through temporary local folders.
        with contextlib.ExitStack() as stack:
            local_models = locations.local_inputs(stack, models)
            fused = locations.local_inputs(stack, fusion_dir)
            visual = locations.local_inputs(stack, visual_fusion_dir)
            staging = stack.enter_context(staged_output(out_dir, kind="bundle", run_id=new_run_id(),
                                                        replaces=BUNDLE_FILE))
            make_bundle(local_models, fused, staging / "bundle", visual_fusion_dir=visual)
            for path in (staging / "bundle").iterdir():  # the bundle's files, at out_dir itself
                path.rename(staging / path.name)
            (staging / "bundle").rmdir()
        return out_dir
    fusion_dir, out_dir = Path(fusion_dir), Path(out_dir)
    model_dirs = backbone_paths(models, "{backbone}", what="models",
                                hint="give the folder holding one `avsc train` output per backbone")
    fusions = {"fusion": (fusion_dir, _read_fusion_dir(fusion_dir), "fusion.keras")}
    if visual_fusion_dir is not None:
        visual_fusion_dir = Path(visual_fusion_dir)
        meta = _read_fusion_dir(visual_fusion_dir)
        if any(b not in VISUAL_BACKBONES for b in meta["backbones"]):
            raise ConfigError(f"{visual_fusion_dir}: not a visual-only fusion model (it reads "
                              f"{', '.join(meta['backbones'])}); train one with `avsc fuse --modalities visual`")
        fusions["visual_fusion"] = (visual_fusion_dir, meta, "fusion-visual.keras")
    needed = [b for b in BACKBONES if any(b in meta["backbones"] for _, meta, _ in fusions.values())]

    configs: dict[str, ModelInfo] = {}
    for backbone in needed:
        if backbone not in model_dirs:
            raise DataError(fusion_dir / "fusion.json", f"reads {backbone}, but no model of {backbone} was given",
                            "give the models of every backbone the fusion model reads")
        for name in ("model.keras", "config.json"):
            if not (model_dirs[backbone] / name).is_file():
                raise DataError(model_dirs[backbone] / name, f"not found; the fusion model needs {backbone}",
                                f"train it with `avsc train {backbone} ... -o {model_dirs[backbone]}`")
        configs[backbone] = ModelInfo.read(model_dirs[backbone])
    hashes = {b: c.feature_config_hash for b, c in configs.items()}
    if len(set(hashes.values())) != 1 or None in hashes.values():
        listing = ", ".join(f"{b}: {h}" for b, h in hashes.items())
        odd = next((b for b in needed if hashes[b] != hashes[needed[0]] or hashes[b] is None), needed[0])
        raise DataError(model_dirs[odd] / "config.json",
                        f"backbones were trained on different feature configs ({listing})",
                        "train all of them on the same feature store")
    first = configs[needed[0]]
    feature_config = feature_config_from_dict(dict(first.features))
    if config_hash(feature_config) != hashes[needed[0]]:
        raise DataError(model_dirs[needed[0]] / "config.json",
                        "recorded feature config does not match its recorded hash", "retrain the backbone")
    for _, meta, _ in fusions.values():
        recorded = _embedding_shas(meta)
        for backbone in meta["backbones"]:
            if backbone in recorded and recorded[backbone] != sha256_file(model_dirs[backbone] / "model.keras"):
                raise DataError(model_dirs[backbone] / "model.keras",
                                "differs from the model whose embeddings trained the fusion model",
                                "bundle the backbones the fusion was trained with, or re-run embed and fuse")

    if out_dir.exists() and not (out_dir / BUNDLE_FILE).is_file() and (
            not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(out_dir, "exists and is not a bundle; refusing to replace it",
                        "choose a new or empty output folder")
    shapes: dict[str, list[int]] = {}
    for config in configs.values():
        shapes.update({k: list(v) for k, v in config.feature_shapes.items()})
    with staged_output(out_dir, kind="bundle", run_id=new_run_id(), replaces=BUNDLE_FILE) as tmp:
        (tmp / "backbones").mkdir(parents=True)
        sha256: dict[str, str] = {}
        backbone_files = {}
        for backbone in needed:
            rel = f"backbones/{backbone}.keras"
            shutil.copyfile(model_dirs[backbone] / "model.keras", tmp / rel)
            sha256[rel] = sha256_file(tmp / rel)
            backbone_files[backbone] = rel
        entries: dict[str, Any] = {"visual_fusion": None}
        for key, (source, meta, rel) in fusions.items():
            shutil.copyfile(source / "model.keras", tmp / rel)
            sha256[rel] = sha256_file(tmp / rel)
            entries[key] = {"method": meta["method"], "modalities": meta["modalities"],
                            "level": meta["level"], "backbones": list(meta["backbones"]), "path": rel,
                            "config_hash": meta.get("config_hash", ""),
                            "temperature": float(meta.get("calibration", {}).get("temperature", 1.0))}
        write_json(tmp / BUNDLE_FILE, {
            "format": BUNDLE_FORMAT,
            "avsc_version": __version__,
            "labels": list(LABELS),
            "feature_config": to_dict(feature_config),
            "feature_config_hash": hashes[needed[0]],
            "feature_shapes": shapes,
            "clip_seconds": feature_config.audio.clip_seconds,
            "backbones": backbone_files,
            "train_config_hashes": {b: c.config_hash for b, c in configs.items()},
            **entries,
            "sha256": sha256,
        })
    return out_dir


def _bundle_file(root: Path, rel: Any, where: str) -> Path:
    """Resolve a path listed in bundle.json; it must stay inside the bundle."""
    if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
        raise DataError(root / BUNDLE_FILE, f"{where}: invalid file path {rel!r}", _REBUILD)
    return root / rel


def _fusion_entry(root: Path, data: Any, where: str) -> FusionEntry:
    try:
        entry = FusionEntry(method=str(data["method"]), modalities=str(data["modalities"]),
                            level=str(data["level"]), backbones=tuple(data["backbones"]),
                            path=_bundle_file(root, data["path"], where),
                            config_hash=str(data.get("config_hash", "")),
                            temperature=float(data.get("temperature", 1.0)))
    except (KeyError, TypeError, ValueError):
        raise DataError(root / BUNDLE_FILE, f"{where} entry is incomplete", _REBUILD) from None
    if not entry.temperature > 0:
        raise DataError(root / BUNDLE_FILE, f"{where}: temperature must be positive, got {entry.temperature}",
                        _REBUILD)
    if entry.level not in FUSION_LEVELS or entry.modalities not in MODALITY_SETS:
        raise DataError(root / BUNDLE_FILE, f"{where}: unknown level {entry.level!r} or modalities "
                        f"{entry.modalities!r}", _REBUILD)
    return entry


def check_bundle_location(bundle_dir: str | Path) -> None:
    """Fail at once, before any model loads, unless ``bundle_dir`` (a folder or ``s3://``
    prefix) holds a ``bundle.json``. Reads nothing else; :func:`load_bundle` checks the rest.

    Raises:
        DataError: no bundle there.
        StoreError: an ``s3://`` bundle without the store's settings, or an unreachable store.
    """
    from avsc.storage import locations

    if locations.is_remote(str(bundle_dir)):
        if not locations.exists(locations.join(str(bundle_dir), BUNDLE_FILE)):
            raise DataError(bundle_dir, f"not a model bundle (no {BUNDLE_FILE})", "build one with `avsc bundle`")
    elif not (Path(bundle_dir) / BUNDLE_FILE).is_file():
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
    try:
        meta = read_json(meta_path)
    except ValueError as exc:
        raise DataError(meta_path, f"not valid JSON ({exc})", _REBUILD) from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(meta_path, f"unknown bundle format {found!r}; this avsc reads {BUNDLE_FORMAT}",
                        "rebuild the bundle with this version of avsc")
    try:
        sha256 = dict(meta["sha256"])
        backbones = {b: _bundle_file(root, rel, f"backbone {b}") for b, rel in dict(meta["backbones"]).items()}
        fusion = _fusion_entry(root, meta["fusion"], "fusion")
        visual = meta.get("visual_fusion")
        visual_fusion = _fusion_entry(root, visual, "visual_fusion") if visual else None
        feature_config = feature_config_from_dict(meta["feature_config"])
        labels = tuple(meta["labels"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise DataError(meta_path, f"bundle.json is incomplete or malformed ({exc})", _REBUILD) from None
    for entry in filter(None, (fusion, visual_fusion)):
        missing = [b for b in entry.backbones if b not in backbones]
        if missing:
            raise DataError(meta_path, f"{entry.path.name} reads {', '.join(missing)}, which the bundle lacks",
                            _REBUILD)
    listed = {root / rel for rel in sha256}
    for path in [*backbones.values(), fusion.path, *([visual_fusion.path] if visual_fusion else [])]:
        if path not in listed:
            raise DataError(meta_path, f"no checksum recorded for {path.relative_to(root)}", _REBUILD)
    for rel, digest in sha256.items():
        path = _bundle_file(root, rel, "sha256")
        if not path.is_file():
            raise DataError(path, "missing from the bundle", _REBUILD)
        if verify and sha256_file(path) != digest:
            raise DataError(path, "checksum mismatch: the file differs from the one bundled "
                            "(corrupt or modified)", _REBUILD)
    if list(labels) != list(LABELS):
        raise DataError(meta_path, f"label order {list(labels)} differs from avsc's {list(LABELS)}", _REBUILD)
    return Bundle(
        root=root,
        labels=labels,
        feature_config=feature_config,
        feature_config_hash=str(meta.get("feature_config_hash", config_hash(feature_config))),
        feature_shapes={k: tuple(v) for k, v in dict(meta.get("feature_shapes", {})).items()},
        clip_seconds=float(meta.get("clip_seconds", feature_config.audio.clip_seconds)),
        backbones=backbones,
        train_config_hashes=dict(meta.get("train_config_hashes", {})),
        fusion=fusion,
        visual_fusion=visual_fusion,
        info=meta,
    )
