"""Evaluation of fusion models on one split (paper, section III-C; DCASE 2021 Task 1B).

:func:`score` reads the ``predictions.parquet`` of fusion folders written by
:func:`avsc.training.fusion.train_fusion`, applies each model's temperature (fitted on val,
:mod:`avsc.scoring.calibration`), scores the calibrated probabilities with
:func:`avsc.scoring.metrics.classification_metrics` (log loss and ECE before calibration
beside them; :mod:`avsc.evaluation.model_scores`), averages segment probabilities per clip on
a segment run (:mod:`avsc.data.segments`), chooses the best model on val
(:mod:`avsc.evaluation.selection`) and returns an :class:`avsc.records.EvaluationResult`; it
draws and writes nothing.

:func:`evaluate` is :func:`score`, then :func:`avsc.evaluation.report.render` (one
confusion-matrix PNG and one DCASE-style submission CSV per result, reliability diagrams,
training curves, ``report.html``, ``report.md``) and ``metrics.json``, published as one folder.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avsc.config import FUSION_METHODS, MODALITY_SETS
from avsc.errors import DataError
from avsc.evaluation.model_scores import score_backbones, score_fusion_folder
from avsc.evaluation.provenance import check_lineage, collect_provenance
from avsc.evaluation.reference import logistic_reference
from avsc.evaluation.selection import best_result, mark_within_one_se, selection_rule
from avsc.labels import LABELS
from avsc.records import FusionInfo, ModelInfo, Predictions
from avsc.records.evaluation_result import (
    BackboneResult,
    Choice,
    ClassificationScores,
    EvaluatedData,
    EvaluationResult,
    FusionResult,
    Provenance,
    ReferenceResult,
    ScoredRows,
    SelectionRule,
    TrainingHistory,
)
from avsc.storage.files import backbone_paths
from avsc.storage.locations import read_json

__all__ = ["find_fusion_dirs", "score", "evaluate"]

log = logging.getLogger(__name__)

Paths = str | Path | Mapping[str, str | Path]


def _result_order(meta: FusionInfo) -> tuple[int, int]:
    m = FUSION_METHODS.index(meta.method) if meta.method in FUSION_METHODS else len(FUSION_METHODS)
    modality_sets = list(MODALITY_SETS)
    s = modality_sets.index(meta.modalities) if meta.modalities in modality_sets else len(modality_sets)
    return (s, m)


def find_fusion_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Fusion folders among ``paths``: each path is a fusion folder (has ``fusion.json``) or a
    folder whose direct sub-folders are. Sorted by modality set, then method.

    Raises:
        DataError: a path does not exist, or holds no fusion folder.
        RecordError: a ``fusion.json`` that is not of this avsc's format.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError(path, "fusion folder not found", "give the output folder of `avsc fuse`")
        if (path / FusionInfo.FILE_NAME).is_file():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / FusionInfo.FILE_NAME).is_file())
        if not children:
            raise DataError(
                path,
                f"no {FusionInfo.FILE_NAME} here nor in its sub-folders",
                "give a folder written by `avsc fuse` (or the root of `avsc fuse --method all`)",
            )
        found.extend(children)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return sorted(unique, key=lambda p: (_result_order(FusionInfo.read(p)), str(p)))


def _read_fusions(fusion_dirs: Sequence[str | Path]) -> dict[Path, FusionInfo]:
    """``fusion.json`` of every fusion folder; DataError for two of one method and modality set."""
    metas = {fusion_dir: FusionInfo.read(fusion_dir) for fusion_dir in find_fusion_dirs(fusion_dirs)}
    seen: dict[tuple[str, str], Path] = {}
    for fusion_dir, meta in metas.items():
        key = (meta.method, meta.modalities)
        if key in seen:
            raise DataError(
                fusion_dir,
                f"a second result for {key[0]} {key[1]} (first: {seen[key]})",
                "evaluate one folder per method and modality set",
            )
        seen[key] = fusion_dir
    return metas


def _score_fusions(
    metas: Mapping[Path, FusionInfo], split: str
) -> tuple[list[FusionResult], dict[str, ScoredRows], EvaluatedData]:
    """Every fusion folder scored on ``split``; all must hold the same clips."""
    results: list[FusionResult] = []
    rows: dict[str, ScoredRows] = {}
    first: tuple[Path, ScoredRows] | None = None
    for fusion_dir, meta in metas.items():
        result, scored = score_fusion_folder(fusion_dir, meta, split)
        if first is None:
            first = (fusion_dir, scored)
        elif list(first[1].clip_ids) != list(scored.clip_ids):
            raise DataError(
                fusion_dir / Predictions.FILE_NAME,
                f"its {split} clips differ from those of {first[0]}",
                "evaluate fusion models trained on the same embeddings together",
            )
        results.append(result)
        rows[result.name] = scored
    assert first is not None  # find_fusion_dirs found at least one
    labels = list(first[1].labels)
    dataset = EvaluatedData(
        split, dict(metas[first[0]].clips_per_split), len(labels), {lab: labels.count(lab) for lab in LABELS}
    )
    return results, rows, dataset


def _warnings(results: Sequence[FusionResult], backbones: Sequence[BackboneResult]) -> tuple[str, ...]:
    """What a reader of the report must not miss: temperatures at a bound of their search."""
    out = [
        f"{r.method} {r.modalities}: the val temperature sits at its search bound (T={r.temperature:.2f}): its "
        "probabilities are barely better than chance or val is too small to calibrate on"
        for r in results
        if r.temperature_at_bound
    ]
    out += [
        f"backbone {b.backbone}: the val temperature sits at its search bound (T={b.temperature:.2f})"
        for b in backbones
        if b.temperature_at_bound
    ]
    return tuple(out)


def _histories(
    model_dirs: Mapping[str, Path], infos: Mapping[str, ModelInfo], best: FusionResult | None
) -> tuple[TrainingHistory, ...]:
    """The training histories of the backbones found in ``model_dirs`` and of the best fusion."""
    out = []
    for backbone, folder in model_dirs.items():
        if (folder / "history.json").is_file():
            info = infos.get(backbone)
            out.append(
                TrainingHistory(backbone, tuple(read_json(folder / "history.json")), info.best_epoch if info else 0)
            )
    if best is not None and (Path(best.fusion_dir) / "history.json").is_file():
        out.append(
            TrainingHistory(
                f"fusion {best.method} {best.modalities}",
                tuple(read_json(Path(best.fusion_dir) / "history.json")),
                best.best_epoch,
            )
        )
    return tuple(out)


def _provenance(facts: Mapping[str, Any]) -> Provenance:
    """The typed provenance block of :func:`collect_provenance`'s dict."""
    return Provenance(
        **{
            **facts,
            "differences_from_paper": tuple(facts["differences_from_paper"]),
            "selection": SelectionRule(**facts["selection"]),
        }
    )


def _reference(row: Mapping[str, Any]) -> ReferenceResult:
    return ReferenceResult(
        **ClassificationScores.fields_of(row),
        modalities=row["modalities"],
        level=row["level"],
        C=float(row["C"]),
        val_accuracy=float(row["val_accuracy"]),
        val_log_loss=float(row["val_log_loss"]),
    )


def score(
    fusion_dirs: Sequence[str | Path] | str | Path,
    *,
    split: str = "test",
    embeddings: Paths | None = None,
    models: Paths | None = None,
    manifest: str | Path | None = None,
    run_id: str | None = None,
    selection: str | None = None,
) -> EvaluationResult:
    """Score fusion models (and backbones alone) on one split with calibrated probabilities.

    Arguments as :func:`evaluate` (without ``report_dir``); each folder or file a local path
    or an ``s3://`` location (fetched into temporary folders while scoring).

    Returns:
        The scores (:class:`avsc.records.EvaluationResult`; ``figures`` None), with the rows
        behind them and the training histories for :func:`avsc.evaluation.report.render`.

    Raises:
        DataError, ConfigError, RecordError: as :func:`evaluate`.

    Example::

        result = score(["runs/fusion"])
        [(r.method, r.modalities, r.accuracy, r.log_loss) for r in result.results]
    """
    from avsc.storage import staging

    paths = [fusion_dirs] if isinstance(fusion_dirs, (str, Path)) else list(fusion_dirs)
    with contextlib.ExitStack() as stack:
        if staging.any_remote(*paths, embeddings, models, manifest):  # small files: fetched
            paths = [staging.local_inputs(stack, d) for d in paths]
            embeddings, models, manifest = (staging.local_inputs(stack, v) for v in (embeddings, models, manifest))
        return _score(
            paths,
            split=split,
            embeddings=embeddings,
            models=models,
            manifest=manifest,
            run_id=run_id,
            selection=selection,
        )


def _score(
    fusion_dirs: Sequence[str | Path],
    *,
    split: str,
    embeddings: Paths | None,
    models: Paths | None,
    manifest: str | Path | None,
    run_id: str | None,
    selection: str | None,
) -> EvaluationResult:
    metas = _read_fusions(fusion_dirs)
    rule = selection_rule(metas, selection)
    model_dirs = (
        {}
        if models is None
        else backbone_paths(
            models, "{backbone}", what="models", hint="give the folder holding one `avsc train` output per backbone"
        )
    )
    infos = {b: ModelInfo.read(folder) for b, folder in model_dirs.items() if ModelInfo.exists_in(folder)}
    # Every input must be of the same data (the manifest's) before anything is scored.
    lineage = check_lineage(metas=metas, manifest=manifest, models=model_dirs, embeddings=embeddings)
    results, rows, dataset = _score_fusions(metas, split)
    chosen = {m: r for m in MODALITY_SETS if (r := best_result(results, rule, m)) is not None}
    results = mark_within_one_se(results, chosen)
    best = best_result(results, rule)
    backbones: list[BackboneResult] = []
    reference: tuple[ReferenceResult, ...] = ()
    if embeddings is not None:
        backbones, backbone_rows = score_backbones(embeddings, split, infos)
        rows.update(backbone_rows)
        reference = tuple(_reference(r) for r in logistic_reference(embeddings, split=split))
    segmented = any(r.clip_level is not None for r in results)
    provenance = collect_provenance(
        metas={d: m.to_dict() for d, m in metas.items()},
        split=split,
        selection=rule,
        manifest=manifest,
        models=model_dirs,
        run_id=run_id,
        segmented=segmented,
        lineage=lineage,
    )
    warnings = _warnings(results, backbones)
    for warning in warnings:
        log.warning("%s", warning)
    return EvaluationResult(
        split=split,
        labels=tuple(LABELS),
        provenance=_provenance(provenance),
        dataset=dataset,
        results=tuple(results),
        best=None if best is None else Choice(best.method, best.modalities),
        best_per_modalities={m: Choice(r.method, r.modalities) for m, r in chosen.items()},
        backbones=tuple(backbones),
        reference=reference,
        warnings=warnings,
        rows=rows,
        histories=_histories(model_dirs, infos, best),
    )


def evaluate(
    fusion_dirs: Sequence[str | Path] | str | Path,
    report_dir: str | Path,
    *,
    split: str = "test",
    embeddings: Paths | None = None,
    models: Paths | None = None,
    manifest: str | Path | None = None,
    run_id: str | None = None,
    selection: str | None = None,
) -> EvaluationResult:
    """Evaluate fusion models on one split with calibrated probabilities and write the report.

    Args:
        fusion_dirs: fusion folders and/or roots holding them (``avsc fuse --method all``);
            each a local folder or an ``s3://`` prefix (as every folder argument here).
        report_dir: output folder; afterwards holds ``metrics.json``, ``report.html``
            (self-contained), ``report.md``, ``confusion-<method>-<modalities>.png``,
            ``submission-<method>-<modalities>.csv`` (calibrated probabilities; on a segment
            run also ``submission-<method>-<modalities>-clips.csv`` of whole clips),
            ``calibration-*.png``, ``training-curves.png`` and ``outputs.json`` (the run id and
            every file's SHA-256). The folder is published whole when the evaluation ends
            (:func:`avsc.storage.publish.staged_output`): it never mixes two evaluations, and an
            evaluation that fails or is killed leaves the previous report as it was.
        split: the split to evaluate (``test`` = TAU fold1_evaluate).
        embeddings: optional folder of ``<backbone>.parquet`` (``avsc embed`` outputs) or
            mapping backbone -> Parquet file; adds one row per backbone (calibrated softmax
            of its ``fc10``) and the logistic-regression reference.
        models: optional folder of ``<backbone>/`` model folders (``avsc train`` outputs) or
            mapping backbone -> model folder: their settings go into the provenance block,
            their histories into the training curves.
        manifest: optional manifest of ``avsc ingest``: the dataset's name, path, whether it is
            synthetic, and its clips per split go into the provenance block.
        run_id: names this evaluation in the provenance block (default: time + random).
        selection: ``log_loss`` or ``accuracy``: how the best fusion model is chosen on val
            (default: the rule the fusion models were trained with, ``fusion.selection``).

    Returns:
        The scores written to ``metrics.json`` (:class:`avsc.records.EvaluationResult`, with
        ``figures`` naming the figures drawn; its JSON keys in ``docs/fusion.md``). Scores are
        of calibrated probabilities (log loss and ECE raw under ``uncalibrated``).

    Raises:
        DataError: a missing or unreadable fusion folder, a split without clips, two
            folders for the same method and modality set, no embeddings file, a missing
            manifest, inputs made from different data.
            ``report_dir`` holds files that no ``avsc evaluate`` published (no ``outputs.json``).
        RecordError: a ``fusion.json``, ``config.json`` or ``predictions.parquet`` of another
            format or version.
        ConfigError: an unknown selection rule; a key of an ``embeddings`` or ``models``
            mapping that is not a backbone.

    Example::

        result = evaluate(["runs/fusion"], "runs/report", embeddings="runs/embeddings",
                          models="runs/models", manifest="runs/manifest.parquet")
        result.best, result.results[0].log_loss
    """
    from avsc.evaluation.report import render
    from avsc.records.output_manifest import new_run_id
    from avsc.storage.publish import staged_output

    run_id = run_id or new_run_id()
    with staged_output(report_dir, kind="evaluate", run_id=run_id) as staging:
        result = score(
            fusion_dirs,
            split=split,
            embeddings=embeddings,
            models=models,
            manifest=manifest,
            run_id=run_id,
            selection=selection,
        )
        drawn = render(result, staging)
        drawn.write(staging)
    return drawn
