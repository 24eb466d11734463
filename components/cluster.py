"""Cluster settings of the pipeline's tasks: GPUs, CPU and memory, node selection, retries,
the object-store secret and where the images come from.

They are compile-time settings, not pipeline parameters: KFP needs them in each task's spec.
:mod:`pipeline` applies them while it wires the DAG; ``kfp.local`` ignores the Kubernetes
ones (with a warning), so the same pipeline object serves both.
"""

from dataclasses import dataclass

from kfp import dsl, kubernetes

from components.images import resolve_image

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
        choose_images: set each task's image from ``gpu`` and ``registry``; False keeps the
            components' own (``kfp.local``, whose runner picks the image itself).
        parallel_trainings: backbones trained at once (0: all, one GPU each; kfp.local runs
            at most 2).
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
    choose_images: bool = True
    parallel_trainings: int = 0


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
LOCAL_OPTIONS = ClusterOptions(gpu=False, retries=False, preprocess_workers=1, choose_images=False)


@dataclass(frozen=True)
class StepSettings:
    """How one step of the pipeline runs on a cluster.

    Attributes:
        display_name: the name the Kubeflow UI shows.
        resources: its row of :data:`RESOURCES`.
        accelerator: requests one accelerator, on the GPU nodes (unless ``--no-gpu``).
        store: reads or writes the object store (credentials from the Secret, by name).
        retries: retries with backoff on a fault (a preempted node, a store hiccup); every
            retried step is safe to repeat (outputs are written whole, training resumes from
            its checkpoints).
        cache: a later run with the same inputs reuses its outputs.
    """

    display_name: str
    resources: str
    accelerator: bool = False
    store: bool = False
    retries: int = 0
    cache: bool = True


# Every step's cluster settings, in the order of the DAG.
STEPS: dict[str, StepSettings] = {
    "config": StepSettings("Resolve config", "config"),
    "ingest": StepSettings("Ingest dataset", "ingest", store=True, retries=3),
    "shards": StepSettings("List shards", "shards"),
    "preprocess": StepSettings("Preprocess shard", "preprocess", store=True, retries=3),
    "train": StepSettings("Train backbone", "train", accelerator=True, store=True, retries=2),
    "embed": StepSettings("Embed backbone", "embed", accelerator=True, store=True, retries=1),
    "fuse": StepSettings("Fuse embeddings", "fuse", store=True, retries=2),
    "evaluate": StepSettings("Evaluate and bundle", "evaluate"),
    # Never cached: publishing must land the files even when every other step is reused.
    "publish": StepSettings("Publish outputs", "publish", store=True, retries=5, cache=False),
}

# Backoff of every retry: 30 s, doubling, at most 10 min between tries.
BACKOFF = {"backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}


def configure(task: dsl.PipelineTask, step: str, options: ClusterOptions) -> dsl.PipelineTask:
    """``task`` with the settings :data:`STEPS` gives ``step``, under ``options``: its display
    name, CPU and memory, image, accelerator, store credentials, retries and caching.

    The image is chosen here, at compile time: the one the component names, the CPU image for
    every step without ``options.gpu``, under ``options.registry`` when given
    (:func:`components.images.resolve_image`).
    """
    settings = STEPS[step]
    task.set_display_name(settings.display_name)
    cpu, memory, cpu_limit, memory_limit = RESOURCES[options.resources][settings.resources]
    if step == "preprocess" and options.resources == "standard":
        cpu = cpu_limit = str(options.preprocess_workers)
    task.set_cpu_request(cpu).set_cpu_limit(cpu_limit).set_memory_request(memory).set_memory_limit(memory_limit)
    if options.choose_images:
        task.set_container_image(resolve_image(task.container_spec.image, registry=options.registry, gpu=options.gpu))
    if settings.accelerator and options.gpu:
        task.set_accelerator_type(options.accelerator).set_accelerator_limit(1)
        if options.node_selector:
            kubernetes.add_node_selector(task, label_key=options.node_selector[0], label_value=options.node_selector[1])
        if options.toleration:
            kubernetes.add_toleration(task, key=options.toleration, operator="Exists", effect="NoSchedule")
    if settings.store:
        kubernetes.use_secret_as_env(task, secret_name=options.secret, secret_key_to_env=SECRET_ENV)
    if settings.retries and options.retries:
        task.set_retry(num_retries=settings.retries, **BACKOFF)
    return task.set_caching_options(settings.cache)
