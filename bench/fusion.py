"""Phase II benchmark: fusion training time and peak memory per method.

Synthetic embeddings the size of the real development set (8,646 train clips of which
1,000 are held out for val like ``avsc ingest`` would, plus 3,645 test clips; fc1024 of
width 1024 and fc10 of width 10 for each of the five backbones) are written once; then
each (method, modality set) runs :func:`avsc.training.fusion.train_fusion` in its own subprocess,
so its peak RSS is its own. Default settings: the ``paper`` preset (batch 64, trained in
optimizer steps until the val selection log loss has not improved for ``fusion.patience``
steps, at most ``fusion.max_steps``).

Prints one line per run (and a JSON summary with ``--json``): total seconds (reading the
embeddings, training, saving, predicting every clip), training seconds, the optimizer steps
run and the kept one, why training stopped, milliseconds per step (training time over steps:
the val evaluations and calibrations between rounds included), the first round's seconds
(graph tracing included), peak RSS.

Usage:
    python bench/fusion.py                                 # f1..f6, audio+visual, paper preset
    python bench/fusion.py --method f4 --modalities audio --max-steps 500
    python bench/fusion.py --device gpu
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

METHODS = ("f1", "f2", "f3", "f4", "f5", "f6")
SPLITS = {"train": 7646, "val": 1000, "test": 3645}


def write_synthetic_embeddings(root: Path, seed: int = 0) -> Path:
    """Class-dependent means + noise for every backbone, real-dataset sizes."""
    import numpy as np

    from avsc.config import BACKBONES
    from avsc.labels import LABELS
    from avsc.records import Lineage
    from avsc.training.embeddings import write_embeddings

    rng = np.random.default_rng(seed)
    clip_ids, splits, labels = [], [], []
    for split, count in SPLITS.items():
        for i in range(count):
            label = LABELS[i % len(LABELS)]
            clip_ids.append(f"{label}-bench-{i // 10}-{split}{i:05d}")
            splits.append(split)
            labels.append(label)
    y = np.asarray([LABELS.index(lab) for lab in labels])
    for backbone in BACKBONES:
        means = rng.normal(size=(len(LABELS), 1024)).astype(np.float32)
        fc1024 = np.maximum(0.5 * means[y] + rng.normal(size=(len(y), 1024)).astype(np.float32), 0)
        fc10 = (2.0 * np.eye(len(LABELS))[y] + 1.5 * rng.normal(size=(len(y), len(LABELS)))).astype(np.float32)
        write_embeddings(
            root / f"{backbone}.parquet",
            clip_ids=clip_ids,
            splits=splits,
            labels=labels,
            fc1024=fc1024,
            fc10=fc10,
            backbone=backbone,
            config_hash="bench",
            model_sha256="0" * 64,
            lineage=Lineage("bench", "0" * 16),
        )
    return root


def run_one(embeddings: Path, method: str, modalities: str, preset: str, max_steps: int | None) -> dict:
    from avsc.config import load_config
    from avsc.training.fusion import train_fusion

    overrides = {"fusion": {"max_steps": max_steps}} if max_steps else None
    config = load_config(preset=preset, overrides=overrides).fusion
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train_fusion(
            embeddings, Path(out) / "fusion", method=method, modalities=modalities, config=config, progress=False
        )
        info = json.loads((Path(out) / "fusion" / "fusion.json").read_text())
    total = time.perf_counter() - began
    steps = int(info["steps_run"])
    return {
        "method": method,
        "modalities": modalities,
        "preset": preset,
        "max_steps": config.max_steps,
        "batch_size": config.batch_size,
        "total_s": round(total, 2),
        "train_s": round(result.train_seconds, 2),
        "steps": steps,
        "best_step": result.best_step,
        "stopped": info["stopped"],
        "ms_per_step": round(1000 * result.train_seconds / max(1, steps), 2),
        "first_round_s": round(result.history[0]["seconds"], 2),
        "val_accuracy": round(result.val_accuracy, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=METHODS, action="append")
    parser.add_argument("--modalities", choices=("audio+visual", "audio", "visual"), action="append")
    parser.add_argument("--preset", choices=("paper", "quick"), default="paper")
    parser.add_argument("--max-steps", type=int, help="default: the preset's fusion.max_steps (4000)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--embeddings", type=Path, help="reuse synthetic embeddings written by an earlier run")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    parser.add_argument("--one", nargs=3, metavar=("EMBEDDINGS", "METHOD", "MODALITIES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    if args.one:
        embeddings, method, modalities = args.one
        print(json.dumps(run_one(Path(embeddings), method, modalities, args.preset, args.max_steps)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        embeddings = args.embeddings
        if embeddings is None:
            began = time.perf_counter()
            embeddings = write_synthetic_embeddings(Path(tmp))
            print(
                f"synthetic embeddings: {sum(SPLITS.values())} clips x 5 backbones "
                f"({', '.join(f'{k} {v}' for k, v in SPLITS.items())}) in {time.perf_counter() - began:.1f} s",
                flush=True,
            )
        results = []
        for modalities in args.modalities or ["audio+visual"]:
            for method in args.method or METHODS:
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--one",
                    str(embeddings),
                    method,
                    modalities,
                    "--preset",
                    args.preset,
                    "--device",
                    args.device,
                ]
                if args.max_steps:
                    command += ["--max-steps", str(args.max_steps)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{method} {modalities}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(row)
                print(
                    f"{method} {modalities:12s} {args.device}: {row['total_s']:7.1f} s total, "
                    f"{row['train_s']:7.1f} s training ({row['steps']} steps, kept {row['best_step']}, "
                    f"stopped by {row['stopped']}, {row['ms_per_step']:.1f} ms/step, first round "
                    f"{row['first_round_s']:.1f} s, batch {row['batch_size']}), "
                    f"val accuracy {row['val_accuracy']:.3f}, "
                    f"peak RSS {row['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
