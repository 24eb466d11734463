"""The backend-neutral code (layers, loss, mixup, fusion layers, one short training and
embedding) under Keras' JAX backend, compared with TensorFlow's results.

Keras fixes its backend when it is first imported, so the JAX side runs in one subprocess
(``jax_backend_run.py``, about a minute on 2 cores, TensorFlow hidden from it) and this process, on TensorFlow, checks
what it wrote. Tolerances: the same weights on the same inputs agree to float32 rounding
(measured max absolute differences: 6e-8 to 2.1e-6 for the fusion models' probabilities,
3e-7 to 4e-7 for the trained backbone's embeddings).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
keras = pytest.importorskip("keras")

from embeddings_factory import make_embeddings  # noqa: E402
from features_factory import make_feature_store  # noqa: E402

from avsc.models.fusion import FUSIONS, build_fusion_model  # noqa: E402

HERE = Path(__file__).parent
FUSED = ("aud-mel", "aud-gam", "vis-inc")


def _deltas(x: np.ndarray) -> np.ndarray:
    d = (x[:, :, 2:] - x[:, :, :-2]) / 2
    dd = (d[:, :, 2:] - d[:, :, :-2]) / 2
    return np.concatenate([x[:, :, 2:-2], d[:, :, 1:-1], dd], axis=-1)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("jax")
    # 6 clips a class: 40 train clips, 2 even batches of 20 (one XLA compilation of the step).
    make_feature_store(work / "features", per_class={"train": 4, "val": 1, "test": 1}, features=("mel",))
    rng = np.random.default_rng(7)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]
    inputs = {
        "spectrogram": rng.normal(size=(2, 4, 9, 2)).astype(np.float32),
        "y_true": np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float32),
        "y_pred": np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]], np.float32),
        "x": rng.normal(size=(6, 3, 2)).astype(np.float32),
        "y": y,
        "x16": rng.normal(size=(6, 3, 2)).astype(np.float16),
        "lam": rng.uniform(size=6).astype(np.float32),
        "perm": rng.permutation(6).astype(np.int32),
    }
    for method, spec in FUSIONS.items():
        width = 1024 if spec.level == "fc1024" else 10
        keras.utils.set_random_seed(1)
        model = build_fusion_model(method, FUSED, width)
        # Weights away from their initial values, so every one of them matters.
        model.set_weights([w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype) for w in model.get_weights()])
        model.save(work / f"fusion-{method}.keras")
        for i in range(len(FUSED)):
            inputs.setdefault(f"emb{i}_{width}", rng.normal(size=(5, width)).astype(np.float32))
    np.savez(work / "inputs.npz", **inputs)
    make_embeddings(work / "emb", width=8, per_class={"train": 4, "val": 2, "test": 2})
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [sys.executable, str(HERE / "jax_backend_run.py"), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return work, inputs, dict(np.load(work / "jax.npz")), json.loads((work / "jax.json").read_text())


def test_layers_loss_and_mixup_compute_the_same_under_jax(jax_run):
    _, inputs, jax_out, meta = jax_run
    assert meta["backend"] == "jax"
    np.testing.assert_allclose(jax_out["deltas"], _deltas(inputs["spectrogram"]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax_out["loss"], [0.5 * np.log(2), np.log(2)], rtol=1e-5)
    lam, perm, x, y = inputs["lam"], inputs["perm"], inputs["x"], inputs["y"]
    np.testing.assert_allclose(
        jax_out["mixup_x"], lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm], rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(jax_out["mixup_y"], lam[:, None] * y + (1 - lam[:, None]) * y[perm], rtol=1e-6)
    x16 = inputs["x16"].astype(np.float32)
    np.testing.assert_allclose(
        jax_out["mixup_layer"], lam[:, None, None] * x16 + (1 - lam[:, None, None]) * x16[perm], rtol=1e-6, atol=1e-6
    )


def test_fusion_models_agree_across_backends(jax_run):
    work, inputs, jax_out, _ = jax_run
    import avsc.models.fusion  # noqa: F401

    for method, spec in FUSIONS.items():
        width = 1024 if spec.level == "fc1024" else 10
        model = keras.models.load_model(work / f"fusion-{method}.keras")
        tf_out = model.predict_on_batch([inputs[f"emb{i}_{width}"] for i in range(len(FUSED))])
        np.testing.assert_allclose(jax_out[f"fusion-{method}"], tf_out, rtol=1e-5, atol=1e-6, err_msg=method)


def test_a_short_jax_training_embeds_and_loads_in_tensorflow(jax_run):
    work, _, jax_out, meta = jax_run
    from avsc.training.embeddings import embed_clips, read_embeddings

    assert not meta["tensorflow_imported"]  # it ran as on an install without TensorFlow
    assert len(meta["history"]) == 2 and all(np.isfinite(e["loss"]) for e in meta["history"])
    assert meta["n_clips"] == 60
    # Phase II ran on JAX too: a fusion folder whole, its model loadable here.
    from avsc.records import FusionInfo

    info = FusionInfo.read(work / "fusion-trained")
    assert info.method == "f1" and info.best_step == meta["fusion_best_step"] and 0 < info.best_step <= 60
    assert keras.models.load_model(work / "fusion-trained" / "model.keras").outputs[0].shape[-1] == 10
    jax_emb = read_embeddings(work / "aud-mel.parquet")
    assert jax_emb.fc1024.shape == (60, 32) and jax_emb.fc10.shape == (60, 10)
    # The JAX-trained model.keras, embedded by TensorFlow from its tf.data stream: the same numbers.
    tf_emb = read_embeddings(
        embed_clips(work / "aud-mel", [work / "features"], work / "tf.parquet", batch_size=20, progress=False).path
    )
    assert list(tf_emb.clip_ids) == list(jax_emb.clip_ids)
    np.testing.assert_allclose(tf_emb.fc10, jax_emb.fc10, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tf_emb.fc1024, jax_emb.fc1024, rtol=1e-4, atol=1e-4)
    # The Predictor's compiled runner on JAX gives the embed pass's numbers (first clips by id).
    np.testing.assert_allclose(jax_out["runner_fc10"], jax_emb.fc10[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax_out["runner_fc1024"], jax_emb.fc1024[:3], rtol=1e-5, atol=1e-5)
