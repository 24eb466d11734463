"""The data path against a real S3 server (moto): every step reads and writes ``s3://`` directly.

Ingest probes the videos in place, preprocessing decodes only its shard's videos from the store
and writes its parts there, training and embedding stream one feature from it, and a training
killed with SIGKILL resumes from its checkpoints on the store in a new process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.config import AudioConfig, FeatureConfig, FrameConfig, load_config
from avsc.storage import locations, sync

CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(size=32))
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from avsc.data.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "demo",
        classes=2,
        clips_per_class=6,
        locations_per_class=3,
        seconds=1.0,
        width=64,
        height=48,
        fps=5.0,
        progress=False,
    ).root


def _no_pulls(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dataset must not be copied")

    monkeypatch.setattr(sync, "pull_dir", refuse)
    monkeypatch.setattr(sync, "pull_file", refuse)


def test_ingest_and_preprocess_read_the_store_in_place(s3_env, demo, monkeypatch):
    from avsc.data.ingest import ingest_dataset
    from avsc.data.manifest import read_manifest
    from avsc.features import preprocess as pp
    from avsc.features.shards import shard_rows
    from avsc.features.store import FeatureStore
    from avsc.records import StoreSummary

    sync.push_dir(demo, s3_env.uri("tau"), progress=False)
    _no_pulls(monkeypatch)
    opened: list[str] = []  # every object ffmpeg was given a presigned URL for
    real = locations.ffmpeg_input
    monkeypatch.setattr(locations, "ffmpeg_input", lambda uri: opened.append(str(uri)) or real(uri))

    manifest = s3_env.uri("runs/r1/manifest.parquet")
    result = ingest_dataset(s3_env.uri("tau"), manifest, val_fraction=0.3, progress=False)
    assert result.n_clips == 12 and not result.rejected
    assert set(s3_env.keys("runs/r1/")) == {"runs/r1/manifest.parquet", "runs/r1/manifest.rejected.json"}
    frame = read_manifest(manifest)
    assert frame.attrs["dataset_root"] == s3_env.uri("tau")
    assert all(v.startswith(s3_env.uri("tau/video/")) for v in frame["video_path"])
    assert sorted(opened) == sorted(frame["video_path"])  # each video probed once, in place

    opened.clear()
    store = s3_env.uri("runs/r1/features")
    shard = shard_rows(frame, (1, 2))
    first = pp.preprocess(manifest, store, config=CONFIG, shard=(1, 2), progress=False, part_clips=2)
    assert first.processed == len(shard) and not first.rejected
    # This shard's media only, each read in place by range: its videos (frames) and, the
    # dataset having WAVs (data.audio_source = auto), their WAVs (sound).
    assert set(shard["audio_source"]) == {"wav"}
    assert sorted(set(opened)) == sorted([*shard["video_path"], *shard["audio_path"]])
    again = pp.preprocess(manifest, store, config=CONFIG, shard=(1, 2), progress=False)
    assert again.processed == 0 and again.skipped_existing == len(shard)
    keys = s3_env.keys("runs/r1/features/")
    assert "runs/r1/features/store.json" in keys and "runs/r1/features/summary.json" in keys
    assert any(k.startswith("runs/r1/features/parts/train/shard-00001-of-00002-") for k in keys)
    assert StoreSummary.read(store).processed == len(shard)
    opened_store = FeatureStore.open(store)
    assert sorted(opened_store.index["clip_id"]) == sorted(shard["clip_id"])
    assert opened_store.read_clip(shard["clip_id"].iloc[0], "mel").shape == (128, 72, 2)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    from features_factory import make_feature_store

    return make_feature_store(
        tmp_path_factory.mktemp("features") / "features",
        per_class={"train": 4, "val": 2, "test": 1},
        n_bins=16,
        frames=24,
        size=32,
        part_clips=6,
    )


def test_streams_from_s3_equal_streams_from_disk(s3_env, local_store):
    pytest.importorskip("tensorflow")
    from avsc.features.store import FeatureStore
    from avsc.training.streams import eval_dataset, train_dataset

    sync.push_dir(local_store, s3_env.uri("features"), progress=False)
    here, there = FeatureStore.open(local_store), FeatureStore.open(s3_env.uri("features"))
    assert there.parts("train")[0].location.startswith("s3://")
    for backbone, extra in (("aud-cqt", {}), ("vis-inc", {"frames_per_clip": 1})):
        a = [
            (x.numpy(), lam.numpy(), y.numpy())
            for (x, lam, _), y in train_dataset(here, backbone, batch_size=7, seed=3, **extra)
        ]
        b = [
            (x.numpy(), lam.numpy(), y.numpy())
            for (x, lam, _), y in train_dataset(there, backbone, batch_size=7, seed=3, **extra)
        ]
        assert len(a) == len(b) > 1
        for batch_a, batch_b in zip(a, b, strict=True):
            for one, other in zip(batch_a, batch_b, strict=True):
                np.testing.assert_array_equal(one, other)
    val_here = np.concatenate([x.numpy() for x in eval_dataset(here, "vis-inc", "val", batch_size=5)])
    val_there = np.concatenate([x.numpy() for x in eval_dataset(there, "vis-inc", "val", batch_size=5)])
    np.testing.assert_array_equal(val_here, val_there)


def _cli(*args: str, env: dict) -> subprocess.Popen:
    code = "import sys; from avsc.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def test_a_killed_training_resumes_from_checkpoints_on_the_store(s3_env, tmp_path):
    """SIGKILL during epoch 3, checkpoints on S3; a new process with an empty output folder
    continues at epoch 3 with the history of epochs 1 and 2."""
    pytest.importorskip("tensorflow")
    from features_factory import make_feature_store

    store = make_feature_store(
        tmp_path / "features", per_class={"train": 24, "val": 2}, features=("mel",), n_bins=16, frames=48, part_clips=16
    )
    sync.push_dir(store, s3_env.uri("features"), progress=False)
    checkpoints = s3_env.uri("checkpoints/aud-mel-1")
    state_uri = locations.join(checkpoints, "state.json")
    settings = tmp_path / "small.toml"  # a small network: the test is about resuming, not learning
    settings.write_text("[train]\naudio_stages = 2\naudio_base_filters = 4\n")
    args = [
        "train",
        "aud-mel",
        s3_env.uri("features"),
        "--checkpoints",
        checkpoints,
        "--preset",
        "quick",
        "--config",
        str(settings),
        "--epochs",
        "5",
        "--batch-size",
        "4",
        "--quiet",
    ]
    first = _cli(*args, "-o", str(tmp_path / "out-1"), env=_env())
    state = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if locations.exists(state_uri):
            state = locations.read_json(state_uri)
            if state["epoch"] >= 2:
                break
        time.sleep(0.05)
    assert first.poll() is None, f"training ended before it could be killed: {first.communicate()[1][-2000:]}"
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert state is not None and state["epoch"] == 2, state
    assert locations.read_json(state_uri)["epoch"] == 2  # killed during epoch 3: nothing later committed

    out = tmp_path / "out-2"  # a new, empty output folder, as a retried pod has
    second = _cli(*[a for a in args if a != "--quiet"], "-o", str(out), env=_env())  # INFO: the resume line
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert "resuming after epoch 2 of 5" in err
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2, 3, 4, 5]
    assert history[:2] == state["history"]  # the same history, continued
    final = locations.read_json(state_uri)
    assert final["epoch"] == 5 and final["history"] == history
    names = {k.rsplit("/", 1)[1] for k in s3_env.keys("checkpoints/aud-mel-1/")}
    assert names == {"state.json", final["last"], final["best"]}
    assert not (out / "checkpoints").exists()  # nothing of the checkpoints in the model folder


def test_train_and_embed_read_and_write_the_store(s3_env, local_store):
    pytest.importorskip("tensorflow")
    from avsc.training.backbone import train_backbone
    from avsc.training.embeddings import embed_clips, read_embeddings

    sync.push_dir(local_store, s3_env.uri("features"), progress=False)
    config = load_config(preset="quick", overrides={"train": {"epochs": 1, "audio_stages": 2, "batch_size": 8}}).train
    model_dir = s3_env.uri("runs/r2/models/aud-gam")
    result = train_backbone("aud-gam", s3_env.uri("features"), model_dir, config=config, progress=False)
    assert result.model_dir == model_dir and result.epochs_run == 1
    keys = set(s3_env.keys("runs/r2/models/aud-gam/"))
    assert {
        f"runs/r2/models/aud-gam/{n}"
        for n in ("model.keras", "config.json", "history.json", "val_metrics.json", "checkpoints/state.json")
    } <= keys
    out = s3_env.uri("runs/r2/embeddings/aud-gam.parquet")
    embedded = embed_clips(model_dir, s3_env.uri("features"), out, progress=False)
    table = read_embeddings(out)
    assert embedded.n_clips == 70 and table.fc10.shape == (70, 10)
    assert list(table.clip_ids) == sorted(table.clip_ids)


def test_inspect_reads_a_video_from_and_writes_its_files_to_the_store(s3_env, demo):
    from avsc.inference.inspect import inspect_media

    video = sorted((demo / "video").glob("*.mp4"))[0]
    sync.push_file(video, s3_env.uri(f"tau/{video.name}"))
    result = inspect_media(s3_env.uri(f"tau/{video.name}"), s3_env.uri("inspect"), CONFIG)
    assert result.out_dir == s3_env.uri("inspect") and result.preprocess == "kept"
    keys = s3_env.keys("inspect/")
    assert "inspect/media.json" in keys and any(k.endswith(".png") for k in keys)
    assert video.name in locations.read_json(s3_env.uri("inspect/media.json"))["file"]


def test_store_errors_on_s3_are_one_line_and_say_what_to_do(s3_env, monkeypatch):
    from avsc.errors import DataError, StoreError
    from avsc.features.store import FeatureStore

    with pytest.raises(DataError, match=r"s3://.*/nothing: not a feature store .*avsc preprocess"):
        FeatureStore.open(s3_env.uri("nothing"))
    monkeypatch.delenv("AVSC_S3_SECRET_KEY")
    with pytest.raises(StoreError, match="AVSC_S3_SECRET_KEY not set"):
        FeatureStore.open(s3_env.uri("nothing"))
