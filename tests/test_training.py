"""Phase I training: mixup, the loss, learning, resume, model selection, the visual path."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from features_factory import make_feature_store  # noqa: E402

from avsc.config import TrainConfig, load_config  # noqa: E402
from avsc.errors import ConfigError, DataError  # noqa: E402
from avsc.features.store import FeatureStore  # noqa: E402
from avsc.labels import LABEL_INDEX  # noqa: E402
from avsc.models.backbones import embedding_model  # noqa: E402
from avsc.models.losses import kl_divergence_loss  # noqa: E402
from avsc.scoring.calibration import calibrated_probabilities  # noqa: E402
from avsc.scoring.metrics import classification_metrics  # noqa: E402
from avsc.training.backbone import train_backbone  # noqa: E402
from avsc.training.mixup import mix_batch, mixup  # noqa: E402
from avsc.training.streams import eval_dataset, train_dataset  # noqa: E402

QUICK = load_config(preset="quick").train


def test_mixup_matches_hand_computation():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    y = np.eye(3, dtype=np.float32)
    x_mixed, y_mixed = mixup(x, y, lam=np.array([0.5, 1.0, 0.25], np.float32), perm=np.array([1, 2, 0]))
    np.testing.assert_allclose(np.asarray(x_mixed), [[2, 3], [3, 4], [0.25 * 5 + 0.75, 0.25 * 6 + 1.5]])
    np.testing.assert_allclose(np.asarray(y_mixed), [[0.5, 0.5, 0], [0, 1, 0], [0.75, 0, 0.25]])


def test_kl_loss_matches_hand_computation():
    y = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float32)
    p = np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]], np.float32)
    loss = np.asarray(kl_divergence_loss(y, p))
    np.testing.assert_allclose(loss, [0.5 * np.log(2), np.log(2)], rtol=1e-5)
    assert float(np.asarray(kl_divergence_loss(y, y)).max()) == pytest.approx(0.0, abs=1e-5)


def test_classification_metrics():
    probs = np.array([[0.9, 0.1] + [0] * 8, [0.2, 0.8] + [0] * 8, [0.6, 0.4] + [0] * 8])
    metrics = classification_metrics(np.array([0, 1, 1]), probs)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["log_loss"] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)
    assert metrics["per_class_accuracy"] == {"airport": 1.0, "bus": 0.5}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return make_feature_store(tmp_path_factory.mktemp("features"), per_class={"train": 6, "val": 2, "test": 2})


def _mixed(stream):
    return [tuple(np.asarray(t) for t in mix_batch(inputs, y)) for inputs, y in stream]


def test_train_stream_is_deterministic_and_mixed(store_dir):
    store = FeatureStore.open(store_dir)
    first = _mixed(train_dataset(store, "aud-gam", batch_size=16, seed=5))
    again = _mixed(train_dataset(store, "aud-gam", batch_size=16, seed=5))
    other = _mixed(train_dataset(store, "aud-gam", batch_size=16, seed=6))
    assert sum(len(x) for x, _ in first) == 60
    (x, lam, perm), y = next(iter(train_dataset(store, "aud-gam", batch_size=16, seed=5)))
    assert x.dtype == "float16" and lam.dtype == "float32" and perm.dtype == "int32"  # mixed in the model
    np.testing.assert_allclose(first[0][0], mixup(np.asarray(x, np.float32), y, lam, perm)[0], rtol=1e-6)
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(first[0][0], other[0][0])
    labels = np.concatenate([y for _, y in first])
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    assert (labels.max(axis=1) < 0.999).any()  # mixup made some labels soft


def test_visual_streams_yield_frames(store_dir):
    store = FeatureStore.open(store_dir)
    train = list(train_dataset(store, "vis-inc", batch_size=7, frames_per_clip=1, mixup_alpha=0, seed=1))
    assert sum(len(x) for (x, _, _), _ in train) == 60  # one frame per clip
    assert train[0][0][0].shape[1:] == (32, 32, 3) and train[0][0][0].dtype == "uint8"
    evaluation = list(eval_dataset(store, "vis-inc", "val", batch_size=8))
    assert sum(len(x) for x in evaluation) == 20 * 2  # every frame of every val clip


@pytest.fixture(scope="module")
def trained(store_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("aud-mel")
    config = TrainConfig(**{**QUICK.__dict__, "epochs": 12, "batch_size": 16, "seed": 1})
    return train_backbone("aud-mel", [store_dir], model_dir, config=config, progress=False)


def test_training_learns_and_beats_chance(trained):
    losses = [entry["loss"] for entry in trained.history]
    assert len(losses) == 12 and trained.epochs_run == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # Default selection: the lowest cross-validated val log loss of the calibrated model
    # (ties: accuracy) -- never the log loss of a temperature fitted on the same 20 clips.
    best = max(trained.history, key=lambda e: (-e["val_log_loss_selection"], e["val_accuracy"]))
    assert trained.best_epoch == best["epoch"]
    assert trained.temperature == pytest.approx(best["temperature"])
    # What the selected epoch guarantees on these 20 val clips, with margins measured over
    # seeds 1-4: its val log loss 1.49-1.63 (chance: ln 10 = 2.30), its val accuracy 0.30-0.50
    # (chance: 0.10). One lucky or unlucky clip moves the accuracy by 0.05.
    assert best["val_log_loss"] < 1.9
    assert trained.val_accuracy >= 0.2


def test_outputs_are_complete_and_model_reloads(trained, store_dir):
    model_dir = trained.model_dir
    config = json.loads((model_dir / "config.json").read_text())
    assert config["backbone"] == "aud-mel" and config["best_epoch"] == trained.best_epoch
    assert config["train"]["epochs"] == 12 and len(config["config_hash"]) == 12
    assert config["feature_config_hash"] == FeatureStore.open(store_dir).config_hash
    assert len(json.loads((model_dir / "history.json").read_text())) == 12
    val_metrics = json.loads((model_dir / "val_metrics.json").read_text())
    assert val_metrics["accuracy"] == pytest.approx(trained.val_accuracy)
    # The saved model is the selected one: it reproduces the recorded val metrics.
    # ... after its temperature: softmax(fc10 / T), with T stored in config.json.
    model = keras.models.load_model(model_dir / "model.keras")
    store = FeatureStore.open(store_dir)
    rows = store.clips("val")
    logits = embedding_model(model).predict(eval_dataset(store, "aud-mel", "val", batch_size=16), verbose=0)[1]
    labels = np.array([LABEL_INDEX[v] for v in rows["label"]])
    calibration = config["calibration"]
    assert calibration["temperature"] == pytest.approx(trained.temperature) == val_metrics["temperature"]
    again = classification_metrics(labels, calibrated_probabilities(logits, calibration["temperature"]))
    assert again["accuracy"] == pytest.approx(val_metrics["accuracy"])
    assert again["log_loss"] == pytest.approx(val_metrics["log_loss"], rel=1e-4)
    assert calibration["after"]["log_loss"] == pytest.approx(val_metrics["log_loss"])
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"] + 1e-9
    assert sorted(p.name for p in (model_dir / "checkpoints").glob("*.keras")) == sorted(
        {f"epoch-{12:04d}.keras", f"best-epoch-{trained.best_epoch:04d}.keras"}
    )


def test_resume_continues_from_last_epoch(store_dir, tmp_path):
    config = TrainConfig(**{**QUICK.__dict__, "epochs": 1, "batch_size": 32, "audio_stages": 2})
    first = train_backbone("aud-cqt", [store_dir], tmp_path, config=config, progress=False)
    assert first.epochs_run == 1 and len(first.history) == 1
    second = train_backbone(
        "aud-cqt", [store_dir], tmp_path, config=TrainConfig(**{**config.__dict__, "epochs": 2}), progress=False
    )
    assert second.epochs_run == 1 and [e["epoch"] for e in second.history] == [1, 2]
    assert second.history[0] == first.history[0]
    state = json.loads((tmp_path / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2
    # The optimizer state travelled with the checkpoint: Adam has taken both epochs' steps.
    ckpt = keras.models.load_model(tmp_path / "checkpoints" / state["last"])  # the training model
    assert int(ckpt.optimizer.iterations.numpy()) == 2 * 2  # 60 clips / batch 32 = 2 steps an epoch
    done = train_backbone(
        "aud-cqt", [store_dir], tmp_path, config=TrainConfig(**{**config.__dict__, "epochs": 2}), progress=False
    )
    assert done.epochs_run == 0 and len(done.history) == 2
    with pytest.raises(ConfigError, match=r"run with other settings \(train.learning_rate .* there, 0.5 here\)"):
        train_backbone(
            "aud-cqt",
            [store_dir],
            tmp_path,
            config=TrainConfig(**{**config.__dict__, "epochs": 3, "learning_rate": 0.5}),
            progress=False,
        )


def test_bad_inputs_raise_clear_errors(tmp_path):
    no_val = make_feature_store(tmp_path / "no-val", per_class={"train": 1}, features=("mel",))
    with pytest.raises(DataError, match=r"val split .* is empty"):
        train_backbone("aud-mel", [no_val], tmp_path / "m1", config=QUICK, progress=False)
    with pytest.raises(DataError, match="no 'gam' feature"):
        train_backbone("aud-gam", [no_val], tmp_path / "m2", config=QUICK, progress=False)
    with pytest.raises(ConfigError, match="unknown backbone"):
        train_backbone("aud-foo", [no_val], tmp_path / "m3", config=QUICK, progress=False)


def test_visual_backbone_trains_and_embeds(tmp_path):
    from avsc.models.backbones import embedding_model
    from avsc.training.embeddings import embed_arrays, embed_clips, read_embeddings

    store_dir = make_feature_store(
        tmp_path / "features", per_class={"train": 2, "val": 1}, features=("frames",), size=40, n_frames=2
    )
    config = TrainConfig(**{**QUICK.__dict__, "epochs": 1, "batch_size": 8, "image_size": 32, "frames_per_clip": 1})
    result = train_backbone("vis-conv", [store_dir], tmp_path / "vis-conv", config=config, progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["loss"])
    assert 0.0 <= result.val_accuracy <= 1.0
    embedded = embed_clips(result.model_dir, [store_dir], tmp_path / "vis-conv.parquet", progress=False)
    table = read_embeddings(embedded.path)
    assert table.info.backbone == "vis-conv" and table.fc1024.shape == (30, 1024) and table.fc10.shape == (30, 10)
    # A clip's visual embedding is the mean of its frames' embeddings.
    frames = FeatureStore.open(store_dir).read_clip(table.clip_ids[0], "frames").astype(np.float32)
    emb = embedding_model(keras.models.load_model(result.model_dir / "model.keras"))
    per_frame_1024, per_frame_10 = emb(frames, training=False)
    np.testing.assert_allclose(table.fc10[0], np.asarray(per_frame_10).mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table.fc1024[0], np.asarray(per_frame_1024).mean(axis=0), rtol=1e-4, atol=1e-5)
    _fc1024, fc10 = embed_arrays("vis-conv", emb, frames[None])
    np.testing.assert_allclose(fc10[0], table.fc10[0], rtol=1e-4, atol=1e-5)


def test_mixed_precision_keeps_float32_probabilities(store_dir, tmp_path):
    config = TrainConfig(
        **{**QUICK.__dict__, "epochs": 1, "batch_size": 32, "audio_stages": 2, "mixed_precision": "on"}
    )
    result = train_backbone("aud-mel", [store_dir], tmp_path, config=config, progress=False)
    assert np.isfinite(result.history[0]["loss"])
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.get_layer("fc10").dtype_policy.name == "mixed_float16"
    assert model.output.dtype == "float32"
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the global policy is restored
    assert json.loads((tmp_path / "config.json").read_text())["mixed_precision"] is True
