"""Phase II: train the fusion layer + FC(10) on frozen embeddings (paper, section II-B).

The fusion layers and the model builder are in :mod:`avsc.models.fusion`; reading and
aligning the backbones' embeddings is :mod:`avsc.training.fusion_data`; the training rounds
are :mod:`avsc.training.fusion_trainer`, scored and selected by
:class:`avsc.training.selection_loop.SelectionLoop` as Phase I's epochs are.

Training (section III-A: mixup, KL-divergence loss + L2, Adam, standardised inputs,
counted in optimizer steps with early stopping) is :mod:`avsc.training.fusion_trainer`.

Selection and calibration use the val split only (the test split is never read): at every
evaluation a temperature is fitted on the val logits under the guards of
:mod:`avsc.scoring.calibration` (a prior towards 1, no sharpening on a separable val
split, a cross-validated check), and ``FusionConfig.selection`` keeps the evaluation with the
lowest cross-validated val log loss (``log_loss``, the default) or the highest val accuracy
(``accuracy``). The kept weights' calibration is stored in ``fusion.json`` (a
:class:`avsc.records.FusionInfo`) and ``predictions.parquet`` holds both the raw logits and
the calibrated probabilities.

Preemption-safe with ``checkpoints`` (a folder or ``s3://`` prefix, see
:mod:`avsc.training.checkpoints`): the weights, Adam's state, the random generator, the
history and the best-so-far are saved at most every ``checkpoint_every_s`` seconds and after
the last evaluation, so a new process resumes after the last saved evaluation with the same
random draws; :func:`train_all_fusions` also keeps each finished model there, so a retried
task copies what was done instead of training it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import (
    FUSION_METHODS,
    MODALITY_SETS,
    FusionConfig,
    to_dict,
)
from avsc.labels import LABELS
from avsc.models.fusion import (
    check_method,
    check_modalities,
    distance_score,
    fusion_logits_model,
)
from avsc.models.saving import save_keras_model
from avsc.records import Calibration, FusionInfo
from avsc.records.output_manifest import new_run_id
from avsc.records.predictions import FUSION_FILE, Predictions
from avsc.scoring.calibration import calibrated_probabilities
from avsc.storage import locations, staging
from avsc.storage.publish import staged_output
from avsc.training.checkpoints import Checkpoints
from avsc.training.fusion_data import EmbeddingFiles, FusionData, load_fusion_data
from avsc.training.fusion_result import FusionResult, completed_info, fingerprint, reused_result
from avsc.training.fusion_trainer import (
    FittedFusion,
    FusionSplits,
    check_settings,
    fit_fusion,
    fusion_logits,
    fusion_splits,
)

__all__ = [
    "FusionData",
    "load_fusion_data",
    "train_fusion",
    "train_all_fusions",
]

log = logging.getLogger(__name__)

# Quantiles of the val clips' distance score (avsc.models.fusion.distance_score) kept in
# fusion.json and the bundle, for predict's out-of-distribution warning.
DISTANCE_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 1.0)


def train_fusion(
    embeddings: EmbeddingFiles,
    out_dir: str | Path,
    *,
    method: str,
    modalities: str = "audio+visual",
    config: FusionConfig,
    checkpoints: str | Path | None = None,
    checkpoint_every_s: float = 30.0,
    progress: bool = True,
) -> FusionResult:
    """Train one fusion model (Phase II) on frozen embeddings, select it on val, save it.

    Args:
        embeddings: folder holding ``<backbone>.parquet`` for every backbone of
            ``modalities`` (written by ``avsc embed``), or a mapping backbone -> Parquet
            file (see :func:`load_fusion_data`).
        out_dir: output folder; afterwards holds ``model.keras`` (uncompiled; inputs one per
            backbone in the order of ``fusion.json["backbones"]``, raw embeddings (it
            standardises them itself), output probabilities), ``predictions.parquet`` (every
            clip of every split: raw logits and calibrated probabilities), ``history.json``
            (one entry per val evaluation) and, written last, ``fusion.json``
            (:class:`avsc.records.FusionInfo`) and ``outputs.json`` (the run id and every
            file's SHA-256). The folder is published whole when training ends
            (:func:`avsc.storage.publish.staged_output`): it never mixes two trainings.
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual`` (five backbones), ``audio`` (three) or ``visual`` (two).
        config: Phase II settings (step budget, patience, batch size, learning rates, mixup
            alpha, L2, selection rule, seed).
        checkpoints: where to keep the training state (folder or ``s3://`` prefix); None
            keeps none. A run pointed at the state of an interrupted one continues it.
        checkpoint_every_s: least time between two checkpoints (one is always written
            after the last evaluation).
        progress: a progress bar over passes over train.

    Raises:
        ConfigError: unknown method or modality set, a step setting or epochs < 1.
        DataError: missing or inconsistent embeddings, an empty train or val split.

    Example::

        cfg = load_config(preset="quick").fusion
        result = train_fusion("embeddings", "fusion/f4", method="f4", config=cfg)
        result.val_accuracy
    """
    from avsc.runtime import limit_tensorflow_threads

    limit_tensorflow_threads()  # the pod's CPUs, before the first operation (a no-op after it)
    if staging.any_remote(embeddings, out_dir):
        return _train_fusion_remote(
            embeddings,
            out_dir,
            method=method,
            modalities=modalities,
            config=config,
            checkpoints=checkpoints,
            checkpoint_every_s=checkpoint_every_s,
            progress=progress,
        )
    spec = check_method(method)
    backbones = check_modalities(modalities)
    check_settings(config)
    data = load_fusion_data(embeddings, backbones)
    splits = fusion_splits(data, spec.level)
    fitted = fit_fusion(
        method,
        tuple(backbones),
        splits,
        config,
        fc1024=spec.level == "fc1024",
        resume_key=_resume_key(data, method, modalities, config),
        checkpoints=Checkpoints(checkpoints) if checkpoints else None,
        every_s=checkpoint_every_s,
        progress=progress,
        desc=f"fuse {method} {modalities}",
    )
    return _write_outputs(fitted, data, splits, Path(out_dir), method=method, modalities=modalities, config=config)


def _resume_key(data: FusionData, method: str, modalities: str, config: FusionConfig) -> str:
    # The data too: a checkpoint of embeddings of other data (even of the same models) never resumes.
    return json.dumps(
        {**fingerprint(data, method, modalities, config), "lineage": data.lineage.to_json() if data.lineage else None},
        sort_keys=True,
    )


def _train_fusion_remote(embeddings: EmbeddingFiles, out_dir: str | Path, **kwargs: Any) -> FusionResult:
    """:func:`train_fusion` with ``s3://`` inputs or output: fetched, trained locally, published."""
    with contextlib.ExitStack() as stack:
        local_in = staging.local_inputs(stack, embeddings)
        local_out = stack.enter_context(staged_output(out_dir, kind="fuse", run_id=new_run_id(), replaces=FUSION_FILE))
        result = train_fusion(local_in, local_out, **kwargs)
    return replace(result, out_dir=out_dir)


def _write_outputs(
    fitted: FittedFusion,
    data: FusionData,
    splits: FusionSplits,
    out_dir: Path,
    *,
    method: str,
    modalities: str,
    config: FusionConfig,
) -> FusionResult:
    """Write the folder (model, predictions, history, fusion.json) and publish it whole."""
    spec = check_method(method)
    state = fitted.state
    chosen = state.best_calibration
    assert chosen is not None  # every training scores val at least once
    history = [dict(entry) for entry in state.history]
    # Written into a staging folder and published whole, with outputs.json naming the run:
    # the folder holds one training's model, predictions and fusion.json, never a mix.
    published = contextlib.ExitStack()
    final_dir, out_dir = (
        out_dir,
        published.enter_context(staged_output(out_dir, kind="fuse", run_id=new_run_id(), replaces=FUSION_FILE)),
    )
    save_keras_model(fitted.model, out_dir / "model.keras")
    logits = fusion_logits(fusion_logits_model(fitted.model), data.inputs(spec.level))
    temperature = chosen["temperature"]
    Predictions(
        clip_ids=np.asarray(data.clip_ids, dtype=str),
        splits=np.asarray(data.splits, dtype=str),
        labels=np.asarray(data.labels, dtype=str),
        probs=calibrated_probabilities(logits, temperature),
        logits=logits,
    ).write(out_dir)
    locations.write_json(str(out_dir / "history.json"), history)
    val_metrics = {k: v for k, v in chosen["metrics"].items() if k != "labels"}
    if chosen["at_bound"]:
        log.warning(
            "%s %s: the val temperature sits at its search bound (T=%.2f): its val predictions are "
            "barely better than chance, or val is too small to calibrate on",
            method,
            modalities,
            temperature,
        )
    info = _fusion_info(
        fitted, data, splits, method=method, modalities=modalities, config=config, val_metrics=val_metrics
    )
    info.write(out_dir)
    published.close()  # publishes; after an error above only the hidden staging folder is removed
    out_dir = final_dir
    # The result is the caller's to report (the CLI prints it); the log keeps a trace.
    log.debug(
        "%s %s: best step %d of %d (%s), val accuracy %.4f, val log loss %.4f -> %.4f at T=%.2f, %.1f s -> %s",
        method,
        modalities,
        info.best_step,
        info.steps_run,
        fitted.stopped,
        val_metrics["accuracy"],
        chosen["before"]["log_loss"],
        val_metrics["log_loss"],
        temperature,
        fitted.train_seconds,
        out_dir,
    )
    return FusionResult(
        out_dir=out_dir,
        method=method,
        modalities=modalities,
        val_accuracy=val_metrics["accuracy"],
        val_log_loss_calibrated=val_metrics["log_loss"],
        best_epoch=state.best_epoch,
        best_step=info.best_step,
        selection_log_loss=chosen["selection_log_loss"],
        backbones=tuple(data.backbones),
        level=spec.level,
        train_seconds=fitted.train_seconds,
        history=history,
        temperature=temperature,
    )


def _fusion_info(
    fitted: FittedFusion,
    data: FusionData,
    splits: FusionSplits,
    *,
    method: str,
    modalities: str,
    config: FusionConfig,
    val_metrics: dict[str, Any],
) -> FusionInfo:
    spec = check_method(method)
    state = fitted.state
    assert state.best_calibration is not None
    val_distance = distance_score(splits.x_val, fitted.standardize)
    return FusionInfo(
        val_distance_quantiles={f"{q:g}": float(np.quantile(val_distance, q)) for q in DISTANCE_QUANTILES},
        **fingerprint(data, method, modalities, config),
        equation=spec.equation,
        level=spec.level,
        width=int(splits.x_train[0].shape[1]),
        backbones=tuple(data.backbones),
        labels=tuple(LABELS),
        val_metrics=val_metrics,
        best_epoch=state.best_epoch,
        best_step=state.best_step,
        epochs_run=state.epoch,
        steps_run=fitted.steps,
        stopped=fitted.stopped,
        selection=config.selection,
        calibration=Calibration.from_result(state.best_calibration),
        config=to_dict(config),
        clips_per_split={s: int((data.splits == s).sum()) for s in sorted(set(data.splits))},
        train_seconds=round(fitted.train_seconds, 3),
        lineage=data.lineage,
    )


def train_all_fusions(
    embeddings: EmbeddingFiles,
    out_root: str | Path,
    *,
    config: FusionConfig,
    methods: Sequence[str] = FUSION_METHODS,
    modality_sets: Sequence[str] = tuple(MODALITY_SETS),
    checkpoints: str | Path | None = None,
    progress: bool = True,
) -> list[FusionResult]:
    """Train every method for every modality set into ``out_root/<method>-<modalities>/``.

    ``embeddings``: a folder of ``<backbone>.parquet`` or a mapping backbone -> Parquet
    file (see :func:`load_fusion_data`); the folder, the files and ``out_root`` may be
    ``s3://``. Resumes: a folder already complete (``fusion.json`` written last by
    :func:`train_fusion`) for the same method, settings and embeddings is skipped. With
    ``checkpoints`` (a folder or ``s3://`` prefix), each model's training state lives in
    ``checkpoints/<method>-<modalities>/`` and each finished model is kept in its ``done/``,
    so a new process (a retried pod with an empty ``out_root``) copies the finished ones and
    continues the interrupted one.

    Raises:
        ConfigError: unknown method or modality set; a complete folder made with other
            settings or other embeddings (use another ``out_root`` or delete that folder).
        DataError: see :func:`train_fusion`.

    Example::

        results = train_all_fusions("embeddings", "fusion", config=load_config().fusion)
        [(r.method, r.modalities, r.val_accuracy) for r in results]
    """
    for method in methods:
        check_method(method)
    for modalities in modality_sets:
        check_modalities(modalities)
    with contextlib.ExitStack() as stack:
        local_embeddings = staging.local_inputs(stack, embeddings)
        local_root = stack.enter_context(staging.output_folder(out_root, pull_existing=True))
        results = _train_all(
            local_embeddings,
            local_root,
            config=config,
            methods=methods,
            modality_sets=modality_sets,
            checkpoints=checkpoints,
            progress=progress,
        )
    if locations.is_remote(str(out_root)):
        results = [replace(r, out_dir=locations.join(str(out_root), Path(r.out_dir).name)) for r in results]
    return results


def _train_all(
    embeddings: EmbeddingFiles,
    out_root: Path,
    *,
    config: FusionConfig,
    methods: Sequence[str],
    modality_sets: Sequence[str],
    checkpoints: str | Path | None,
    progress: bool,
) -> list[FusionResult]:
    results = []
    for modalities in modality_sets:
        data = None
        for method in methods:
            out_dir = out_root / f"{method}-{modalities}"
            ckpt = locations.join(str(checkpoints), out_dir.name) if checkpoints else None
            if (
                completed_info(out_dir) is None
                and ckpt
                and Checkpoints(ckpt).fetch_folder("done", out_dir, FUSION_FILE)
            ):
                log.info("%s: finished before, copied from %s", out_dir.name, ckpt)
            meta = completed_info(out_dir)
            if meta is not None:
                if data is None:
                    data = load_fusion_data(embeddings, MODALITY_SETS[modalities])
                results.append(reused_result(out_dir, meta, data, method=method, modalities=modalities, config=config))
                log.debug("%s %s: already complete, skipped (%s)", method, modalities, out_dir)
                continue
            results.append(
                train_fusion(
                    embeddings,
                    out_dir,
                    method=method,
                    modalities=modalities,
                    config=config,
                    checkpoints=ckpt,
                    progress=progress,
                )
            )
            if ckpt:
                Checkpoints(ckpt).keep_folder(out_dir, "done", last=FUSION_FILE)
    return results
