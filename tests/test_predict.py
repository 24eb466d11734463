"""Model bundle and end-to-end prediction: real ffmpeg, real features, real (untrained) models.

One module-wide set of models keeps this fast: the five backbones built with random
weights at a tiny feature config (1-s clips, 16 bins, 32x32 frames), saved as
``avsc train`` saves them, and two fusion models trained for one epoch by
:func:`avsc.training.fusion.train_fusion` on random embeddings: f4 (fc10, audio+visual), a
visual-only f1 (fc1024) and an audio-only f2 (fc1024; the command-line tests use it, as
its models load in a moment).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from media_cases import make_text_as_mp4, make_video
from records_factory import write_model_info
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.config import (
    BACKBONES,
    AudioConfig,
    FeatureConfig,
    FrameConfig,
    FusionConfig,
    TrainConfig,
    config_hash,
)
from avsc.errors import ConfigError, DataError, MediaError
from avsc.inference.bundle import BUNDLE_FILE, load_bundle
from avsc.inference.bundle_writer import make_bundle
from avsc.inference.predict import Predictor, check_videos
from avsc.inference.windows import window_offsets
from avsc.labels import LABELS
from avsc.storage.files import sha256_file
from avsc.storage.locations import read_json, write_json

FEATURES = FeatureConfig(
    audio=AudioConfig(sample_rate=16000, clip_seconds=1.0, n_bins=16), frames=FrameConfig(fps=2.0, size=32)
)
TRAIN = TrainConfig(weights="none", image_size=75, audio_base_filters=8, audio_stages=2)


# --- models, fusion models, bundle: built once for the module ------------------------------


def _manifest(path: Path, *, synthetic: bool) -> Path:
    """A manifest as ``avsc ingest`` writes it for a dataset of 40 clips."""
    from avsc.data.manifest import write_manifest

    splits = ["train"] * 20 + ["val"] * 10 + ["test"] * 10
    rows = [
        {
            "clip_id": f"clip-{i:03d}",
            "video": f"video/clip-{i:03d}.mp4",
            "label": "park",
            "city": "x",
            "location": f"x-{i}",
            "split": split,
        }
        for i, split in enumerate(splits)
    ]
    return write_manifest(
        rows,
        path,
        dataset_root=path.parent / "demo",
        extra_metadata={
            "dataset": {
                "name": "demo-7",
                "path": str(path.parent / "demo"),
                "synthetic": synthetic,
                "generator": "avsc demo-data",
            }
        },
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """The (synthetic) dataset's manifest; the models and embeddings below record its lineage."""
    return _manifest(tmp_path_factory.mktemp("dataset") / "manifest.parquet", synthetic=True)


def _lineage(manifest: Path):
    from avsc.data.manifest import read_manifest

    return read_manifest(manifest).attrs["lineage"]


@pytest.fixture(scope="module")
def models_root(manifest, tmp_path_factory) -> Path:
    """``<backbone>/model.keras`` + ``config.json`` as ``avsc train`` writes them."""
    from avsc.features.spectrograms import feature_shapes
    from avsc.models.backbones import build_backbone

    root = tmp_path_factory.mktemp("models")
    shapes = {k: tuple(v) for k, v in feature_shapes(FEATURES).items()}
    for backbone in BACKBONES:
        model = build_backbone(backbone, shapes, TRAIN)
        (root / backbone).mkdir()
        model.save(root / backbone / "model.keras")
        write_model_info(
            root / backbone, backbone, train=TRAIN, features=FEATURES, feature_shapes=shapes, lineage=_lineage(manifest)
        )
    return root


@pytest.fixture(scope="module")
def fusion_root(models_root, manifest, tmp_path_factory) -> Path:
    """``f4-audio+visual``, ``f1-visual`` and ``f2-audio`` fusion folders, trained briefly on
    random embeddings."""
    from avsc.training.embeddings import write_embeddings
    from avsc.training.fusion import train_fusion

    root = tmp_path_factory.mktemp("fusion")
    emb_dir = root / "embeddings"
    rng = np.random.default_rng(7)
    splits = ["train"] * 20 + ["val"] * 10 + ["test"] * 10
    labels = [LABELS[i % len(LABELS)] for i in range(len(splits))]
    for backbone in BACKBONES:
        write_embeddings(
            emb_dir / f"{backbone}.parquet",
            clip_ids=[f"clip-{i:03d}" for i in range(len(splits))],
            splits=splits,
            labels=labels,
            fc1024=rng.random((len(splits), 1024), dtype=np.float32),
            fc10=rng.normal(size=(len(splits), 10)).astype(np.float32),
            backbone=backbone,
            config_hash=config_hash(TRAIN),
            model_sha256=sha256_file(models_root / backbone / "model.keras"),
            lineage=_lineage(manifest),
        )
    config = FusionConfig(epochs=1, batch_size=8)
    train_fusion(
        emb_dir, root / "f4-audio+visual", method="f4", modalities="audio+visual", config=config, progress=False
    )
    train_fusion(emb_dir, root / "f1-visual", method="f1", modalities="visual", config=config, progress=False)
    train_fusion(emb_dir, root / "f2-audio", method="f2", modalities="audio", config=config, progress=False)
    return root


@pytest.fixture(scope="module")
def bundle_dir(models_root, fusion_root, manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "bundle"
    return make_bundle(
        models_root,
        fusion_root / "f4-audio+visual",
        out,
        visual_fusion_dir=fusion_root / "f1-visual",
        manifest=manifest,
    )


@pytest.fixture(scope="module")
def predictor(bundle_dir) -> Predictor:
    return Predictor.load(bundle_dir, graph=False)  # no tracing: each test runs new shapes


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    from avsc.data.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("videos")
    demo = make_demo_dataset(
        root / "demo",
        classes=1,
        clips_per_class=3,
        locations_per_class=3,
        seconds=2.0,
        width=160,
        height=120,
        fps=10.0,
        progress=False,
    )
    demo_video = sorted((demo.root / "video").glob("*.mp4"))[0]
    return {
        "demo": demo_video,
        # Content changes over time (moving bars, a tone), so windows differ.
        "long": make_video(root / "long.mp4", seconds=2.5, width=96, height=64, tone_hz=660.0),
        "silent": make_video(root / "silent.mp4", seconds=1.0, width=96, height=64, channels=0),
        "surround": make_video(
            root / "surround.mp4", seconds=1.5, width=70, height=100, fps=25.0, channels=6, sample_rate=44100
        ),
        "not_video": make_text_as_mp4(root / "notes.mp4"),
    }


# --- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration, clip, expected",
    [
        (4.0, 10.0, [0.0]),  # shorter than a clip: one padded window
        (10.0, 10.0, [0.0]),
        (10.2, 10.0, [0.0]),  # container slack within 2.5 %: still one clip
        (20.0, 10.0, [0.0, 10.0]),
        (25.0, 10.0, [0.0, 10.0, 15.0]),  # last window aligned to the end
        (2.5, 1.0, [0.0, 1.0, 1.5]),
        (None, 10.0, [0.0]),
    ],
)
def test_window_offsets(duration, clip, expected):
    assert window_offsets(duration, clip) == expected


# --- bundle -----------------------------------------------------------------------------------


def test_bundle_round_trip_is_portable(bundle_dir, models_root, fusion_root, tmp_path):
    meta = read_json(bundle_dir / BUNDLE_FILE)
    assert (meta["format"], meta["version"]) == ("avsc-bundle", 2)
    assert meta["labels"] == list(LABELS)
    assert meta["clip_seconds"] == FEATURES.audio.clip_seconds
    assert meta["feature_config_hash"] == config_hash(FEATURES)
    assert set(meta["train_config_hashes"]) == set(BACKBONES)
    # Every path is relative, and every file is the one it was copied from.
    for rel, digest in meta["sha256"].items():
        assert not Path(rel).is_absolute()
        assert sha256_file(bundle_dir / rel) == digest
    for backbone in BACKBONES:
        assert meta["sha256"][meta["backbones"][backbone]] == sha256_file(models_root / backbone / "model.keras")
    assert meta["sha256"]["fusion.keras"] == sha256_file(fusion_root / "f4-audio+visual" / "model.keras")

    moved = shutil.copytree(bundle_dir, tmp_path / "elsewhere")
    bundle = load_bundle(moved)
    assert bundle.root == moved and all(p.is_relative_to(moved) for p in bundle.backbones.values())
    assert bundle.feature_config == FEATURES
    assert set(bundle.backbones) == set(BACKBONES)
    assert (bundle.fusion.method, bundle.fusion.modalities, bundle.fusion.level) == ("f4", "audio+visual", "fc10")
    assert bundle.fusion.backbones == tuple(read_json(fusion_root / "f4-audio+visual" / "fusion.json")["backbones"])
    assert bundle.visual_fusion is not None
    assert (bundle.visual_fusion.method, bundle.visual_fusion.level) == ("f1", "fc1024")
    assert set(bundle.visual_fusion.backbones) == {"vis-inc", "vis-conv"}


def test_bundle_knows_its_provenance(bundle_dir, fusion_root):
    meta = read_json(bundle_dir / BUNDLE_FILE)
    provenance = meta["provenance"]
    assert provenance["dataset"] == "demo-7" and provenance["synthetic"] is True
    assert provenance["clips_per_split"] == {"train": 20, "val": 10, "test": 10}
    assert provenance["selection"]["rule"] == "log_loss" and provenance["preset"]
    assert meta["avsc_version"]
    fusion = read_json(fusion_root / "f4-audio+visual" / "fusion.json")
    assert meta["fusion"]["val_scores"]["accuracy"] == pytest.approx(fusion["val_metrics"]["accuracy"])
    assert meta["fusion"]["val_distance_quantiles"] == fusion["val_distance_quantiles"]
    assert meta["fusion"]["calibration_method"] == fusion["calibration"]["method"]


def test_predict_warns_on_every_result_of_a_synthetic_bundle(predictor, videos):
    first, second = predictor.predict_file(videos["demo"]), predictor.predict_file(videos["long"])
    for prediction in (first, second):
        assert any("trained on synthetic data (demo-7" in w for w in prediction.warnings)
        out = json.loads(json.dumps(prediction.to_dict()))
        assert out["bundle"]["synthetic"] is True and out["bundle"]["dataset"] == "demo-7"
        assert out["distance"] > 0 and out["distance_threshold"] > 0
        far = out["distance"] > out["distance_threshold"]
        assert far == any("far from the training data" in w for w in prediction.warnings)


def _small_copy(bundle_dir: Path, dest: Path) -> Path:
    """A copy of the bundle whose big visual models are links (tampering touches only small files)."""
    dest.mkdir()
    for path in bundle_dir.rglob("*"):
        target = dest / path.relative_to(bundle_dir)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.name.startswith("vis-"):
            target.parent.mkdir(exist_ok=True)
            target.symlink_to(path)
        else:
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, target)
    return dest


def test_bundle_detects_modified_and_missing_files(bundle_dir, tmp_path):
    copy = _small_copy(bundle_dir, tmp_path / "copy")
    load_bundle(copy)  # intact

    model = copy / "backbones" / "aud-cqt.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"aud-cqt\.keras.*checksum mismatch"):
        load_bundle(copy)
    assert load_bundle(copy, verify=False).backbones["aud-cqt"] == model

    (copy / "fusion.keras").unlink()
    shutil.copyfile(bundle_dir / "backbones" / "aud-cqt.keras", model)
    with pytest.raises(DataError, match=r"fusion\.keras.*missing"):
        load_bundle(copy)

    with pytest.raises(DataError, match="not a model bundle"):
        load_bundle(tmp_path)
    meta = read_json(bundle_dir / BUNDLE_FILE)
    write_json(copy / BUNDLE_FILE, dict(meta, version=99))
    with pytest.raises(DataError, match="avsc-bundle version 99 is newer"):
        load_bundle(copy)
    write_json(copy / BUNDLE_FILE, dict(meta, format="avsc-bundle/1"))
    with pytest.raises(DataError, match="not a avsc-bundle record"):
        load_bundle(copy)


def _linked_models(models_root: Path, dest: Path) -> Path:
    for backbone in BACKBONES:
        (dest / backbone).mkdir(parents=True)
        (dest / backbone / "model.keras").symlink_to(models_root / backbone / "model.keras")
        shutil.copyfile(models_root / backbone / "config.json", dest / backbone / "config.json")
    return dest


def test_make_bundle_rejects_inconsistent_inputs(models_root, fusion_root, tmp_path):
    fusion = fusion_root / "f4-audio+visual"
    models = _linked_models(models_root, tmp_path / "models")

    config = read_json(models / "aud-gam" / "config.json")
    write_json(models / "aud-gam" / "config.json", dict(config, feature_config_hash="0123456789ab"))
    with pytest.raises(DataError, match="different feature configs"):
        make_bundle(models, fusion, tmp_path / "b1")
    assert not (tmp_path / "b1").exists()
    write_json(models / "aud-gam" / "config.json", config)

    (models / "vis-conv" / "model.keras").unlink()
    with pytest.raises(DataError, match=r"vis-conv/model\.keras: not found"):
        make_bundle(models, fusion, tmp_path / "b2")

    # A backbone other than the one whose embeddings trained the fusion model.
    shutil.copyfile(models_root / "vis-inc" / "model.keras", models / "vis-conv" / "model.keras")
    with pytest.raises(DataError, match="differs from the model whose embeddings trained"):
        make_bundle(models, fusion, tmp_path / "b3")

    # Backbone -> model folder (pipeline artifacts, each at a path of its own) works like the folder.
    mapping = {b: models_root / b for b in BACKBONES}
    mapped = make_bundle(mapping, fusion_root / "f1-visual", tmp_path / "b5")
    assert set(read_json(mapped / BUNDLE_FILE)["backbones"]) == {"vis-inc", "vis-conv"}
    with pytest.raises(DataError, match="reads vis-conv, but no model of vis-conv was given"):
        make_bundle({b: mapping[b] for b in ("aud-mel", "vis-inc")}, fusion_root / "f1-visual", tmp_path / "b6")

    with pytest.raises(ConfigError, match="not a visual-only fusion model"):
        make_bundle(models_root, fusion, tmp_path / "b4", visual_fusion_dir=fusion)

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a bundle; refusing"):
        make_bundle(models_root, fusion_root / "f1-visual", occupied)
    assert (occupied / "notes.txt").read_text() == "keep me"


# --- prediction -------------------------------------------------------------------------------


def test_predict_demo_video(predictor, videos):
    prediction = predictor.predict_file(videos["demo"])
    assert prediction.label in LABELS
    assert list(prediction.probabilities) == list(LABELS)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction.label == max(prediction.probabilities, key=prediction.probabilities.get)
    assert prediction.windows == 2  # a 2-s video, 1-s clips
    assert (prediction.modalities, prediction.method) == ("audio+visual", "f4")
    assert json.loads(json.dumps(prediction.to_dict()))["label"] == prediction.label


def test_predict_any_layout(predictor, videos):
    """5.1 sound at 44.1 kHz, a portrait 70x100 picture at 25 frames/s, 1.5 clips long."""
    from avsc.media.probe import probe_media

    prediction = predictor.predict_file(videos["surround"])
    assert prediction.label in LABELS
    duration = probe_media(videos["surround"]).duration_s  # 1.5 s plus the audio encoder's priming
    assert duration == pytest.approx(1.5, abs=0.1)
    assert prediction.windows == 2
    assert prediction.window_offsets == pytest.approx((0.0, duration - 1.0))  # last window ends at the end
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_long_video_averages_windows(predictor, videos):
    from avsc.features.spectrograms import compute_clip_features
    from avsc.media.decode import demux_audio, sample_frames

    path = videos["long"]
    prediction = predictor.predict_file(path)
    assert prediction.windows == 3
    assert prediction.window_offsets == (0.0, 1.0, 1.5)
    windows = np.array(prediction.window_probabilities)
    assert windows.shape == (3, len(LABELS))
    np.testing.assert_allclose(windows.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose([prediction.probabilities[label] for label in LABELS], windows.mean(axis=0), atol=1e-9)
    assert np.ptp(windows, axis=0).max() > 0  # the windows saw different content

    # The last window, end-aligned, recomputed from scratch and alone (batch of one).
    audio = demux_audio(path, FEATURES.audio, offset_s=1.5, duration_s=1.0)
    frames = sample_frames(path, FEATURES.frames, seconds=1.0, offset_s=1.5)
    features = compute_clip_features(audio, frames, FEATURES)
    alone = predictor.predict_features({k: v[None] for k, v in features.items()})
    np.testing.assert_allclose(alone[0], windows[2], atol=1e-5)


def test_video_without_audio(predictor, videos):
    path = videos["silent"]
    with pytest.raises(MediaError, match=rf"{path.name}: no audio track.*--allow-visual-only"):
        predictor.predict_file(path)

    visual = Predictor(
        predictor.bundle, predictor.embedding_models, predictor.fusion_models, allow_visual_only=True, graph=False
    )
    prediction = visual.predict_file(path)
    assert (prediction.modalities, prediction.method, prediction.windows) == ("visual", "f1", 1)
    assert prediction.label in LABELS
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    # A video with sound still uses the audio-visual model.
    assert visual.predict_file(videos["demo"]).modalities == "audio+visual"

    without = Predictor(
        replace(predictor.bundle, visual_fusion=None),
        predictor.embedding_models,
        predictor.fusion_models,
        allow_visual_only=True,
        graph=False,
    )
    with pytest.raises(MediaError, match=rf"{path.name}: no audio track.*no visual-only fusion model"):
        without.predict_file(path)


def test_predict_files_carries_on_past_bad_files(predictor, videos, tmp_path):
    paths = [videos["not_video"], tmp_path / "missing.mp4", videos["demo"]]
    results = dict(predictor.predict_files(paths))
    assert isinstance(results[str(videos["demo"])], type(predictor.predict_file(videos["demo"])))
    assert "notes.mp4" in results[str(videos["not_video"])]
    assert "missing.mp4: not found" in results[str(tmp_path / "missing.mp4")]


def _layers(model):
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def test_graph_and_eager_runs_agree(models_root, fusion_root, videos, tmp_path):
    out = make_bundle(models_root, fusion_root / "f2-audio", tmp_path / "bundle")
    eager = Predictor.load(out, graph=False)
    graph = Predictor(eager.bundle, eager.embedding_models, eager.fusion_models, graph=True)
    features = eager.window_features(videos["long"], [0.0, 1.0, 1.5], eager.bundle.fusion)
    np.testing.assert_allclose(graph.predict_features(features), eager.predict_features(features), atol=1e-5)


# --- command line -----------------------------------------------------------------------------


def test_cli_bundle_and_predict_json(models_root, fusion_root, videos, tmp_path, capsys, caplog):
    from avsc.cli import main

    # An audio-only bundle: its small models load in a moment, once per command.
    out = tmp_path / "bundle"
    assert (
        main(["bundle", "--models", str(models_root), "--fusion", str(fusion_root / "f2-audio"), "-o", str(out)]) == 0
    )
    bundle = load_bundle(out)
    assert (bundle.fusion.method, bundle.fusion.modalities) == ("f2", "audio")
    assert set(bundle.backbones) == {"aud-mel", "aud-gam", "aud-cqt"}
    assert str(out) in capsys.readouterr().out

    code = main(
        ["predict", str(videos["demo"]), str(videos["not_video"]), str(videos["long"]), "--bundle", str(out), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["path"] for line in lines] == [str(videos["demo"]), str(videos["not_video"]), str(videos["long"])]
    good = lines[0]
    assert good["label"] in LABELS and good["modalities"] == "audio" and good["windows"] == 2
    assert sum(good["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert lines[2]["windows"] == 3 and lines[2]["window_offsets"] == [0.0, 1.0, 1.5]
    assert "notes.mp4" in lines[1]["error"]
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and "notes.mp4" in errors[0]
    # Made without --manifest: every result says its training data is unknown (logged once).
    assert all(any("does not record whether" in w for w in line.get("warnings", [])) for line in (good, lines[2]))
    assert sum("does not record whether" in r.getMessage() for r in caplog.records) == 1


def test_cli_predict_text_output_and_exit_codes(models_root, fusion_root, videos, tmp_path, capsys):
    from avsc.cli import build_parser, main

    out = make_bundle(models_root, fusion_root / "f2-audio", tmp_path / "bundle")
    code = main(["predict", str(videos["demo"]), str(videos["silent"]), "--bundle", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    path, label, top = captured.out.strip().split("\t")
    assert (path, label in LABELS) == (str(videos["demo"]), True)
    assert 1.0 / len(LABELS) <= float(top) <= 1.0
    assert "silent.mp4: no audio track" in captured.err

    code = main(["predict", str(videos["not_video"]), str(tmp_path / "gone.mp4"), "--bundle", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""  # 1 whether some or all failed
    assert "notes.mp4" in captured.err and "gone.mp4" in captured.err

    code = main(["predict", str(videos["demo"]), "--bundle", str(tmp_path / "nowhere")])
    assert code == 1 and "not a model bundle" in capsys.readouterr().err
    args = build_parser().parse_args(["predict", "v.mp4", "--bundle", "b", "--allow-visual-only"])
    assert args.allow_visual_only


# --- what a player presents: silent and broken sound, streams of different lengths ---------


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> dict[str, Path]:
    from media_cases import make_nan_video

    from avsc.media.ffmpeg import run_ffmpeg

    root = tmp_path_factory.mktemp("odd")
    silent = root / "anullsrc.mp4"
    run_ffmpeg(
        silent,
        [
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=96x64:r=10:d=2",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=stereo",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            str(silent),
        ],
    )
    streams = {}
    for name, picture_s, sound_s in (("long_sound", 1, 3), ("short_sound", 3, 1)):
        streams[name] = root / f"{name}.mp4"
        run_ffmpeg(
            streams[name],
            [
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc=s=96x64:r=10:d={picture_s}",
                "-f",
                "lavfi",
                "-i",
                f"sine=f=440:d={sound_s}",
                "-c:v",
                "libx264",
                "-c:a",
                "aac",
                str(streams[name]),
            ],
        )
    return {"silent_track": silent, "nan": make_nan_video(root / "nan.mkv"), **streams}


def test_a_silent_track_is_treated_like_a_missing_one(predictor, odd_videos):
    path = odd_videos["silent_track"]
    with pytest.raises(MediaError, match=rf"{path.name}: the sound .* is digital silence.*--allow-visual-only"):
        predictor.predict_file(path)
    visual = Predictor(
        predictor.bundle, predictor.embedding_models, predictor.fusion_models, allow_visual_only=True, graph=False
    )
    prediction = visual.predict_file(path)
    assert prediction.modalities == "visual" and prediction.windows == 2
    assert any("digital silence throughout" in w for w in prediction.warnings)
    assert prediction.to_dict()["warnings"] == list(prediction.warnings)


def test_streams_of_different_lengths_are_classified(predictor, odd_videos):
    longer = predictor.predict_file(odd_videos["long_sound"])  # 1-s picture, 3 s of sound
    assert longer.window_offsets == (0.0, 1.0, 2.0) and longer.modalities == "audio+visual"
    shorter = predictor.predict_file(odd_videos["short_sound"])  # 3-s picture, 1 s of sound
    assert shorter.window_offsets == (0.0,)  # the windows after the sound ended are left out
    assert any("2 of 3 windows left out" in w for w in shorter.warnings)


def test_one_bad_file_never_stops_a_batch(predictor, odd_videos, videos, monkeypatch):
    paths = [odd_videos["nan"], odd_videos["silent_track"], videos["demo"], videos["not_video"]]
    results = dict(predictor.predict_files(paths))
    assert "nan.mkv" in results[str(odd_videos["nan"])] and "non-finite" in results[str(odd_videos["nan"])]
    assert "digital silence" in results[str(odd_videos["silent_track"])]
    assert not isinstance(results[str(videos["demo"])], str)

    real = predictor.predict_file

    def flaky(path):
        if Path(path).name == videos["demo"].name:
            raise ValueError("something nobody expected")
        return real(path)

    monkeypatch.setattr(predictor, "predict_file", flaky)
    results = dict(predictor.predict_files([videos["demo"], odd_videos["long_sound"]]))
    assert "unexpected error" in results[str(videos["demo"])] and "ValueError" in results[str(videos["demo"])]
    assert not isinstance(results[str(odd_videos["long_sound"])], str)


# --- the object store --------------------------------------------------------------------------


def test_bundle_and_videos_straight_from_the_object_store(s3_env, models_root, fusion_root, predictor, videos):
    """``avsc bundle`` reads model folders from and writes the bundle to s3://; ``avsc predict``
    loads that bundle and decodes an s3:// video in place, with the same result as locally."""
    from avsc.storage.sync import push_dir, push_file

    push_dir(models_root, s3_env.uri("models"), progress=False)
    push_dir(fusion_root / "f4-audio+visual", s3_env.uri("fusion/f4"), progress=False)
    bundle = make_bundle(s3_env.uri("models"), s3_env.uri("fusion/f4"), s3_env.uri("bundle"))
    assert bundle == s3_env.uri("bundle") and f"bundle/{BUNDLE_FILE}" in s3_env.keys("bundle/")
    push_file(videos["long"], s3_env.uri("videos/long.mp4"))
    remote = Predictor.load(s3_env.uri("bundle"), graph=False)
    there = remote.predict_file(s3_env.uri("videos/long.mp4"))
    here = predictor.predict_file(videos["long"])
    assert there.path == s3_env.uri("videos/long.mp4") and there.windows == here.windows
    np.testing.assert_allclose(
        list(there.probabilities.values()), list(here.probabilities.values()), rtol=1e-5, atol=1e-6
    )
    missing = dict(remote.predict_files([s3_env.uri("videos/none.mp4")]))[s3_env.uri("videos/none.mp4")]
    assert "videos/none.mp4" in missing and "X-Amz-Signature" not in missing


# --- inputs checked before any model loads; quiet TensorFlow --------------------------------


def test_bad_inputs_fail_before_any_model_loads(bundle_dir, videos, tmp_path, monkeypatch, capsys):
    from avsc.cli import main

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(Predictor, "load", no_models)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    for name in ("AVSC_S3_ENDPOINT", "AVSC_S3_ACCESS_KEY", "AVSC_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    missing, url = str(tmp_path / "missing.mp4"), "s3://videos/park.mp4"
    code = main(["predict", missing, str(folder), str(videos["not_video"]), url, "--bundle", str(bundle_dir), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.splitlines()
    assert len(errors) == 4, errors  # one line per input, in order, and nothing else (no TF log)
    assert errors[0] == (
        f"avsc predict: error: {missing}: file not found (check the path, or that the dataset is fully extracted)"
    )
    assert "folder.mp4: a folder, not a file" in errors[1]
    assert "notes.mp4" in errors[2] and "not a complete MP4" in errors[2]
    assert errors[3].startswith(f"avsc predict: error: {url}: object store not configured")
    assert [json.loads(line)["path"] for line in captured.out.splitlines()] == [
        missing,
        str(folder),
        str(videos["not_video"]),
        url,
    ]
    code = main(["predict", str(videos["demo"]), "--bundle", str(tmp_path / "nowhere")])
    assert code == 1 and "not a model bundle" in capsys.readouterr().err


def test_a_colon_in_a_relative_file_name_is_classified(bundle_dir, videos, tmp_path, monkeypatch, capsys, caplog):
    import logging
    import shutil

    from avsc.cli import main

    shutil.copy(videos["demo"], tmp_path / "scene: park.mp4")
    monkeypatch.chdir(tmp_path)
    assert check_videos(["scene: park.mp4"]) == {}
    with caplog.at_level(logging.INFO, logger="avsc"):
        assert main(["predict", "scene: park.mp4", "--bundle", str(bundle_dir)]) == 0
    path, label, _ = capsys.readouterr().out.strip().split("\t")
    assert path == "scene: park.mp4" and label in LABELS
    assert "sound: each video's own audio track" in caplog.text  # not a dataset WAV: said so


def test_tensorflow_starts_without_a_word_unless_verbose():
    import subprocess
    import sys

    code = "from avsc.cli.options import require_tensorflow; require_tensorflow(load=True, verbose={})"
    quiet = subprocess.run([sys.executable, "-c", code.format(False)], capture_output=True, text=True, check=True)
    assert quiet.stderr == ""
    loud = subprocess.run(
        [sys.executable, "-c", code.format(True) + "; import tensorflow"], capture_output=True, text=True, check=True
    )
    assert "oneDNN" in loud.stderr or "absl" in loud.stderr  # what the quiet start hides
