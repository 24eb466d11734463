"""Integrity: flipped bytes in a part, a JPEG or a source video are caught and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from features_factory import make_feature_store
from media_cases import make_video

from avsc.cli import main
from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.manifest import write_manifest
from avsc.errors import DataError
from avsc.features.part_reader import read_part_feature
from avsc.features.part_writer import EncodedClip, write_part
from avsc.features.preprocess import preprocess
from avsc.features.store import FeatureStore
from avsc.features.store_format import value_digest


def _flip(path: Path, offset: int, length: int, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8)
    data[offset : offset + length] = bytes(
        np.bitwise_xor(np.frombuffer(data[offset : offset + length], np.uint8), noise | 1)
    )
    path.write_bytes(bytes(data))


@pytest.fixture
def store(tmp_path):
    return make_feature_store(
        tmp_path / "features",
        per_class={"train": 2, "val": 1, "test": 1},
        n_bins=32,
        frames=48,
        features=("mel", "frames"),
        part_clips=40,
    )


def _first_train_part(root) -> Path:
    return Path(FeatureStore.open(root).parts("train")[0].location)


def test_flipped_bytes_in_a_part_fail_train_in_one_line(store, tmp_path, capsys):
    part = _first_train_part(store)
    _flip(part, part.stat().st_size // 4, 4096)  # inside the mel column
    code = main(
        [
            "train",
            "aud-mel",
            str(store),
            "-o",
            str(tmp_path / "m"),
            "--epochs",
            "1",
            "--quiet",
            "--preset",
            "quick",
            "--set",
            "train.audio_stages=2",
            "--batch-size",
            "8",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("avsc train: error: ") and "\n" not in err
    assert str(part) in err and ("CRC" in err or "checksum" in err or "SHA-256" in err)


def test_a_part_whose_values_do_not_match_their_digest_names_the_clip(store):
    store_ = FeatureStore.open(store)
    part = store_.parts("train")[0]
    spec = store_.specs["mel"]
    rows = pq.read_table(part.location).to_pylist()
    clips = []
    for number, row in enumerate(rows):
        values = {"mel": row["mel"], "frames": row["frames"]}
        if number == 1:  # one value changed, its recorded digest kept: a valid Parquet file
            mel = bytearray(values["mel"])
            mel[100:104] = b"\x00\x7c\x00\x7c"  # float16 +inf twice
            values["mel"] = bytes(mel)
        clips.append(
            EncodedClip(
                row["clip_id"],
                row["label"],
                row["split"],
                values,
                row["source"],
                {"mel": row["mel_sha256"], "frames": row["frames_sha256"]},
            )
        )
    write_part(part.location, clips, store_.specs)
    expected = rf"clip '{rows[1]['clip_id']}': its mel bytes do not match their recorded SHA-256"
    with pytest.raises(DataError, match=expected):
        read_part_feature(part, spec)
    with pytest.raises(DataError, match="do not match"):
        store_.read_clip(rows[1]["clip_id"], "mel")
    # The digests of the index catch a part replaced by another valid one as well.
    write_part(
        part.location,
        [
            EncodedClip(
                c.clip_id,
                c.label,
                c.split,
                c.values,
                c.source,
                {"mel": value_digest(c.values["mel"]), "frames": c.digests["frames"]},
            )
            for c in clips
        ],
        store_.specs,
    )
    with pytest.raises(DataError, match=rf"clip '{rows[1]['clip_id']}'.*replaced"):
        read_part_feature(part, spec)


def test_flipped_bytes_in_a_stored_jpeg_are_caught(store):
    part = _first_train_part(store)
    data = part.read_bytes()
    jpeg = data.find(b"\xff\xd8\xff")  # the first frame of the first clip
    _flip(part, jpeg + 600, 64)
    opened = FeatureStore.open(store)
    with pytest.raises(DataError, match=str(part)):
        opened.read_clip(opened.parts("train")[0].clip_ids[0], "frames")


def test_a_frame_that_does_not_decode_names_the_part_and_the_clip(store):
    opened = FeatureStore.open(store)
    part = opened.parts("train")[0]
    rows = pq.read_table(part.location).to_pylist()
    clips = []
    for number, row in enumerate(rows):
        frames = list(row["frames"])
        if number == 0:
            frames[1] = frames[1][: len(frames[1]) // 2]  # a truncated JPEG, digest made to match
        clips.append(
            EncodedClip(
                row["clip_id"],
                row["label"],
                row["split"],
                {"mel": row["mel"], "frames": frames},
                row["source"],
                {"mel": row["mel_sha256"], "frames": value_digest(frames)},
            )
        )
    write_part(part.location, clips, opened.specs)
    with pytest.raises(DataError, match=rf"{part.location}: clip '{rows[0]['clip_id']}': a frame does not decode"):
        read_part_feature(part.location, opened.specs["frames"])


def test_a_video_with_decode_errors_is_rejected_in_ffmpegs_words(tmp_path):
    root = tmp_path / "dataset"
    good, bad = "bus-lyon-1-1", "park-lyon-2-1"
    for clip_id in (good, bad):
        make_video(root / "video" / f"{clip_id}.mp4", seconds=4.0, width=160, height=120)
    video = root / "video" / f"{bad}.mp4"
    data = video.read_bytes()
    start = data.find(b"mdat") + 8
    _flip(video, start + (len(data) - start) // 2, 2000)
    rows = [
        {
            "clip_id": c,
            "video": f"video/{c}.mp4",
            "audio": None,
            "label": c.split("-")[0],
            "city": "lyon",
            "location": f"lyon-{n}",
            "split": "train",
        }
        for n, c in enumerate((good, bad))
    ]
    manifest = write_manifest(rows, tmp_path / "m.parquet", dataset_root=root)
    config = FeatureConfig(audio=AudioConfig(clip_seconds=4.0), frames=FrameConfig(fps=2.0, size=32))
    result = preprocess(manifest, tmp_path / "features", config=config, progress=False)
    assert result.processed == 1
    assert [item["clip_id"] for item in result.rejected] == [bad]
    assert "decode error(s)" in result.rejected[0]["reason"] and f"{bad}.mp4" in result.rejected[0]["reason"]
