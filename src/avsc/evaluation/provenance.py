"""Where an evaluation's numbers came from: the block at the top of every report.

:func:`collect_provenance` gathers, from what the run left behind:

- the dataset: name, path, synthetic or not (recorded at ingest in the manifest's
  ``avsc.dataset`` metadata), clips per split, the protocol (whole clips or ``S``-second
  segments);
- the settings: the feature and training config of every backbone (``config.json`` of
  each model folder) and the fusion config (``fusion.json``), the preset they match, every
  setting that differs from the paper's, and their config hashes;
- avsc's version, the date (UTC), a run id, the selection rule and the calibration method;
- the data lineage (:func:`check_lineage`): the dataset and the manifest and feature-store
  hashes that the manifest, every model folder, embedding file and fusion model record.
  They must agree: a report never mixes results of different data.

Parts whose source was not given (no manifest, no model folders) are reported as unknown,
never guessed.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avsc.config import PRESETS, preset_dict
from avsc.errors import DataError
from avsc.records import Lineage, ModelInfo
from avsc.records.output_manifest import new_run_id
from avsc.scoring.calibration import SELECTION_RULES
from avsc.storage.files import backbone_paths

__all__ = ["collect_provenance", "check_lineage", "flatten"]

CALIBRATION_NOTE = (
    "temperature scaling, one temperature per model (each backbone and each fusion "
    "model), fitted on the val split by minimising its log loss"
)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _per_split(splits) -> dict[str, int]:
    """Counts per split, in train, val, test order (then any other)."""
    counts = splits.value_counts()
    order = [s for s in ("train", "val", "test") if s in counts.index]
    order += sorted(str(s) for s in counts.index if s not in order)
    return {s: int(counts[s]) for s in order}


def _manifest_facts(manifest: str | Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from avsc.errors import DataError

    path = Path(manifest)
    if not path.is_file():
        raise DataError(path, "manifest not found", "give the manifest written by `avsc ingest`")
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    columns = [c for c in ("split", "parent_clip", "clip_id") if c in pq.read_schema(path).names]
    table = pq.read_table(path, columns=columns).to_pandas()

    def loaded(key: str, default: Any = None) -> Any:
        try:
            return json.loads(meta[key]) if key in meta else default
        except ValueError:
            return meta[key]

    dataset = loaded("avsc.dataset") or {}
    segment_s = loaded("avsc.segment_seconds")
    facts: dict[str, Any] = {
        "name": dataset.get("name") or Path(meta.get("avsc.dataset_root", "")).name or None,
        "path": dataset.get("path") or meta.get("avsc.dataset_root"),
        "synthetic": dataset.get("synthetic"),
        "generator": dataset.get("generator"),
        "manifest": str(path),
        "segment_seconds": segment_s,
        "val_fraction": loaded("avsc.val_fraction"),
        "split_seed": loaded("avsc.seed"),
        "rejected": len(loaded("avsc.rejected", []) or []),
        "clips_per_split": _per_split(table["split"]),
    }
    if segment_s and "parent_clip" in table:
        parents = table.drop_duplicates("parent_clip")
        facts["parent_clips_per_split"] = _per_split(parents["split"])
    return facts


def check_lineage(
    *,
    metas: Mapping[Path, Any] | None = None,
    manifest: str | Path | None = None,
    models: Mapping[str, str | Path] | None = None,
    embeddings: str | Path | Mapping[str, str | Path] | None = None,
) -> dict[str, Any] | None:
    """Check that every input of an evaluation was made from the same data; return its lineage.

    The reference is the manifest's lineage when a manifest is given (the data the run is
    about), else the first model's or embedding file's. Model folders (``config.json``),
    embedding files (their :class:`~avsc.records.EmbeddingsInfo`) and fusion folders (``fusion.json``'s
    ``lineage``, where recorded) are compared with it.

    Returns:
        The lineage as a dict (None when no input records one).

    Raises:
        DataError: an input was made from other data, naming it and what differs (dataset,
            clips, labels, splits, feature store).
    """
    from avsc.records import EmbeddingsInfo
    from avsc.storage.files import backbone_paths

    found: list[tuple[str, str, Lineage]] = []
    if manifest is not None:
        from avsc.data.manifest import read_manifest

        found.append((str(manifest), "the manifest", read_manifest(manifest).attrs["lineage"]))
    for backbone, folder in (models or {}).items():
        if ModelInfo.exists_in(folder):
            found.append((ModelInfo.path_in(folder), f"the {backbone} model", ModelInfo.read(folder).lineage))
    if embeddings is not None:
        paths = backbone_paths(
            embeddings, "{backbone}.parquet", what="embeddings", hint="give the folder of `avsc embed` outputs"
        )
        for backbone, path in paths.items():
            if Path(path).is_file():
                found.append((str(path), f"the {backbone} embeddings", EmbeddingsInfo.read_parquet(path).lineage))
    for folder, meta in (metas or {}).items():
        recorded = meta.get("lineage") if isinstance(meta, Mapping) else meta.lineage  # a dict or a FusionInfo
        if isinstance(recorded, Lineage):
            found.append((str(Path(folder) / "fusion.json"), "the fusion model", recorded))
        elif isinstance(recorded, Mapping):
            source = str(Path(folder) / "fusion.json")
            found.append((source, "the fusion model", Lineage.from_json(recorded, source=source)))
    if not found:
        return None
    reference_source, reference_what, reference = found[0]
    store_hash = reference.store_hash
    for source, what, lineage in found[1:]:
        reference.check_same(
            lineage,
            source=source,
            what=what,
            hint=f"{reference_what} ({reference_source}) is of other data; evaluate the "
            "outputs of one run, or re-run the steps after the one that differs",
        )
        if store_hash is None:
            store_hash = lineage.store_hash
        elif lineage.store_hash is not None and lineage.store_hash != store_hash:
            raise DataError(
                source,
                f"{what} was made from another feature store ({lineage.store_hash}, not {store_hash})",
                "re-run the steps after preprocessing",
            )
    out = json.loads(reference.to_json())
    out["store_hash"] = store_hash
    return out


def _recorded_settings(
    models: str | Path | Mapping[str, str | Path] | None, metas: Mapping[Path, dict]
) -> dict[str, Any]:
    """Settings and hashes as recorded by training and fusion."""
    features: dict[str, Any] | None = None
    train: dict[str, Any] = {}
    hashes: dict[str, Any] = {"train": {}, "fusion": {}}
    if models is not None:
        folders = backbone_paths(
            models, "{backbone}", what="models", hint="give the folder holding one `avsc train` output per backbone"
        )
        for backbone, folder in folders.items():
            if ModelInfo.exists_in(folder):
                info = ModelInfo.read(folder)
                train[backbone] = dict(info.train)
                hashes["train"][backbone] = info.config_hash
                if features is None:
                    features = dict(info.features)
                    hashes["features"] = info.feature_config_hash
    fusion = None
    for meta in metas.values():
        if "config" in meta:
            fusion = fusion or meta["config"]
            hashes["fusion"][f"{meta.get('method')}-{meta.get('modalities')}"] = meta.get("config_hash")
    if not hashes["fusion"]:
        del hashes["fusion"]
    return {"features": features, "train": train, "fusion": fusion, "hashes": hashes}


def _differences(mine: Mapping[str, Any], preset: str) -> list[dict[str, Any]]:
    """``{"setting", "value", "paper"}`` for each flattened setting that differs from ``preset``'s."""
    reference = flatten(preset_dict(preset))
    return [
        {"setting": key, "value": value, "paper": reference[key]}
        for key, value in sorted(mine.items())
        if key in reference and reference[key] != value
    ]


def _compare(settings: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The preset the recorded settings match, and every setting that differs from the paper's."""
    trains = settings["train"]
    sections = {
        name: value
        for name, value in (
            ("features", settings["features"]),
            ("train", next(iter(trains.values()), None)),
            ("fusion", settings["fusion"]),
        )
        if value is not None
    }
    if not sections:
        return "unknown", []
    mine = flatten(sections)
    # A backbone trained with its own settings (e.g. more epochs) is listed by name.
    first = flatten(next(iter(trains.values()), {}))
    paper = flatten(preset_dict("paper"))
    per_backbone = [
        {"setting": f"train.{key} ({backbone})", "value": value, "paper": paper.get(f"train.{key}")}
        for backbone, config in list(trains.items())[1:]
        for key, value in sorted(flatten(config).items())
        if first.get(key) != value
    ]
    counts = {preset: len(_differences(mine, preset)) for preset in PRESETS}
    closest = min(PRESETS, key=lambda preset: (counts[preset], preset != "paper"))
    name = closest if counts[closest] == 0 and not per_backbone else f"custom (closest preset: {closest})"
    unknown = sorted({"features", "train", "fusion"} - set(sections))
    if unknown:
        name += f" ({', '.join(unknown)} settings unknown)"
    return name, _differences(mine, "paper") + per_backbone


def collect_provenance(
    *,
    metas: Mapping[Path, dict],
    split: str,
    selection: str,
    manifest: str | Path | None = None,
    models: str | Path | Mapping[str, str | Path] | None = None,
    run_id: str | None = None,
    segmented: bool = False,
    lineage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block of ``metrics.json`` and of the reports.

    Args:
        metas: the ``fusion.json`` of each evaluated fusion folder, by folder.
        split: the evaluated split.
        selection: the rule that chose the best fusion model (``log_loss`` or ``accuracy``).
        manifest: the manifest of ``avsc ingest`` (dataset name, synthetic or not, counts).
        models: the folder holding ``<backbone>/config.json`` (feature and training
            settings), or a mapping backbone -> model folder.
        run_id: an id for this run (default: :func:`new_run_id`).
        segmented: the evaluated rows are segments (see :mod:`avsc.data.segments`).
        lineage: what :func:`check_lineage` returned (default: checked here, from
            ``metas``, ``manifest`` and ``models``).

    Returns:
        ``{"avsc_version", "created", "run_id", "split", "dataset": {...}, "lineage",
        "preset", "differences_from_paper": [{"setting", "value", "paper"}], "config_hashes",
        "selection": {"rule", "description"}, "calibration", "protocol"}``.

    Raises:
        DataError: the inputs were made from different data (:func:`check_lineage`).
    """
    from avsc import __version__

    if lineage is None:
        folders = None
        if models is not None:
            from avsc.storage.files import backbone_paths

            folders = backbone_paths(
                models, "{backbone}", what="models", hint="give the folder holding one `avsc train` output per backbone"
            )
        lineage = check_lineage(metas=metas, manifest=manifest, models=folders)
    if manifest is not None:
        dataset = _manifest_facts(manifest)
    else:
        first = next(iter(metas.values()), {})
        dataset = {
            "name": None,
            "path": None,
            "synthetic": None,
            "clips_per_split": dict(first.get("clips_per_split", {})),
        }
    settings = _recorded_settings(models, metas)
    preset, differences = _compare(settings)
    segment_s = dataset.get("segment_seconds")
    if segmented or segment_s:
        length = f"{segment_s:g}-second" if segment_s else "fixed-length"
        protocol = (
            f"{length} segments (the DCASE 2021 Task 1B protocol scores 1-second segments); "
            "clip-level results average each clip's segment probabilities"
        )
    else:
        protocol = "whole clips (as the paper reports)"
    return {
        "avsc_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "run_id": run_id or new_run_id(),
        "split": split,
        "dataset": dataset,
        "lineage": None if lineage is None else dict(lineage),
        "preset": preset,
        "differences_from_paper": differences,
        "config_hashes": settings["hashes"],
        "selection": {"rule": selection, "description": SELECTION_RULES[selection]},
        "calibration": CALIBRATION_NOTE,
        "protocol": protocol,
    }
