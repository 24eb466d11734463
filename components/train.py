"""Phase I: train one backbone on the feature stores of all shards."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.artifacts import HELPERS, read_config, save_metrics
from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def train_backbone(
    backbone: str,
    config: Input[Artifact],
    features: Input[list[Dataset]],
    output_uri: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train one backbone (Phase I) and keep the epoch chosen on val by ``train.selection``.

    The default rule keeps the lowest val log loss after temperature scaling; the kept
    epoch's temperature (fitted on val) is stored in the model folder's ``config.json``.

    Streams only the backbone's own feature from the store. Checkpoints every epoch to
    ``<output_uri>/checkpoints/<backbone>-<hash of the feature and train settings and of the
    store's data>``, so a retried or preempted pod (a new pod, an empty disk) resumes after
    the last finished epoch, and a run on other data starts afresh; without ``output_uri``,
    inside ``model`` (a local run's retry resumes too).

    Args:
        backbone: ``aud-mel``, ``aud-gam``, ``aud-cqt``, ``vis-inc`` or ``vis-conv``.
        config: the run's config (its ``train`` section: epochs, image size, seed, ...).
        features: the preprocessing shards' stores (or references to the one store), opened
            together.
        output_uri: the run's output location (``s3://`` or a folder), or empty.

    Returns:
        model: the model folder (model.keras, config.json, history.json,
            val_metrics.json); metadata ``backbone`` and ``best_epoch``.
        metrics: ``val_accuracy``, ``val_log_loss`` (calibrated), ``temperature``,
            ``best_epoch``, ``seconds``.
    """
    import os
    import shutil
    import time

    import avsc.training.backbone
    from avsc.features.store import FeatureStore
    from avsc.training.checkpoints import checkpoint_location

    began = time.perf_counter()
    settings = read_config(config)
    paths = [f.path for f in features]
    # The data is part of the checkpoints' identity: a run on other data starts afresh.
    lineage = FeatureStore.open(paths).lineage
    assert lineage is not None  # open() refuses a store index without lineage
    checkpoints = (
        checkpoint_location(output_uri, backbone, settings.features, settings.train, lineage.store_hash)
        if output_uri
        else None
    )
    result = avsc.training.backbone.train_backbone(
        backbone, paths, model.path, config=settings.train, checkpoints=checkpoints, progress=False
    )
    # Checkpoints inside the model folder only serve a retry of this task; the artifact keeps
    # the selected model. Durable ones stay, for a retried pod.
    shutil.rmtree(os.path.join(model.path, "checkpoints"), ignore_errors=True)
    model.metadata.update(backbone=backbone, best_epoch=result.best_epoch)
    save_metrics(
        metrics,
        {
            "val_accuracy": result.val_accuracy,
            "val_log_loss": result.val_log_loss_calibrated,
            "temperature": result.temperature,
            "best_epoch": result.best_epoch,
            "seconds": round(time.perf_counter() - began, 3),
        },
    )
