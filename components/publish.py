"""Publishing: the run's config, report, embeddings and model bundle to the output location."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.artifacts import HELPERS, by_backbone
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False, additional_funcs=HELPERS)
def publish_outputs(
    output_uri: str,
    config: Input[Artifact],
    report: Input[Dataset],
    bundle: Input[Model],
    embeddings: Input[list[Dataset]],
):
    """Copy the outputs to ``output_uri``: an ``s3://bucket/prefix`` or a local folder.

    Layout under it: ``config.json`` (the run's config record), the report folder's files
    (metrics.json, report.html, ..., outputs.json), ``embeddings/<backbone>.parquet`` and
    ``bundle/``. The files an earlier run's report or bundle left there are removed
    (:func:`avsc.storage.publish.merge_output`), so they never mix with this run's.

    Args:
        output_uri: ``s3://bucket/prefix`` (credentials from ``AVSC_S3_*``) or a local
            folder; empty publishes nothing (the outputs stay in the pipeline root).
        config: the run's config record.
        report: the evaluation's report folder.
        bundle: the model bundle.
        embeddings: the five backbones' embeddings, each tagged with ``metadata["backbone"]``.
    """
    from avsc.storage import locations
    from avsc.storage.publish import merge_output

    if not output_uri:
        print("output_uri is empty: nothing published")
        return
    files = {f"embeddings/{backbone}.parquet": path for backbone, path in by_backbone(embeddings).items()}
    files["config.json"] = config.path
    merge_output(report.path, output_uri)  # an earlier report's files there are removed
    merge_output(bundle.path, locations.join(output_uri, "bundle"))
    for name, path in files.items():
        locations.copy(path, locations.join(output_uri, *name.split("/")))
    print(f"published to {output_uri}")
