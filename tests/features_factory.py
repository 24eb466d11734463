"""Write a small synthetic feature store with learnable, class-dependent patterns.

Each class has its own spectral band (a bright row band in mel/gam/cqt, position set by
the class) and its own frame colour and stripe, plus noise, so a small network can
learn it in a few epochs. Written with the real :mod:`avsc.features.store` API.

Example:
    >>> from features_factory import make_feature_store
    >>> root = make_feature_store(tmp_path / "features", per_class={"train": 4, "val": 2, "test": 1})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsc.config import AudioConfig, FeatureConfig, FrameConfig
from avsc.features.store_writer import StoreWriter
from avsc.labels import LABELS
from avsc.records import StoreSummary

DEFAULT_PER_CLASS = {"train": 6, "val": 2, "test": 2}


def make_feature_store(
    root: str | Path,
    *,
    per_class: dict[str, int] | None = None,
    n_bins: int = 16,
    frames: int = 24,
    n_frames: int = 2,
    size: int = 32,
    labels: tuple[str, ...] = LABELS,
    noise: float = 0.5,
    seed: int = 0,
    features: tuple[str, ...] = ("mel", "gam", "cqt", "frames"),
    frame_encoding: str = "jpeg",
    part_clips: int = 8,
) -> Path:
    """Create a store at ``root`` and return it.

    Args:
        per_class: clips per label for each split (default 6 train, 2 val, 2 test).
        n_bins, frames: spectrogram shape ``(n_bins, frames, 2)``.
        n_frames, size: frames shape ``(n_frames, size, size, 3)``.
        noise: standard deviation of the Gaussian noise on the spectrograms (log units).
        frame_encoding: ``jpeg`` (the default of the store) or ``raw``.
        part_clips: clips per part file (small, so a small store has several parts).
    """
    per_class = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    rng = np.random.default_rng(seed)
    config = FeatureConfig(
        audio=AudioConfig(n_bins=n_bins, clip_seconds=1.0), frames=FrameConfig(size=size, encoding=frame_encoding)
    )
    shapes = {name: [n_bins, frames, 2] for name in features if name != "frames"}
    if "frames" in features:
        shapes["frames"] = [n_frames, size, size, 3]
    writer = StoreWriter(root, config, shapes, part_clips=part_clips)
    written = 0
    n_labels = len(labels)
    for split, count in per_class.items():
        for label_number, label in enumerate(labels):
            for k in range(count):
                clip_id = f"{label}-synth-{split}-{k:03d}"
                arrays = {}
                for offset, name in enumerate(n for n in features if n != "frames"):
                    spec = rng.normal(-4.0, noise, size=(n_bins, frames, 2))
                    band = (label_number * n_bins) // n_labels + offset % 2
                    spec[band : band + max(1, n_bins // n_labels), :, :] += 3.0
                    spec += 0.5 * np.sin(np.arange(frames) * (label_number + 1) * 0.3)[None, :, None]
                    arrays[name] = spec
                if "frames" in features:
                    colour = np.array(
                        [(label_number * 25) % 256, (255 - label_number * 25) % 256, (label_number * 70) % 256],
                        dtype=np.float64,
                    )
                    image = np.broadcast_to(colour, (n_frames, size, size, 3)).copy()
                    stripe = (label_number * size) // n_labels
                    image[:, stripe : stripe + max(1, size // n_labels), :, :] = 255.0
                    image += rng.normal(0, 20, size=image.shape)
                    arrays["frames"] = np.clip(image, 0, 255).astype(np.uint8)
                writer.add(clip_id, label, split, arrays)
                written += 1
    writer.close()
    StoreSummary(processed=written, rejected=(), shapes={name: tuple(shape) for name, shape in shapes.items()}).write(
        root
    )
    return Path(root)
