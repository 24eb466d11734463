"""Evaluation of fusion models on one split (paper, section III-C): metrics, report, CSV.

:func:`evaluate` reads the ``predictions.parquet`` of fusion folders written by
:func:`avsc.training.backbone.fusion.train_fusion`, scores them with :mod:`avsc.evaluation.evaluate.metrics`
and writes ``metrics.json``, one confusion-matrix PNG and one DCASE-style submission CSV per
result, ``report.html`` and ``report.md``.
"""

from __future__ import annotations

import contextlib

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.errors import DataError
from avsc.evaluation.metrics import classification_metrics, label_indices, softmax
from avsc.evaluation.predictions import FUSION_FILE, PREDICTIONS_FILE, read_predictions
from avsc.labels import LABELS
from avsc.storage.files import backbone_paths, read_json, write_json

__all__ = ["find_fusion_dirs", "evaluate"]


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


def _best(results: list[dict[str, Any]]) -> dict[str, str] | None:
    """The result to put in Table II: highest VAL accuracy (ties: lower val log loss),
    among audio+visual results when there are any. The evaluated split never decides."""
    if not results:
        return None
    pool = [r for r in results if r["modalities"] == "audio+visual"] or results
    def key(r: dict[str, Any]) -> tuple[float, float, int]:
        acc, loss = r["val_accuracy"], r["val_log_loss"]
        order = FUSION_METHODS.index(r["method"]) if r["method"] in FUSION_METHODS else len(FUSION_METHODS)
        return (-1.0 if math.isnan(acc) else acc, -math.inf if math.isnan(loss) else -loss, -order)

    chosen = max(pool, key=key)
    return {"method": chosen["method"], "modalities": chosen["modalities"]}


def _backbone_rows(embeddings: str | Path | Mapping[str, str | Path], split: str) -> list[dict[str, Any]]:
    from avsc.training.embeddings import read_embeddings

    paths = backbone_paths(embeddings, "{backbone}.parquet", what="embeddings",
                           hint="give the folder of `avsc embed` outputs")
    rows = []
    for backbone, path in paths.items():
        if not path.is_file():  # a folder need not hold every backbone
            continue
        emb = read_embeddings(path)
        mask = emb.splits == split
        if not mask.any():
            raise DataError(path, f"no clips in the {split!r} split")
        y = label_indices(list(emb.labels[mask]), path)
        metrics = classification_metrics(y, softmax(emb.fc10[mask]))
        rows.append({"backbone": backbone, "accuracy": metrics["accuracy"], "log_loss": metrics["log_loss"],
                     "per_class_accuracy": metrics["per_class_accuracy"], "n_clips": metrics["n_clips"]})
    if not rows:
        raise DataError(str(embeddings) if not isinstance(embeddings, Mapping) else "embeddings",
                        f"no <backbone>.parquet file (one of {', '.join(BACKBONES)})",
                        "give the folder of `avsc embed` outputs")
    return rows


def evaluate(
    fusion_dirs: Sequence[str | Path] | str | Path,
    report_dir: str | Path,
    *,
    split: str = "test",
    embeddings: str | Path | Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Evaluate fusion models on one split and write the report.

    Args:
        fusion_dirs: fusion folders and/or roots holding them (``avsc fuse --method all``);
            each a local folder or an ``s3://`` prefix (as every folder argument here).
        report_dir: output folder; afterwards holds ``metrics.json``, ``report.html``
            (self-contained), ``report.md``, ``confusion-<method>-<modalities>.png`` and
            ``submission-<method>-<modalities>.csv`` per result.
        split: the split to evaluate (``test`` = TAU fold1_evaluate).
        embeddings: optional folder of ``<backbone>.parquet`` (``avsc embed`` outputs) or
            mapping backbone -> Parquet file; adds one row per backbone (softmax of its
            ``fc10``) to the metrics and the report.

    Returns:
        The content of ``metrics.json``: ``{"split", "results": [{"method", "modalities",
        "accuracy", "log_loss", "per_class_accuracy", "confusion_matrix", "n_clips",
        "labels", "val_accuracy", "val_log_loss", "fusion_dir"}], "backbones": [...] (with
        ``embeddings``), "best": {"method", "modalities"}, "dataset": {...}}``.

    Raises:
        DataError: a missing or unreadable fusion folder, a split without clips, two
            folders for the same method and modality set, no embeddings file.
        ConfigError: a key of an ``embeddings`` mapping that is not a backbone.

    Example:
        >>> metrics = evaluate(["runs/fusion"], "runs/report", embeddings="runs/embeddings")
        >>> metrics["best"], metrics["results"][0]["accuracy"]
    """
    from avsc.evaluation import report
    from avsc.storage import locations

    if isinstance(fusion_dirs, (str, Path)):
        fusion_dirs = [fusion_dirs]
    if locations.any_remote(*fusion_dirs, report_dir, embeddings):
        # Small folders and files: fetched to (and the report pushed from) temporary local ones.
        with contextlib.ExitStack() as stack:
            local = [locations.local_inputs(stack, d) for d in fusion_dirs]
            out = stack.enter_context(locations.output_folder(report_dir))
            return evaluate(local, out, split=split, embeddings=locations.local_inputs(stack, embeddings))
    report_dir = Path(report_dir)
    dirs = find_fusion_dirs(fusion_dirs)
    results: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Path] = {}
    dataset: dict[str, Any] = {"split": split}
    reference_ids: np.ndarray | None = None
    metas = {fusion_dir: read_json(fusion_dir / FUSION_FILE) for fusion_dir in dirs}
    for fusion_dir, meta in metas.items():  # before anything is written
        key = (meta.get("method"), meta.get("modalities"))
        if key in seen:
            raise DataError(fusion_dir, f"a second result for {key[0]} {key[1]} (first: {seen[key]})",
                            "evaluate one folder per method and modality set")
        seen[key] = fusion_dir
    for fusion_dir, meta in metas.items():
        if list(meta.get("labels", LABELS)) != list(LABELS):
            raise DataError(fusion_dir / FUSION_FILE, "class order differs from avsc's LABELS")
        preds = read_predictions(fusion_dir / PREDICTIONS_FILE)
        mask = preds["split"] == split
        if not mask.any():
            present = ", ".join(sorted(set(preds["split"]))) or "none"
            raise DataError(fusion_dir / PREDICTIONS_FILE, f"no clips in the {split!r} split (splits: {present})",
                            "choose another --split")
        clip_ids = preds["clip_id"][mask]
        order = np.argsort(clip_ids, kind="stable")
        clip_ids, labels, probs = clip_ids[order], preds["label"][mask][order], preds["probs"][mask][order]
        if reference_ids is None:
            reference_ids = clip_ids
            dataset.update(clips_per_split=meta.get("clips_per_split", {}), n_clips=int(len(clip_ids)),
                           class_counts={lab: int((labels == lab).sum()) for lab in LABELS})
        elif not np.array_equal(reference_ids, clip_ids):
            raise DataError(fusion_dir / PREDICTIONS_FILE,
                            f"its {split} clips differ from those of {dirs[0]}",
                            "evaluate fusion models trained on the same embeddings together")
        y = label_indices(list(labels), fusion_dir / PREDICTIONS_FILE)
        metrics = classification_metrics(y, probs)
        val = meta.get("val_metrics", {})
        name = f"{meta['method']}-{meta['modalities']}"
        results.append({
            "method": meta["method"], "modalities": meta["modalities"], **metrics,
            "val_accuracy": float(val.get("accuracy", float("nan"))),
            "val_log_loss": float(val.get("log_loss", float("nan"))),
            "fusion_dir": str(fusion_dir), "confusion_png": f"confusion-{name}.png",
            "submission_csv": f"submission-{name}.csv",
        })
        report.write_submission_csv(report_dir / f"submission-{name}.csv", clip_ids, probs)
    out: dict[str, Any] = {"split": split, "labels": list(LABELS), "dataset": dataset, "results": results,
                           "best": _best(results)}
    if embeddings is not None:
        out["backbones"] = _backbone_rows(embeddings, split)
    for result in results:
        report.plot_confusion(np.asarray(result["confusion_matrix"]), report_dir / result["confusion_png"],
                              title=f"{result['method']} {result['modalities']} ({split}): "
                                    f"accuracy {100 * result['accuracy']:.1f}%")
    write_json(report_dir / "metrics.json", out)
    report.write_report(out, report_dir)
    return out
