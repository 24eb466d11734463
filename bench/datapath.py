"""Data-path benchmark: what each step moves, scratch disk, store size, streams, start-up.

Against a local S3 test server (moto's standalone server, as the tests use) behind a proxy that
counts the bytes of every request, on synthetic clips at the paper preset's shapes:

- **steps**: a synthetic TAU-layout dataset (10-s H.264 + AAC videos and WAVs, ``--clips``)
  is pushed to the server, then run from and to ``s3://``: ingest, preprocess (one shard),
  one training task (aud-mel, a small network, 1 epoch, checkpoints and model on ``s3://``),
  and for each backbone one epoch of its training stream plus its val pass (what a training
  task reads per epoch) and one embedding pass. Bytes read and written per step, per clip,
  projected to TAU 2021's 12,291 clips; each step's peak scratch disk (its TMPDIR, watched);
  each train/embed read against the bytes of its own feature;
- **store**: bytes per clip and per feature, from the parts' Parquet metadata;
- **streams**: for each backbone, training-stream throughput (batch 32, mixup draws, every
  frame of a clip) from a local store, from ``s3://`` (peak RSS growth alongside), and the
  same batches cached in memory, in the same run (``--stream-clips`` clips of synthetic
  spectrograms and natural-image frames);
- **start-up**: ``avsc preprocess --workers 16`` on 16 local clips, in a fresh interpreter:
  seconds until the first and until the 16th ffmpeg decoder has started (from /proc).

Prints figures and a JSON summary (``--json``). Not a timed test: figures depend on the
machine and its load; repeat and take the best (``--repeats``).

Usage:
    python bench/datapath.py                           # 20 clips, 96 stream clips
    python bench/datapath.py --clips 40 --repeats 3 --json --keep /var/tmp/avsc-datapath
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TAU_CLIPS = 12_291  # TAU Urban Audio-Visual Scenes 2021 development
PAPER_EPOCHS = 60
BACKBONES = ("aud-mel", "aud-gam", "aud-cqt", "vis-inc", "vis-conv")


sys.path.insert(0, str(Path(__file__).resolve().parent))
from datapath_tools import RssWatcher, ScratchWatcher, start_s3  # noqa: E402

# --------------------------------------------------------------------------- synthetic data


def paper_shapes() -> dict[str, list[int]]:
    from avsc.config import load_config
    from avsc.features.spectrograms import feature_shapes

    return feature_shapes(load_config(preset="paper").features)


def write_synthetic_store(root: str, n_clips: int, *, split_val: bool = False, seed: int = 0) -> str:
    """A paper-preset store of ``n_clips`` clips: log-spectrogram-like float16 values and
    frames cut from natural photographs (scikit-learn's sample images), so the JPEG sizes
    and decoding costs are those of real pictures, not of noise or flat colour."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    from avsc.config import load_config
    from avsc.features.store_writer import StoreWriter
    from avsc.labels import LABELS

    photos = [np.asarray(image) for image in load_sample_images().images]
    shapes = paper_shapes()
    rng = np.random.default_rng(seed)
    n_bins = shapes["mel"][0]
    slope = np.linspace(-2.0, -9.0, n_bins)[:, None, None]
    n_frames, size = shapes["frames"][0], shapes["frames"][1]
    with StoreWriter(root, load_config(preset="paper").features, shapes) as writer:
        for k in range(n_clips):
            arrays = {name: slope + rng.normal(0, 1.5, size=shapes[name]) for name in ("mel", "gam", "cqt")}
            photo = photos[k % len(photos)]
            frames = []
            for _ in range(n_frames):
                y = rng.integers(0, photo.shape[0] - size)
                x = rng.integers(0, photo.shape[1] - size)
                frames.append(photo[y : y + size, x : x + size])
            arrays["frames"] = np.stack(frames)
            split = "val" if split_val and k % 5 == 4 else "train"
            writer.add(f"{LABELS[k % 10]}-bench-{k}-0", LABELS[k % 10], split, arrays)
    return root


def feature_bytes(store, feature: str, split: str | None) -> int:
    """Stored bytes of ``feature`` for the clips of ``split``: its column chunks in the parts."""
    import pyarrow.parquet as pq

    from avsc.storage import locations

    total = 0
    for part in store.parts(split):
        with locations.open_input(part.location) as handle:
            meta = pq.ParquetFile(handle).metadata
        group = meta.row_group(0)
        chunk = sum(
            group.column(i).total_compressed_size
            for i in range(meta.num_columns)
            if group.column(i).path_in_schema.split(".")[0] == feature
        )
        total += chunk * len(part.rows) // group.num_rows
    return total


# --------------------------------------------------------------------------- steps


def run_steps(args, work: Path) -> dict:
    """Ingest, preprocess, one training task, and each backbone's train/embed reads, via S3."""
    from avsc.config import load_config
    from avsc.data.demo import make_demo_dataset
    from avsc.data.ingest import ingest_dataset
    from avsc.features.preprocess import preprocess
    from avsc.features.store import FeatureStore
    from avsc.storage.sync import push_dir
    from avsc.training.backbone import train_backbone
    from avsc.training.streams import eval_dataset, train_dataset

    dataset = work / "dataset"
    if not (dataset / "meta.csv").exists():
        classes = min(10, max(2, args.clips // 3))
        make_demo_dataset(
            dataset,
            classes=classes,
            clips_per_class=max(3, args.clips // classes),
            locations_per_class=3,
            seconds=10.0,
            width=320,
            height=180,
            fps=15.0,
            progress=False,
        )
    server, proxy, direct = start_s3("bench")
    steps: dict[str, dict] = {}
    try:
        push_dir(dataset, "s3://bench/tau", settings=direct, progress=False)
        dataset_bytes = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())
        video_bytes = sum(p.stat().st_size for p in (dataset / "video").glob("*.mp4"))

        # multiprocessing's own temporary folder (the fork server's socket) is made once per
        # process and removed at exit: made now, under the real TMPDIR, not in a step's scratch
        # folder, which is gone by then.
        import multiprocessing.util

        multiprocessing.util.get_temp_dir()

        def step(name: str, fn, clips: int, **extra):
            scratch = work / "scratch" / name
            scratch.mkdir(parents=True, exist_ok=True)
            previous = os.environ.get("TMPDIR")
            os.environ["TMPDIR"] = str(scratch)
            tempfile.tempdir = None  # re-read TMPDIR
            proxy.reset()
            began = time.perf_counter()
            try:
                with ScratchWatcher(scratch) as watcher:
                    fn()
            finally:
                os.environ.pop("TMPDIR") if previous is None else os.environ.update(TMPDIR=previous)
                tempfile.tempdir = None
            steps[name] = {
                "read_bytes": proxy.read,
                "written_bytes": proxy.written,
                "requests": proxy.requests,
                "clips": clips,
                "read_per_clip": proxy.read / max(clips, 1),
                "written_per_clip": proxy.written / max(clips, 1),
                "scratch_peak_bytes": watcher.peak,
                "seconds": round(time.perf_counter() - began, 2),
                **extra,
            }

        manifest = "s3://bench/run/manifest.parquet"
        result = {}
        step(
            "ingest", lambda: result.update(ingest=ingest_dataset("s3://bench/tau", manifest, progress=False)), clips=0
        )
        n = result["ingest"].n_clips
        steps["ingest"].update(
            clips=n,
            read_per_clip=steps["ingest"]["read_bytes"] / n,
            written_per_clip=steps["ingest"]["written_bytes"] / n,
        )
        config = load_config(preset="paper")
        features = "s3://bench/run/features"
        step(
            "preprocess",
            lambda: preprocess(manifest, features, config=config.features, workers=2, progress=False),
            clips=n,
        )
        store = FeatureStore.open(features)
        own = {name: feature_bytes(store, name, None) for name in ("mel", "gam", "cqt", "frames")}
        n_train_val = len(store.clips("train")) + len(store.clips("val"))
        for backbone in BACKBONES:
            feature = store.spec_for(backbone).name
            epoch_own = feature_bytes(store, feature, "train") + feature_bytes(store, feature, "val")

            def epoch(backbone=backbone):
                for _ in train_dataset(store, backbone, batch_size=32, seed=1):
                    pass
                for _ in eval_dataset(store, backbone, "val", batch_size=32):
                    pass

            def embed(backbone=backbone):
                for _ in eval_dataset(store, backbone, None, batch_size=32):
                    pass

            step(f"train-epoch {backbone}", epoch, clips=n_train_val, own_feature_bytes=epoch_own)
            step(f"embed {backbone}", embed, clips=n, own_feature_bytes=own[feature])
        small = load_config(
            preset="paper",
            overrides={"train": {"epochs": 1, "audio_stages": 2, "audio_base_filters": 4, "batch_size": 16}},
        ).train
        step(
            "train aud-mel (small network, 1 epoch)",
            lambda: train_backbone(
                "aud-mel",
                features,
                "s3://bench/run/models/aud-mel",
                config=small,
                checkpoints="s3://bench/run/checkpoints/aud-mel",
                progress=False,
            ),
            clips=n_train_val,
            own_feature_bytes=feature_bytes(store, "mel", "train") + feature_bytes(store, "mel", "val"),
        )
    finally:
        server.stop()
    return {
        "clips": n,
        "dataset_bytes": dataset_bytes,
        "video_bytes": video_bytes,
        "steps": steps,
        "store_feature_bytes": own,
    }


# --------------------------------------------------------------------------- streams


def stream_rates(
    store,
    backbone: str,
    *,
    batch_size: int,
    repeats: int,
    min_examples: int = 4000,
    cached_batches: int = 8,
    kind: str = "tfdata",
) -> dict:
    """Examples/s of the training stream from ``store``, and of the same batches cached in memory.

    The stream is one pipeline run over the store's epochs again and again (``repeat``) until
    ``min_examples`` examples: each pass re-reads every part and refills the shuffle buffer,
    but the per-epoch set-up (tracing, threads: ~0.5 s, which a TAU-sized epoch of 7,780
    clips amortises) is paid once, as it would be over a store of that size. The cached
    stream is its first ``cached_batches`` batches, held in memory and repeated.

    ``kind``: ``tfdata`` (:func:`avsc.training.streams.train_dataset`) or ``numpy``
    (:func:`avsc.training.numpy_stream.train_batches`, the same batches; its passes run one
    after another, its cache is a list of the batches).
    """
    if kind == "numpy":
        return _numpy_stream_rates(
            store,
            backbone,
            batch_size=batch_size,
            repeats=repeats,
            min_examples=min_examples,
            cached_batches=cached_batches,
        )
    from avsc.training.streams import train_dataset

    def stream():
        return train_dataset(store, backbone, batch_size=batch_size, mixup_alpha=0.4, seed=1)

    def count(ds) -> int:
        return sum(int(inputs[0].shape[0]) for inputs, _ in ds)

    per_epoch = count(stream())  # also warms the page cache and the store's connections
    passes = max(1, -(-min_examples // per_epoch))
    feature = store.spec_for(backbone).name
    streamed = feature_bytes(store, feature, "train") * passes
    best = 0.0
    with RssWatcher() as rss:
        for _ in range(repeats):
            began = time.perf_counter()
            n = count(stream().repeat(passes))
            best = max(best, n / (time.perf_counter() - began))
    cached = stream().take(cached_batches).cache()
    cached_examples = count(cached)  # fills the cache
    best_cached = 0.0
    for _ in range(repeats):
        began = time.perf_counter()
        n = count(cached.repeat(max(1, -(-min_examples // cached_examples))))
        best_cached = max(best_cached, n / (time.perf_counter() - began))
    return {
        "samples_per_s": round(best, 1),
        "cached_samples_per_s": round(best_cached, 1),
        "ratio": round(best / best_cached, 3),
        "rss_growth_bytes": rss.peak - rss.start,
        "streamed_bytes_per_run": streamed,
        "examples_per_epoch": per_epoch,
        "passes": passes,
    }


def _numpy_stream_rates(
    store, backbone: str, *, batch_size: int, repeats: int, min_examples: int, cached_batches: int
) -> dict:
    """:func:`stream_rates` of the NumPy stream: each pass a new stream (seed 1), as an epoch is."""
    from avsc.training.numpy_stream import train_batches

    def stream():
        return train_batches(store, backbone, batch_size=batch_size, mixup_alpha=0.4, seed=1)

    def count(batches) -> int:
        return sum(int(inputs[0].shape[0]) for inputs, _ in batches)

    per_epoch = count(stream())
    passes = max(1, -(-min_examples // per_epoch))
    streamed = feature_bytes(store, store.spec_for(backbone).name, "train") * passes
    best = 0.0
    with RssWatcher() as rss:
        for _ in range(repeats):
            began = time.perf_counter()
            n = sum(count(stream()) for _ in range(passes))
            best = max(best, n / (time.perf_counter() - began))
    first = stream()
    cached = [first[i] for i in range(min(cached_batches, len(first)))]
    cached_examples = count(cached)
    best_cached = 0.0
    for _ in range(repeats):
        began = time.perf_counter()
        n = sum(count(cached) for _ in range(max(1, -(-min_examples // cached_examples))))
        best_cached = max(best_cached, n / (time.perf_counter() - began))
    return {
        "samples_per_s": round(best, 1),
        "cached_samples_per_s": round(best_cached, 1),
        "ratio": round(best / best_cached, 3),
        "rss_growth_bytes": rss.peak - rss.start,
        "streamed_bytes_per_run": streamed,
        "examples_per_epoch": per_epoch,
        "passes": passes,
    }


def run_streams(args, work: Path) -> dict:
    from avsc.features.store import FeatureStore
    from avsc.storage.sync import push_dir

    local = work / "stream-store"
    if not (local / "store.json").exists():
        write_synthetic_store(str(local), args.stream_clips)
    server, _, direct = start_s3("streams", counted=False)
    out = {
        "clips": args.stream_clips,
        "cpus": os.cpu_count(),
        "store_bytes": sum(p.stat().st_size for p in local.rglob("*") if p.is_file()),
    }
    try:
        push_dir(local, "s3://streams/features", settings=direct, progress=False)
        stores = {"local": FeatureStore.open(local), "s3": FeatureStore.open("s3://streams/features")}
        stores = {where: stores[where] for where in args.stream_sources.split(",")}
        for backbone in BACKBONES:
            for kind in args.stream_kinds.split(","):  # one after the other: the same machine load
                row = {}
                for where, store in stores.items():
                    rates = stream_rates(store, backbone, batch_size=args.batch_size, repeats=args.repeats, kind=kind)
                    row[where] = rates
                out[backbone if kind == "tfdata" else f"{backbone} ({kind})"] = row
    finally:
        server.stop()
    return out


# --------------------------------------------------------------------------- start-up


def run_startup(work: Path, workers: int = 16) -> dict:
    """Seconds from launching ``avsc preprocess --workers N`` until ffmpeg decoders run."""
    from avsc.data.demo import make_demo_dataset
    from avsc.data.ingest import ingest_dataset

    dataset = work / "startup-dataset"
    if not (dataset / "meta.csv").exists():
        make_demo_dataset(
            dataset,
            classes=4,
            clips_per_class=5,
            locations_per_class=3,
            seconds=10.0,
            width=320,
            height=180,
            fps=15.0,
            progress=False,
        )
    manifest = work / "startup-manifest.parquet"
    ingest_dataset(dataset, manifest, val_fraction=0.0, progress=False)
    out = work / "startup-features"
    code = "import sys; from avsc.cli import main; sys.exit(main(sys.argv[1:]))"
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "preprocess", str(manifest), "-o", str(out), "--workers", str(workers), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[int, float] = {}
    while proc.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in seen:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if (
                b"ffmpeg" in cmdline.split(b"\0", 1)[0]
                and str(out).encode() not in cmdline
                and str(dataset).encode() in cmdline
            ):
                seen[int(pid)] = time.monotonic() - began
        time.sleep(0.01)
    starts = sorted(seen.values())
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    return {
        "workers": workers,
        "clips": 20,
        "first_decoder_s": round(starts[0], 2) if starts else None,
        "all_workers_decoding_s": round(starts[workers - 1], 2) if len(starts) >= workers else None,
        "total_s": round(time.monotonic() - began, 2),
        "returncode": proc.returncode,
    }


# --------------------------------------------------------------------------- report


def mib(n: float) -> str:
    return f"{n / 2**20:8.2f} MiB"


def report(summary: dict) -> None:
    steps = summary.get("steps")
    if steps:
        print(
            f"\nSteps through s3:// ({steps['clips']} clips; dataset {mib(steps['dataset_bytes'])}, "
            f"videos {mib(steps['video_bytes'])}):"
        )
        print(
            f"{'step':42s} {'read/clip':>12s} {'written/clip':>13s} {'read, TAU':>11s} "
            f"{'scratch peak':>13s} {'own feature':>11s}"
        )
        for name, row in steps["steps"].items():
            tau = row["read_per_clip"] * TAU_CLIPS / 1e9
            own = f"{row['read_bytes'] / row['own_feature_bytes']:.3f}x" if row.get("own_feature_bytes") else ""
            print(
                f"{name:42s} {row['read_per_clip'] / 1e6:9.3f} MB {row['written_per_clip'] / 1e6:10.3f} MB "
                f"{tau:8.1f} GB {row['scratch_peak_bytes'] / 1e6:10.2f} MB {own:>11s}"
            )
        per_feature = {k: v / steps["clips"] for k, v in steps["store_feature_bytes"].items()}
        print(
            "store per clip: "
            + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in per_feature.items())
            + f"; total {sum(per_feature.values()) / 1e6:.3f} MB "
            f"(TAU: {sum(per_feature.values()) * TAU_CLIPS / 1e9:.1f} GB)"
        )
    streams = summary.get("streams")
    if streams:
        print(
            f"\nTraining streams, batch 32, {streams['clips']} clips ({mib(streams['store_bytes'])} store), "
            f"{streams['cpus']} CPUs; samples = clips (audio) or frames (visual):"
        )
        for backbone in [k for k in streams if k.split(" ")[0] in BACKBONES]:
            local, remote = streams[backbone].get("local"), streams[backbone].get("s3")
            line = f"{backbone:17s}"
            if local:
                per_core = local["samples_per_s"] / streams["cpus"]
                line += (
                    f" local {local['samples_per_s']:8.1f}/s (cached {local['cached_samples_per_s']:8.1f}/s, "
                    f"{local['ratio']:.2f}x; {per_core:6.1f}/s per core)"
                )
            if remote:
                line += (
                    f"   s3 {remote['samples_per_s']:8.1f}/s (cached {remote['cached_samples_per_s']:8.1f}/s, "
                    f"{remote['ratio']:.2f}x, RSS +{remote['rss_growth_bytes'] / 2**20:.0f} MiB while streaming "
                    f"{remote['streamed_bytes_per_run'] / 2**20:.0f} MiB a run)"
                )
            print(line)
    startup = summary.get("startup")
    if startup:
        print(
            f"\nStart-up, avsc preprocess --workers {startup['workers']}: first decoder after "
            f"{startup['first_decoder_s']} s, all {startup['workers']} workers decoding after "
            f"{startup['all_workers_decoding_s']} s ({startup['clips']} clips done in {startup['total_s']} s)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20, help="clips of the synthetic dataset (steps)")
    parser.add_argument("--stream-clips", type=int, default=96, help="clips of the stream benchmark's store")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each stream; the best counts")
    parser.add_argument("--keep", metavar="DIR", help="keep the synthetic data here (reused by later runs)")
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument(
        "--stream-kinds", default="tfdata,numpy", help="input streams to measure, comma-separated: tfdata, numpy"
    )
    parser.add_argument(
        "--stream-sources", default="local,s3", help="where the streams read the store from, comma-separated: local, s3"
    )
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"

    with tempfile.TemporaryDirectory(prefix="avsc-bench-") as scratch:
        work = Path(args.keep) if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        summary: dict = {"load_average_before": os.getloadavg()}
        if not args.skip_startup:
            summary["startup"] = run_startup(work)
        if not args.skip_steps:
            summary["steps"] = run_steps(args, work)
        if not args.skip_streams:
            summary["streams"] = run_streams(args, work)
        summary["load_average_after"] = os.getloadavg()
        report(summary)
        print(
            f"\nload average before {summary['load_average_before'][0]:.1f}, "
            f"after {summary['load_average_after'][0]:.1f}"
        )
        if args.json:
            print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
