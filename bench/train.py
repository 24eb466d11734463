"""Phase I benchmark: training throughput and peak memory of each backbone, and input pipeline speed.

Prints one line per measurement (and a JSON summary with ``--json``). Each (backbone,
preset) runs in its own subprocess so its peak RSS is its own.

- Model: ``train_on_batch`` on a batch held in memory, shapes from the preset's feature
  config; the first steps (graph build) are excluded; samples/s over the next ``--steps``.
- Input pipeline: ``avsc.training.streams.train_dataset`` over a synthetic store written at the
  preset's shapes (local disk), vs the same pipeline's first batches cached in memory
  (``store_samples_per_s``, ``cached_samples_per_s``; ``bench/datapath.py`` has all five
  backbones and ``s3://``).

Usage:
    python bench/train.py                          # CPU, both presets, every backbone
    python bench/train.py --preset quick --backbone aud-mel
    python bench/train.py --device gpu             # mixed precision on, bigger batches
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ("aud-mel", "aud-gam", "aud-cqt", "vis-inc", "vis-conv")


def feature_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    from avsc.config import load_config

    features = load_config(preset=preset).features
    audio, frames = features.audio, features.frames
    n_time = audio.frames or 1 + audio.n_samples // audio.hop_length  # librosa, center=True
    n_images = int(round(frames.fps * audio.clip_seconds))
    spec = (audio.n_bins, n_time, audio.channels)
    return {"mel": spec, "gam": spec, "cqt": spec, "frames": (n_images, frames.size, frames.size, 3)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def gpu_peak_mib() -> float | None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def bench_model(backbone: str, preset: str, batch_size: int, steps: int, warmup: int, mixed: bool) -> dict:
    import keras
    import numpy as np

    from avsc.config import BACKBONE_FEATURE, VISUAL_BACKBONES, load_config
    from avsc.models.backbones import build_backbone
    from avsc.models.losses import kl_divergence_loss

    cfg = load_config(preset=preset, overrides={"train": {"weights": "none"}}).train
    shapes = feature_shapes(preset)
    if mixed:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    model = build_backbone(backbone, shapes, cfg)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=kl_divergence_loss)
    shape = shapes[BACKBONE_FEATURE[backbone]]
    example = shape[1:] if backbone in VISUAL_BACKBONES else shape  # visual: one frame an example
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255 if backbone in VISUAL_BACKBONES else 1, size=(batch_size, *example)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch_size)]
    began = time.perf_counter()
    for _ in range(warmup):
        model.train_on_batch(x, y)
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - began
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {
        "kind": "model",
        "backbone": backbone,
        "preset": preset,
        "batch_size": batch_size,
        "input": list(example),
        "params_m": round(params / 1e6, 2),
        "first_steps_s": round(first, 1),
        "step_s": round(seconds / steps, 3),
        "samples_per_s": round(batch_size * steps / seconds, 1),
        "peak_rss_mib": round(peak_rss_mib()),
        "gpu_peak_mib": gpu_peak_mib(),
        "mixed_precision": mixed,
    }


def bench_pipeline(preset: str, batch_size: int, n_clips: int) -> list[dict]:
    """Training-stream throughput from a local store vs the same batches cached in memory.

    The store is written by ``bench/datapath.py``'s synthetic writer (spectrogram-like
    values, frames cut from photographs) at the preset's shapes; ``bench/datapath.py``
    measures every backbone, and from ``s3://`` too.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from avsc.config import load_config
    from avsc.features.spectrograms import feature_shapes
    from avsc.features.store import FeatureStore

    from datapath import stream_rates, write_synthetic_store

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if preset == "paper":
            root = write_synthetic_store(tmp, n_clips)
        else:  # the quick preset's shapes, same generator
            root = _quick_store(tmp, n_clips, feature_shapes(load_config(preset="quick").features))
        store = FeatureStore.open(root)
        for backbone in ("aud-mel", "vis-inc"):
            rates = stream_rates(store, backbone, batch_size=batch_size, repeats=2)
            results.append(
                {
                    "kind": "pipeline",
                    "backbone": backbone,
                    "preset": preset,
                    "batch_size": batch_size,
                    "clips": n_clips,
                    "store_samples_per_s": rates["samples_per_s"],
                    "cached_samples_per_s": rates["cached_samples_per_s"],
                }
            )
    return results


def _quick_store(root: str, n_clips: int, shapes: dict) -> str:
    import numpy as np

    from avsc.config import load_config
    from avsc.features.store_writer import StoreWriter
    from avsc.labels import LABELS

    rng = np.random.default_rng(0)
    with StoreWriter(root, load_config(preset="quick").features, shapes) as writer:
        for k in range(n_clips):
            arrays = {name: rng.normal(-5, 1.5, size=shape) for name, shape in shapes.items() if name != "frames"}
            y, x = np.mgrid[0 : shapes["frames"][1], 0 : shapes["frames"][2]]
            picture = np.stack([x * 2 + k, y * 2, (x + y) + 3 * k], axis=-1) % 256
            arrays["frames"] = np.broadcast_to(picture, shapes["frames"]).astype(np.uint8)
            writer.add(f"{LABELS[k % 10]}-bench-{k}-0", LABELS[k % 10], "train", arrays)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "paper"), action="append")
    parser.add_argument("--backbone", choices=BACKBONES, action="append")
    parser.add_argument(
        "--device", choices=("cpu", "gpu"), default="cpu", help="gpu: mixed precision on, batch 32 at both presets"
    )
    parser.add_argument("--batch-size", type=int, help="default: 16 quick, 8 paper on CPU; 32 on GPU")
    parser.add_argument("--steps", type=int, help="measured steps (default: 5 quick, 2 paper on CPU; 20 GPU)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-models", action="store_true", help="only the input pipeline")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    parser.add_argument("--one", nargs=2, metavar=("BACKBONE", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device == "gpu"

    def sizes(preset: str) -> tuple[int, int]:
        batch = args.batch_size or (32 if gpu else (16 if preset == "quick" else 8))
        steps = args.steps or (20 if gpu else (5 if preset == "quick" else 2))
        return batch, steps

    if not gpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    if args.one:
        backbone, preset = args.one
        batch, steps = sizes(preset)
        print(json.dumps(bench_model(backbone, preset, batch, steps, warmup=2, mixed=gpu)))
        return 0

    results = []
    for preset in args.preset or ["quick", "paper"]:
        for backbone in [] if args.skip_models else args.backbone or BACKBONES:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--one",
                backbone,
                preset,
                "--device",
                args.device,
            ]
            if args.batch_size:
                command += ["--batch-size", str(args.batch_size)]
            if args.steps:
                command += ["--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{backbone} {preset}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            gpu_text = f", GPU peak {row['gpu_peak_mib']:.0f} MiB" if row["gpu_peak_mib"] else ""
            print(
                f"{preset:5s} {backbone:8s} {row['params_m']:6.2f} M params, input {row['input']}, "
                f"batch {row['batch_size']}: {row['samples_per_s']:8.1f} samples/s "
                f"({row['step_s']:.3f} s/step; first 2 steps {row['first_steps_s']} s), "
                f"peak RSS {row['peak_rss_mib']} MiB{gpu_text}",
                flush=True,
            )
        if not args.skip_pipeline:
            batch, _ = sizes(preset)
            for row in bench_pipeline(preset, batch, n_clips=48 if preset == "quick" else 24):
                results.append(row)
                print(
                    f"{preset:5s} pipeline {row['backbone']:8s} batch {row['batch_size']}: "
                    f"{row['store_samples_per_s']:8.1f} samples/s from the store, "
                    f"{row['cached_samples_per_s']:8.1f} samples/s cached in memory",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
