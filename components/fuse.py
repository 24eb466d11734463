"""Phase II: one fusion method on the frozen embeddings, for each of the three modality sets."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fuse_method(
    method: str,
    preset: str,
    fusion_epochs: int,
    seed: int,
    aud_mel: Input[Dataset],
    aud_gam: Input[Dataset],
    aud_cqt: Input[Dataset],
    vis_inc: Input[Dataset],
    vis_conv: Input[Dataset],
    fusions: Output[Model],
    metrics: Output[Metrics],
    confusion_audio_visual: Output[ClassificationMetrics],
    confusion_audio: Output[ClassificationMetrics],
    confusion_visual: Output[ClassificationMetrics],
):
    """Train fusion ``method`` (``f1``..``f6``) on audio+visual, audio and visual embeddings.

    ``fusions`` becomes a folder with one fusion model folder per modality set
    (``<method>-<modalities>``); each is evaluated on the test split and its confusion
    matrix logged for the Kubeflow UI. ``fusion_epochs`` of 0 keeps the preset's value.
    """
    import os
    import tempfile
    import time

    import avsc.evaluation.evaluate
    import avsc.training.fusion
    from avsc.config import load_config

    began = time.perf_counter()
    inputs = {"aud-mel": aud_mel, "aud-gam": aud_gam, "aud-cqt": aud_cqt, "vis-inc": vis_inc,
              "vis-conv": vis_conv}
    overrides = {"fusion": {"epochs": fusion_epochs or None, "seed": seed}}
    config = load_config(preset=preset, overrides=overrides).fusion
    with tempfile.TemporaryDirectory(prefix="avsc-fuse-") as scratch:  # removed afterwards
        embeddings_dir = os.path.join(scratch, "embeddings")
        os.makedirs(embeddings_dir)
        for backbone, artifact in inputs.items():
            os.symlink(os.path.abspath(artifact.path), os.path.join(embeddings_dir, f"{backbone}.parquet"))
        avsc.training.fusion.train_all_fusions(embeddings_dir, fusions.path, config=config, methods=(method,),
                                      progress=False)
        report = avsc.evaluation.evaluate.evaluate([fusions.path], os.path.join(scratch, "report"))
    confusions = {"audio+visual": confusion_audio_visual, "audio": confusion_audio,
                  "visual": confusion_visual}
    for result in report["results"]:
        name = f"{method}_{result['modalities'].replace('+', '_')}"
        metrics.log_metric(f"{name}_accuracy", result["accuracy"])
        metrics.log_metric(f"{name}_log_loss", result["log_loss"])
        confusions[result["modalities"]].log_confusion_matrix(list(result["labels"]),
                                                              result["confusion_matrix"])
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))
