"""Phase II: fusion layers against eqs. (1)-(3), the model, training, resume, input checks, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

keras = pytest.importorskip("keras")

from embeddings_factory import make_embeddings  # noqa: E402

from avsc.cli import main  # noqa: E402
from avsc.config import (  # noqa: E402
    BACKBONES,
    FUSION_METHODS,
    MODALITY_SETS,
    FusionConfig,
    load_config,
)
from avsc.errors import ConfigError, DataError  # noqa: E402
from avsc.models.fusion import (  # noqa: E402
    FUSIONS,
    ModalityConcatFusion,
    ModalityWeightedFusion,
    WeightedSumFusion,
    build_fusion_model,
)
from avsc.records.predictions import Predictions  # noqa: E402
from avsc.scoring.metrics import softmax  # noqa: E402
from avsc.training.embeddings import read_embeddings, write_embeddings  # noqa: E402
from avsc.training.fusion import (  # noqa: E402
    load_fusion_data,
    train_all_fusions,
    train_fusion,
)

QUICK = load_config(preset="quick").fusion
WIDTH = 32  # fc1024 width of the synthetic embeddings (1024 on real data; smaller is faster)
GROUPS_AV = ("audio", "audio", "audio", "visual", "visual")


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    return make_embeddings(
        tmp_path_factory.mktemp("emb") / "embeddings", width=WIDTH, per_class={"train": 16, "val": 6, "test": 6}
    )


def _embeddings_inputs(rng, n_inputs: int, batch: int, width: int) -> list[np.ndarray]:
    return [rng.normal(size=(batch, width)).astype(np.float32) for _ in range(n_inputs)]


def _set(layer, inputs, values: dict[str, np.ndarray]) -> None:
    layer(inputs)  # build
    by_name = {v.name: v for v in layer.weights}
    assert set(by_name) == set(values), sorted(by_name)
    for name, value in values.items():
        by_name[name].assign(np.asarray(value, np.float32))


# --- Layers against the equations ---------------------------------------------------------------


def test_f1_weighted_sum_matches_equation_1(rng):
    """f1 = ae_g.w1 + ae_m.w2 + ae_c.w3 + ve_i.w4 + ve_c.w5 + b (element-wise products)."""
    e = _embeddings_inputs(rng, 5, 3, 4)
    w = [rng.normal(size=4) for _ in range(5)]
    b = np.array([0.5, -1.0, 2.0, 0.0])
    layer = WeightedSumFusion()
    _set(layer, e, {**{f"w{i + 1}": w[i] for i in range(5)}, "b": b})
    expected = e[0] * w[0] + e[1] * w[1] + e[2] * w[2] + e[3] * w[3] + e[4] * w[4] + b
    np.testing.assert_allclose(np.asarray(layer(e)), expected, rtol=1e-5, atol=1e-6)


def test_f1_known_small_numbers():
    e1, e2 = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, -1.0]], np.float32)
    layer = WeightedSumFusion()
    _set(layer, [e1, e2], {"w1": [2.0, 0.5], "w2": [-1.0, 3.0], "b": [0.25, 1.0]})
    # [1*2 + 3*-1 + 0.25, 2*0.5 + -1*3 + 1] = [-0.75, -1]
    np.testing.assert_allclose(np.asarray(layer([e1, e2])), [[-0.75, -1.0]])


def test_f2_modality_weighted_matches_equation_2(rng):
    """f2 = (ae_g.w1 + ae_m.w2 + ae_c.w3).wa + (ve_i.w4 + ve_c.w5).wv + b."""
    e = _embeddings_inputs(rng, 5, 3, 6)
    w = [rng.normal(size=6) for _ in range(5)]
    wa, wv, b = rng.normal(size=6), rng.normal(size=6), rng.normal(size=6)
    layer = ModalityWeightedFusion(groups=GROUPS_AV)
    _set(layer, e, {**{f"w{i + 1}": w[i] for i in range(5)}, "w_audio": wa, "w_visual": wv, "b": b})
    expected = (e[0] * w[0] + e[1] * w[1] + e[2] * w[2]) * wa + (e[3] * w[3] + e[4] * w[4]) * wv + b
    np.testing.assert_allclose(np.asarray(layer(e)), expected, rtol=1e-5, atol=1e-5)


def test_f3_concat_matches_equation_3(rng):
    """f3 = concat[(ae_g.w1 + ae_m.w2 + ae_c.w3), (ve_i.w4 + ve_c.w5)], no bias."""
    e = _embeddings_inputs(rng, 5, 3, 4)
    w = [rng.normal(size=4) for _ in range(5)]
    layer = ModalityConcatFusion(groups=GROUPS_AV)
    _set(layer, e, {f"w{i + 1}": w[i] for i in range(5)})
    out = np.asarray(layer(e))
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out[:, :4], e[0] * w[0] + e[1] * w[1] + e[2] * w[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, 4:], e[3] * w[3] + e[4] * w[4], rtol=1e-5, atol=1e-6)


def test_one_modality_reductions(rng):
    """Visual only: f2 = (ve_i.w1 + ve_c.w2).wv + b; f3 = ve_i.w1 + ve_c.w2 (one part, no concat)."""
    e = _embeddings_inputs(rng, 2, 2, 5)
    w1, w2, wv, b = (rng.normal(size=5) for _ in range(4))
    f2 = ModalityWeightedFusion(groups=("visual", "visual"))
    _set(f2, e, {"w1": w1, "w2": w2, "w_visual": wv, "b": b})
    np.testing.assert_allclose(np.asarray(f2(e)), (e[0] * w1 + e[1] * w2) * wv + b, rtol=1e-5, atol=1e-5)
    f3 = ModalityConcatFusion(groups=("visual", "visual"))
    _set(f3, e, {"w1": w1, "w2": w2})
    np.testing.assert_allclose(np.asarray(f3(e)), e[0] * w1 + e[1] * w2, rtol=1e-5, atol=1e-6)


def test_fusion_table_levels_and_equations():
    assert tuple(FUSIONS) == FUSION_METHODS
    assert [FUSIONS[m].level for m in FUSION_METHODS] == ["fc1024"] * 3 + ["fc10"] * 3
    assert [FUSIONS[m].equation for m in FUSION_METHODS] == [1, 2, 3, 1, 2, 3]
    assert FUSIONS["f1"].layer is FUSIONS["f4"].layer is WeightedSumFusion
    assert FUSIONS["f3"].layer is FUSIONS["f6"].layer is ModalityConcatFusion


@pytest.mark.parametrize(
    "method, modalities, dense_in",
    [
        ("f1", "audio+visual", 8),
        ("f2", "audio", 8),
        ("f3", "audio+visual", 16),
        ("f3", "visual", 8),
        ("f6", "audio+visual", 16),
    ],
)
def test_model_inputs_named_after_backbones(rng, method, modalities, dense_in):
    backbones = MODALITY_SETS[modalities]
    model = build_fusion_model(method, backbones, 8)
    assert [t.name for t in model.inputs] == list(backbones)
    assert model.get_layer("fc10").kernel.shape == (dense_in, 10)
    probs = np.asarray(model(_embeddings_inputs(rng, len(backbones), 4, 8)))
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_model_save_load_round_trip(tmp_path, rng):
    model = build_fusion_model("f2", BACKBONES, 6, l2=1e-3)
    for v in model.weights:  # move off the initial values so the check means something
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = _embeddings_inputs(rng, 5, 7, 6)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    assert loaded.get_layer("fusion").groups == GROUPS_AV


def test_unknown_method_and_modalities(embeddings, tmp_path):
    with pytest.raises(ConfigError, match="f7"):
        train_fusion(embeddings, tmp_path / "x", method="f7", config=QUICK)
    with pytest.raises(ConfigError, match="audio-only"):
        train_fusion(embeddings, tmp_path / "x", method="f1", modalities="audio-only", config=QUICK)


# --- Input checks ----------------------------------------------------------------------------


def _copy_embeddings(src, dst, **changes):
    dst.mkdir(parents=True, exist_ok=True)
    for backbone in BACKBONES:
        e = read_embeddings(src / f"{backbone}.parquet")
        fields = {
            "clip_ids": list(e.clip_ids),
            "splits": list(e.splits),
            "labels": list(e.labels),
            "fc1024": e.fc1024,
            "fc10": e.fc10,
            "backbone": e.info.backbone,
            "config_hash": e.info.config_hash,
            "model_sha256": e.info.model_sha256,
            "lineage": e.info.lineage,
        }
        fields.update(changes.get(backbone, {}))
        write_embeddings(dst / f"{backbone}.parquet", **fields)
    return dst


def test_missing_backbone_file_is_named(embeddings, tmp_path):
    partial = _copy_embeddings(embeddings, tmp_path / "emb")
    (partial / "vis-conv.parquet").unlink()
    with pytest.raises(DataError, match=r"vis-conv\.parquet.*missing"):
        load_fusion_data(partial, BACKBONES)
    # the audio set does not need it
    assert load_fusion_data(partial, MODALITY_SETS["audio"]).backbones == MODALITY_SETS["audio"]


def test_inconsistent_embeddings_are_rejected(embeddings, tmp_path):
    e = read_embeddings(embeddings / "aud-gam.parquet")
    labels = list(e.labels)
    labels[0] = "tram" if labels[0] != "tram" else "bus"
    bad = _copy_embeddings(embeddings, tmp_path / "labels", **{"aud-gam": {"labels": labels}})
    with pytest.raises(DataError, match=r"aud-gam\.parquet.*label"):
        load_fusion_data(bad, BACKBONES)

    splits = list(e.splits)
    splits[3] = "test" if splits[3] != "test" else "train"
    bad = _copy_embeddings(embeddings, tmp_path / "splits", **{"vis-inc": {"splits": splits}})
    with pytest.raises(DataError, match=r"vis-inc\.parquet.*split"):
        load_fusion_data(bad, BACKBONES)

    ids = list(e.clip_ids)
    ids[0] = "someone-else-0000"
    bad = _copy_embeddings(embeddings, tmp_path / "ids", **{"aud-cqt": {"clip_ids": ids}})
    with pytest.raises(DataError, match=r"aud-cqt\.parquet.*clips differ"):
        load_fusion_data(bad, BACKBONES)


def test_embeddings_given_as_a_mapping_read_like_the_folder(embeddings, tmp_path):
    """Pipeline steps pass backbone -> file (artifacts at paths of their own), the CLI a folder."""
    scattered = {}
    for backbone in BACKBONES:  # files named nothing like <backbone>.parquet, each in its own folder
        path = tmp_path / backbone.replace("-", "_") / "embeddings"
        path.parent.mkdir()
        shutil.copyfile(embeddings / f"{backbone}.parquet", path)
        scattered[backbone] = str(path)
    data, ref = load_fusion_data(scattered, BACKBONES), load_fusion_data(embeddings, BACKBONES)
    np.testing.assert_array_equal(data.clip_ids, ref.clip_ids)
    for backbone in BACKBONES:
        np.testing.assert_array_equal(data.fc1024[backbone], ref.fc1024[backbone])
        assert data.paths[backbone] == Path(scattered[backbone])
    audio = {b: scattered[b] for b in MODALITY_SETS["audio"]}
    assert load_fusion_data(audio, MODALITY_SETS["audio"]).backbones == MODALITY_SETS["audio"]
    with pytest.raises(DataError, match=r"vis-inc.*missing"):
        load_fusion_data(audio, BACKBONES)
    with pytest.raises(ConfigError, match=r"unknown backbone.*aud-xyz"):
        load_fusion_data({**scattered, "aud-xyz": scattered["aud-mel"]}, BACKBONES)
    with pytest.raises(DataError, match=r"nowhere\.parquet: embeddings of vis-conv not found"):
        load_fusion_data({**scattered, "vis-conv": tmp_path / "nowhere.parquet"}, BACKBONES)
    results = train_all_fusions(
        scattered,
        tmp_path / "fusion",
        config=FusionConfig(epochs=1),
        methods=("f4",),
        modality_sets=("visual",),
        progress=False,
    )
    assert [r.out_dir.name for r in results] == ["f4-visual"]


def test_backbones_trained_with_different_settings_fuse_with_a_warning(embeddings, tmp_path, caplog):
    mixed = _copy_embeddings(embeddings, tmp_path / "hash", **{"vis-conv": {"config_hash": "otherhash999"}})
    with caplog.at_level("WARNING", logger="avsc.training.fusion_data"):
        data = load_fusion_data(mixed, BACKBONES)
    assert data.config_hash["vis-conv"] == "otherhash999"
    assert "different settings" in caplog.text and "vis-conv otherhash999" in caplog.text


def test_rows_are_aligned_by_clip_id(embeddings, tmp_path):
    """A file written in another row order still lines up clip by clip."""
    e = read_embeddings(embeddings / "vis-inc.parquet")
    rev = slice(None, None, -1)
    shuffled = _copy_embeddings(
        embeddings,
        tmp_path / "rev",
        **{
            "vis-inc": {
                "clip_ids": list(e.clip_ids[rev]),
                "splits": list(e.splits[rev]),
                "labels": list(e.labels[rev]),
                "fc1024": e.fc1024[rev],
                "fc10": e.fc10[rev],
            }
        },
    )
    data = load_fusion_data(shuffled, BACKBONES)
    ref = load_fusion_data(embeddings, BACKBONES)
    np.testing.assert_array_equal(data.clip_ids, ref.clip_ids)
    np.testing.assert_allclose(data.fc10["vis-inc"], ref.fc10["vis-inc"])


# --- Training ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_f1(embeddings, tmp_path_factory):
    out = tmp_path_factory.mktemp("fusion") / "f1-audio+visual"
    # The factory's Gaussian embeddings (not ReLU outputs) learn in a few hundred steps at the larger step.
    config = replace(QUICK, max_steps=300, patience=100, learning_rate_fc1024=1e-2)
    return train_fusion(embeddings, out, method="f1", config=config, progress=False), config


def test_train_fusion_learns_and_writes_its_outputs(trained_f1, embeddings):
    result, _config = trained_f1
    out = result.out_dir
    meta = json.loads((out / "fusion.json").read_text())
    assert meta["format"] == "avsc-fusion-info" and meta["version"] == 1
    assert meta["method"] == "f1" and meta["modalities"] == "audio+visual" and meta["level"] == "fc1024"
    assert meta["backbones"] == list(BACKBONES)
    recorded = read_embeddings(embeddings / "aud-gam.parquet").info
    assert meta["embeddings"]["aud-gam"]["model_sha256"] == recorded.model_sha256
    assert meta["config"]["max_steps"] == 300 and len(meta["config_hash"]) == 12
    assert meta["val_metrics"]["accuracy"] == pytest.approx(result.val_accuracy)
    history = json.loads((out / "history.json").read_text())
    # 160 train clips at batch 32: 5 steps an epoch, val scored every 4 epochs (20 steps).
    assert [h["step"] for h in history[:2]] == [20, 40] and [h["epoch"] for h in history[:2]] == [4, 8]
    assert history[-1]["step"] == meta["steps_run"] <= 300
    # Default selection: the lowest cross-validated val log loss of the calibrated model (ties: accuracy).
    best = max(history, key=lambda h: (-h["val_log_loss_selection"], h["val_accuracy"]))
    assert best["epoch"] == result.best_epoch == meta["best_epoch"]
    assert best["step"] == result.best_step == meta["best_step"]
    assert meta["selection"] == "log_loss"
    calibration = meta["calibration"]
    assert calibration["temperature"] == pytest.approx(best["temperature"]) == pytest.approx(result.temperature)
    assert calibration["selection_log_loss"] == pytest.approx(best["val_log_loss_selection"])
    assert calibration["method"] in ("temperature", "none") and calibration["at_bound"] is False
    assert calibration["after"]["log_loss"] == pytest.approx(meta["val_metrics"]["log_loss"])
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"] + 1e-9
    assert set(meta["val_distance_quantiles"]) == {"0.5", "0.9", "0.95", "0.99", "1"}
    assert 0.2 < meta["val_distance_quantiles"]["0.5"] < 5  # about 1 for clips like the training clips

    preds = Predictions.read(out)
    assert len(preds.clip_ids) == 10 * (16 + 6 + 6)
    test = preds.splits == "test"
    accuracy = (
        preds.probs[test].argmax(1) == np.asarray([list(meta["labels"]).index(lab) for lab in preds.labels[test]])
    ).mean()
    assert accuracy > 0.6, accuracy  # chance is 0.1


def test_inputs_are_standardised_with_train_statistics_inside_the_model(trained_f1, embeddings):
    result, _ = trained_f1
    model = keras.models.load_model(result.out_dir / "model.keras", compile=False)
    data = load_fusion_data(embeddings, BACKBONES)
    train = data.inputs("fc1024", data.splits == "train")
    for backbone, x in zip(BACKBONES, train, strict=True):
        layer = model.get_layer(f"standardize_{backbone}")
        z = np.asarray(layer(x))
        np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-3)


def test_distance_score_flags_rows_unlike_the_training_rows(rng):
    from avsc.models.fusion import distance_score, standardization

    train = [rng.normal(3.0, 2.0, size=(500, 16)), rng.normal(-1.0, 0.5, size=(500, 16))]
    pairs = [standardization(x) for x in train]
    alike = distance_score([rng.normal(3.0, 2.0, size=(200, 16)), rng.normal(-1.0, 0.5, size=(200, 16))], pairs)
    assert np.median(alike) == pytest.approx(1.0, abs=0.15)
    unlike = distance_score([rng.normal(3.0, 2.0, size=(200, 16)), rng.normal(2.0, 0.5, size=(200, 16))], pairs)
    assert unlike.min() > np.quantile(alike, 0.99)
    # A unit no training row activates gets variance 1, not a tiny one.
    dead = np.zeros((50, 4))
    _mean, variance = standardization(np.concatenate([dead, rng.normal(size=(50, 4))], axis=1))
    assert (variance[:4] == 1.0).all()


def test_training_stops_early_when_val_stops_improving(embeddings, tmp_path):
    config = replace(QUICK, max_steps=100_000, patience=60, learning_rate=3e-2)
    result = train_fusion(embeddings, tmp_path / "f4", method="f4", config=config, progress=False)
    meta = json.loads((result.out_dir / "fusion.json").read_text())
    assert meta["stopped"] == "patience"
    assert meta["steps_run"] - meta["best_step"] >= 60 and meta["steps_run"] < 2000


def test_saved_model_reproduces_predictions(trained_f1, embeddings):
    result, _ = trained_f1
    model = keras.models.load_model(result.out_dir / "model.keras", compile=False)
    data = load_fusion_data(embeddings, BACKBONES)
    probs = np.asarray(model(data.inputs("fc1024"), training=False))
    preds = Predictions.read(result.out_dir)
    order = np.argsort(preds.clip_ids)
    # The file holds the raw logits and the calibrated probabilities softmax(logits / T).
    np.testing.assert_allclose(softmax(preds.logits[order]), probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        preds.probs[order], softmax(preds.logits[order] / result.temperature), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_array_equal(preds.probs[order].argmax(1), probs.argmax(1))
    by_name = np.asarray(model(dict(zip(BACKBONES, data.inputs("fc1024"), strict=True)), training=False))
    np.testing.assert_allclose(by_name, probs, rtol=1e-5)


def test_fc1024_fusions_take_their_own_learning_rate(embeddings, tmp_path):
    tiny, big = 1e-9, 1e-2

    def first_loss(method: str, **settings) -> float:
        config = replace(QUICK, epochs=2, **settings)
        out = tmp_path / f"{method}-{len(list(tmp_path.iterdir()))}"
        return train_fusion(embeddings, out, method=method, config=config, progress=False).history[-1]["loss"]

    # f1 (fc1024) follows learning_rate_fc1024; f4 (fc10) ignores it.
    assert first_loss("f1", learning_rate=big, learning_rate_fc1024=tiny) == pytest.approx(
        first_loss("f1", learning_rate=tiny, learning_rate_fc1024=None), rel=1e-6
    )
    assert first_loss("f4", learning_rate=big, learning_rate_fc1024=tiny) == pytest.approx(
        first_loss("f4", learning_rate=big, learning_rate_fc1024=None), rel=1e-6
    )
    assert first_loss("f4", learning_rate=big, learning_rate_fc1024=tiny) != pytest.approx(
        first_loss("f4", learning_rate=tiny, learning_rate_fc1024=tiny), rel=1e-3
    )


def test_training_is_seeded(embeddings, tmp_path):
    config = replace(QUICK, epochs=3)
    a = train_fusion(embeddings, tmp_path / "a", method="f5", modalities="audio", config=config, progress=False)
    b = train_fusion(embeddings, tmp_path / "b", method="f5", modalities="audio", config=config, progress=False)
    assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], rel=1e-5)
    assert a.backbones == MODALITY_SETS["audio"] and a.level == "fc10"


def test_train_all_fusions_resumes(embeddings, tmp_path):
    config = FusionConfig(epochs=1, batch_size=64, learning_rate=1e-2)
    root = tmp_path / "fusion"
    kwargs = {"config": config, "methods": ("f4", "f6"), "modality_sets": ("visual", "audio"), "progress": False}
    results = train_all_fusions(embeddings, root, **kwargs)
    assert sorted(p.name for p in root.iterdir()) == ["f4-audio", "f4-visual", "f6-audio", "f6-visual"]
    assert not any(r.skipped for r in results)

    # A killed run: one folder without its fusion.json is trained again, the others skipped.
    (root / "f6-audio" / "fusion.json").unlink()
    stamp = (root / "f4-audio" / "model.keras").stat().st_mtime_ns
    again = train_all_fusions(embeddings, root, **kwargs)
    assert [(r.out_dir.name, r.skipped) for r in again] == [
        ("f4-visual", True),
        ("f6-visual", True),
        ("f4-audio", True),
        ("f6-audio", False),
    ]
    assert again[0].val_accuracy == pytest.approx(results[0].val_accuracy)
    assert (root / "f6-audio" / "fusion.json").is_file()
    assert (root / "f4-audio" / "model.keras").stat().st_mtime_ns == stamp

    with pytest.raises(ConfigError, match="other settings"):
        train_all_fusions(embeddings, root, **{**kwargs, "config": replace(config, seed=5)})


@pytest.mark.slow
def test_train_all_fusions_writes_18_folders(embeddings, tmp_path):
    root = tmp_path / "fusion"
    results = train_all_fusions(embeddings, root, config=FusionConfig(epochs=1), progress=False)
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted(f"{m}-{s}" for m in FUSION_METHODS for s in MODALITY_SETS)
    assert len(results) == 18 and not any(r.skipped for r in results)
    for r in results:
        meta = json.loads((r.out_dir / "fusion.json").read_text())
        assert (meta["method"], meta["modalities"]) == (r.method, r.modalities)
        assert meta["backbones"] == list(MODALITY_SETS[r.modalities])
        model = keras.models.load_model(r.out_dir / "model.keras", compile=False)
        assert [t.name for t in model.inputs] == list(MODALITY_SETS[r.modalities])
        assert model.inputs[0].shape[-1] == (WIDTH if FUSIONS[r.method].level == "fc1024" else 10)
    assert all(r.skipped for r in train_all_fusions(embeddings, root, config=FusionConfig(epochs=1), progress=False))


def test_empty_val_split_is_an_error(tmp_path):
    emb = make_embeddings(tmp_path / "emb", width=8, per_class={"train": 2, "test": 1})
    with pytest.raises(DataError, match="val split has no clips"):
        train_fusion(emb, tmp_path / "x", method="f4", config=QUICK)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_fuse_then_evaluate(embeddings, tmp_path, capsys):
    root = tmp_path / "fusion"
    rc = main(
        [
            "fuse",
            str(embeddings),
            "--method",
            "f4",
            "--modalities",
            "all",
            "-o",
            str(root),
            "--preset",
            "quick",
            "--epochs",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in root.iterdir()) == ["f4-audio", "f4-audio+visual", "f4-visual"]
    single = tmp_path / "single"
    assert (
        main(
            [
                "fuse",
                str(embeddings),
                "--method",
                "f3",
                "-o",
                str(single),
                "--preset",
                "quick",
                "--epochs",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((single / "fusion.json").read_text())["method"] == "f3"
    capsys.readouterr()

    report = tmp_path / "report"
    assert main(["evaluate", str(root), str(single), "-o", str(report), "--embeddings", str(embeddings)]) == 0
    out = capsys.readouterr().out
    for name in ("f4", "f3", "audio+visual", "visual", "aud-mel", "vis-conv", "report.html"):
        assert name in out
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["results"]) == 4 and len(metrics["backbones"]) == 5
    assert pq.read_table(root / "f4-audio" / "predictions.parquet").num_rows == 280


def test_cli_reports_missing_embeddings_in_one_line(tmp_path, capsys):
    (tmp_path / "emb").mkdir()
    rc = main(["fuse", str(tmp_path / "emb"), "--method", "f1", "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "aud-mel.parquet" in err and "missing" in err and "Traceback" not in err
