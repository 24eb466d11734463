"""Prediction benchmark: latency of ``avsc predict`` per 10-s 1280x720 video on the CPU.

For each preset (in its own subprocess, so its peak RSS is its own):

1. builds a bundle of the five backbones with random weights (``weights=none``; the
   architecture and input sizes, hence the cost, are those of a trained bundle) and an
   f4 audio+visual fusion model;
2. writes a 10-s 1280x720 30 frames/s H.264 video with 48 kHz stereo AAC (ffmpeg's
   ``testsrc2`` with per-frame noise, so the decoder works about as hard as on camera
   footage);
3. times ``Predictor.load`` (checksums + model loading), one warm-up prediction, then
   ``--clips`` predictions of the video with the models loaded once, and splits one
   prediction into decoding + features and networks (backbones + fusion); then the same
   with the models run op by op (``graph=False``, no tracing). Besides wall
   time it reports CPU seconds per clip (this process's threads + ffmpeg), which does not
   depend on what else the machine is doing: on an idle machine with C cores the wall
   time is at least CPU seconds / C.

Usage:
    python bench/predict.py                       # both presets, 5 clips each
    python bench/predict.py --preset paper --clips 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRESETS = ("paper", "quick")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children (ffmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def make_video(path: Path, seconds: float = 10.0, width: int = 1280, height: int = 720, fps: int = 30) -> Path:
    from avsc.media.ffmpeg import ffmpeg_exe

    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-vf",
        "noise=alls=12:allf=t",
        "-ac",
        "2",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "192k",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def make_random_bundle(preset: str, root: Path, method: str = "f4") -> Path:
    """Backbones (random weights) + an untrained fusion model, bundled as ``avsc bundle`` does."""
    from avsc.config import BACKBONES, config_hash, load_config, to_dict
    from avsc.features.spectrograms import feature_shapes
    from avsc.inference.bundle_writer import make_bundle
    from avsc.labels import LABELS
    from avsc.models.backbones import build_backbone
    from avsc.models.fusion import build_fusion_model
    from avsc.storage.locations import write_json

    config = load_config(preset=preset, overrides={"train": {"weights": "none"}})
    shapes = {k: tuple(v) for k, v in feature_shapes(config.features).items()}
    for backbone in BACKBONES:
        model = build_backbone(backbone, shapes, config.train)
        (root / "models" / backbone).mkdir(parents=True)
        model.save(root / "models" / backbone / "model.keras")
        write_json(
            root / "models" / backbone / "config.json",
            {
                "backbone": backbone,
                "config_hash": config_hash(config.train),
                "features": to_dict(config.features),
                "feature_config_hash": config_hash(config.features),
                "feature_shapes": {k: list(v) for k, v in shapes.items()},
                "labels": list(LABELS),
            },
        )
    level, width = ("fc10", 10) if method in ("f4", "f5", "f6") else ("fc1024", config.train.dense_units)
    fusion_dir = root / "fusion"
    fusion_dir.mkdir()
    build_fusion_model(method, BACKBONES, width).save(fusion_dir / "model.keras")
    write_json(
        fusion_dir / "fusion.json",
        {
            "method": method,
            "modalities": "audio+visual",
            "backbones": list(BACKBONES),
            "level": level,
            "labels": list(LABELS),
        },
    )
    return make_bundle(root / "models", fusion_dir, root / "bundle")


def bench_one(preset: str, clips: int, threads: int | None) -> dict:
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from avsc.inference.predict import Predictor

    with tempfile.TemporaryDirectory(prefix="avsc-bench-predict-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        bundle_dir = make_random_bundle(preset, root)
        build_s = time.perf_counter() - began
        bundle_mib = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file()) / 2**20
        video = make_video(root / "clip-1280x720-10s.mp4")

        began = time.perf_counter()
        predictor = Predictor.load(bundle_dir)
        load_s = time.perf_counter() - began

        began = time.perf_counter()
        first = predictor.predict_file(video)
        warmup_s = time.perf_counter() - began
        times, cpu = [], []
        for _ in range(clips):
            began, cpu_began = time.perf_counter(), cpu_seconds()
            prediction = predictor.predict_file(video)
            times.append(time.perf_counter() - began)
            cpu.append(cpu_seconds() - cpu_began)

        peak_graph = peak_rss_mib()
        # The same models run op by op (no tracing): what a single-video `avsc predict` uses.
        eager = Predictor(predictor.bundle, predictor.embedding_models, predictor.fusion_models, graph=False)
        began = time.perf_counter()
        eager.predict_file(video)
        eager_first_s = time.perf_counter() - began
        eager_times = []
        for _ in range(clips):
            began = time.perf_counter()
            eager.predict_file(video)
            eager_times.append(time.perf_counter() - began)

        entry = predictor.bundle.fusion
        began = time.perf_counter()
        features = predictor.window_features(video, list(prediction.window_offsets), entry)
        features_s = time.perf_counter() - began
        began = time.perf_counter()
        predictor.predict_features(features, entry)
        networks_s = time.perf_counter() - began

    return {
        "preset": preset,
        "threads": threads or os.cpu_count(),
        "cpus": os.cpu_count(),
        "clip_seconds": predictor.bundle.clip_seconds,
        "windows": prediction.windows,
        "frames_per_window": int(features["frames"].shape[1]),
        "bundle_mib": round(bundle_mib, 1),
        "build_s": round(build_s, 2),
        "load_s": round(load_s, 2),
        "warmup_s": round(warmup_s, 2),
        "clips": clips,
        "mean_s": round(statistics.mean(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "features_s": round(features_s, 3),
        "networks_s": round(networks_s, 3),
        "real_time_factor": round(statistics.mean(times) / 10.0, 3),
        "cpu_s": round(statistics.mean(cpu), 3),
        "eager_first_s": round(eager_first_s, 3),
        "eager_mean_s": round(statistics.mean(eager_times), 3),
        "peak_rss_mib": round(peak_graph),
        "peak_rss_eager_mib": round(peak_rss_mib()),
        "label": first.label,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=(*PRESETS, "both"), default="both")
    parser.add_argument("--clips", type=int, default=5, help="timed predictions after one warm-up")
    parser.add_argument("--threads", type=int, help="TensorFlow intra/inter-op threads (default: all cores)")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    parser.add_argument("--one", metavar="PRESET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print("RESULT " + json.dumps(bench_one(args.one, args.clips, args.threads)), flush=True)
        return 0

    rows = []
    for preset in PRESETS if args.preset == "both" else (args.preset,):
        cmd = [sys.executable, __file__, "--one", preset, "--clips", str(args.clips)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{preset}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        row = json.loads(lines[-1][len("RESULT ") :])
        rows.append(row)
        print(
            f"{preset}: 10-s 1280x720 clip, {row['windows']} window(s) of {row['clip_seconds']:g} s, "
            f"{row['frames_per_window']} frames each, {row['threads']} threads: "
            f"{row['mean_s']:.2f} s per clip (min {row['min_s']:.2f}, max {row['max_s']:.2f}, "
            f"{row['clips']} clips; {row['real_time_factor']:.2f}x real time; {row['cpu_s']:.2f} CPU s) "
            f"= decode+features "
            f"{row['features_s']:.2f} s + networks {row['networks_s']:.2f} s; model load {row['load_s']:.2f} s "
            f"(bundle {row['bundle_mib']:.0f} MiB), warm-up {row['warmup_s']:.2f} s; peak RSS "
            f"{row['peak_rss_mib']} MiB; op by op (no tracing): first clip {row['eager_first_s']:.2f} s, "
            f"then {row['eager_mean_s']:.2f} s per clip, peak RSS {row['peak_rss_eager_mib']} MiB",
            flush=True,
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
