"""Backbone embeddings as Parquet: one file per backbone, one row per clip, every split.

Columns: ``clip_id`` (string), ``split`` (string), ``label`` (string), ``fc1024``
(fixed-size list of float32, the first dense layer's output) and ``fc10`` (fixed-size
list of 10 float32, the second dense layer's output, before softmax: raw logits, what
fusion f4-f6 read). Schema metadata ``avsc.embeddings``: an :class:`avsc.records.EmbeddingsInfo`
as JSON (the backbone, its config hash, the SHA-256 of its ``model.keras``, the labels, its
temperature, fitted on val: its calibrated class probabilities are ``softmax(fc10 /
temperature)``, and the data's :class:`avsc.records.Lineage`; ``read_embeddings(path).info``,
or ``EmbeddingsInfo.read_parquet(path)`` without reading the rows).

Readable as is: ``pandas.read_parquet(path)`` or ``duckdb.sql("select * from 'x.parquet'")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avsc.errors import DataError
from avsc.labels import LABELS
from avsc.records import EmbeddingsInfo, ModelInfo
from avsc.records.lineage import Lineage
from avsc.storage import locations, staging

if TYPE_CHECKING:
    import keras


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
    lineage: Lineage,
    temperature: float = 1.0,
) -> Path | str:
    """Write one backbone's embeddings atomically, their :class:`avsc.records.EmbeddingsInfo`
    in the schema metadata; returns the path (a ``Path`` when local).

    Args:
        backbone, config_hash, model_sha256: the backbone and its model (its ``config.json``'s
            hash, the SHA-256 of its ``model.keras``).
        lineage: the data the clips and the model come from (the store's lineage).
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
    ).replace_schema_metadata(
        EmbeddingsInfo(
            backbone=backbone,
            config_hash=config_hash,
            model_sha256=model_sha256,
            labels=tuple(LABELS),
            lineage=lineage,
            temperature=float(temperature),
        ).to_metadata()
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    locations.write_bytes(path, sink.getvalue().to_pybytes())
    return path if locations.is_remote(str(path)) else Path(path)


@dataclass(frozen=True)
class BackboneEmbeddings:
    """One backbone's embeddings in memory, one row per clip.

    Attributes:
        info: what they are and how they were made (backbone, model, temperature, lineage).
        clip_ids, splits, labels: [shape=(n_clips,)] strings.
        fc1024: [shape=(n_clips, width), float32]
        fc10: [shape=(n_clips, 10), float32] logits, before softmax and before calibration
            (calibrated probabilities are ``softmax(fc10 / info.temperature)``).
    """

    info: EmbeddingsInfo
    clip_ids: np.ndarray
    splits: np.ndarray
    labels: np.ndarray
    fc1024: np.ndarray
    fc10: np.ndarray


def read_embeddings(path: str | Path) -> BackboneEmbeddings:
    """Read a backbone's embedding file written by :func:`write_embeddings` (a path or ``s3://``).

    Raises:
        DataError: not there, not an avsc embedding file, or one written by an older avsc
            (:class:`avsc.records.RecordError`).
    """
    table = locations.read_parquet(path, what="embedding file", hint="run `avsc embed` first")
    info = EmbeddingsInfo.from_metadata(table.schema.metadata, source=path)

    def matrix(name: str) -> np.ndarray:
        column = table.column(name).combine_chunks()
        return column.values.to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)

    return BackboneEmbeddings(
        info=info,
        clip_ids=np.asarray(table.column("clip_id").to_pylist()),
        splits=np.asarray(table.column("split").to_pylist()),
        labels=np.asarray(table.column("label").to_pylist()),
        fc1024=matrix("fc1024"),
        fc10=matrix("fc10"),
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
    parts = [emb_model(inputs[i : i + chunk], training=False) for i in range(0, len(inputs), chunk)]
    if not parts:
        raise ValueError("no inputs to embed")
    return (
        np.concatenate([np.asarray(p[0], np.float32) for p in parts]),
        np.concatenate([np.asarray(p[1], np.float32) for p in parts]),
    )


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_clips` wrote: ``n_clips`` rows of ``backbone`` to ``path``."""

    path: Path | str
    backbone: str
    n_clips: int
    config_hash: str
    model_sha256: str
    lineage: Lineage | None = None


def _load_backbone(model_dir: str | Path) -> tuple[ModelInfo, str, keras.Model]:
    """A trained backbone's ``config.json`` record, the SHA-256 of its ``model.keras`` and the
    model (a folder or ``s3://`` prefix; those two files are fetched).

    Raises:
        DataError: either file is missing.
    """
    import keras

    import avsc.models.backbones  # noqa: F401  (registers the custom layers)
    from avsc.storage.files import sha256_file

    with staging.local_copy(model_dir, include=["model.keras", ModelInfo.FILE_NAME]) as local:
        model_path, config_path = local / "model.keras", local / ModelInfo.FILE_NAME
        for needed in (model_path, config_path):
            if not needed.is_file():
                raise DataError(
                    locations.join(str(model_dir), needed.name), "not found", "give the output folder of `avsc train`"
                )
        return ModelInfo.read(local), sha256_file(model_path), keras.models.load_model(model_path, compile=False)


def _embed_store(
    emb_model: keras.Model, store, backbone: str, *, stream: str, batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``fc1024`` and ``fc10`` [shape=(n_clips, width), float32] of every clip of ``store``, in
    store order (:meth:`avsc.features.store.FeatureStore.clips`)."""
    import keras
    from tqdm import tqdm

    from avsc.config import VISUAL_BACKBONES
    from avsc.training.streams import clip_predictions, eval_stream, store_errors

    spec = store.spec_for(backbone)  # DataError: the store lacks the backbone's feature
    rows = store.clips()
    per_clip = spec.shape[0] if backbone in VISUAL_BACKBONES else 1
    fc1024_parts, fc10_parts = [], []
    unit = "frame" if per_clip > 1 else "clip"
    # Other backends run the model eagerly, one op at a time; predict_on_batch compiles it (XLA).
    run = (
        (lambda x: emb_model(x, training=False))
        if keras.backend.backend() == "tensorflow"
        else emb_model.predict_on_batch
    )
    with (
        tqdm(total=len(rows) * per_clip, desc=f"embed {backbone}", unit=unit, disable=not progress) as bar,
        store_errors(),
    ):
        for x in eval_stream(stream, store, backbone, None, batch_size=batch_size):
            fc1024, fc10 = run(x)
            fc1024_parts.append(np.asarray(fc1024, np.float32))
            fc10_parts.append(np.asarray(fc10, np.float32))
            bar.update(len(fc1024_parts[-1]))
    # A visual clip's embedding is the mean over its frames (as its prediction is).
    return (
        clip_predictions(np.concatenate(fc1024_parts), len(rows)),
        clip_predictions(np.concatenate(fc10_parts), len(rows)),
    )


def _check_store(store, meta: ModelInfo, model_dir: str | Path) -> Lineage:
    """The store's lineage, once the store is checked to be the one the model was trained on.

    Raises:
        DataError: the store has another feature config, or other data (clips, labels, splits).
    """
    lineage = store.lineage
    assert lineage is not None  # FeatureStore.open refuses a store index without one
    if meta.feature_config_hash != store.config_hash:
        raise DataError(
            store.roots[0],
            f"feature config {store.config_hash} differs from {meta.feature_config_hash} the model was trained on",
            "embed the store the model was trained on",
        )
    lineage.check_same(
        meta.lineage,
        source=locations.join(str(model_dir), ModelInfo.FILE_NAME),
        what="the model",
        hint="embed the store the model was trained on, or train the model on this one",
    )
    return lineage


def embed_clips(
    model_dir: str | Path,
    feature_dirs,
    out_path: str | Path,
    *,
    batch_size: int = 32,
    progress: bool = True,
    stream: str = "auto",
) -> EmbedResult:
    """Embed every clip of every split of a feature store with a trained backbone.

    Streams the one feature the backbone reads (:func:`avsc.training.streams.eval_stream`),
    part by part, from a folder or ``s3://``; nothing else of the store is read.

    Args:
        model_dir: output of ``avsc train`` (``model.keras`` and ``config.json``): a folder or
            an ``s3://`` prefix (those two files are fetched).
        feature_dirs: the feature store (or its shards); it must have the feature config
            the model was trained on.
        out_path: Parquet file to write (atomically; a path or ``s3://``), rows sorted by clip_id.
        batch_size: clips (audio) or frames (visual) per batch.
        stream: the input stream, as the setting ``train.stream``: ``auto`` (tf.data on Keras'
            TensorFlow backend, NumPy otherwise), ``tfdata`` or ``numpy``.

    Raises:
        DataError: missing model files, a store made with another feature config or
            without the backbone's feature, or holding other data than the model was
            trained on (other clips, labels or splits: the message says which).
    """
    import avsc.models.backbones
    from avsc.features.store import FeatureStore
    from avsc.runtime import limit_tensorflow_threads

    limit_tensorflow_threads()  # the pod's CPUs, before the model's first operation
    meta, digest, model = _load_backbone(model_dir)
    backbone = meta.backbone
    store = FeatureStore.open(feature_dirs)
    lineage = _check_store(store, meta, model_dir)
    rows = store.clips()
    fc1024, fc10 = _embed_store(
        avsc.models.backbones.embedding_model(model),
        store,
        backbone,
        stream=stream,
        batch_size=batch_size,
        progress=progress,
    )
    order = np.argsort(rows["clip_id"].to_numpy(), kind="stable")
    path = write_embeddings(
        out_path,
        clip_ids=list(rows["clip_id"].iloc[order]),
        splits=list(rows["split"].iloc[order]),
        labels=list(rows["label"].iloc[order]),
        fc1024=fc1024[order],
        fc10=fc10[order],
        backbone=backbone,
        config_hash=meta.config_hash,
        model_sha256=digest,
        temperature=meta.temperature,
        lineage=lineage,
    )
    return EmbedResult(
        path=path,
        backbone=backbone,
        n_clips=len(rows),
        config_hash=meta.config_hash,
        model_sha256=digest,
        lineage=lineage,
    )
