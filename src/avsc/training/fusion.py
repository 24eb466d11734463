"""Phase II: train the fusion layer + FC(10) on frozen embeddings (paper, section II-B).

The fusion layers and the model builder are in :mod:`avsc.models.fusion`; reading and
aligning the backbones' embeddings is :mod:`avsc.training.fusion_data`.

Training (section III-A): mixup on the embeddings (one mixing weight per clip, shared by
all its embeddings), KL-divergence loss + L2 (eq. 4; coefficient ``lambda / 2`` on the
fusion vectors ``w`` and the dense kernel, biases excluded), Adam, seeded.

Selection and calibration use the val split only (the test split is never read): after
every epoch a temperature is fitted on the val logits (:mod:`avsc.evaluation.calibration`)
and ``FusionConfig.selection`` keeps the epoch with the lowest calibrated val log loss
(``log_loss``, the default) or the highest val accuracy (``accuracy``). The kept epoch's
temperature is stored in ``fusion.json["calibration"]`` and ``predictions.parquet`` holds
both the raw logits and the calibrated probabilities.

Preemption-safe with ``checkpoints`` (a folder or ``s3://`` prefix, see
:mod:`avsc.training.checkpoints`): the weights, Adam's state, the random generator, the
history and the best-so-far are saved at most every ``checkpoint_every_s`` seconds and after
the last epoch, so a new process resumes after the last saved epoch with the same random
draws; :func:`train_all_fusions` also keeps each finished model there, so a retried task
copies what was done instead of training it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from avsc.config import (
    FUSION_METHODS,
    MODALITY_SETS,
    FusionConfig,
    config_hash,
    to_dict,
)
from avsc.errors import ConfigError, DataError
from avsc.evaluation.calibration import SELECTION_RULES, calibrate, calibrated_probabilities, selection_key
from avsc.evaluation.predictions import FUSION_FILE, PREDICTIONS_FILE, write_predictions
from avsc.labels import LABEL_INDEX, LABELS
from avsc.models.fusion import build_fusion_model, check_method, check_modalities, fusion_logits_model
from avsc.models.saving import save_keras_model
from avsc.evaluation.provenance import new_run_id
from avsc.storage import locations
from avsc.storage.files import read_json, write_json
from avsc.storage.publish import staged_output
from avsc.training.checkpoints import Checkpoints
from avsc.training.fusion_data import Embeddings, FusionData, load_fusion_data
from avsc.training.mixup import mix

__all__ = [
    "FusionData",
    "load_fusion_data",
    "FusionResult",
    "train_fusion",
    "train_all_fusions",
]

FUSION_FORMAT = "avsc-fusion/1"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionResult:
    """What :func:`train_fusion` did (or found, when resumed).

    Attributes:
        out_dir: holds model.keras, fusion.json, predictions.parquet, history.json.
        best_epoch: 1-based epoch of the kept weights.
        val_accuracy, val_log_loss: on val, after temperature scaling.
        temperature: fitted on val for the kept weights.
        train_seconds: wall time of the training (0 when skipped as already complete).
        skipped: True when :func:`train_all_fusions` found the folder complete.
    """

    out_dir: Path
    method: str
    modalities: str
    val_accuracy: float
    val_log_loss: float
    best_epoch: int = 0
    backbones: tuple[str, ...] = ()
    level: str = ""
    train_seconds: float = 0.0
    temperature: float = 1.0
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _compiled_steps(model: keras.Model, optimizer, loss_fn, x_train: list[np.ndarray], y_train: np.ndarray,
                    batch_size: int):
    """A compiled training epoch and a compiled forward pass to the logits.

    The training clips stay in memory as tensors; one call runs a whole epoch inside the
    graph: for each minibatch of ``order``, mixup of each clip ``j`` with ``partner[j]``
    at weight ``lam[j]`` (the same for all its embeddings and its label), the mean loss +
    L2 terms, one Adam update. Small dense nets: this is many times faster than a Python
    loop of steps or ``Model.fit`` once per epoch.

    Returns:
        ``train_epoch(order, partner, lam) -> mean loss`` ([shape=(n_train,)] int32,
        int32, float32) and ``predict(xs) -> logits`` (the ``fc10`` output, before softmax).
    """
    import tensorflow as tf

    n_inputs = len(model.inputs)
    width = model.inputs[0].shape[-1]
    x_spec = [tf.TensorSpec((None, width), tf.float32) for _ in range(n_inputs)]
    xs_all = [tf.convert_to_tensor(x, tf.float32) for x in x_train]
    ys_all = tf.convert_to_tensor(y_train, tf.float32)
    variables = model.trainable_variables
    optimizer.build(variables)
    index_spec = tf.TensorSpec((None,), tf.int32)

    def step(order, partner, lam, start):
        idx = order[start:start + batch_size]
        other = tf.gather(partner, idx)
        weight = tf.gather(lam, idx)
        xs = [mix(tf.gather(x, idx), tf.gather(x, other), weight) for x in xs_all]
        ys = mix(tf.gather(ys_all, idx), tf.gather(ys_all, other), weight)
        with tf.GradientTape() as tape:
            probs = model(xs, training=True)
            loss = tf.reduce_mean(loss_fn(ys, probs))
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss * tf.cast(tf.shape(idx)[0], tf.float32)

    # autograph off (a plain while_loop): tracing is seconds faster per model.
    @tf.function(input_signature=[index_spec, index_spec, tf.TensorSpec((None,), tf.float32)], autograph=False)
    def train_epoch(order, partner, lam):
        n = tf.shape(order)[0]
        _, total = tf.while_loop(
            lambda start, total: start < n,
            lambda start, total: (start + batch_size, total + step(order, partner, lam, start)),
            (tf.constant(0, tf.int32), tf.constant(0.0, tf.float32)))
        return total / tf.cast(n, tf.float32)

    logits_model = fusion_logits_model(model)

    @tf.function(input_signature=[x_spec], autograph=False)
    def predict(xs):
        return logits_model(xs, training=False)

    return train_epoch, predict


def _predict(predict, inputs: list[np.ndarray], chunk: int = 8192) -> np.ndarray:
    n = len(inputs[0])
    parts = [np.asarray(predict([x[i:i + chunk] for x in inputs]), dtype=np.float64)
             for i in range(0, n, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, len(LABELS)))


def _fingerprint(data: FusionData, method: str, modalities: str, config: FusionConfig) -> dict[str, Any]:
    return {"method": method, "modalities": modalities, "config_hash": config_hash(config),
            "embeddings": {b: {"model_sha256": data.model_sha256[b], "config_hash": data.config_hash[b]}
                           for b in data.backbones}}


def train_fusion(
    embeddings: Embeddings,
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
            backbone in the order of ``fusion.json["backbones"]``, output probabilities),
            ``predictions.parquet`` (every clip of every split: raw logits and calibrated
            probabilities), ``history.json`` and, written last, ``fusion.json`` (method,
            modalities, backbones, level, labels, calibrated val metrics, calibration
            (temperature, val log loss and ECE before and after), selection rule, config and
            hash, per-backbone embedding model_sha256) and ``outputs.json`` (the run id and
            every file's SHA-256). The folder is published whole when training ends
            (:func:`avsc.storage.publish.staged_output`): it never mixes two trainings.
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual`` (five backbones), ``audio`` (three) or ``visual`` (two).
        config: Phase II settings (epochs, batch size, learning rate (and the FC(1024)
            fusions' own, if set), mixup alpha, L2, selection rule, seed).
        checkpoints: where to keep the training state (folder or ``s3://`` prefix); None
            keeps none. A run pointed at the state of an interrupted one continues it.
        checkpoint_every_s: least time between two checkpoints (one is always written
            after the last epoch).
        progress: a progress bar over epochs.

    Raises:
        ConfigError: unknown method or modality set, epochs < 1.
        DataError: missing or inconsistent embeddings, an empty train or val split.

    Example:
        >>> cfg = load_config(preset="quick").fusion
        >>> result = train_fusion("embeddings", "fusion/f4", method="f4", config=cfg)
        >>> result.val_accuracy
    """
    from tqdm import tqdm

    from avsc.models.losses import kl_divergence_loss
    from avsc.runtime import limit_tensorflow_threads

    limit_tensorflow_threads()  # the pod's CPUs, before the first operation (a no-op after it)
    if locations.any_remote(embeddings, out_dir):
        from dataclasses import replace

        with contextlib.ExitStack() as stack:
            local_in = locations.local_inputs(stack, embeddings)
            local_out = stack.enter_context(staged_output(out_dir, kind="fuse", run_id=new_run_id(),
                                                          replaces=FUSION_FILE))
            result = train_fusion(local_in, local_out, method=method, modalities=modalities, config=config,
                                  checkpoints=checkpoints, checkpoint_every_s=checkpoint_every_s,
                                  progress=progress)
        return replace(result, out_dir=out_dir)
    spec = check_method(method)
    backbones = check_modalities(modalities)
    if config.epochs < 1:
        raise ConfigError(f"fusion.epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise ConfigError(f"fusion.batch_size must be at least 1, got {config.batch_size}")
    if config.selection not in SELECTION_RULES:
        raise ConfigError(f"fusion.selection must be one of {', '.join(SELECTION_RULES)}, got {config.selection!r}")
    data = load_fusion_data(embeddings, backbones)
    out_dir = Path(out_dir)
    masks = {s: data.splits == s for s in ("train", "val")}
    for split, mask in masks.items():
        if not mask.any():
            raise DataError(data.paths[backbones[0]], f"the {split} split has no clips",
                            "fusion needs train clips and val clips (val selects the model)")
    y_index = np.asarray([LABEL_INDEX[label] for label in data.labels])
    x_train = data.inputs(spec.level, masks["train"])
    x_val = data.inputs(spec.level, masks["val"])
    y_train = np.eye(len(LABELS), dtype=np.float32)[y_index[masks["train"]]]
    y_val = y_index[masks["val"]]
    width = x_train[0].shape[1]

    began = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_fusion_model(method, backbones, width, l2=config.l2)
    learning_rate = config.learning_rate
    if spec.level == "fc1024" and config.learning_rate_fc1024 is not None:
        learning_rate = config.learning_rate_fc1024
    optimizer = keras.optimizers.Adam(learning_rate)
    train_epoch, predict = _compiled_steps(model, optimizer, kl_divergence_loss, x_train, y_train,
                                           config.batch_size)
    n_train = len(y_train)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"key": None, "epoch": 0, "weights": None, "calibration": None}
    ckpt = Checkpoints(checkpoints) if checkpoints else None
    resume_key = json.dumps(_fingerprint(data, method, modalities, config), sort_keys=True)
    start = ckpt.restore_state(resume_key, model, optimizer, rng, history, best) if ckpt else 0
    saved_at = time.monotonic()
    bar = tqdm(range(start, config.epochs), desc=f"fuse {method} {modalities}", unit="epoch",
               disable=not progress, file=sys.stderr, initial=start, total=config.epochs)
    for epoch in bar:
        epoch_began = time.perf_counter()
        order = rng.permutation(n_train).astype(np.int32)
        if config.mixup_alpha > 0:
            lam = rng.beta(config.mixup_alpha, config.mixup_alpha, size=n_train).astype(np.float32)
            partner = rng.permutation(n_train).astype(np.int32)
        else:
            lam, partner = np.ones(n_train, np.float32), np.arange(n_train, dtype=np.int32)
        loss = float(train_epoch(order, partner, lam))
        calibration = calibrate(_predict(predict, x_val), y_val)
        metrics = calibration["metrics"]
        entry = {"epoch": epoch + 1, "loss": loss,
                 "val_accuracy": metrics["accuracy"], "val_log_loss": calibration["before"]["log_loss"],
                 "val_log_loss_calibrated": metrics["log_loss"], "temperature": calibration["temperature"],
                 "seconds": round(time.perf_counter() - epoch_began, 4)}
        history.append(entry)
        key = selection_key(metrics["accuracy"], metrics["log_loss"], config.selection)
        if best["key"] is None or key > tuple(best["key"]):  # a restored key is a JSON list
            best.update(key=key, epoch=epoch + 1, weights=[w.copy() for w in model.get_weights()],
                        calibration=calibration)
        bar.set_postfix(val_acc=f"{metrics['accuracy']:.3f}", val_loss=f"{metrics['log_loss']:.3f}",
                        best=best["epoch"])
        if ckpt and (epoch + 1 == config.epochs or time.monotonic() - saved_at >= checkpoint_every_s):
            ckpt.save_state(resume_key, epoch + 1, model, optimizer, rng, history, best)
            saved_at = time.monotonic()
    bar.close()
    train_seconds = time.perf_counter() - began

    # Save an uncompiled copy with the best weights: loading it needs no custom loss.
    final = build_fusion_model(method, backbones, width, l2=config.l2)
    final.set_weights(best["weights"])
    # Written into a staging folder and published whole, with outputs.json naming the run:
    # the folder holds one training's model, predictions and fusion.json, never a mix.
    published = contextlib.ExitStack()
    final_dir, out_dir = out_dir, published.enter_context(
        staged_output(out_dir, kind="fuse", run_id=new_run_id(), replaces=FUSION_FILE))
    save_keras_model(final, out_dir / "model.keras")
    final_logits = fusion_logits_model(final)
    logits = _predict(lambda xs: final_logits(xs, training=False), data.inputs(spec.level))
    chosen = best["calibration"]
    temperature = chosen["temperature"]
    write_predictions(out_dir / PREDICTIONS_FILE, clip_ids=list(data.clip_ids), splits=list(data.splits),
                      labels=list(data.labels), probs=calibrated_probabilities(logits, temperature),
                      logits=logits)
    write_json(out_dir / "history.json", history)
    val_metrics = {k: v for k, v in chosen["metrics"].items() if k != "labels"}
    meta = {
        "format": FUSION_FORMAT,
        **_fingerprint(data, method, modalities, config),
        "equation": spec.equation,
        "level": spec.level,
        "width": int(width),
        "backbones": list(backbones),
        "labels": list(LABELS),
        "val_metrics": val_metrics,
        "best_epoch": best["epoch"],
        "selection": config.selection,
        "calibration": {"temperature": temperature, "fitted_on": "val", "before": chosen["before"],
                        "after": chosen["after"]},
        "config": to_dict(config),
        "clips_per_split": {s: int((data.splits == s).sum()) for s in sorted(set(data.splits))},
        "train_seconds": round(train_seconds, 3),
    }
    write_json(out_dir / FUSION_FILE, meta)
    published.close()  # publishes; after an error above only the hidden staging folder is removed
    out_dir = final_dir
    # The result is the caller's to report (the CLI prints it); the log keeps a trace.
    log.debug("%s %s: best epoch %d/%d, val accuracy %.4f, val log loss %.4f -> %.4f at T=%.2f, %.1f s -> %s",
              method, modalities, best["epoch"], config.epochs, val_metrics["accuracy"],
              chosen["before"]["log_loss"], val_metrics["log_loss"], temperature, train_seconds, out_dir)
    return FusionResult(out_dir=out_dir, method=method, modalities=modalities,
                        val_accuracy=val_metrics["accuracy"], val_log_loss=val_metrics["log_loss"],
                        best_epoch=best["epoch"], backbones=tuple(backbones), level=spec.level,
                        train_seconds=train_seconds, history=history, temperature=temperature)


def _completed(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / FUSION_FILE
    if not (path.is_file() and (out_dir / "model.keras").is_file() and (out_dir / PREDICTIONS_FILE).is_file()):
        return None
    return read_json(path)


def train_all_fusions(
    embeddings: Embeddings,
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

    Example:
        >>> results = train_all_fusions("embeddings", "fusion", config=load_config().fusion)
        >>> [(r.method, r.modalities, r.val_accuracy) for r in results]
    """
    for method in methods:
        check_method(method)
    for modalities in modality_sets:
        check_modalities(modalities)
    with contextlib.ExitStack() as stack:
        local_embeddings = locations.local_inputs(stack, embeddings)
        local_root = stack.enter_context(locations.output_folder(out_root, pull_existing=True))
        results = _train_all(local_embeddings, local_root, config=config, methods=methods,
                             modality_sets=modality_sets, checkpoints=checkpoints, progress=progress)
    if locations.is_remote(str(out_root)):
        from dataclasses import replace

        results = [replace(r, out_dir=locations.join(str(out_root), r.out_dir.name)) for r in results]
    return results


def _train_all(embeddings: Embeddings, out_root: Path, *, config: FusionConfig, methods: Sequence[str],
               modality_sets: Sequence[str], checkpoints: str | Path | None,
               progress: bool) -> list[FusionResult]:
    results = []
    for modalities in modality_sets:
        data = None
        for method in methods:
            out_dir = out_root / f"{method}-{modalities}"
            ckpt = locations.join(str(checkpoints), out_dir.name) if checkpoints else None
            if _completed(out_dir) is None and ckpt and Checkpoints(ckpt).fetch_folder("done", out_dir,
                                                                                        FUSION_FILE):
                log.info("%s: finished before, copied from %s", out_dir.name, ckpt)
            meta = _completed(out_dir)
            if meta is not None:
                if data is None:
                    data = load_fusion_data(embeddings, MODALITY_SETS[modalities])
                wanted = _fingerprint(data, method, modalities, config)
                found = {k: meta.get(k) for k in wanted}
                if found != wanted:
                    raise ConfigError(f"{out_dir}: holds a fusion model made with other settings or embeddings "
                                      f"(config {meta.get('config_hash')}, wanted {wanted['config_hash']}); "
                                      "use a new output folder, or delete this one to train it again")
                val = meta.get("val_metrics", {})
                results.append(FusionResult(
                    out_dir=out_dir, method=method, modalities=modalities,
                    val_accuracy=float(val.get("accuracy", float("nan"))),
                    val_log_loss=float(val.get("log_loss", float("nan"))), best_epoch=int(meta.get("best_epoch", 0)),
                    temperature=float(meta.get("calibration", {}).get("temperature", 1.0)),
                    backbones=tuple(meta.get("backbones", ())), level=meta.get("level", ""), skipped=True))
                log.debug("%s %s: already complete, skipped (%s)", method, modalities, out_dir)
                continue
            results.append(train_fusion(embeddings, out_dir, method=method, modalities=modalities,
                                        config=config, checkpoints=ckpt, progress=progress))
            if ckpt:
                Checkpoints(ckpt).keep_folder(out_dir, "done", last=FUSION_FILE)
    return results
