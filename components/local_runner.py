"""Where ``pipeline.py run --local`` runs each step: in this Python, or in the step's image.

``--runner subprocess`` (the default) runs every step as a subprocess of this Python, with the
library installed here (kfp.local's ``SubprocessRunner``). ``--runner docker`` runs every step
in the image its component names (:mod:`components.images`), through kfp.local's
``DockerRunner`` and the Docker API of docker or podman (``DOCKER_HOST``, e.g.
``unix:///run/podman/podman.sock`` for ``podman system service``), the way a cluster runs it:

- as the caller's UID and GID, so the outputs belong to whoever ran the pipeline;
- with a read-only root file system and a tmpfs on ``/tmp`` (the only place a step writes
  besides its outputs), no capabilities and no privilege escalation;
- the dataset folder mounted read-only and the output folder (which holds the pipeline root)
  read-write, each at its own path, so the paths the pipeline passes mean the same inside;
- the caller's ``AVSC_S3_*`` variables passed in; no network at all unless the object store
  is used (then the host's network when the endpoint is on this machine);
- the images retargeted by ``--registry`` (as on a cluster), and with ``--no-gpu`` every step
  in the CPU image, so the GPU image need not be built.

kfp 2.17's ``DockerRunner`` starts containers with ``auto_remove`` and, when a container is
gone before it asks for its exit code (it exited within ~0.1 s), assumes 0: a failed step can
pass. Here containers are removed only after their exit code is read, and a step counts as
succeeded only if it also wrote its executor output file (kfp's record of its outputs).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from components.images import CPU_IMAGE, GPU_IMAGE, resolve_image

RUNNERS = ("subprocess", "docker")
# Passed from the caller's environment into every step (the object store's endpoint and keys).
S3_ENV_PREFIX = "AVSC_S3_"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def add_runner_flags(parser: argparse.ArgumentParser) -> None:
    """The ``run`` command's ``--runner``, ``--registry`` and ``--no-gpu`` flags."""
    group = parser.add_argument_group("where the steps run")
    group.add_argument(
        "--runner",
        choices=RUNNERS,
        default="subprocess",
        help="subprocess: in this Python (default); docker: each step in its image, "
        "as your user with a read-only root file system, through the Docker API "
        "of docker or podman (DOCKER_HOST)",
    )
    group.add_argument(
        "--registry",
        metavar="HOST[/PATH]",
        type=_registry,
        help="with --runner docker: take the avsc images from this registry "
        "(default: the names in components/images.py)",
    )
    group.add_argument("--no-gpu", action="store_true", help="with --runner docker: run every step in the CPU image")


def _registry(text: str) -> str:
    from components.cluster import REGISTRY_PATTERN

    if not re.fullmatch(REGISTRY_PATTERN, text.rstrip("/")):
        raise argparse.ArgumentTypeError(f"must look like host[:port][/path], got {text!r}")
    return text


def container_settings(
    *, dataset: str, output: str | Path, environ: Mapping[str, str] | None = None, user: str | None = None
) -> dict:
    """``docker run`` settings (docker SDK ``containers.run`` keywords) for every step.

    Args:
        dataset: the run's dataset folder or ``s3://...`` URI.
        output: the run's output folder (it holds the pipeline root).
        environ: where ``AVSC_S3_*`` come from (default ``os.environ``).
        user: ``UID:GID`` the steps run as (default: the caller's).
    """
    environ = os.environ if environ is None else environ
    s3 = {name: value for name, value in environ.items() if name.startswith(S3_ENV_PREFIX)}
    endpoint = s3.get(f"{S3_ENV_PREFIX}ENDPOINT", "")
    uses_store = bool(endpoint) or dataset.startswith("s3://")
    host = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname
    if not uses_store:
        network = "none"  # a local run needs no network: proves the steps work offline
    elif host in LOCAL_HOSTS:
        network = "host"  # "localhost" inside the container must be the store on this machine
    else:
        network = None
    settings = {
        "user": user or f"{os.getuid()}:{os.getgid()}",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "environment": s3,
    }
    if network:
        settings["network_mode"] = network
    return settings


def bind_mounts(*, dataset: str, output: str | Path, selinux: bool = False) -> dict[str, dict]:
    """Host path -> docker SDK volume spec: the output folder read-write and a local dataset
    folder read-only, each at its own path (kfp mounts the pipeline root itself)."""
    suffix = ",z" if selinux else ""
    mounts = {str(Path(output).resolve()): {"bind": str(Path(output).resolve()), "mode": "rw" + suffix}}
    if not dataset.startswith("s3://"):
        path = str(Path(dataset).resolve())
        mounts[path] = {"bind": path, "mode": "ro" + suffix}
    return mounts


def executor_output_file(command: list[str]) -> str | None:
    """The executor output file named in a lightweight component's command line."""
    for flag, value in itertools.pairwise(command):
        if flag == "--executor_input":
            return json.loads(value).get("outputs", {}).get("outputFile")
    return None


def _guarded_handler(images: Mapping[str, str], extra_mounts: Mapping[str, dict]):
    """A subclass of kfp's DockerTaskHandler that runs the mapped image with ``extra_mounts``,
    reads the real exit code and checks the executor output file."""
    import docker
    from kfp.local import docker_task_handler, status

    class GuardedDockerTaskHandler(docker_task_handler.DockerTaskHandler):
        def get_volumes_to_mount(self, client=None):
            volumes = super().get_volumes_to_mount(client)
            for host, spec in extra_mounts.items():
                volumes.setdefault(host, dict(spec))
            return volumes

        def run(self) -> status.Status:
            # Made here, as the caller: a bind-mount source the engine has to create is root's.
            os.makedirs(self.pipeline_root, exist_ok=True)
            client = docker.from_env()
            try:
                settings = dict(self.runner.container_run_args)
                # kfp's dispatcher has merged the runner's environment into env_vars already.
                settings["environment"] = {**self.env_vars, **settings.get("environment", {})}
                code = run_container(
                    client,
                    images.get(self.image, self.image),
                    self.full_command,
                    self.get_volumes_to_mount(client),
                    **settings,
                )
            finally:
                client.close()
            if code != 0:
                return status.Status.FAILURE
            output_file = executor_output_file(self.full_command)
            if output_file and not os.path.isfile(output_file):
                print(f"error: the step's container exited 0 but wrote no {output_file}: counted as failed", flush=True)
                return status.Status.FAILURE
            return status.Status.SUCCESS

    return GuardedDockerTaskHandler


def run_container(client, image: str, command: list[str], volumes: dict, **settings) -> int:
    """Run ``command`` in ``image`` to its end, printing its log; its real exit code.

    Raises:
        RuntimeError: the image is neither present nor pullable.
    """
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            print(f"Pulling image {image!r}", flush=True)
            client.images.pull(image)
        except docker.errors.APIError as exc:
            raise RuntimeError(
                f"image {image} is not in the container engine and could not be pulled ({exc}). "
                "Build it with `make images` (or `make images FLAVOURS=cpu` with --no-gpu), or "
                "name the registry holding it with --registry."
            ) from exc
    settings = {key: value for key, value in settings.items() if key not in {"auto_remove", "remove"}}
    print(
        f"Running in {image} as user {settings.get('user', 'of the image')}"
        f"{', read-only root' if settings.get('read_only') else ''}",
        flush=True,
    )
    container = client.containers.run(image=image, command=command, volumes=volumes, detach=True, **settings)
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="", flush=True)
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


@contextlib.contextmanager
def local_runner(
    runner: str,
    *,
    dataset: str,
    output: str | Path,
    registry: str | None = None,
    gpu: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Iterator[object]:
    """The kfp.local runner for ``runner`` (``subprocess`` or ``docker``), for the length of a run.

    For ``docker``, kfp.local's Docker task handler is replaced by the guarded one while the
    block runs (kfp looks it up per task), and the output folder is created.

    Example::

        with local_runner("docker", dataset="/data/tau", output="runs/local") as runner:
            local.init(runner=runner, pipeline_root="runs/local/pipeline-root")
            pipeline(dataset="/data/tau")
    """
    from kfp import local

    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    if runner == "subprocess":
        yield local.SubprocessRunner(use_venv=False)
        return
    try:
        import docker
    except ImportError as exc:
        raise RuntimeError("--runner docker needs the docker package: pip install docker") from exc
    try:
        with contextlib.closing(docker.from_env()) as client:
            selinux = "name=selinux" in client.info().get("SecurityOptions", [])
    except docker.errors.DockerException as exc:
        raise RuntimeError(
            f"--runner docker: no Docker API answers ({exc}). Start the docker daemon, or podman's "
            "Docker-compatible service (`podman system service --time=0 unix:///run/podman/podman.sock &`, "
            "then DOCKER_HOST=unix:///run/podman/podman.sock)."
        ) from exc
    Path(output).mkdir(parents=True, exist_ok=True)
    images = {image: resolve_image(image, registry=registry, gpu=gpu) for image in (CPU_IMAGE, GPU_IMAGE)}
    settings = container_settings(dataset=dataset, output=output, environ=environ)

    from kfp.local import docker_task_handler

    original = docker_task_handler.DockerTaskHandler
    docker_task_handler.DockerTaskHandler = _guarded_handler(
        images, bind_mounts(dataset=dataset, output=output, selinux=selinux)
    )
    try:
        yield local.DockerRunner(**settings)
    finally:
        docker_task_handler.DockerTaskHandler = original


__all__ = [
    "RUNNERS",
    "add_runner_flags",
    "bind_mounts",
    "container_settings",
    "executor_output_file",
    "local_runner",
    "run_container",
]
