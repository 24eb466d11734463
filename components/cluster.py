"""Cluster settings of the pipeline's tasks: GPUs, CPU and memory, node selection, retries,
the object-store secret and where the images come from.

They are compile-time settings, not pipeline parameters: KFP needs them in each task's spec.
:mod:`pipeline` applies them while it wires the DAG; ``kfp.local`` ignores the Kubernetes
ones (with a warning), so the same pipeline object serves both.
"""

import re
from dataclasses import dataclass

from kfp import dsl, kubernetes

from components.images import CPU_IMAGE, GPU_IMAGE, resolve_image

# Secret keys -> environment variables read by avsc.storage.s3.S3Settings.from_env.
SECRET_ENV = {
    "endpoint": "AVSC_S3_ENDPOINT",
    "access_key": "AVSC_S3_ACCESS_KEY",
    "secret_key": "AVSC_S3_SECRET_KEY",
    "region": "AVSC_S3_REGION",
    "secure": "AVSC_S3_SECURE",
}


@dataclass(frozen=True)
class ClusterOptions:
    """Compile-time settings of the pipeline's tasks (they are not pipeline parameters).

    Attributes:
        gpu: training and embedding tasks request one accelerator each, with the node
            selector and toleration below; False (``--no-gpu``) drops all three.
        accelerator: the resource name the tasks request, e.g. ``nvidia.com/gpu``.
        node_selector: ``(label, value)`` GPU nodes carry, or None.
        toleration: taint key GPU nodes carry (tolerated with ``Exists``/``NoSchedule``), or None.
        secret: the Kubernetes Secret whose keys become ``AVSC_S3_*`` in tasks touching the store.
        retries: retry with backoff on transient faults (off for fail-fast local runs).
        preprocess_workers: clips each preprocessing shard decodes at once (= its CPU request).
        resources: CPU/memory profile of :data:`RESOURCES`: ``standard`` (GPU nodes, the paper
            preset) or ``small`` (a CPU-only test cluster such as kind, the quick preset).
        registry: where the avsc images were pushed (``make push REGISTRY=...``); the
            components' ``ghcr.io/avsc/avsc-{cpu,gpu}:VERSION`` become ``REGISTRY/avsc-...``.
    """

    gpu: bool = True
    accelerator: str = "nvidia.com/gpu"
    node_selector: tuple[str, str] | None = ("nvidia.com/gpu.present", "true")
    toleration: str | None = "nvidia.com/gpu"
    secret: str = "avsc-s3"
    retries: bool = True
    preprocess_workers: int = 2
    resources: str = "standard"
    registry: str | None = None


# CPU request, memory request, CPU limit, memory limit per step and profile.
RESOURCES: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "standard": {
        "config": ("100m", "256Mi", "500m", "512Mi"),
        "ingest": ("1", "2Gi", "2", "4Gi"),
        "shards": ("100m", "128Mi", "500m", "512Mi"),
        "preprocess": ("2", "4Gi", "2", "8Gi"),
        "train": ("4", "16Gi", "8", "32Gi"),
        "embed": ("2", "8Gi", "4", "16Gi"),
        "fuse": ("1", "2Gi", "2", "4Gi"),
        "evaluate": ("1", "4Gi", "2", "8Gi"),
        "publish": ("500m", "1Gi", "1", "2Gi"),
    },
    "small": {
        "config": ("100m", "256Mi", "500m", "512Mi"),
        "ingest": ("250m", "512Mi", "1", "2Gi"),
        "shards": ("100m", "128Mi", "500m", "512Mi"),
        "preprocess": ("500m", "1Gi", "2", "3Gi"),
        "train": ("500m", "2Gi", "2", "4Gi"),
        "embed": ("250m", "1Gi", "2", "3Gi"),
        "fuse": ("250m", "512Mi", "1", "2Gi"),
        "evaluate": ("250m", "1Gi", "1", "3Gi"),
        "publish": ("100m", "256Mi", "1", "1Gi"),
    },
}

# What --registry accepts: host[:port][/path], as image references spell it.
REGISTRY_PATTERN = r"[a-z0-9.\-]+(:[0-9]+)?(/[a-z0-9._\-]+)*"

# kfp.local ignores Kubernetes settings; these keep a local run quiet and fail-fast.
LOCAL_OPTIONS = ClusterOptions(gpu=False, retries=False, preprocess_workers=1)


def with_resources(task: dsl.PipelineTask, options: ClusterOptions, step: str) -> dsl.PipelineTask:
    """CPU and memory requests and limits of ``step`` (a key of :data:`RESOURCES`)."""
    cpu, memory, cpu_limit, memory_limit = RESOURCES[options.resources][step]
    if step == "preprocess" and options.resources == "standard":
        cpu = cpu_limit = str(options.preprocess_workers)
    return (task.set_cpu_request(cpu).set_cpu_limit(cpu_limit)
            .set_memory_request(memory).set_memory_limit(memory_limit))


def with_retries(task: dsl.PipelineTask, options: ClusterOptions, times: int) -> dsl.PipelineTask:
    """Retry ``times`` with backoff (30 s, doubling, at most 10 min) unless retries are off."""
    if options.retries:
        task.set_retry(num_retries=times, backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    return task


def with_store_access(task: dsl.PipelineTask, options: ClusterOptions) -> dsl.PipelineTask:
    """Object-store endpoint and credentials from the Secret, by name only."""
    return kubernetes.use_secret_as_env(task, secret_name=options.secret, secret_key_to_env=SECRET_ENV)


def on_accelerator(task: dsl.PipelineTask, options: ClusterOptions) -> dsl.PipelineTask:
    """One accelerator, on nodes with the GPU label, tolerating their taint (unless ``gpu`` is off)."""
    if not options.gpu:
        return task
    task.set_accelerator_type(options.accelerator).set_accelerator_limit(1)
    if options.node_selector:
        kubernetes.add_node_selector(task, label_key=options.node_selector[0],
                                     label_value=options.node_selector[1])
    if options.toleration:
        kubernetes.add_toleration(task, key=options.toleration, operator="Exists", effect="NoSchedule")
    return task


def retarget_images(package: str, registry: str | None, gpu: bool = True) -> str:
    """The compiled package with every avsc image as :func:`components.images.resolve_image`
    names it: taken from ``registry`` (same name and tag), and the CPU image for every step when
    not ``gpu`` (a cluster without GPUs, such as kind, then needs only the CPU image).

    Raises:
        ValueError: ``registry`` is not ``host[:port][/path]``.
    """
    if registry and not re.fullmatch(REGISTRY_PATTERN, registry.rstrip("/")):
        raise ValueError(f"--registry must look like host[:port][/path], got {registry!r}")
    for image in (CPU_IMAGE, GPU_IMAGE):
        package = package.replace(f"image: {image}", f"image: {resolve_image(image, registry=registry, gpu=gpu)}")
    return package
