"""Evaluation: every fusion result on the test split, the HTML report and the best model's bundle."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

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
):
    """Evaluate all fusion results on the test split; bundle the best one with its backbones.

    The bundled fusion is the report's best (audio+visual, chosen on the val split), with the
    best visual-only fusion beside it for videos without sound. ``report`` becomes a folder
    with metrics.json, report.html, report.md, confusion PNGs and DCASE submission CSVs;
    ``metrics`` holds the best result's test scores and each backbone's own test accuracy.
    """
    import os
    import shutil
    import tempfile
    import time

    import avsc.evaluation.evaluate
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
        result = avsc.evaluation.evaluate.evaluate(fusion_roots, report.path,
                                          embeddings_dir=os.path.join(scratch, "embeddings"))
        shutil.copyfile(os.path.join(report.path, "report.html"), report_html.path)

        # Chosen on the val split (as the report's Table II), never on the test split.
        by_key = {(r["method"], r["modalities"]): r for r in result["results"]}
        best = by_key[(result["best"]["method"], result["best"]["modalities"])]
        visual = max((r for r in result["results"] if r["modalities"] == "visual"),
                     key=lambda r: (r["val_accuracy"], -r["val_log_loss"]))
        avsc.inference.bundle.make_bundle(os.path.join(scratch, "models"), best["fusion_dir"], bundle.path,
                                visual_fusion_dir=visual["fusion_dir"])
    bundle.metadata.update(method=best["method"], modalities=best["modalities"],
                           accuracy=best["accuracy"])
    metrics.log_metric("best_accuracy", best["accuracy"])
    metrics.log_metric("best_log_loss", best["log_loss"])
    for entry in result.get("backbones", []):
        metrics.log_metric(f"{entry['backbone']}_accuracy", entry["accuracy"])
    metrics.log_metric("seconds", round(time.perf_counter() - began, 3))
