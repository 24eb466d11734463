"""Data identity: the store keys clips by what they are, readers see the current manifest's
labels and splits, and no output of other data is resumed, embedded or evaluated silently."""

from __future__ import annotations

import os

import numpy as np
import pytest
from features_factory import make_feature_store
from media_cases import make_video
from records_factory import write_model_info

from avsc.cli import main
from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.manifest import write_manifest
from avsc.errors import DataError
from avsc.evaluation.provenance import check_lineage
from avsc.features.preprocess import preprocess
from avsc.features.store import FeatureStore
from avsc.records import ModelInfo

CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))
CLIPS = ("airport-lisbon-1-1", "bus-lisbon-2-1", "park-paris-3-1", "tram-paris-4-1")
# A small, fast training (the quick preset's network with two stages).
FAST = ["--preset", "quick", "--set", "train.audio_stages=2", "--batch-size", "8", "--quiet"]


def _row(clip_id: str, split: str = "train", label: str | None = None) -> dict:
    scene, city, location, _ = clip_id.split("-")
    return {
        "clip_id": clip_id,
        "video": f"video/{clip_id}.mp4",
        "audio": None,
        "label": label or scene,
        "city": city,
        "location": f"{city}-{location}",
        "split": split,
    }


def _dataset(root, clips=CLIPS, seed=0):
    for number, clip_id in enumerate(clips):
        make_video(
            root / "video" / f"{clip_id}.mp4",
            seconds=1.0,
            width=64,
            height=48,
            tone_hz=300.0 * (number + 1),
            seed=seed + number,
        )
    return root


@pytest.fixture
def dataset(tmp_path):
    return _dataset(tmp_path / "dataset")


def _labels(store: FeatureStore) -> dict[str, tuple[str, str]]:
    return {row.clip_id: (row.label, row.split) for row in store.index.itertuples()}


def test_relabel_and_move_reach_readers_without_decoding_again(dataset, tmp_path):
    out = tmp_path / "features"
    rows = [_row(c) for c in CLIPS]
    first = preprocess(
        write_manifest(rows, tmp_path / "m1.parquet", dataset_root=dataset), out, config=CONFIG, progress=False
    )
    assert first.processed == 4
    before = FeatureStore.open(out)
    mel = before.read_clip("bus-lisbon-2-1", "mel")

    changed = [dict(rows[0], label="metro"), dict(rows[1], split="test"), *rows[2:]]
    again = preprocess(
        write_manifest(changed, tmp_path / "m2.parquet", dataset_root=dataset), out, config=CONFIG, progress=False
    )
    assert (again.processed, again.skipped_existing) == (0, 4)  # features are keyed by source
    after = FeatureStore.open(out)
    assert _labels(after)["airport-lisbon-1-1"] == ("metro", "train")
    assert _labels(after)["bus-lisbon-2-1"] == ("bus", "test")
    assert list(after.clips("train")["clip_id"]).count("bus-lisbon-2-1") == 0
    np.testing.assert_array_equal(after.read_clip("bus-lisbon-2-1", "mel"), mel)
    assert after.lineage.differences(before.lineage) == ["labels differ", "splits differ"]
    assert after.lineage.store_hash != before.lineage.store_hash


def test_a_changed_source_or_another_dataset_with_the_same_names_is_processed_again(dataset, tmp_path):
    out = tmp_path / "features"
    rows = [_row(c) for c in CLIPS]
    preprocess(write_manifest(rows, tmp_path / "m.parquet", dataset_root=dataset), out, config=CONFIG, progress=False)
    old = FeatureStore.open(out).read_clip("park-paris-3-1", "mel")
    video = dataset / "video" / "park-paris-3-1.mp4"
    make_video(video, seconds=1.0, width=64, height=48, tone_hz=2000.0, seed=99)
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    again = preprocess(tmp_path / "m.parquet", out, config=CONFIG, progress=False)
    assert (again.processed, again.skipped_existing) == (1, 3)
    new = FeatureStore.open(out).read_clip("park-paris-3-1", "mel")
    assert np.abs(new.astype(np.float32) - old.astype(np.float32)).max() > 1.0

    other = _dataset(tmp_path / "other", seed=50)  # same clip names, other recordings
    manifest = write_manifest(rows, tmp_path / "other.parquet", dataset_root=other)
    result = preprocess(manifest, out, config=CONFIG, progress=False)
    assert (result.processed, result.skipped_existing) == (4, 0)
    assert FeatureStore.open(out).lineage.dataset == "other"


def test_a_renamed_clip_leaves_the_index(dataset, tmp_path):
    out = tmp_path / "features"
    rows = [_row(c) for c in CLIPS]
    preprocess(write_manifest(rows, tmp_path / "m.parquet", dataset_root=dataset), out, config=CONFIG, progress=False)
    os.rename(dataset / "video" / "tram-paris-4-1.mp4", dataset / "video" / "tram-paris-4-2.mp4")
    renamed = [*rows[:3], _row("tram-paris-4-2")]
    result = preprocess(
        write_manifest(renamed, tmp_path / "m2.parquet", dataset_root=dataset), out, config=CONFIG, progress=False
    )
    assert (result.processed, result.skipped_existing) == (1, 3)
    assert sorted(FeatureStore.open(out).index["clip_id"]) == sorted([*CLIPS[:3], "tram-paris-4-2"])


def test_shard_indexes_of_different_manifests_are_refused(dataset, tmp_path):
    out = tmp_path / "features"
    rows = [_row(c) for c in CLIPS]
    preprocess(
        write_manifest(rows, tmp_path / "m.parquet", dataset_root=dataset),
        out,
        config=CONFIG,
        shard=(0, 2),
        progress=False,
    )
    moved = [dict(r, split="val") if r["clip_id"] == CLIPS[1] else r for r in rows]
    preprocess(
        write_manifest(moved, tmp_path / "m2.parquet", dataset_root=dataset),
        out,
        config=CONFIG,
        shard=(1, 2),
        progress=False,
    )
    with pytest.raises(
        DataError,
        match=r"shard-00001-of-00002.parquet: lists the clips of another manifest "
        r".*splits differ",
    ):
        FeatureStore.open(out)


# --------------------------------------------------------------------------- training and after


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two small stores of the same clips, indexed as from two manifests: ``relabelled``
    gives one clip another label (as ``avsc preprocess`` of a relabelled manifest does)."""
    from avsc.records import Lineage

    root = tmp_path_factory.mktemp("stores")
    per_class = {"train": 2, "val": 1, "test": 1}
    out = {}
    for name, labels_hash in (("a", "1" * 16), ("relabelled", "2" * 16)):
        folder = make_feature_store(root / name, per_class=per_class, features=("mel",), part_clips=16)
        lineage = Lineage("synth", labels_hash * 1, clips_hash="c" * 16, labels_hash=labels_hash, splits_hash="s" * 16)
        _rewrite_index(folder, lineage, relabel=name == "relabelled")
        out[name] = folder
    return out


def _rewrite_index(root, lineage, relabel: bool):
    from avsc.features.store_writer import write_index

    store = FeatureStore.open(root)
    index = store.index.copy()
    if relabel:
        index.loc[0, "label"] = "tram" if index.loc[0, "label"] != "tram" else "bus"
    rows = index.assign(part=[p[len(str(root)) + 1 :] for p in index["part"]]).to_dict("records")
    write_index(root, (0, 1), rows, lineage=lineage, features=list(store.specs))


def _train(features, out, checkpoints, epochs, capsys):
    code = main(
        [
            "train",
            "aud-mel",
            str(features),
            "-o",
            str(out),
            "--checkpoints",
            str(checkpoints),
            "--epochs",
            str(epochs),
            *FAST,
        ]
    )
    return code, capsys.readouterr().err


def test_resume_on_other_data_or_fewer_epochs_is_refused(stores, tmp_path, capsys):
    checkpoints = tmp_path / "ck"
    code, err = _train(stores["a"], tmp_path / "mA", checkpoints, 2, capsys)
    assert code == 0, err
    info = ModelInfo.read(tmp_path / "mA")
    assert info.lineage == FeatureStore.open(stores["a"]).lineage

    code, err = _train(stores["relabelled"], tmp_path / "mB", checkpoints, 2, capsys)
    assert code == 1
    assert err.strip().count("\n") == 0  # one line
    assert "checkpoint was made from other data (labels differ)" in err
    assert not (tmp_path / "mB" / "model.keras").exists()

    code, err = _train(stores["a"], tmp_path / "mD", checkpoints, 1, capsys)
    assert code == 2 and "checkpointed after epoch 2, more than train.epochs = 1" in err
    assert not (tmp_path / "mD" / "model.keras").exists()

    code, err = (
        main(
            [
                "train",
                "aud-mel",
                str(stores["a"]),
                "-o",
                str(tmp_path / "mE"),
                "--checkpoints",
                str(checkpoints),
                "--epochs",
                "2",
                "--learning-rate",
                "0.5",
                *FAST,
            ]
        ),
        capsys.readouterr().err,
    )
    assert code == 2 and "train.learning_rate" in err and "other settings" in err

    # The model is not embedded with a store of other data.
    code = main(
        ["embed", str(tmp_path / "mA"), str(stores["relabelled"]), "-o", str(tmp_path / "e.parquet"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "the model was made from other data (labels differ)" in err, err

    # A corrupted part of its own store: one line from inside the embedding stream.
    part = FeatureStore.open(stores["a"]).parts("test")[0].location
    with open(part, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 3 : len(data) // 3 + 1024] = bytes(1024)
    with open(part, "wb") as handle:
        handle.write(bytes(data))
    code = main(["embed", str(tmp_path / "mA"), str(stores["a"]), "-o", str(tmp_path / "e.parquet"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("avsc embed: error: ") and "\n" not in err and part in err, err


def test_evaluation_inputs_of_other_data_are_refused(tmp_path):
    from avsc.records import Lineage

    ours = Lineage("ds", "a" * 16, "b" * 16, "c" * 16, "d" * 16, "e" * 16)
    theirs = Lineage("dsB", "f" * 16, "1" * 16, "c" * 16, "2" * 16, "e" * 16)
    write_model_info(tmp_path / "aud-mel", "aud-mel", lineage=ours)
    write_model_info(tmp_path / "vis-inc", "vis-inc", lineage=theirs)
    models = {"aud-mel": tmp_path / "aud-mel", "vis-inc": tmp_path / "vis-inc"}
    with pytest.raises(
        DataError,
        match=r"vis-inc/config.json: the vis-inc model was made from other data "
        r"\(dataset 'dsB' there, 'ds' here; labels differ\)",
    ):
        check_lineage(models=models)
    assert check_lineage(models={"aud-mel": models["aud-mel"]})["store_hash"] == "b" * 16


def test_a_fusion_model_of_other_data_is_not_reused(tmp_path, capsys):
    """Embeddings of other data from the same models (same model hashes, same settings): the
    finished fusion model in the output folder is refused, naming what differs, instead of
    being returned as this data's."""
    import dataclasses

    from embeddings_factory import make_embeddings
    from records_factory import LINEAGE

    small = {"train": 4, "val": 2, "test": 2}
    first = make_embeddings(tmp_path / "a", width=8, per_class=small)
    other = make_embeddings(
        tmp_path / "b",
        width=8,
        per_class=small,
        lineage=dataclasses.replace(LINEAGE, dataset="other", manifest_hash="feedfacefeedface"),
    )
    args = [
        "--method",
        "all",
        "--modalities",
        "audio+visual",
        "-o",
        str(tmp_path / "fusion"),
        "--quiet",
        "--set",
        "fusion.max_steps=20",
    ]
    assert main(["fuse", str(first), *args]) == 0
    assert main(["fuse", str(first), *args]) == 0  # the same data: the finished model is reused
    capsys.readouterr()
    assert main(["fuse", str(other), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fusion.json: the fusion model was made from other data" in err
    assert "dataset 'demo' there, 'other' here" in err
