"""Backbone embeddings as Parquet: one file per backbone, one row per clip, every split.

Columns: ``clip_id`` (string), ``split`` (string), ``label`` (string), ``fc1024``
(fixed-size list of float32, the first dense layer's output) and ``fc10`` (fixed-size
list of 10 float32, the second dense layer's output, before softmax: raw logits, what
fusion f4-f6 read). Schema metadata: ``avsc.backbone``, ``avsc.config_hash``,
``avsc.model_sha256``, ``avsc.labels``, ``avsc.temperature`` (the backbone's temperature,
fitted on val: its calibrated class probabilities are ``softmax(fc10 / temperature)``).

Readable as is: ``pandas.read_parquet(path)`` or ``duckdb.sql("select * from 'x.parquet'")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.errors import DataError
from avsc.labels import LABELS
from avsc.storage.files import atomic_path


def embedding_schema(fc_width: int = 1024, n_classes: int = len(LABELS)) -> pa.Schema:
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("fc1024", pa.list_(pa.float32(), fc_width), nullable=False),
            pa.field("fc10", pa.list_(pa.float32(), n_classes), nullable=False),
        ]
    )


def write_embeddings(
    path: str | Path,
    *,
    clip_ids: list[str],
    splits: list[str],
    labels: list[str],
    fc1024: np.ndarray,
    fc10: np.ndarray,
    backbone: str,
    config_hash: str,
    model_sha256: str,
    temperature: float = 1.0,
) -> Path:
    """Write one backbone's embeddings atomically.

    Args:
        fc1024: [shape=(n_clips, width), float32] first dense layer outputs.
        fc10: [shape=(n_clips, 10), float32] second dense layer outputs (pre-softmax).
        temperature: the backbone's calibration temperature (recorded, never applied to ``fc10``).
    """
    fc1024 = np.ascontiguousarray(fc1024, dtype=np.float32)
    fc10 = np.ascontiguousarray(fc10, dtype=np.float32)
    n = len(clip_ids)
    if not (len(splits) == len(labels) == fc1024.shape[0] == fc10.shape[0] == n):
        raise ValueError("clip_ids, splits, labels, fc1024 and fc10 must have one row per clip")
    schema = embedding_schema(fc1024.shape[1], fc10.shape[1])
    table = pa.Table.from_arrays(
        [
            pa.array(clip_ids, pa.string()),
            pa.array(splits, pa.string()),
            pa.array(labels, pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(fc1024.reshape(-1)), fc1024.shape[1]),
            pa.FixedSizeListArray.from_arrays(pa.array(fc10.reshape(-1)), fc10.shape[1]),
        ],
        schema=schema,
    ).replace_schema_metadata({
        "avsc.backbone": backbone,
        "avsc.config_hash": config_hash,
        "avsc.model_sha256": model_sha256,
        "avsc.labels": json.dumps(list(LABELS)),
        "avsc.temperature": repr(float(temperature)),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


@dataclass(frozen=True)
class Embeddings:
    """One backbone's embeddings in memory.

    Attributes:
        fc1024: [shape=(n_clips, width), float32]
        fc10: [shape=(n_clips, 10), float32] logits, before softmax and before calibration.
        temperature: calibrated probabilities are ``softmax(fc10 / temperature)``; 1.0 for
            files written before calibration existed.
    """

    backbone: str
    config_hash: str
    model_sha256: str
    clip_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    fc1024: np.ndarray
    fc10: np.ndarray
    temperature: float = 1.0


def read_embeddings(path: str | Path) -> Embeddings:
    """Read a backbone's embedding file written by :func:`write_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "embedding file not found", "run `avsc embed` first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({exc})") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if "avsc.backbone" not in meta:
        raise DataError(path, "Parquet file has no avsc.backbone metadata; not an avsc embedding file")
    def matrix(name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
    return Embeddings(
        backbone=meta["avsc.backbone"],
        config_hash=meta.get("avsc.config_hash", ""),
        model_sha256=meta.get("avsc.model_sha256", ""),
        clip_ids=np.asarray(table.column("clip_id").to_pylist()),
        splits=np.asarray(table.column("split").to_pylist()),
        labels=np.asarray(table.column("label").to_pylist()),
        fc1024=matrix("fc1024"),
        fc10=matrix("fc10"),
        temperature=float(meta.get("avsc.temperature", "1.0")),
    )


# --- Export: backbone model -> embeddings ------------------------------------------------


def embed_arrays(backbone: str, emb_model, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a batch of clips from an :func:`avsc.models.backbones.embedding_model`.

    Args:
        backbone: the backbone's name (decides how ``batch`` is read).
        emb_model: a model with outputs ``[fc1024, fc10]``.
        batch: [shape=(n, n_bins, frames, 2)] spectrograms for an audio backbone, or
            [shape=(n, n_frames, H, W, 3)] frames (uint8 values) for a visual backbone.

    Returns:
        ``fc1024`` [shape=(n, width), float32] and ``fc10`` [shape=(n, 10), float32,
        pre-softmax]. For a visual backbone a clip's embedding is the MEAN over its frames
        of each layer's output (as the clip's prediction is the mean over its frames).
    """
    from avsc.config import VISUAL_BACKBONES

    batch = np.asarray(batch, dtype=np.float32)
    if backbone in VISUAL_BACKBONES:
        if batch.ndim != 5:
            raise ValueError(f"{backbone}: expected frames [n, n_frames, H, W, 3], got {batch.shape}")
        n, n_frames = batch.shape[:2]
        fc1024, fc10 = _run_in_chunks(emb_model, batch.reshape(n * n_frames, *batch.shape[2:]))
        return (fc1024.reshape(n, n_frames, -1).mean(axis=1), fc10.reshape(n, n_frames, -1).mean(axis=1))
    if batch.ndim != 4:
        raise ValueError(f"{backbone}: expected spectrograms [n, n_bins, frames, 2], got {batch.shape}")
    return _run_in_chunks(emb_model, batch)


def _run_in_chunks(emb_model, inputs: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    # Bounded memory: a batch of clips can hold hundreds of full-size frames.
    parts = [emb_model(inputs[i:i + chunk], training=False) for i in range(0, len(inputs), chunk)]
    if not parts:
        raise ValueError("no inputs to embed")
    return (np.concatenate([np.asarray(p[0], np.float32) for p in parts]),
            np.concatenate([np.asarray(p[1], np.float32) for p in parts]))


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_clips` wrote: ``n_clips`` rows of ``backbone`` to ``path``."""

    path: Path
    backbone: str
    n_clips: int
    config_hash: str
    model_sha256: str


def embed_clips(
    model_dir: str | Path,
    feature_dirs,
    out_path: str | Path,
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> EmbedResult:
    """Embed every clip of every split of a feature store with a trained backbone.

    Args:
        model_dir: output of ``avsc train`` (``model.keras`` and ``config.json``).
        feature_dirs: the feature store (or its shards); it must have the feature config
            the model was trained on.
        out_path: Parquet file to write (atomically), rows sorted by clip_id.

    Raises:
        DataError: missing model files, or a store made with another feature config.
    """
    import keras
    from tqdm import tqdm

    import avsc.models.backbones  # noqa: F401  (registers the custom layers)
    from avsc.config import BACKBONE_FEATURE
    from avsc.features.store import FeatureStore, load_clip
    from avsc.storage.files import read_json, sha256_file

    model_dir = Path(model_dir)
    model_path, config_path = model_dir / "model.keras", model_dir / "config.json"
    for needed in (model_path, config_path):
        if not needed.is_file():
            raise DataError(needed, "not found", "give the output folder of `avsc train`")
    meta = read_json(config_path)
    backbone = meta["backbone"]
    store = FeatureStore.open(feature_dirs)
    if meta.get("feature_config_hash") != store.config_hash:
        raise DataError(store.roots[0], f"feature config {store.config_hash} differs from "
                        f"{meta.get('feature_config_hash')} the model was trained on",
                        "embed the store the model was trained on")
    feature = BACKBONE_FEATURE[backbone]
    if feature not in store.shapes:
        raise DataError(store.roots[0], f"feature store has no {feature!r} feature, needed by {backbone}")
    emb_model = avsc.models.backbones.embedding_model(keras.models.load_model(model_path, compile=False))
    rows = store.clips().sort_values("clip_id").reset_index(drop=True)
    fc1024_parts, fc10_parts = [], []
    paths = list(rows["path"])
    with tqdm(total=len(paths), desc=f"embed {backbone}", unit="clip", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            batch = np.stack([load_clip(p, [feature])[feature] for p in chunk])
            fc1024, fc10 = embed_arrays(backbone, emb_model, batch)
            fc1024_parts.append(fc1024)
            fc10_parts.append(fc10)
            bar.update(len(chunk))
    digest = sha256_file(model_path)
    path = write_embeddings(
        out_path, clip_ids=list(rows["clip_id"]), splits=list(rows["split"]), labels=list(rows["label"]),
        fc1024=np.concatenate(fc1024_parts), fc10=np.concatenate(fc10_parts), backbone=backbone,
        config_hash=meta["config_hash"], model_sha256=digest,
        temperature=float(meta.get("calibration", {}).get("temperature", 1.0)))
    return EmbedResult(path=path, backbone=backbone, n_clips=len(rows), config_hash=meta["config_hash"],
                       model_sha256=digest)
