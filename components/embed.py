"""Export one trained backbone's embeddings (fc1024 and fc10 logits) for every clip."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.artifacts import HELPERS, save_metrics
from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def embed_backbone(
    model: Input[Model],
    features: Input[list[Dataset]],
    embeddings: Output[Dataset],
    metrics: Output[Metrics],
):
    """Write the embeddings of every clip of every split (one Parquet file).

    Args:
        model: a trained backbone's model folder (the training step's ``model``).
        features: the feature stores of every preprocessing shard, opened together.

    Returns:
        embeddings: Parquet with clip_id, split, label, fc1024, fc10 per clip;
            metadata ``backbone``, ``clips``, ``model_sha256``.
        metrics: ``clips``, ``seconds``.
    """
    import time

    import avsc.training.embeddings

    began = time.perf_counter()
    result = avsc.training.embeddings.embed_clips(
        model.path, [f.path for f in features], embeddings.path, progress=False
    )
    embeddings.metadata.update(backbone=result.backbone, clips=result.n_clips, model_sha256=result.model_sha256)
    save_metrics(metrics, {"clips": result.n_clips, "seconds": round(time.perf_counter() - began, 3)})
