"""Kubeflow Pipelines components of avsc: one thin step per stage.

Each component unwraps its artifacts, calls one :mod:`avsc` library function and logs what
the Kubeflow UI shows (metrics, confusion matrices, the HTML report). Heavy imports happen
inside the component bodies, so importing this package (and compiling the pipeline) needs
kfp only. The bodies run in the images of :mod:`components.images` on a cluster and in the
current Python environment under ``kfp.local``; the helpers they share are in
:mod:`components.artifacts`, the tasks' cluster settings in :mod:`components.cluster`.
``pipeline.py``'s command line is :mod:`components.cli` (its pipeline settings' flags,
:mod:`components.pipeline_settings`); what a local run prints and logs,
:mod:`components.progress` (how it names steps and words their ends,
:mod:`components.step_report`). The package installs with the library (the ``pipeline``
extra brings kfp).
"""

from components.config import resolve_config
from components.embed import embed_backbone
from components.evaluate import evaluate_fusions
from components.fuse import fuse_method
from components.images import CPU_IMAGE, GPU_IMAGE
from components.ingest import ingest_dataset, list_shards
from components.preprocess import preprocess_shard
from components.publish import publish_outputs
from components.train import train_backbone

__all__ = [
    "CPU_IMAGE",
    "GPU_IMAGE",
    "resolve_config",
    "ingest_dataset",
    "list_shards",
    "preprocess_shard",
    "train_backbone",
    "embed_backbone",
    "fuse_method",
    "evaluate_fusions",
    "publish_outputs",
]
