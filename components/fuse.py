"""Phase II: one fusion method on the frozen embeddings, for each of the three modality sets."""

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Metrics,
    Model,
    Output,
)

from components.artifacts import HELPERS, by_backbone, read_config, save_metrics
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def fuse_method(
    method: str,
    config: Input[Artifact],
    embeddings: Input[list[Dataset]],
    output_uri: str,
    fusions: Output[Model],
    metrics: Output[Metrics],
    confusion_audio_visual: Output[ClassificationMetrics],
    confusion_audio: Output[ClassificationMetrics],
    confusion_visual: Output[ClassificationMetrics],
):
    """Train fusion ``method`` on audio+visual, audio and visual embeddings; score each on test.

    Args:
        method: ``f1`` .. ``f6`` (paper eqs. 1-3 on fc1024, then on fc10).
        config: the run's config (its ``fusion`` section: epochs, batch size, seed, ...).
        embeddings: the five backbones' embeddings, each tagged with ``metadata["backbone"]``.
        output_uri: the run's output location, or empty. When set, the training state and
            each finished model are kept under ``<output_uri>/checkpoints/fusion-<method>-<hash>``,
            so a retried pod copies what was finished and resumes the rest.

    Returns:
        fusions: a folder with one fusion model folder per modality set
            (``<method>-<modalities>``: model.keras, fusion.json, predictions.parquet).
        metrics: ``<method>_<modalities>_accuracy`` and ``_log_loss`` on the test
            split for each modality set, ``seconds``.
        confusion_audio_visual: the audio+visual model's test confusion matrix.
        confusion_audio: the audio-only model's.
        confusion_visual: the visual-only model's.
    """
    import time

    import avsc.evaluation.evaluate
    import avsc.training.fusion
    from avsc.training.checkpoints import checkpoint_location

    began = time.perf_counter()
    settings = read_config(config).fusion
    inputs = sorted((e.metadata.get("backbone"), e.metadata.get("model_sha256")) for e in embeddings)
    checkpoints = checkpoint_location(output_uri, f"fusion-{method}", settings, inputs) if output_uri else None
    avsc.training.fusion.train_all_fusions(
        by_backbone(embeddings),
        fusions.path,
        config=settings,
        methods=(method,),
        checkpoints=checkpoints,
        progress=False,
    )
    scores = avsc.evaluation.evaluate.score([fusions.path])  # scores only: no report is drawn
    confusions = {"audio+visual": confusion_audio_visual, "audio": confusion_audio, "visual": confusion_visual}
    values = {}
    for result in scores.results:
        name = f"{method}_{result.modalities.replace('+', '_')}"
        values.update({f"{name}_accuracy": result.accuracy, f"{name}_log_loss": result.log_loss})
        confusion = confusions[result.modalities]
        confusion.log_confusion_matrix(list(result.labels), [list(row) for row in result.confusion_matrix])
        save_metrics(confusion)
    save_metrics(metrics, {**values, "seconds": round(time.perf_counter() - began, 3)})
