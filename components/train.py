"""Phase I: train one backbone on the feature stores of all shards."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_backbone(
    backbone: str,
    features: Input[List[Dataset]],
    preset: str,
    epochs: int,
    image_size: int,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train ``backbone`` (e.g. ``aud-mel``); ``model`` becomes its model folder.

    ``epochs`` and ``image_size`` of 0 keep the preset's values. Training checkpoints every
    epoch inside ``model``; a retried task resumes from them only where that folder
    survives the retry (locally it does; a new pod on a cluster starts over).
    """
    import os
    import shutil
    import time

    import avsc.training.backbone
    from avsc.config import load_config

    began = time.perf_counter()
    overrides = {"train": {"epochs": epochs or None, "image_size": image_size or None, "seed": seed}}
    config = load_config(preset=preset, overrides=overrides).train
    result = avsc.training.backbone.train_backbone(backbone, [f.path for f in features], model.path,
                                          config=config, progress=False)
    # Checkpoints only serve a retry of this task; the artifact keeps the selected model.
    shutil.rmtree(os.path.join(model.path, "checkpoints"), ignore_errors=True)
    model.metadata.update(backbone=backbone, best_epoch=result.best_epoch)
    metrics.log_metric("val_accuracy", result.val_accuracy)
    metrics.log_metric("val_log_loss", result.val_log_loss)
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))
