"""Evaluation: every fusion result on the test split, the HTML report and the best model's bundle."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.artifacts import HELPERS, by_backbone, save_metrics
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def evaluate_fusions(
    fusions: Input[list[Model]],
    models: Input[list[Model]],
    embeddings: Input[list[Dataset]],
    report: Output[Dataset],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    bundle: Output[Model],
    summary: Output[Markdown],
    manifest: Input[Dataset] = None,
):
    """Evaluate every fusion result on the test split; bundle the best one with its backbones.

    The bundled fusion is the report's best (audio+visual, chosen on the val split by the
    fusion models' selection rule, never on test), with the best visual-only fusion beside it
    for videos without sound.

    Args:
        fusions: the fusion steps' folders (one per method, three models each).
        models: the five backbones' model folders, each tagged with ``metadata["backbone"]``
            (their settings go into the report's provenance block, their histories into its
            training curves).
        embeddings: the five backbones' embeddings, tagged the same way (one row per
            backbone in the report: the backbone alone).
        manifest: the ingest step's manifest folder (optional): names the dataset, whether
            it is synthetic, its clips per split and the protocol (whole clips or segments)
            in the report's provenance block.

    Returns:
        report: a folder with metrics.json, report.html, report.md, confusion-*.png,
            calibration-*.png, training-curves.png and submission-*.csv (on a segment run
            also submission-*-clips.csv of whole clips).
        report_html: report.html, rendered by the Kubeflow UI.
        metrics: ``best_accuracy``, ``best_log_loss`` (test, calibrated),
            ``<method>_<modalities>_accuracy`` / ``_log_loss`` of every fusion model, each
            backbone's ``<backbone>_accuracy`` / ``_log_loss``, ``seconds``.
        bundle: the model bundle for ``avsc predict``; metadata ``method``,
            ``modalities``, ``accuracy``.
        summary: the report's provenance, tables and notes in Markdown (no figures), which
            the Kubeflow UI renders.
    """
    import os
    import shutil
    import time

    import avsc.evaluation.evaluate
    import avsc.evaluation.report
    import avsc.inference.bundle_writer

    began = time.perf_counter()
    manifest_file = os.path.join(manifest.path, "manifest.parquet") if manifest is not None else None
    result = avsc.evaluation.evaluate.evaluate(
        [f.path for f in fusions],
        report.path,
        embeddings=by_backbone(embeddings),
        models=by_backbone(models),
        manifest=manifest_file,
    )
    shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(avsc.evaluation.report.summary_markdown(result))
    # Chosen on the val split (as the report's Table II), never on the test split.
    best = result.result(result.best)
    visual = result.result(result.best_per_modalities.get("visual"))
    assert best is not None and visual is not None  # every run trains f4 on each modality set
    avsc.inference.bundle_writer.make_bundle(
        by_backbone(models),
        best.fusion_dir,
        bundle.path,
        visual_fusion_dir=visual.fusion_dir,
        manifest=manifest_file,
    )
    bundle.metadata.update(method=best.method, modalities=best.modalities, accuracy=best.accuracy)
    values = {"best_accuracy": best.accuracy, "best_log_loss": best.log_loss}
    for r in result.results:  # calibrated test scores of every method x modality set
        name = f"{r.method}_{r.modalities.replace('+', '_')}"
        values.update({f"{name}_accuracy": r.accuracy, f"{name}_log_loss": r.log_loss})
    for b in result.backbones:
        values.update({f"{b.backbone}_accuracy": b.accuracy, f"{b.backbone}_log_loss": b.log_loss})
    save_metrics(metrics, {**values, "seconds": round(time.perf_counter() - began, 3)})
