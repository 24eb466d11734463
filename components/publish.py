"""Publishing: the run's report, embeddings and model bundle to the output location."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish_outputs(
    output_uri: str,
    report: Input[Dataset],
    bundle: Input[Model],
    aud_mel: Input[Dataset],
    aud_gam: Input[Dataset],
    aud_cqt: Input[Dataset],
    vis_inc: Input[Dataset],
    vis_conv: Input[Dataset],
):
    """Copy the outputs to ``output_uri``: an ``s3://bucket/prefix`` or a local folder.

    Layout under it: the report folder's files (metrics.json, report.html, ...),
    ``embeddings/<backbone>.parquet`` and ``bundle/``. An empty ``output_uri`` publishes
    nothing (the outputs stay in the pipeline root).
    """
    import os
    import shutil

    from avsc.storage.s3 import is_remote
    from avsc.storage.sync import push_dir, push_file

    if not output_uri:
        print("output_uri is empty: nothing published")
        return
    embeddings = {"aud-mel": aud_mel, "aud-gam": aud_gam, "aud-cqt": aud_cqt, "vis-inc": vis_inc,
                  "vis-conv": vis_conv}
    if is_remote(output_uri):
        base = output_uri.rstrip("/")
        push_dir(report.path, base, progress=False)
        push_dir(bundle.path, f"{base}/bundle", progress=False)
        for backbone, artifact in embeddings.items():
            push_file(artifact.path, f"{base}/embeddings/{backbone}.parquet")
    else:
        shutil.copytree(report.path, output_uri, dirs_exist_ok=True)
        shutil.copytree(bundle.path, os.path.join(output_uri, "bundle"), dirs_exist_ok=True)
        os.makedirs(os.path.join(output_uri, "embeddings"), exist_ok=True)
        for backbone, artifact in embeddings.items():
            shutil.copyfile(artifact.path, os.path.join(output_uri, "embeddings", f"{backbone}.parquet"))
    print(f"published to {output_uri}")
