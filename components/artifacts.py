"""Helpers the component bodies share: metrics files, backbone mappings, the run's config.

A lightweight component runs its function's source alone in the image, which has ``avsc``
and ``kfp`` but not this folder, so a body cannot import this module there. Each component
lists the helpers it calls in ``additional_funcs`` (:data:`HELPERS`); kfp then copies their
source into the component's program. Called through ``python_func`` (tests) they are these
module-level functions. Hence every helper imports what it needs inside its body.
"""

from kfp.dsl import Artifact


def save_metrics(artifact: Artifact, values: dict[str, float] | None = None) -> None:
    """Log ``values`` on a ``Metrics`` artifact and write its metadata to the artifact's file.

    kfp keeps logged metrics (and confusion matrices) in the artifact's metadata only and
    writes no file; kfp.local's cache counts an output whose file is missing as absent and
    runs the task again. The file (the metadata as JSON) makes every step reusable and lets
    the metrics be read from the pipeline root.

    Args:
        artifact: an output ``Metrics`` or ``ClassificationMetrics`` artifact.
        values: metric name -> number, logged first (``Metrics`` only).
    """
    import json
    import os

    for name, value in (values or {}).items():
        artifact.log_metric(name, value)
    os.makedirs(os.path.dirname(artifact.path) or ".", exist_ok=True)
    with open(artifact.path, "w") as handle:
        json.dump(artifact.metadata, handle, indent=2, sort_keys=True)


def by_backbone(artifacts: list[Artifact]) -> dict[str, str]:
    """Backbone -> local path of each artifact, from its ``metadata["backbone"]``.

    The backbone loop's outputs reach later steps as lists (``dsl.Collected``) in no
    guaranteed order; the training and embedding steps tag each artifact with its backbone.

    Raises:
        ValueError: an artifact without a backbone, or two for the same backbone.
    """
    paths: dict[str, str] = {}
    for artifact in artifacts:
        backbone = artifact.metadata.get("backbone")
        if not backbone:
            raise ValueError(f"artifact {artifact.uri} has no 'backbone' in its metadata")
        if backbone in paths:
            raise ValueError(f"two artifacts for backbone {backbone}: {paths[backbone]} and {artifact.path}")
        paths[backbone] = artifact.path
    return paths


def read_config(artifact: Artifact):
    """The :class:`avsc.config.Config` the run's first step resolved (its ``config`` artifact)."""
    import json

    from avsc.config import config_from_dict

    with open(artifact.path) as handle:
        return config_from_dict(json.load(handle)["config"])


HELPERS = [save_metrics, by_backbone, read_config]
