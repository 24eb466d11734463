"""Nothing finished is lost: ``avsc preprocess`` killed (SIGKILL) or evicted (SIGTERM) midway
keeps the clips it finished, and a re-run processes only the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from media_cases import make_video

from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.data.manifest import write_manifest
from avsc.features.preprocess import preprocess
from avsc.features.store import FeatureStore
from avsc.features.store_writer import scan_parts

SCENES = ("airport", "bus", "metro", "park", "tram", "shopping_mall")
CLIPS = tuple(f"{scene}-lyon-{n}-{k}" for n, scene in enumerate(SCENES) for k in (1, 2))  # 12
CONFIG = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))
SETTINGS = [
    "--set",
    "features.audio.clip_seconds=1.0",
    "--set",
    "features.frames.fps=2.0",
    "--set",
    "features.frames.size=32",
]
WAIT_S = 300  # generous: the machine may be busy; the run itself takes seconds


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    rows = []
    for number, clip_id in enumerate(CLIPS):
        make_video(
            root / "video" / f"{clip_id}.mp4",
            seconds=1.0,
            width=64,
            height=48,
            tone_hz=200.0 + 50 * number,
            seed=number,
        )
        scene, city, location, _ = clip_id.split("-")
        rows.append(
            {
                "clip_id": clip_id,
                "video": f"video/{clip_id}.mp4",
                "audio": None,
                "label": scene,
                "city": city,
                "location": f"{city}-{location}",
                "split": "train",
            }
        )
    return write_manifest(rows, root / "manifest.parquet", dataset_root=root)


def _start(manifest, out, *flags):
    command = [
        sys.executable,
        "-c",
        "import sys; from avsc.cli import main; sys.exit(main())",
        "-v",
        "preprocess",
        str(manifest),
        "-o",
        str(out),
        "--quiet",
        *SETTINGS,
        *flags,
    ]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _wait_for_finished(process, count: int) -> list[str]:
    """Read the run's log until ``count`` clips are finished; returns the lines read."""
    lines, finished = [], 0
    deadline = time.monotonic() + WAIT_S
    while finished < count and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        finished += " finished " in line
    assert finished >= count, "".join(lines)
    return lines


def _rerun_processes_only_the_rest(manifest, out, kept: int) -> None:
    result = preprocess(manifest, out, config=CONFIG, progress=False)
    assert (result.skipped_existing, result.processed, result.rejected) == (kept, len(CLIPS) - kept, [])
    assert sorted(FeatureStore.open(out).index["clip_id"]) == sorted(CLIPS)


def test_sigkill_loses_at_most_the_last_interval(manifest, tmp_path):
    out = tmp_path / "features"
    process = _start(manifest, out, "--flush-seconds", "0")  # every finished clip written at once
    _wait_for_finished(process, 4)
    process.kill()
    process.wait(timeout=WAIT_S)
    kept = len(scan_parts(out))
    assert 4 <= kept < len(CLIPS)
    _rerun_processes_only_the_rest(manifest, out, kept)


def test_sigterm_writes_finished_clips_and_ends_as_preempted(manifest, tmp_path):
    out = tmp_path / "features"
    process = _start(manifest, out)  # parts of 32 and a 60-s interval: nothing written yet
    _wait_for_finished(process, 4)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)  # Kubernetes' default grace period
    err = process.stderr.read()
    assert code == 143, err
    assert "stopped by SIGTERM; its" in err and "re-run to resume" in err
    kept = len(scan_parts(out))
    assert 4 <= kept < len(CLIPS)
    _rerun_processes_only_the_rest(manifest, out, kept)
