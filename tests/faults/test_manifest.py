"""A strict manifest: unknown splits, one clip id on two different rows, repeated rows and
paths that leave the dataset root, wherever a manifest is read."""

from __future__ import annotations

import logging

import pytest

from avsc.data.manifest import read_manifest, write_manifest
from avsc.errors import DataError


def _row(clip_id: str, split: str = "train", label: str | None = None, video: str | None = None) -> dict:
    scene, city, location, _ = clip_id.split("-")
    return {
        "clip_id": clip_id,
        "video": video or f"video/{clip_id}.mp4",
        "audio": None,
        "label": label or scene,
        "city": city,
        "location": f"{city}-{location}",
        "split": split,
    }


def _write(tmp_path, rows, name="manifest.parquet"):
    return write_manifest(rows, tmp_path / name, dataset_root=tmp_path / "dataset")


def test_an_unknown_split_is_an_error_naming_the_row(tmp_path):
    path = _write(tmp_path, [_row("bus-lyon-1-1"), _row("park-lyon-2-1", split="trian")])
    with pytest.raises(DataError, match=r"unknown split: row 1 \(park-lyon-2-1: 'trian'\)") as caught:
        read_manifest(path)
    assert str(path) in str(caught.value)


def test_one_clip_on_two_different_rows_names_both(tmp_path):
    path = _write(tmp_path, [_row("bus-lyon-1-1"), _row("park-lyon-2-1"), _row("bus-lyon-1-1", split="test")])
    with pytest.raises(DataError, match=r"'bus-lyon-1-1' is on two different rows, 0 and 2 \(split 'train' / 'test'\)"):
        read_manifest(path)


def test_an_exactly_repeated_row_is_dropped_with_a_warning(tmp_path, caplog):
    path = _write(tmp_path, [_row("bus-lyon-1-1"), _row("park-lyon-2-1"), _row("bus-lyon-1-1")])
    with caplog.at_level(logging.WARNING, logger="avsc"):
        frame = read_manifest(path)
    assert sorted(frame["clip_id"]) == ["bus-lyon-1-1", "park-lyon-2-1"]
    assert "1 repeated row(s) dropped (rows 2)" in caplog.text


@pytest.mark.parametrize("video", ["../../x.mp4", "video/../../x.mp4", "/etc/x.mp4"])
@pytest.mark.parametrize("root", [None, "s3://bucket/dataset"])
def test_a_path_outside_the_dataset_root_is_refused(tmp_path, video, root):
    path = _write(tmp_path, [_row("bus-lyon-1-1"), _row("park-lyon-2-1", video=video)])
    with pytest.raises(DataError, match=r"row 1 \(park-lyon-2-1\): video path .* is outside the dataset root"):
        read_manifest(path, dataset_root=root)


def test_the_lineage_names_what_differs(tmp_path):
    rows = [_row("bus-lyon-1-1"), _row("park-lyon-2-1"), _row("tram-lyon-3-1", split="test")]
    base = read_manifest(_write(tmp_path, rows)).attrs["lineage"]
    assert base.dataset == "dataset"
    same = read_manifest(_write(tmp_path, rows[::-1], "reordered.parquet")).attrs["lineage"]
    assert same == base  # row order is not data
    relabelled = [dict(rows[0], label="metro"), *rows[1:]]
    moved = [rows[0], dict(rows[1], split="val"), rows[2]]
    renamed = [rows[0], rows[1], _row("tram-lyon-3-2", split="test")]
    for changed, words in (
        (relabelled, ["labels differ"]),
        (moved, ["splits differ"]),
        (renamed, ["clips differ", "labels differ", "splits differ"]),
    ):
        other = read_manifest(_write(tmp_path, changed, "changed.parquet")).attrs["lineage"]
        assert other.manifest_hash != base.manifest_hash
        assert other.differences(base) == words
