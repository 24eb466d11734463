"""The synthetic demo dataset: TAU layout, location-disjoint folds, determinism, content design."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

from avsc.data.demo import make_demo_dataset
from avsc.data.demo_content import synth_audio, synth_frames
from avsc.errors import ConfigError
from avsc.labels import CITIES, LABELS
from avsc.media.probe import probe_media

SMALL = dict(
    classes=3, clips_per_class=6, locations_per_class=3, seconds=1.0, width=64, height=48, fps=5.0, progress=False
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "TAU-demo"
    result = make_demo_dataset(root, seed=3, **SMALL)
    assert (result.n_clips, result.n_train + result.n_evaluate) == (18, 18)
    return root


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text().splitlines(), delimiter="\t"))
    return rows[0], rows[1:]


def test_layout_and_columns(demo):
    header, meta = _read(demo / "meta.csv")
    assert header == ["filename_audio", "filename_video", "scene_label", "identifier"]
    assert len(meta) == 18
    for audio, video, label, identifier in meta:
        stem = Path(video).stem
        scene, city, location, segment = stem.split("-")
        assert audio == f"audio/{stem}.wav" and video == f"video/{stem}.mp4"
        assert scene == label and label in LABELS[:3] and city in CITIES
        assert identifier == f"{city}-{location}" and segment.isdigit()
        assert (demo / audio).is_file() and (demo / video).is_file()
    for name in ("fold1_train.csv", "fold1_evaluate.csv"):
        header, _ = _read(demo / "evaluation_setup" / name)
        assert header == ["filename_audio", "filename_video", "scene_label"]
    header, test_rows = _read(demo / "evaluation_setup" / "fold1_test.csv")
    _, evaluate_rows = _read(demo / "evaluation_setup" / "fold1_evaluate.csv")
    assert header == ["filename_audio", "filename_video"]
    assert test_rows == [row[:2] for row in evaluate_rows]
    assert "SYNTHETIC" in (demo / "README.txt").read_text()
    assert not list(demo.rglob("*.part.mp4")) and not list(demo.rglob("*.tmp"))


def test_media_format(demo):
    video = sorted((demo / "video").glob("*.mp4"))[0]
    info = probe_media(video)
    assert (info.width, info.height, info.fps) == (64, 48, 5.0)
    assert (info.audio_channels, info.audio_rate) == (2, 48000)
    with wave.open(str(demo / "audio" / f"{video.stem}.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 3, 48000)
        assert wav.getnframes() == 48000


def test_folds_are_location_disjoint_with_enough_locations_per_class(demo):
    _, meta = _read(demo / "meta.csv")
    location = {video: identifier for _, video, _, identifier in meta}
    folds = {}
    for fold in ("train", "evaluate"):
        _, rows = _read(demo / "evaluation_setup" / f"fold1_{fold}.csv")
        folds[fold] = {(label, location[video]) for _, video, label in rows}
    train_locs = {loc for _, loc in folds["train"]}
    evaluate_locs = {loc for _, loc in folds["evaluate"]}
    assert not train_locs & evaluate_locs
    for label in LABELS[:3]:
        assert len({loc for lab, loc in folds["train"] if lab == label}) >= 2
        assert len({loc for lab, loc in folds["evaluate"] if lab == label}) >= 1


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    again = make_demo_dataset(tmp_path / "again", seed=3, **SMALL).root
    for name in ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv"):
        assert (again / name).read_bytes() == (demo / name).read_bytes()
    wav = sorted((demo / "audio").glob("*.wav"))[0].name
    assert (again / "audio" / wav).read_bytes() == (demo / "audio" / wav).read_bytes()
    other = make_demo_dataset(tmp_path / "other", seed=4, **SMALL).root
    assert (other / "audio" / wav).read_bytes() != (demo / "audio" / wav).read_bytes()


def test_rerun_makes_only_missing_clips(tmp_path):
    root = make_demo_dataset(tmp_path / "d", seed=0, **{**SMALL, "classes": 1}).root
    videos = sorted((root / "video").glob("*.mp4"))
    kept_mtime = videos[1].stat().st_mtime_ns
    original = videos[0].read_bytes()
    videos[0].unlink()
    stale = root / "video" / f".{videos[0].stem}.123.456.part.mp4"  # as a killed run leaves it
    stale.write_bytes(b"half")
    make_demo_dataset(root, seed=0, **{**SMALL, "classes": 1})
    assert not stale.exists()
    assert videos[0].read_bytes() == original
    assert videos[1].stat().st_mtime_ns == kept_mtime


@pytest.mark.parametrize("bad", [{"locations_per_class": 2}, {"classes": 11}, {"clips_per_class": 2}])
def test_impossible_settings_are_refused(tmp_path, bad):
    with pytest.raises(ConfigError):
        make_demo_dataset(tmp_path / "x", **{**SMALL, **bad})


def _band_energy(audio: np.ndarray, sample_rate: int, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio[:, 0])) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum() / spectrum.sum())


def test_audio_alike_pairs_share_their_sound_others_differ():
    def sound(label, seed):
        rng = np.random.default_rng(seed)
        return synth_audio(label, 1.0, 16000, rng, np.random.default_rng(seed + 100))

    low = {
        label: np.mean([_band_energy(sound(label, s), 16000, 40, 450) for s in range(4)])
        for label in ("bus", "tram", "park")
    }
    assert low["bus"] > 0.3 and low["tram"] > 0.3  # vehicle rumble, alike
    assert low["park"] < 0.1  # birds are high-pitched


def test_visually_alike_pairs_share_their_look_others_differ():
    def mean_colour(label, seed):
        frames = synth_frames(label, 0.4, 64, 48, 5.0, np.random.default_rng(seed), np.random.default_rng(seed + 100))
        return frames.reshape(-1, 3).mean(axis=0)

    metro = np.mean([mean_colour("metro", s) for s in range(4)], axis=0)
    station = np.mean([mean_colour("metro_station", s) for s in range(4)], axis=0)
    park = np.mean([mean_colour("park", s) for s in range(4)], axis=0)
    assert np.linalg.norm(metro - station) < 0.5 * np.linalg.norm(metro - park)
