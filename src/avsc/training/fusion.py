"""Phase II: train the fusion layer + FC(10) on frozen embeddings (paper, section II-B).

The fusion layers and the model builder are in :mod:`avsc.models.fusion`.

Training (section III-A): mixup on the embeddings (one mixing weight per clip, shared by
all its embeddings), KL-divergence loss + L2 (eq. 4; coefficient ``lambda / 2`` on the
fusion vectors ``w`` and the dense kernel, biases excluded), Adam, seeded. The epoch with
the best val accuracy (ties: lower val log loss) is kept; the test split is never read.

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
import math
import sys
import time
from collections.abc import Mapping, Sequence
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
from avsc.evaluation.metrics import classification_metrics
from avsc.evaluation.predictions import FUSION_FILE, PREDICTIONS_FILE, write_predictions
from avsc.labels import LABEL_INDEX, LABELS
from avsc.models.fusion import build_fusion_model, check_method, check_modalities
from avsc.models.saving import save_keras_model
from avsc.storage import locations
from avsc.storage.files import backbone_paths, read_json, write_json
from avsc.training.checkpoints import Checkpoints
from avsc.training.mixup import mix

__all__ = [
    "FusionData",
    "load_fusion_data",
    "FusionResult",
    "train_fusion",
    "train_all_fusions",
]

FUSION_FORMAT = "avsc-fusion/1"
# Where a backbone's embeddings are: a folder of ``<backbone>.parquet`` or backbone -> file.
Embeddings = str | Path | Mapping[str, str | Path]

log = logging.getLogger(__name__)


# --- Embeddings in -------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionData:
    """The embeddings of several backbones, aligned clip by clip (rows sorted by clip_id).

    Attributes:
        fc1024, fc10: backbone -> [shape=(n_clips, width)] float32.
        model_sha256, config_hash: backbone -> what its Parquet metadata records.
        paths: backbone -> the Parquet file read.
    """

    backbones: tuple[str, ...]
    clip_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    fc1024: dict[str, np.ndarray]
    fc10: dict[str, np.ndarray]
    model_sha256: dict[str, str]
    config_hash: dict[str, str]
    paths: dict[str, Path] = field(default_factory=dict)

    def inputs(self, level: str, mask: np.ndarray | None = None) -> list[np.ndarray]:
        table = self.fc1024 if level == "fc1024" else self.fc10
        return [table[b] if mask is None else table[b][mask] for b in self.backbones]


def load_fusion_data(embeddings: Embeddings, backbones: Sequence[str]) -> FusionData:
    """Read each backbone's embeddings and check they describe the same clips.

    Args:
        embeddings: a folder holding ``<backbone>.parquet`` (``avsc embed`` outputs), or a
            mapping backbone -> Parquet file (a pipeline step's artifacts).
        backbones: the backbones to read, in the order of the fusion model's inputs.

    Raises:
        DataError: a missing file (named), a file of another backbone, duplicate clips, or
            files that disagree on clip ids, splits, labels or recorded config hash.
        ConfigError: a mapping key that is not a backbone.
    """
    from avsc.training.embeddings import read_embeddings

    paths = backbone_paths(embeddings, "{backbone}.parquet", what="embeddings",
                           hint="give the folder holding `avsc embed` outputs")
    loaded = {}
    for backbone in backbones:
        path = paths.get(backbone)
        if path is None or not path.is_file():
            raise DataError(path or backbone, f"embedding file of {backbone} is missing",
                            f"run `avsc embed` for {backbone}, or fuse a modality set without it")
        emb = read_embeddings(path)
        if emb.backbone != backbone:
            raise DataError(path, f"holds embeddings of {emb.backbone}, not {backbone}",
                            "name each file <backbone>.parquet after the backbone that wrote it")
        order = np.argsort(emb.clip_ids, kind="stable")
        ids = emb.clip_ids[order]
        if len(ids) == 0:
            raise DataError(path, "has no clips")
        if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
            dup = ids[1:][ids[1:] == ids[:-1]][0]
            raise DataError(path, f"clip {dup!r} appears more than once")
        if emb.fc10.shape[1] != len(LABELS):
            raise DataError(path, f"fc10 has width {emb.fc10.shape[1]}, expected {len(LABELS)}")
        loaded[backbone] = (path, emb, order)

    first_backbone = backbones[0]
    first_path, first, first_order = loaded[first_backbone]
    clip_ids, splits, labels = (first.clip_ids[first_order], first.splits[first_order],
                                first.labels[first_order])
    unknown = sorted(set(labels) - set(LABEL_INDEX))
    if unknown:
        raise DataError(first_path, f"unknown scene label(s) {', '.join(unknown)}",
                        f"labels must be among {', '.join(LABELS)}")
    for backbone, (path, emb, order) in loaded.items():
        if backbone == first_backbone:
            continue
        ids = emb.clip_ids[order]
        if len(ids) != len(clip_ids) or not np.array_equal(ids, clip_ids):
            only_here = len(set(ids) - set(clip_ids))
            only_there = len(set(clip_ids) - set(ids))
            raise DataError(path, f"its clips differ from {first_path.name}'s ({only_here} only here, "
                            f"{only_there} only there)", "embed every backbone from the same feature store")
        for name, mine, theirs in (("split", emb.splits[order], splits), ("label", emb.labels[order], labels)):
            bad = np.flatnonzero(mine != theirs)
            if len(bad):
                clip = clip_ids[bad[0]]
                raise DataError(path, f"clip {clip!r} has {name} {mine[bad[0]]!r} but {theirs[bad[0]]!r} in "
                                f"{first_path.name} ({len(bad)} clips differ)",
                                "embed every backbone from the same feature store")
    recorded = {b: e.config_hash for b, (_, e, _) in loaded.items() if e.config_hash}
    if len(set(recorded.values())) > 1:
        # Backbones may legitimately be trained with their own settings (e.g. more epochs for
        # the visual ones); the clip, split and label checks above are what fusion needs.
        log.warning("fusing backbones trained with different settings: %s",
                    ", ".join(f"{b} {h}" for b, h in recorded.items()))
    return FusionData(
        backbones=tuple(backbones), clip_ids=clip_ids, splits=splits, labels=labels,
        fc1024={b: e.fc1024[o] for b, (_, e, o) in loaded.items()},
        fc10={b: e.fc10[o] for b, (_, e, o) in loaded.items()},
        model_sha256={b: e.model_sha256 for b, (_, e, _) in loaded.items()},
        config_hash={b: e.config_hash for b, (_, e, _) in loaded.items()},
        paths={b: p for b, (p, _, _) in loaded.items()},
    )


# --- Training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionResult:
    """What :func:`train_fusion` did (or found, when resumed).

    Attributes:
        out_dir: holds model.keras, fusion.json, predictions.parquet, history.json.
        best_epoch: 1-based epoch of the kept weights.
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
    skipped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _compiled_steps(model: keras.Model, optimizer, loss_fn, x_train: list[np.ndarray], y_train: np.ndarray,
                    batch_size: int):
    """A compiled training epoch and a compiled forward pass.

    The training clips stay in memory as tensors; one call runs a whole epoch inside the
    graph: for each minibatch of ``order``, mixup of each clip ``j`` with ``partner[j]``
    at weight ``lam[j]`` (the same for all its embeddings and its label), the mean loss +
    L2 terms, one Adam update. Small dense nets: this is many times faster than a Python
    loop of steps or ``Model.fit`` once per epoch.

    Returns:
        ``train_epoch(order, partner, lam) -> mean loss`` ([shape=(n_train,)] int32,
        int32, float32) and ``predict(xs) -> probabilities``.
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

    @tf.function(input_signature=[x_spec], autograph=False)
    def predict(xs):
        return model(xs, training=False)

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
            ``predictions.parquet`` (every clip of every split), ``history.json`` and, written
            last, ``fusion.json`` (method, modalities, backbones, level, labels, val metrics,
            config and hash, per-backbone embedding model_sha256).
        method: ``f1`` .. ``f6``.
        modalities: ``audio+visual`` (five backbones), ``audio`` (three) or ``visual`` (two).
        config: Phase II settings (epochs, batch size, learning rate, mixup alpha, L2, seed).
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

    if locations.any_remote(embeddings, out_dir):
        from dataclasses import replace

        with contextlib.ExitStack() as stack:
            local_in = locations.local_inputs(stack, embeddings)
            local_out = stack.enter_context(locations.output_folder(out_dir))
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
    optimizer = keras.optimizers.Adam(config.learning_rate)
    train_epoch, predict = _compiled_steps(model, optimizer, kl_divergence_loss, x_train, y_train,
                                           config.batch_size)
    n_train = len(y_train)
    history: list[dict[str, Any]] = []
    best = {"accuracy": -1.0, "log_loss": math.inf, "epoch": 0, "weights": None, "metrics": None}
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
        metrics = classification_metrics(y_val, _predict(predict, x_val))
        entry = {"epoch": epoch + 1, "loss": loss,
                 "val_accuracy": metrics["accuracy"], "val_log_loss": metrics["log_loss"],
                 "seconds": round(time.perf_counter() - epoch_began, 4)}
        history.append(entry)
        if (metrics["accuracy"], -metrics["log_loss"]) > (best["accuracy"], -best["log_loss"]):
            best.update(accuracy=metrics["accuracy"], log_loss=metrics["log_loss"], epoch=epoch + 1,
                        weights=[w.copy() for w in model.get_weights()], metrics=metrics)
        bar.set_postfix(val_acc=f"{metrics['accuracy']:.3f}", best=f"{best['accuracy']:.3f}@{best['epoch']}")
        if ckpt and (epoch + 1 == config.epochs or time.monotonic() - saved_at >= checkpoint_every_s):
            ckpt.save_state(resume_key, epoch + 1, model, optimizer, rng, history, best)
            saved_at = time.monotonic()
    bar.close()
    train_seconds = time.perf_counter() - began

    # Save an uncompiled copy with the best weights: loading it needs no custom loss.
    final = build_fusion_model(method, backbones, width, l2=config.l2)
    final.set_weights(best["weights"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FUSION_FILE).unlink(missing_ok=True)  # the folder counts as complete only once rewritten
    save_keras_model(final, out_dir / "model.keras")
    probs = _predict(lambda xs: final(xs, training=False), data.inputs(spec.level))
    write_predictions(out_dir / PREDICTIONS_FILE, clip_ids=list(data.clip_ids), splits=list(data.splits),
                      labels=list(data.labels), probs=probs)
    write_json(out_dir / "history.json", history)
    val_metrics = {k: v for k, v in best["metrics"].items() if k != "labels"}
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
        "config": to_dict(config),
        "clips_per_split": {s: int((data.splits == s).sum()) for s in sorted(set(data.splits))},
        "train_seconds": round(train_seconds, 3),
    }
    write_json(out_dir / FUSION_FILE, meta)
    # The result is the caller's to report (the CLI prints it); the log keeps a trace.
    log.debug("%s %s: best epoch %d/%d, val accuracy %.4f, val log loss %.4f, %.1f s -> %s", method,
              modalities, best["epoch"], config.epochs, best["accuracy"], best["log_loss"], train_seconds, out_dir)
    return FusionResult(out_dir=out_dir, method=method, modalities=modalities, val_accuracy=best["accuracy"],
                        val_log_loss=best["log_loss"], best_epoch=best["epoch"], backbones=tuple(backbones),
                        level=spec.level, train_seconds=train_seconds, history=history)


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
                    backbones=tuple(meta.get("backbones", ())), level=meta.get("level", ""), skipped=True))
                log.debug("%s %s: already complete, skipped (%s)", method, modalities, out_dir)
                continue
            results.append(train_fusion(embeddings, out_dir, method=method, modalities=modalities,
                                        config=config, checkpoints=ckpt, progress=progress))
            if ckpt:
                Checkpoints(ckpt).keep_folder(out_dir, "done", last=FUSION_FILE)
    return results
