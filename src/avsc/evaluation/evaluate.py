"""Evaluation of fusion models on one split (paper, section III-C; DCASE 2021 Task 1B).

:func:`evaluate` reads the ``predictions.parquet`` of fusion folders written by
:func:`avsc.training.fusion.train_fusion`, applies each model's temperature (fitted on val,
:mod:`avsc.scoring.calibration`), scores the calibrated probabilities with
:func:`avsc.scoring.metrics.classification_metrics` (log loss and ECE before
calibration beside them), averages segment probabilities per clip on a segment run
(:mod:`avsc.data.segments`), chooses the best model on val
(:func:`best_result`), and writes ``metrics.json``, one confusion-matrix PNG and one
DCASE-style submission CSV per result, reliability diagrams, training curves,
``report.html`` and ``report.md`` (:mod:`avsc.evaluation.report`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.data.segments import average_segments, is_segment
from avsc.errors import ConfigError, DataError
from avsc.scoring.calibration import SELECTION_RULES, calibrated_probabilities, selection_key
from avsc.evaluation.figures import Curves, Reliability, plot_confusion, plot_reliability, plot_training_curves
from avsc.scoring.metrics import classification_metrics, equal_count_reliability, label_indices
from avsc.records.predictions import FUSION_FILE, PREDICTIONS_FILE, read_predictions
from avsc.evaluation.provenance import check_lineage, collect_provenance
from avsc.evaluation.reference import logistic_reference
from avsc.labels import LABELS
from avsc.records import FusionInfo, ModelInfo
from avsc.storage.files import backbone_paths, read_json, write_json

__all__ = ["find_fusion_dirs", "best_result", "evaluate"]

log = logging.getLogger(__name__)


# --- Evaluation of fusion folders ------------------------------------------------------------


def _result_order(meta: dict[str, Any]) -> tuple[int, int]:
    method = meta.get("method")
    modalities = meta.get("modalities")
    m = FUSION_METHODS.index(method) if method in FUSION_METHODS else len(FUSION_METHODS)
    s = list(MODALITY_SETS).index(modalities) if modalities in MODALITY_SETS else len(MODALITY_SETS)
    return (s, m)


def find_fusion_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Fusion folders among ``paths``: each path is a fusion folder (has ``fusion.json``) or a
    folder whose direct sub-folders are. Sorted by modality set, then method.

    Raises:
        DataError: a path does not exist, or holds no fusion folder.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise DataError(path, "fusion folder not found", "give the output folder of `avsc fuse`")
        if (path / FUSION_FILE).is_file():
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / FUSION_FILE).is_file())
        if not children:
            raise DataError(path, f"no {FUSION_FILE} here nor in its sub-folders",
                            "give a folder written by `avsc fuse` (or the root of `avsc fuse --method all`)")
        found.extend(children)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return sorted(unique, key=lambda p: (_result_order(read_json(p / FUSION_FILE)), str(p)))


def _selection_log_loss(result: dict[str, Any]) -> float:
    """The val log loss a result is chosen on: cross-validated (``val_selection_log_loss``)."""
    value = result.get("val_selection_log_loss")
    return float(result["val_log_loss"] if value is None else value)


def best_result(results: Sequence[dict[str, Any]], selection: str = "log_loss",
                modalities: str | None = None) -> dict[str, Any] | None:
    """The result the val split prefers under ``selection`` (see
    :data:`avsc.scoring.calibration.SELECTION_RULES`); the evaluated split never decides.

    Args:
        results: ``metrics.json["results"]`` rows (with ``val_accuracy`` and
            ``val_selection_log_loss``, the cross-validated val log loss of the calibrated
            model; ``val_log_loss`` where that is absent).
        modalities: only results of this modality set; None: audio+visual ones when there
            are any, else all.

    Returns:
        The chosen row, or None when there is none. Ties go to the earlier method.
    """
    if modalities is None:
        pool = [r for r in results if r["modalities"] == "audio+visual"] or list(results)
    else:
        pool = [r for r in results if r["modalities"] == modalities]
    if not pool:
        return None

    def key(r: dict[str, Any]) -> tuple:
        order = FUSION_METHODS.index(r["method"]) if r["method"] in FUSION_METHODS else len(FUSION_METHODS)
        return (*selection_key(r["val_accuracy"], _selection_log_loss(r), selection), -order)

    return max(pool, key=key)


def _selection(metas: dict[Path, FusionInfo], asked: str | None) -> str:
    """The rule that picks the best model: as asked, else as the fusion models were trained."""
    if asked is not None:
        if asked not in SELECTION_RULES:
            raise ConfigError(f"selection must be one of {', '.join(SELECTION_RULES)}, got {asked!r}")
        return asked
    recorded = {m.selection for m in metas.values()}
    if len(recorded) == 1:
        return recorded.pop()
    if recorded:
        log.warning("fusion models were selected by different rules (%s); choosing the best by log_loss",
                    ", ".join(sorted(recorded)))
    return "log_loss"


def _scores(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, Any]:
    """Metrics of the calibrated probabilities, with the raw log loss and ECE beside them."""
    metrics = classification_metrics(y, calibrated)
    before = classification_metrics(y, raw)
    return {**metrics, "uncalibrated": {"log_loss": before["log_loss"], "ece": before["ece"]}}


def _warnings(metrics: dict[str, Any]) -> list[str]:
    """What a reader of the report must not miss: temperatures at a bound of their search."""
    out = []
    for r in metrics["results"]:
        if r.get("temperature_at_bound"):
            out.append(f"{r['method']} {r['modalities']}: the val temperature sits at its search bound "
                       f"(T={r['temperature']:.2f}): its probabilities are barely better than chance or val is "
                       "too small to calibrate on")
    for b in metrics.get("backbones", []):
        if b.get("temperature_at_bound"):
            out.append(f"backbone {b['backbone']}: the val temperature sits at its search bound "
                       f"(T={b['temperature']:.2f})")
    return out


def _backbone_rows(embeddings: str | Path | Mapping[str, str | Path], split: str
                   ) -> tuple[list[dict[str, Any]], list[Reliability]]:
    from avsc.training.embeddings import read_embeddings

    paths = backbone_paths(embeddings, "{backbone}.parquet", what="embeddings",
                           hint="give the folder of `avsc embed` outputs")
    rows, panels = [], []
    for backbone, path in paths.items():
        if not path.is_file():  # a folder need not hold every backbone
            continue
        emb = read_embeddings(path)
        mask = emb.splits == split
        if not mask.any():
            raise DataError(path, f"no clips in the {split!r} split")
        y = label_indices(list(emb.labels[mask]), path)
        raw = calibrated_probabilities(emb.fc10[mask], 1.0)
        calibrated = calibrated_probabilities(emb.fc10[mask], emb.info.temperature)
        scores = _scores(y, raw, calibrated)
        rows.append({"backbone": backbone, "temperature": emb.info.temperature,
                     **{k: scores[k] for k in ("accuracy", "accuracy_ci", "n_correct", "log_loss", "ece",
                                               "uncalibrated", "per_class_accuracy", "per_class_count", "n_clips")}})
        panels.append(Reliability(backbone, y, raw, calibrated, emb.info.temperature))
    if not rows:
        raise DataError(str(embeddings) if not isinstance(embeddings, Mapping) else "embeddings",
                        f"no <backbone>.parquet file (one of {', '.join(BACKBONES)})",
                        "give the folder of `avsc embed` outputs")
    return rows, panels


def _training_curves(model_dirs: Mapping[str, Path], model_configs: Mapping[str, ModelInfo],
                     best: dict[str, Any] | None, report_dir: Path) -> str | None:
    """``training-curves.png`` of the backbones found in ``model_dirs`` and the best fusion."""
    curves = []
    for backbone, folder in model_dirs.items():
        if (folder / "history.json").is_file():
            info = model_configs.get(backbone)
            curves.append(Curves(backbone, read_json(folder / "history.json"), info.best_epoch if info else 0))
    if best is not None and (Path(best["fusion_dir"]) / "history.json").is_file():
        curves.append(Curves(f"fusion {best['method']} {best['modalities']}",
                             read_json(Path(best["fusion_dir"]) / "history.json"), int(best.get("best_epoch", 0))))
    if not curves:
        return None
    plot_training_curves(curves, report_dir / "training-curves.png")
    return "training-curves.png"


def evaluate(
    fusion_dirs: Sequence[str | Path] | str | Path,
    report_dir: str | Path,
    *,
    split: str = "test",
    embeddings: str | Path | Mapping[str, str | Path] | None = None,
    models: str | Path | Mapping[str, str | Path] | None = None,
    manifest: str | Path | None = None,
    run_id: str | None = None,
    selection: str | None = None,
) -> dict[str, Any]:
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
            of its ``fc10``) to the metrics and the report.
        models: optional folder of ``<backbone>/`` model folders (``avsc train`` outputs) or
            mapping backbone -> model folder: their settings go into the provenance block,
            their histories into the training curves.
        manifest: optional manifest of ``avsc ingest``: the dataset's name, path, whether it is
            synthetic, and its clips per split go into the provenance block.
        run_id: names this evaluation in the provenance block (default: time + random).
        selection: ``log_loss`` or ``accuracy``: how the best fusion model is chosen on val
            (default: the rule the fusion models were trained with, ``fusion.selection``).

    Returns:
        The content of ``metrics.json``: ``{"split", "labels", "provenance": {...},
        "dataset", "results": [{"method", "modalities", "accuracy", "accuracy_ci",
        "n_correct", "log_loss", "ece", "uncalibrated": {"log_loss", "ece"}, "temperature",
        "per_class_accuracy", "per_class_count", "per_class_correct", "per_class_ci",
        "confusion_matrix", "n_clips", "labels", "val_accuracy", "val_log_loss",
        "val_calibration", "clip_level" (segment runs), "fusion_dir", ...}], "backbones":
        [...] (with ``embeddings``), "best": {"method", "modalities"},
        "best_per_modalities": {modalities: {"method", "modalities"}}, "figures": {...}}``.
        Scores are of calibrated probabilities (log loss and ECE raw under ``uncalibrated``).

    Raises:
        DataError: a missing or unreadable fusion folder, a split without clips, two
            folders for the same method and modality set, no embeddings file, a missing
            manifest.
            ``report_dir`` holds files that no ``avsc evaluate`` published (no ``outputs.json``).
        ConfigError: an unknown selection rule; a key of an ``embeddings`` or ``models``
            mapping that is not a backbone.

    Example::

        metrics = evaluate(["runs/fusion"], "runs/report", embeddings="runs/embeddings",
                           models="runs/models", manifest="runs/manifest.parquet")
        metrics["best"], metrics["results"][0]["log_loss"]
    """
    from avsc.records.output_manifest import new_run_id
    from avsc.storage.publish import staged_output

    run_id = run_id or new_run_id()
    with staged_output(report_dir, kind="evaluate", run_id=run_id) as staging:
        return _evaluate(fusion_dirs, staging, split=split, embeddings=embeddings, models=models,
                         manifest=manifest, run_id=run_id, selection=selection)


def _evaluate(fusion_dirs, report_dir: str | Path, *, split: str, embeddings, models, manifest,
              run_id: str, selection: str | None) -> dict[str, Any]:
    from avsc.evaluation import report
    from avsc.storage import locations

    if isinstance(fusion_dirs, (str, Path)):
        fusion_dirs = [fusion_dirs]
    if locations.any_remote(*fusion_dirs, report_dir, embeddings, models, manifest):
        # Small folders and files: fetched to (and the report pushed from) temporary local ones.
        with contextlib.ExitStack() as stack:
            local = [locations.local_inputs(stack, d) for d in fusion_dirs]
            out = stack.enter_context(locations.output_folder(report_dir))
            return _evaluate(local, out, split=split, embeddings=locations.local_inputs(stack, embeddings),
                            models=locations.local_inputs(stack, models),
                            manifest=locations.local_inputs(stack, manifest), run_id=run_id, selection=selection)
    report_dir = Path(report_dir)
    dirs = find_fusion_dirs(fusion_dirs)
    metas = {fusion_dir: FusionInfo.read(fusion_dir) for fusion_dir in dirs}
    seen: dict[tuple[str, str], Path] = {}
    for fusion_dir, meta in metas.items():  # before anything is written
        key = (meta.method, meta.modalities)
        if key in seen:
            raise DataError(fusion_dir, f"a second result for {key[0]} {key[1]} (first: {seen[key]})",
                            "evaluate one folder per method and modality set")
        seen[key] = fusion_dir
    selection = _selection(metas, selection)
    model_dirs = {} if models is None else backbone_paths(
        models, "{backbone}", what="models", hint="give the folder holding one `avsc train` output per backbone")
    model_configs = {b: ModelInfo.read(folder) for b, folder in model_dirs.items() if ModelInfo.exists_in(folder)}
    # Before anything is written: every input must be of the same data (the manifest's).
    lineage = check_lineage(metas=metas, manifest=manifest, models=model_dirs, embeddings=embeddings)

    results: list[dict[str, Any]] = []
    panels: dict[str, list[Reliability]] = {}
    dataset: dict[str, Any] = {"split": split}
    reference_ids: np.ndarray | None = None
    segmented = False
    for fusion_dir, meta in metas.items():
        if list(meta.labels) != list(LABELS):
            raise DataError(fusion_dir / FUSION_FILE, "class order differs from avsc's LABELS")
        preds = read_predictions(fusion_dir / PREDICTIONS_FILE)
        mask = preds["split"] == split
        if not mask.any():
            present = ", ".join(sorted(set(preds["split"]))) or "none"
            raise DataError(fusion_dir / PREDICTIONS_FILE, f"no clips in the {split!r} split (splits: {present})",
                            "choose another --split")
        order = np.argsort(preds["clip_id"][mask], kind="stable")
        clip_ids, labels = preds["clip_id"][mask][order], preds["label"][mask][order]
        if reference_ids is None:
            reference_ids = clip_ids
            segmented = any(is_segment(c) for c in clip_ids)
            dataset.update(clips_per_split=dict(meta.clips_per_split), n_clips=int(len(clip_ids)),
                           class_counts={lab: int((labels == lab).sum()) for lab in LABELS})
        elif not np.array_equal(reference_ids, clip_ids):
            raise DataError(fusion_dir / PREDICTIONS_FILE, f"its {split} clips differ from those of {dirs[0]}",
                            "evaluate fusion models trained on the same embeddings together")
        calibration = meta.calibration
        temperature = float(calibration.temperature)
        if "logits" in preds:
            logits = preds["logits"][mask][order]
            raw, calibrated = calibrated_probabilities(logits, 1.0), calibrated_probabilities(logits, temperature)
        else:  # written without logits: its probabilities are all there is
            raw = calibrated = preds["probs"][mask][order]
        y = label_indices(list(labels), fusion_dir / PREDICTIONS_FILE)
        name = f"{meta.method}-{meta.modalities}"
        val = meta.val_metrics
        result = {
            "method": meta.method, "modalities": meta.modalities, **_scores(y, raw, calibrated),
            "temperature": temperature, "calibration_method": calibration.method,
            "temperature_at_bound": calibration.at_bound,
            "val_accuracy": float(val["accuracy"]),
            "val_log_loss": float(val["log_loss"]),
            "val_selection_log_loss": calibration.selection_log_loss,
            "val_calibration": {"before": dict(calibration.before), "after": dict(calibration.after),
                                "cv_log_loss": calibration.cv_log_loss},
            "best_epoch": meta.best_epoch, "best_step": meta.best_step, "steps_run": meta.steps_run,
            "stopped": meta.stopped,
            "fusion_dir": str(fusion_dir), "confusion_png": f"confusion-{name}.png",
            "submission_csv": f"submission-{name}.csv",
        }
        result["reliability"] = equal_count_reliability(y, calibrated)
        report.write_submission_csv(report_dir / result["submission_csv"], clip_ids, calibrated)
        if segmented:
            parents, parent_labels, clip_probs = average_segments(clip_ids, labels, calibrated)
            _, _, clip_raw = average_segments(clip_ids, labels, raw)
            result["clip_level"] = _scores(label_indices(list(parent_labels), fusion_dir / PREDICTIONS_FILE),
                                           clip_raw, clip_probs)
            result["clip_submission_csv"] = f"submission-{name}-clips.csv"
            report.write_submission_csv(report_dir / result["clip_submission_csv"], parents, clip_probs)
        results.append(result)
        panels.setdefault(meta.modalities, []).append(
            Reliability(f"{meta.method} {meta.modalities}", y, raw, calibrated, temperature))

    best = best_result(results, selection)
    best_per = {m: best_result(results, selection, m) for m in MODALITY_SETS}
    out: dict[str, Any] = {
        "split": split, "labels": list(LABELS),
        "provenance": collect_provenance(metas={d: m.to_dict() for d, m in metas.items()}, split=split,
                                         selection=selection, manifest=manifest, models=model_dirs, run_id=run_id,
                                         segmented=segmented, lineage=lineage),
        "dataset": dataset, "results": results,
        "best": {"method": best["method"], "modalities": best["modalities"]} if best else None,
        "best_per_modalities": {m: {"method": r["method"], "modalities": r["modalities"]}
                                for m, r in best_per.items() if r is not None},
    }
    if embeddings is not None:
        out["backbones"], panels["backbones"] = _backbone_rows(embeddings, split)
        for row in out["backbones"]:  # the val log loss behind each temperature, from the model folder
            if row["backbone"] in model_configs:
                calibration = model_configs[row["backbone"]].calibration
                row["val_calibration"] = {"before": dict(calibration.before), "after": dict(calibration.after),
                                          "cv_log_loss": calibration.cv_log_loss}
                row["calibration_method"] = calibration.method
                row["temperature_at_bound"] = calibration.at_bound
        out["reference"] = logistic_reference(embeddings, split=split)
    out["warnings"] = _warnings(out)
    for warning in out["warnings"]:
        log.warning("%s", warning)
    for result in results:
        plot_confusion(np.asarray(result["confusion_matrix"]), report_dir / result["confusion_png"],
                       title=f"{result['method']} {result['modalities']} ({split}): "
                             f"accuracy {100 * result['accuracy']:.1f}%, log loss {result['log_loss']:.3f}")
    figures: dict[str, Any] = {"reliability": []}
    for group in (*MODALITY_SETS, "backbones"):
        if panels.get(group):
            name = f"calibration-{group}.png"
            plot_reliability(panels[group], report_dir / name, title=f"{group} ({split} split)")
            figures["reliability"].append(name)
    figures["training_curves"] = _training_curves(model_dirs, model_configs, best, report_dir)
    out["figures"] = figures
    write_json(report_dir / "metrics.json", out)
    report.write_report(out, report_dir)
    return out
