"""Phase I: train one backbone on the feature stores of all shards."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.artifacts import HELPERS, read_config, save_metrics
from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def train_backbone(
    backbone: str,
    config: Input[Artifact],
    features: Input[List[Dataset]],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train one backbone (Phase I) and keep the epoch with the best val accuracy.

    Training checkpoints every epoch inside ``model``; a retried task resumes from them only
    where that folder survives the retry (locally it does; a new pod on a cluster starts over).

    Args:
        backbone: ``aud-mel``, ``aud-gam``, ``aud-cqt``, ``vis-inc`` or ``vis-conv``.
        config: the run's config (its ``train`` section: epochs, image size, seed, ...).
        features: the feature stores of every preprocessing shard, opened together.

    Returns:
        model: the model folder (model.keras, config.json, history.json,
            val_metrics.json); metadata ``backbone`` and ``best_epoch``.
        metrics: ``val_accuracy``, ``val_log_loss``, ``best_epoch``, ``seconds``.
    """
    import os
    import shutil
    import time

    import avsc.training.backbone

    began = time.perf_counter()
    result = avsc.training.backbone.train_backbone(backbone, [f.path for f in features], model.path,
                                                   config=read_config(config).train, progress=False)
    # Checkpoints only serve a retry of this task; the artifact keeps the selected model.
    shutil.rmtree(os.path.join(model.path, "checkpoints"), ignore_errors=True)
    model.metadata.update(backbone=backbone, best_epoch=result.best_epoch)
    save_metrics(metrics, {"val_accuracy": result.val_accuracy, "val_log_loss": result.val_log_loss,
                           "best_epoch": result.best_epoch, "seconds": round(time.perf_counter() - began, 3)})
