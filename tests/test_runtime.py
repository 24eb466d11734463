"""What a process may use: CPUs from the cgroup quota and the affinity mask, memory from the
cgroup limit and /proc/meminfo (fake cgroup trees under tmp_path), and the preprocessing step
sized from them under a one-CPU affinity mask."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avsc.runtime import (
    cgroup_cpu_limit,
    cgroup_memory_limit,
    detect_limits,
    memory_limit,
    physical_memory,
    usable_cpus,
)

GIB = 1024**3


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "files, cpus",
    [
        ({"cpu.max": "150000 100000"}, 1.5),  # cgroup v2: cpu: 1500m
        ({"cpu.max": "max 100000"}, None),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1, no limit
        ({}, None),  # no cgroup file system at all
    ],
)
def test_cpu_quota_from_cgroup_v1_and_v2(tmp_path, files, cpus):
    assert cgroup_cpu_limit(_tree(tmp_path, files)) == cpus


def test_usable_cpus_is_the_quota_rounded_up_within_the_affinity_mask(tmp_path):
    assert usable_cpus(_tree(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert usable_cpus(_tree(tmp_path / "one-and-a-half", {"cpu.max": "150000 100000"})) == min(2, _affinity())
    # A quota above the CPUs the process may run on does not add any.
    assert usable_cpus(_tree(tmp_path / "wide", {"cpu.max": "6400000 100000"})) == _affinity()
    assert usable_cpus(tmp_path / "none") == _affinity()


def test_memory_limit_from_cgroup_v1_v2_and_meminfo(tmp_path):
    meminfo = _tree(tmp_path, {"meminfo": "MemTotal:       25165824 kB\nMemFree:  1000 kB"}) / "meminfo"
    assert physical_memory(meminfo) == 24 * GIB
    v2 = _tree(tmp_path / "v2", {"memory.max": str(8 * GIB)})
    assert cgroup_memory_limit(v2) == 8 * GIB
    assert memory_limit(v2, meminfo) == 8 * GIB  # the pod's limit, below the node's RAM
    assert cgroup_memory_limit(_tree(tmp_path / "v2-max", {"memory.max": "max"})) is None
    v1 = _tree(tmp_path / "v1", {"memory/memory.limit_in_bytes": str(4 * GIB)})
    assert cgroup_memory_limit(v1) == 4 * GIB
    unlimited = _tree(tmp_path / "v1-none", {"memory/memory.limit_in_bytes": "9223372036854771712"})
    assert cgroup_memory_limit(unlimited) is None
    assert memory_limit(unlimited, meminfo) == 24 * GIB
    limits = detect_limits(v2, meminfo)
    assert (limits.memory, limits.memory_source) == (8 * GIB, "cgroup limit")
    assert "8.6 GB memory (cgroup limit)" in limits.describe()


def test_under_one_cpu_preprocessing_uses_one_worker_one_decoder_thread_and_says_so(tmp_path):
    from media_cases import make_video

    from avsc.data.manifest import write_manifest

    clip_id = "park-paris-1-1"
    make_video(tmp_path / "video" / f"{clip_id}.mp4", seconds=1.0, width=64, height=48)
    row = {
        "clip_id": clip_id,
        "video": f"video/{clip_id}.mp4",
        "audio": None,
        "label": "park",
        "city": "paris",
        "location": "paris-1",
        "split": "train",
        "duration_s": 1.0,
        "fps": 10.0,
        "width": 64,
        "height": 48,
        "audio_channels": 2,
        "audio_rate": 48000,
    }
    manifest = write_manifest([row], tmp_path / "manifest.parquet", dataset_root=tmp_path)
    code = textwrap.dedent(f"""
        import logging
        from avsc.config import AudioConfig, FeatureConfig, FrameConfig
        from avsc.features.preprocess import preprocess
        logging.basicConfig(level=logging.INFO)
        config = FeatureConfig(audio=AudioConfig(clip_seconds=1.0), frames=FrameConfig(fps=2.0, size=32))
        print(preprocess({str(manifest)!r}, {str(tmp_path / "features")!r}, config=config, progress=False).processed)
    """)
    first = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"
    assert "1 worker(s), 1 decoder thread(s) each (using 1 of" in done.stderr


def test_tensorflow_thread_pools_take_the_usable_cpus_before_it_starts():
    code = textwrap.dedent("""
        from avsc.runtime import limit_tensorflow_threads
        import tensorflow as tf
        assert limit_tensorflow_threads()
        print(tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
        tf.constant(1.0) + 1.0  # TensorFlow has started: its pools are fixed now
        print(limit_tensorflow_threads(3))
    """)
    first = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {first}),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1", "False"]
