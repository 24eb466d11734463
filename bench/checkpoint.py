"""Checkpoint benchmark: how long a training takes to save (and load) its checkpoint.

A training that receives SIGTERM saves a checkpoint at the end of the running step and stops;
Kubernetes sends SIGKILL after the pod's grace period (30 s by default, 15-30 s for a
preempted GKE node), so the save must fit in it. For each backbone at a preset this builds the
training model (the backbone behind its mixup layer, compiled with Adam, optimizer slots made,
as :mod:`avsc.training.backbone` does), then times :meth:`Checkpoints.save_model` of a
``step-*.keras`` file and :meth:`Checkpoints.load_model` of it, on a local folder and, when
``--store s3://bucket/prefix`` is given (credentials from ``AVSC_S3_*``), on the object store.

Prints one line per (backbone, location): file size, save seconds, load seconds.

Usage:
    python bench/checkpoint.py                            # paper preset, every backbone, local
    python bench/checkpoint.py --preset quick --backbone aud-mel
    python bench/checkpoint.py --store s3://avsc/bench    # also on the object store
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ("aud-mel", "aud-gam", "aud-cqt", "vis-inc", "vis-conv")


def measure(backbone: str, preset: str, locations: list[str]) -> None:
    import keras
    import numpy as np

    from avsc.config import load_config
    from avsc.features.spectrograms import feature_shapes
    from avsc.models.backbones import build_backbone
    from avsc.models.losses import kl_divergence_loss
    from avsc.storage import locations as locs
    from avsc.training.checkpoints import Checkpoints
    from avsc.training.mixup import with_mixup

    config = load_config(preset=preset)
    shapes = feature_shapes(config.features)
    model = build_backbone(backbone, shapes, config.train)
    x_dtype = "uint8" if backbone.startswith("vis") else "float16"
    trainer = with_mixup(model, x_dtype=np.dtype(x_dtype).name)
    trainer.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate), loss=kl_divergence_loss)
    trainer.optimizer.build(trainer.trainable_variables)
    for location in locations:
        ckpt = Checkpoints(location)
        began = time.perf_counter()
        ckpt.save_model(trainer, "step-0001-000001.keras")
        saved = time.perf_counter() - began
        began = time.perf_counter()
        ckpt.load_model("step-0001-000001.keras")
        loaded = time.perf_counter() - began
        size = len(locs.read_bytes(locs.join(location, "step-0001-000001.keras"))) / 2**20
        kind = "s3" if locs.is_remote(location) else "local"
        print(
            f"{backbone:9s} {preset:6s} {kind:5s} {size:8.1f} MiB  save {saved:6.2f} s  load {loaded:6.2f} s",
            flush=True,
        )
        locs.remove(locs.join(location, "step-0001-000001.keras"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--backbone", action="append", choices=BACKBONES)
    parser.add_argument("--store", help="also measure at this s3://bucket/prefix")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avsc-bench-ckpt-") as local:
        where = [local] + ([args.store] if args.store else [])
        for backbone in args.backbone or BACKBONES:
            measure(backbone, args.preset, where)


if __name__ == "__main__":
    main()
