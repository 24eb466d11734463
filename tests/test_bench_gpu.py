"""bench/gpu.py runs end to end on a CPU with tiny sizes (its smoke test; figures are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "train.batch_size=8",
    "train.audio_stages=1",
    "train.audio_base_filters=4",
    "train.dense_units=16",
    "features.audio.n_bins=16",
    "features.audio.clip_seconds=1.0",
    "features.frames.size=32",
]


def test_gpu_bench_runs_on_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu.json"
    args = [
        sys.executable,
        str(ROOT / "bench" / "gpu.py"),
        "--device",
        "cpu",
        "--preset",
        "quick",
        "--backbones",
        "aud-mel",
        "--clips",
        "20",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--precision",
        "float32,mixed_bfloat16",
        "--peak-tflops",
        "1",
        "--json",
        str(out),
    ]
    for setting in TINY:
        args += ["--set", setting]
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["device"]["backend"] == "jax" and summary["device"]["platform"] == "cpu"
    assert [(r["backbone"], r["precision"]) for r in summary["results"]] == [
        ("aud-mel", "float32"),
        ("aud-mel", "mixed_bfloat16"),
    ]
    for row in summary["results"]:
        assert row["full_samples_per_s"] > 0 and row["compute_bound_samples_per_s"] > 0
        assert row["input_wait_ms"] >= 0 and row["compute_ms"] > 0
        assert row["step_ms"] >= row["compute_ms"]  # the step is the wait plus the compute (and a little)
        assert row["peak_memory_bytes"] > 0 and "RSS" in row["peak_memory_kind"]
        assert row["forward_gflops_per_sample"] > 0 and 0 < row["bf16_peak_share"] < 1
    assert "full /s" in done.stdout and "aud-mel" in done.stdout
