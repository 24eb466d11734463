"""Run avsc's backend-neutral pieces under Keras' JAX backend; called by test_jax_backend.py.

Usage: ``KERAS_BACKEND=jax python jax_backend_run.py WORKDIR`` where WORKDIR holds
``features/`` (a store), ``fusion-*.keras`` (fusion models saved under TensorFlow) and
``inputs.npz``. Writes ``WORKDIR/jax.json`` and ``WORKDIR/jax.npz`` (the values the test
compares with TensorFlow's), a trained model in ``WORKDIR/aud-mel`` and its embeddings.

TensorFlow cannot be imported here, as on an install with the jax extra only.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path

import numpy as np


class WithoutTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main(work: Path) -> None:
    sys.meta_path.insert(0, WithoutTensorFlow())
    import keras

    from avsc.config import TrainConfig, load_config
    from avsc.models.backbones import Deltas
    from avsc.models.losses import kl_divergence_loss
    from avsc.training.backbone import train_backbone
    from avsc.training.embeddings import embed_clips
    from avsc.training.mixup import MixupInputs, mixup

    inputs = dict(np.load(work / "inputs.npz"))
    out: dict[str, np.ndarray] = {}
    out["deltas"] = np.asarray(Deltas()(inputs["spectrogram"]))
    out["loss"] = np.asarray(kl_divergence_loss(inputs["y_true"], inputs["y_pred"]))
    x_mixed, y_mixed = mixup(inputs["x"], inputs["y"], inputs["lam"], inputs["perm"])
    out["mixup_x"], out["mixup_y"] = np.asarray(x_mixed), np.asarray(y_mixed)
    out["mixup_layer"] = np.asarray(MixupInputs()([inputs["x16"], inputs["lam"], inputs["perm"]]))
    import avsc.models.fusion  # noqa: F401  (registers the fusion layers)

    for path in sorted(work.glob("fusion-*.keras")):
        model = keras.models.load_model(path)
        width = model.inputs[0].shape[-1]
        out[path.stem] = np.asarray(
            model.predict_on_batch([inputs[f"emb{i}_{width}"] for i in range(len(model.inputs))])
        )

    quick = load_config(preset="quick").train
    config = TrainConfig(
        **{
            **quick.__dict__,
            "epochs": 2,
            "batch_size": 20,
            "audio_stages": 2,
            "audio_base_filters": 8,
            "dense_units": 32,
            "seed": 3,
        }
    )
    result = train_backbone("aud-mel", [work / "features"], work / "aud-mel", config=config, progress=False)
    embedded = embed_clips(
        work / "aud-mel", [work / "features"], work / "aud-mel.parquet", batch_size=20, progress=False
    )
    # The Predictor's way of running an embedding model (compiled once per shape on JAX).
    from avsc.features.store import FeatureStore
    from avsc.inference.graph_runner import GraphRunner
    from avsc.models.backbones import embedding_model
    from avsc.training.embeddings import embed_arrays

    store = FeatureStore.open(work / "features")
    first = sorted(store.clips()["clip_id"])[:3]
    batch = np.stack([store.read_clip(clip_id, "mel") for clip_id in first])
    runner = GraphRunner(embedding_model(keras.models.load_model(work / "aud-mel" / "model.keras")))
    out["runner_fc1024"], out["runner_fc10"] = embed_arrays("aud-mel", runner, batch)
    # Phase II: a fusion model trained on the embeddings under JAX (no TensorFlow to be had).
    import dataclasses

    from avsc.config import FusionConfig
    from avsc.training.fusion import train_fusion

    fused = train_fusion(
        work / "emb",
        work / "fusion-trained",
        method="f1",
        modalities="audio+visual",
        config=dataclasses.replace(FusionConfig(), max_steps=60, eval_every=20),
        progress=False,
    )
    np.savez(work / "jax.npz", **out)
    (work / "jax.json").write_text(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "history": result.history,
                "n_clips": embedded.n_clips,
                "fusion_best_step": fused.best_step,
                "tensorflow_imported": "tensorflow" in sys.modules,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
