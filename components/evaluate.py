"""Evaluation: every fusion result on the test split, the HTML report and the best model's bundle."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_fusions(
    fusions: Input[List[Model]],
    model_aud_mel: Input[Model],
    model_aud_gam: Input[Model],
    model_aud_cqt: Input[Model],
    model_vis_inc: Input[Model],
    model_vis_conv: Input[Model],
    aud_mel: Input[Dataset],
    aud_gam: Input[Dataset],
    aud_cqt: Input[Dataset],
    vis_inc: Input[Dataset],
    vis_conv: Input[Dataset],
    report: Output[Dataset],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    bundle: Output[Model],
    summary: Output[Markdown],
    manifest: Input[Dataset] = None,
):
    """Evaluate all fusion results on the test split; bundle the best one with its backbones.

    The bundled fusion is the report's best (audio+visual, chosen on the val split), with the
    best visual-only fusion beside it for videos without sound. ``report`` becomes a folder
    with metrics.json, report.html, report.md, figures and DCASE submission CSVs;
    ``summary`` is the report's text and tables in Markdown (the Kubeflow UI renders it);
    ``metrics`` holds the test scores of every method x modality set and of each backbone.
    ``manifest`` (the ingest step's output) names the dataset in the report's provenance block.
    """
    import os
    import shutil
    import tempfile
    import time

    import avsc.evaluation.evaluate
    import avsc.evaluation.report
    import avsc.inference.bundle
    began = time.perf_counter()
    models = {"aud-mel": model_aud_mel, "aud-gam": model_aud_gam, "aud-cqt": model_aud_cqt,
              "vis-inc": model_vis_inc, "vis-conv": model_vis_conv}
    embeddings = {"aud-mel": aud_mel, "aud-gam": aud_gam, "aud-cqt": aud_cqt, "vis-inc": vis_inc,
                  "vis-conv": vis_conv}
    with tempfile.TemporaryDirectory(prefix="avsc-evaluate-") as scratch:  # removed afterwards
        os.makedirs(os.path.join(scratch, "models"))
        os.makedirs(os.path.join(scratch, "embeddings"))
        for backbone in models:  # the folder layouts the library reads, by symlink
            os.symlink(os.path.abspath(models[backbone].path), os.path.join(scratch, "models", backbone))
            os.symlink(os.path.abspath(embeddings[backbone].path),
                       os.path.join(scratch, "embeddings", f"{backbone}.parquet"))
        fusion_roots = [f.path for f in fusions]
        result = avsc.evaluation.evaluate.evaluate(
            fusion_roots, report.path, embeddings_dir=os.path.join(scratch, "embeddings"),
            models_dir=os.path.join(scratch, "models"),
            manifest=os.path.join(manifest.path, "manifest.parquet") if manifest is not None else None)
        shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)
        with open(summary.path, "w", encoding="utf-8") as handle:
            handle.write(avsc.evaluation.report.summary_markdown(result))

        # Chosen on the val split (as the report's Table II), never on the test split.
        by_key = {(r["method"], r["modalities"]): r for r in result["results"]}
        best = by_key[(result["best"]["method"], result["best"]["modalities"])]
        visual = by_key[tuple(result["best_per_modalities"]["visual"].values())]
        avsc.inference.bundle.make_bundle(os.path.join(scratch, "models"), best["fusion_dir"], bundle.path,
                                visual_fusion_dir=visual["fusion_dir"])
    bundle.metadata.update(method=best["method"], modalities=best["modalities"],
                           accuracy=best["accuracy"])
    metrics.log_metric("best_accuracy", best["accuracy"])
    metrics.log_metric("best_log_loss", best["log_loss"])
    for r in result["results"]:  # calibrated test scores of every method x modality set
        name = f"{r['method']}_{r['modalities'].replace('+', '_')}"
        metrics.log_metric(f"{name}_accuracy", r["accuracy"])
        metrics.log_metric(f"{name}_log_loss", r["log_loss"])
    for entry in result.get("backbones", []):
        metrics.log_metric(f"{entry['backbone']}_accuracy", entry["accuracy"])
        metrics.log_metric(f"{entry['backbone']}_log_loss", entry["log_loss"])
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))
