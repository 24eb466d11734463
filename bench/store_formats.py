"""Feature-store designs measured side by side, and what JPEG frames cost a model.

Designs, on the same synthetic paper-preset clips (``--clips``; spectrogram-like float16
values, frames cut from photographs), on local disk with a warm page cache, one thread:

- ``npz-per-clip``: the previous format (``avsc-features/1``): one uncompressed ``.npz`` per
  clip holding all four features, raw uint8 frames;
- ``parts-binary``: the current format: Parquet parts of 32 clips, one row group, spectrograms
  as ``fixed_size_binary`` float16 bytes, frames as JPEG (quality 90, 4:4:4), uncompressed;
- ``parts-binary-zstd``: the same with zstd compression of every column;
- ``parts-list-zstd``: spectrograms as ``fixed_size_list<float16>`` (byte-stream-split + zstd);
- ``parts-raw-frames``: the current format with ``frames.encoding = "raw"``;
- ``per-feature-files``: one Parquet file per feature and part (no column projection needed).

For each: bytes per clip, bytes a reader of ``mel`` (and of ``frames``) touches per clip
(counted through the file object it reads), ``mel`` clips/s decoded to a float16 array, and
frames/s decoded to uint8 pixels.

``--fidelity`` also measures what JPEG does to the pictures and to a model: PSNR of
photographs at qualities 80/90/95, and a vis-inc backbone trained (quick preset) on raw
frames of the demo dataset, evaluated on the same test clips read raw and read as JPEG
(accuracy, agreement of the predicted scene, largest probability change, cosine similarity
of the fc1024 embeddings). Prints figures and a JSON summary (``--json``).

Usage:
    python bench/store_formats.py --clips 64
    python bench/store_formats.py --fidelity --json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPECTROGRAMS = ("mel", "gam", "cqt")


class CountingFile(io.FileIO):
    """A file that counts the bytes read through it."""

    bytes_read = 0

    def read(self, size=-1):  # what pyarrow.PythonFile calls
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer):  # what io.BufferedReader (np.load) calls
        n = super().readinto(buffer)
        self.bytes_read += n or 0
        return n


def synthetic_clips(n: int):
    """``n`` paper-preset clips as arrays (the generator of bench/datapath.py)."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    from datapath import paper_shapes

    shapes = paper_shapes()
    photos = [np.asarray(image) for image in load_sample_images().images]
    rng = np.random.default_rng(0)
    slope = np.linspace(-2.0, -9.0, shapes["mel"][0])[:, None, None]
    size = shapes["frames"][1]
    for k in range(n):
        arrays = {name: (slope + rng.normal(0, 1.5, size=shapes[name])).astype(np.float16) for name in SPECTROGRAMS}
        photo = photos[k % len(photos)]
        frames = []
        for _ in range(shapes["frames"][0]):
            y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
            frames.append(photo[y : y + size, x : x + size])
        arrays["frames"] = np.stack(frames)
        yield f"clip-{k:04d}", arrays


# --------------------------------------------------------------------------- writers


def write_npz(root: Path, clips) -> list[Path]:
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for clip_id, arrays in clips:
        path = root / f"{clip_id}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    return paths


def write_parts(
    root: Path,
    clips,
    *,
    spectrogram: str,
    compression: str,
    frames: str,
    per_feature: bool = False,
    part_clips: int = 32,
) -> list[Path]:
    """Parquet parts; ``spectrogram`` is ``binary`` or ``list``, ``frames`` ``jpeg`` or ``raw``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from avsc.features.store_format import encode_jpeg

    root.mkdir(parents=True, exist_ok=True)
    clips = list(clips)
    paths = []
    for start in range(0, len(clips), part_clips):
        chunk = clips[start : start + part_clips]
        columns = {"clip_id": pa.array([c for c, _ in chunk])}
        for name in SPECTROGRAMS:
            data = np.stack([a[name] for _, a in chunk])
            if spectrogram == "binary":
                columns[name] = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(data[0].nbytes), len(chunk), [None, pa.py_buffer(data.tobytes())]
                )
            else:
                columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(data.reshape(-1)), data[0].size)
        if frames == "jpeg":
            columns["frames"] = pa.array(
                [[encode_jpeg(f, 90) for f in a["frames"]] for _, a in chunk], pa.list_(pa.binary())
            )
        else:
            data = np.stack([a["frames"] for _, a in chunk])
            columns["frames"] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(data[0].nbytes), len(chunk), [None, pa.py_buffer(data.tobytes())]
            )
        options = {
            "compression": compression,
            "row_group_size": len(chunk),
            "use_dictionary": False,
            "write_statistics": ["clip_id"],
        }
        if spectrogram == "list":
            options["use_byte_stream_split"] = [f"{n}.list.element" for n in SPECTROGRAMS]
        groups = [[name] for name in (*SPECTROGRAMS, "frames")] if per_feature else [[*SPECTROGRAMS, "frames"]]
        for names in groups:
            table = pa.table({"clip_id": columns["clip_id"], **{n: columns[n] for n in names}})
            suffix = f"-{names[0]}" if per_feature else ""
            path = root / f"part-{start // part_clips:05d}{suffix}.parquet"
            pq.write_table(table, path, **options)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- readers


def read_npz(paths, feature):
    import numpy as np

    touched = 0
    out = []
    for path in paths:
        handle = CountingFile(path)
        with np.load(io.BufferedReader(handle)) as data:
            out.append(data[feature])
        touched += handle.bytes_read
        handle.close()
    return out, touched


def read_parts(paths, feature, *, spectrogram: str, frames: str):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from avsc.features.store_format import decode_jpeg

    paths = [p for p in paths if "-" not in p.stem.split("part-")[1] or p.stem.endswith(f"-{feature}")]
    touched, out = 0, []
    for path in paths:
        handle = CountingFile(path)
        column = pq.read_table(pa.PythonFile(handle), columns=[feature]).column(feature).combine_chunks()
        touched += handle.bytes_read
        handle.close()
        if feature in SPECTROGRAMS:
            if spectrogram == "binary":
                out.append(np.frombuffer(column.buffers()[1], np.float16).reshape(len(column), 128, -1, 2))
            else:
                out.append(column.values.to_numpy().reshape(len(column), 128, -1, 2))
        elif frames == "jpeg":
            out.append([np.stack([decode_jpeg(f) for f in clip]) for clip in column.to_pylist()])
        else:
            out.append(np.frombuffer(column.buffers()[1], np.uint8).reshape(len(column), 20, 224, 224, 3))
    return out, touched


def measure(name: str, write, read, n_clips: int, repeats: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="avsc-formats-") as scratch:
        began = time.perf_counter()
        paths = write(Path(scratch))
        write_s = time.perf_counter() - began
        size = sum(p.stat().st_size for p in paths)
        read(paths, "mel")  # warm the page cache
        mel_s = frames_s = float("inf")
        for _ in range(repeats):  # the best of a few: the machine is shared
            began = time.perf_counter()
            _, mel_bytes = read(paths, "mel")
            mel_s = min(mel_s, time.perf_counter() - began)
            began = time.perf_counter()
            _, frame_bytes = read(paths, "frames")
            frames_s = min(frames_s, time.perf_counter() - began)
    row = {
        "design": name,
        "files": len(paths),
        "bytes_per_clip": size / n_clips,
        "mel_bytes_read_per_clip": mel_bytes / n_clips,
        "frames_bytes_read_per_clip": frame_bytes / n_clips,
        "mel_clips_per_s": n_clips / mel_s,
        "frames_per_s": n_clips * 20 / frames_s,
        "write_s_per_clip": write_s / n_clips,
    }
    print(
        f"{name:20s} {row['bytes_per_clip'] / 1e6:6.3f} MB/clip, {row['files']:4d} files; mel reader reads "
        f"{row['mel_bytes_read_per_clip'] / 1e6:6.3f} MB/clip at {row['mel_clips_per_s']:7.0f} clips/s; "
        f"frames reader {row['frames_bytes_read_per_clip'] / 1e6:6.3f} MB/clip at "
        f"{row['frames_per_s']:7.0f} frames/s; write {row['write_s_per_clip'] * 1000:5.1f} ms/clip",
        flush=True,
    )
    return row


def run_designs(n_clips: int) -> list[dict]:
    clips = list(synthetic_clips(n_clips))
    rows = [measure("npz-per-clip", lambda d: write_npz(d, clips), read_npz, n_clips)]
    for name, spectrogram, compression, frames, per_feature in (
        ("parts-binary", "binary", "none", "jpeg", False),
        ("parts-binary-zstd", "binary", "zstd", "jpeg", False),
        ("parts-list-zstd", "list", "zstd", "jpeg", False),
        ("parts-raw-frames", "binary", "none", "raw", False),
        ("per-feature-files", "binary", "none", "jpeg", True),
    ):
        rows.append(
            measure(
                name,
                lambda d, s=spectrogram, c=compression, f=frames, p=per_feature: write_parts(
                    d, clips, spectrogram=s, compression=c, frames=f, per_feature=p
                ),
                lambda paths, feature, s=spectrogram, f=frames: read_parts(paths, feature, spectrogram=s, frames=f),
                n_clips,
            )
        )
    return rows


# --------------------------------------------------------------------------- JPEG fidelity


def photo_psnr() -> dict:
    """PSNR of 224x224 crops of photographs (scikit-learn's and matplotlib's samples)."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from avsc.features.store_format import decode_jpeg, encode_jpeg

    photos = [np.asarray(image) for image in load_sample_images().images]
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos.append(np.asarray(Image.open(handle).convert("RGB")))
    crops = []
    for photo in photos:  # shorter side to 224 (area filter), centre crop: as the frames are made
        image = Image.fromarray(photo)
        scale = 224 / min(image.size)
        image = image.resize(
            (max(224, round(image.size[0] * scale)), max(224, round(image.size[1] * scale))), Image.BOX
        )
        left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
        crops.append(np.asarray(image.crop((left, top, left + 224, top + 224))))
    out = {}
    for quality in (80, 90, 95):
        psnr, size = [], []
        for crop in crops:
            data = encode_jpeg(crop, quality)
            error = decode_jpeg(data).astype(float) - crop
            psnr.append(10 * np.log10(255.0**2 / np.mean(error**2)))
            size.append(len(data))
        out[quality] = {
            "psnr_db_min": round(min(psnr), 1),
            "psnr_db_mean": round(float(np.mean(psnr)), 1),
            "kb_per_frame": round(float(np.mean(size)) / 1024, 1),
        }
        print(
            f"JPEG quality {quality}: PSNR {out[quality]['psnr_db_min']}-{max(psnr):.1f} dB on "
            f"{len(crops)} photographs, {out[quality]['kb_per_frame']} KiB a 224x224 frame",
            flush=True,
        )
    return out


def model_fidelity(work: Path) -> dict:
    """A vis-inc backbone trained on raw frames, evaluated on raw and on JPEG (q 90) test frames."""
    import numpy as np

    from avsc.config import load_config
    from avsc.data.demo import make_demo_dataset
    from avsc.data.ingest import ingest_dataset
    from avsc.features.preprocess import preprocess
    from avsc.features.store import FeatureStore
    from avsc.features.store_writer import StoreWriter
    from avsc.models.backbones import embedding_model
    from avsc.training.backbone import train_backbone
    from avsc.training.streams import clip_predictions, eval_dataset

    raw_config = load_config(preset="quick", overrides={"features": {"frames": {"encoding": "raw"}}})
    demo = make_demo_dataset(work / "demo", progress=False).root
    manifest = ingest_dataset(demo, work / "manifest.parquet", progress=False).manifest_path
    preprocess(manifest, work / "raw", config=raw_config.features, workers=2, progress=False)
    raw = FeatureStore.open(work / "raw")
    jpeg_config = load_config(preset="quick").features
    with StoreWriter(work / "jpeg", jpeg_config, {n: list(s) for n, s in raw.shapes.items()}) as writer:
        for row in raw.clips().itertuples():
            writer.add(row.clip_id, row.label, row.split, {n: raw.read_clip(row.clip_id, n) for n in raw.specs})
    jpeg = FeatureStore.open(work / "jpeg")
    result = train_backbone("vis-inc", work / "raw", work / "model", config=raw_config.train, progress=False)
    import keras

    model = keras.models.load_model(Path(result.model_dir) / "model.keras")
    embed = embedding_model(model)
    outputs = {}
    for name, store in (("raw", raw), ("jpeg", jpeg)):
        clips = store.clips("test").sort_values("clip_id")
        by_id = {cid: i for i, cid in enumerate(store.clips("test")["clip_id"])}
        order = [by_id[c] for c in clips["clip_id"]]
        frames = [
            np.asarray(embed(x, training=False)[0]) for x in eval_dataset(store, "vis-inc", "test", batch_size=64)
        ]
        probs = np.concatenate(
            [np.asarray(model(x, training=False)) for x in eval_dataset(store, "vis-inc", "test", batch_size=64)]
        )
        n = len(store.clips("test"))
        outputs[name] = {
            "probs": clip_predictions(probs, n)[order],
            "fc1024": clip_predictions(np.concatenate(frames), n)[order],
            "labels": list(clips["label"]),
        }
    from avsc.labels import LABEL_INDEX

    y = np.array([LABEL_INDEX[v] for v in outputs["raw"]["labels"]])
    a, b = outputs["raw"], outputs["jpeg"]
    cosine = (a["fc1024"] * b["fc1024"]).sum(1) / (
        np.linalg.norm(a["fc1024"], axis=1) * np.linalg.norm(b["fc1024"], axis=1) + 1e-12
    )
    out = {
        "test_clips": int(len(y)),
        "val_accuracy": result.val_accuracy,
        "accuracy_raw": float((a["probs"].argmax(1) == y).mean()),
        "accuracy_jpeg": float((b["probs"].argmax(1) == y).mean()),
        "same_prediction": float((a["probs"].argmax(1) == b["probs"].argmax(1)).mean()),
        "max_probability_change": float(np.abs(a["probs"] - b["probs"]).max()),
        "mean_probability_change": float(np.abs(a["probs"] - b["probs"]).mean()),
        "fc1024_cosine_min": float(cosine.min()),
    }
    print(
        f"vis-inc (quick, trained on raw frames), {out['test_clips']} test clips: accuracy raw "
        f"{out['accuracy_raw']:.3f}, JPEG {out['accuracy_jpeg']:.3f}; same scene predicted for "
        f"{out['same_prediction']:.1%}; probability change max {out['max_probability_change']:.4f}, "
        f"mean {out['mean_probability_change']:.5f}; fc1024 cosine >= {out['fc1024_cosine_min']:.5f}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--fidelity", action="store_true", help="also PSNR and a trained model on JPEG vs raw")
    parser.add_argument("--skip-designs", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    summary: dict = {"load_average_before": os.getloadavg()}
    if not args.skip_designs:
        summary["designs"] = run_designs(args.clips)
    if args.fidelity:
        summary["psnr"] = photo_psnr()
        with tempfile.TemporaryDirectory(prefix="avsc-fidelity-") as scratch:
            summary["model"] = model_fidelity(Path(scratch))
    summary["load_average_after"] = os.getloadavg()
    print(f"load average before {summary['load_average_before'][0]:.1f}, after {summary['load_average_after'][0]:.1f}")
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
