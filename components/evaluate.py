"""Evaluation: every fusion result on the test split, the HTML report and the best model's bundle."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.artifacts import HELPERS, by_backbone, save_metrics
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def evaluate_fusions(
    fusions: Input[List[Model]],
    models: Input[List[Model]],
    embeddings: Input[List[Dataset]],
    report: Output[Dataset],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    bundle: Output[Model],
):
    """Evaluate every fusion result on the test split; bundle the best one with its backbones.

    The bundled fusion is the report's best (audio+visual, chosen on the val split, never
    on test), with the best visual-only fusion beside it for videos without sound.

    Args:
        fusions: the fusion steps' folders (one per method, three models each).
        models: the five backbones' model folders, each tagged with ``metadata["backbone"]``.
        embeddings: the five backbones' embeddings, tagged the same way (one row per
            backbone in the report: the backbone alone).

    Returns:
        report: a folder with metrics.json, report.html, report.md,
            confusion-*.png and submission-*.csv.
        report_html: report.html, rendered by the Kubeflow UI.
        metrics: ``best_accuracy``, ``best_log_loss`` (test), each backbone's
            ``<backbone>_accuracy``, ``seconds``.
        bundle: the model bundle for ``avsc predict``; metadata ``method``,
            ``modalities``, ``accuracy``.
    """
    import os
    import shutil
    import time

    import avsc.evaluation.evaluate
    import avsc.inference.bundle

    began = time.perf_counter()
    result = avsc.evaluation.evaluate.evaluate([f.path for f in fusions], report.path,
                                               embeddings=by_backbone(embeddings))
    shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)
    by_key = {(r["method"], r["modalities"]): r for r in result["results"]}
    best = by_key[(result["best"]["method"], result["best"]["modalities"])]
    visual = max((r for r in result["results"] if r["modalities"] == "visual"),
                 key=lambda r: (r["val_accuracy"], -r["val_log_loss"]))
    avsc.inference.bundle.make_bundle(by_backbone(models), best["fusion_dir"], bundle.path,
                                      visual_fusion_dir=visual["fusion_dir"])
    bundle.metadata.update(method=best["method"], modalities=best["modalities"], accuracy=best["accuracy"])
    save_metrics(metrics, {"best_accuracy": best["accuracy"], "best_log_loss": best["log_loss"],
                           **{f"{b['backbone']}_accuracy": b["accuracy"] for b in result.get("backbones", [])},
                           "seconds": round(time.perf_counter() - began, 3)})
