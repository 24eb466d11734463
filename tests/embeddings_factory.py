"""Write synthetic backbone embeddings (one Parquet per backbone) that fusion can learn from.

Each backbone sees each class through its own random mean direction plus Gaussian noise,
at a backbone-specific strength: audio backbones are weaker than visual ones and each
is unsure about different clips, so fusing them beats any one of them. ``fc10`` are
logits favouring the true class by the same strength. Written with the real
:func:`avsc.training.embeddings.write_embeddings`.

Example:
    >>> from embeddings_factory import make_embeddings
    >>> root = make_embeddings(tmp_path / "embeddings", per_class={"train": 20, "val": 5, "test": 5})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from records_factory import LINEAGE

from avsc.config import BACKBONES
from avsc.labels import LABELS
from avsc.records import Lineage
from avsc.training.embeddings import write_embeddings

DEFAULT_PER_CLASS = {"train": 20, "val": 6, "test": 6}
# How clearly each backbone separates the classes (signal-to-noise of its embeddings).
STRENGTH = {"aud-mel": 0.7, "aud-gam": 0.6, "aud-cqt": 0.5, "vis-inc": 0.9, "vis-conv": 0.8}


def make_embeddings(
    root: str | Path,
    *,
    per_class: dict[str, int] | None = None,
    width: int = 1024,
    backbones: tuple[str, ...] = BACKBONES,
    noise: float = 1.0,
    seed: int = 0,
    config_hash: str = "synthetic0001",
    lineage: Lineage = LINEAGE,
) -> Path:
    """Write ``<backbone>.parquet`` for each backbone into ``root`` and return ``root``.

    Args:
        per_class: clips per label for each split (default 20 train, 6 val, 6 test).
        width: width of the ``fc1024`` embedding (1024 like the real backbones; smaller
            makes tests faster).
        noise: standard deviation of the per-clip noise.
        lineage: the data the embeddings say they were made from.
    """
    per_class = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    rng = np.random.default_rng(seed)
    clip_ids, splits, labels, y = [], [], [], []
    for split, count in per_class.items():
        for k, label in enumerate(LABELS):
            for i in range(count):
                clip_ids.append(f"{label}-synth-{i // 4}-{split}{i:04d}")
                splits.append(split)
                labels.append(label)
                y.append(k)
    y = np.asarray(y)
    n = len(y)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for b, backbone in enumerate(backbones):
        strength = STRENGTH.get(backbone, 0.7)
        means_wide = rng.normal(size=(len(LABELS), width)).astype(np.float32)
        fc1024 = strength * means_wide[y] + noise * rng.normal(size=(n, width))
        fc1024 = np.maximum(fc1024, 0.0)  # like the ReLU output of a real fc1024
        fc10 = 3.0 * strength * np.eye(len(LABELS))[y] + 1.5 * noise * rng.normal(size=(n, len(LABELS)))
        write_embeddings(
            root / f"{backbone}.parquet",
            clip_ids=clip_ids,
            splits=splits,
            labels=labels,
            fc1024=fc1024.astype(np.float32),
            fc10=fc10.astype(np.float32),
            backbone=backbone,
            config_hash=config_hash,
            model_sha256=f"{b:02d}" * 32,
            lineage=lineage,
        )
    return root
