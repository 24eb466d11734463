"""The CPU image built and the pipeline run inside it, as a cluster would run it (marker ``container``).

Needs docker (with its daemon) or podman, and time: the build downloads TensorFlow (minutes),
the run trains five small models. Run only when asked for::

    make test-containers            # = pytest -m container -v -rP tests/test_container_run.py

and skipped cleanly where no engine answers. Settings (environment):

- ``AVSC_TEST_BASE_IMAGE``: the base to build from (e.g. one made by ``make debian-base`` where
  Docker Hub is out of reach); default the Dockerfile's.
- ``AVSC_TEST_WEIGHTS_DIR``: the ImageNet weights to bake in; default stand-in files (random
  weights under Keras' names), so the build needs no download from Google's storage.
- ``DOCKER_HOST``: the Docker API for ``--runner docker``; with podman and no ``DOCKER_HOST``,
  the test starts ``podman system service`` on a socket of its own.

The pipeline runs with ``--runner docker --no-gpu`` as an arbitrary UID (4242, through setpriv
when the test runs as root; else as the caller, who is already not root), so each step's
container runs as that UID with a read-only root file system, the dataset mounted read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "localhost/avsc-test"
ARBITRARY_UID = 4242

pytestmark = pytest.mark.container


def _answers(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def engine(request) -> str:
    if "container" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("builds an image: run only when asked for (pytest -m container; make test-containers)")
    if shutil.which("docker") and _answers("docker", "info"):
        return "docker"
    if shutil.which("podman") and _answers("podman", "info"):
        return "podman"
    pytest.skip("no container engine answers (start the docker daemon, or install podman)")


@pytest.fixture(scope="module")
def scratch():
    """A world-traversable scratch folder (pytest's tmp_path is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="avsc-container-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def docker_host(engine, scratch):
    """``DOCKER_HOST`` for the run: the caller's, docker's default, or a podman service of ours."""
    if os.environ.get("DOCKER_HOST") or engine == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    socket = scratch / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.1)
        assert socket.exists(), "podman system service did not open its socket"
        if os.getuid() == 0:
            socket.chmod(0o666)  # the pipeline runs as the arbitrary UID, and talks to this socket
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)


@pytest.fixture(scope="module")
def cpu_image(engine, scratch) -> str:
    from standin_weights import make_standin_weights

    weights = os.environ.get("AVSC_TEST_WEIGHTS_DIR") or str(
        make_standin_weights(scratch / "weights")["inception"].parent
    )
    env = {
        **os.environ,
        "CONTAINER_ENGINE": engine,
        "REGISTRY": REGISTRY,
        "WEIGHTS_DIR": weights,
        "BASE_IMAGE": os.environ.get("AVSC_TEST_BASE_IMAGE", ""),
        "CA_BUNDLE": os.environ.get("SSL_CERT_FILE", ""),
    }
    began = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-images.sh"), "cpu"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, f"image build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    print(f"build: {done.stdout.strip().splitlines()[-1]} (this build: {time.perf_counter() - began:.0f} s)")
    return f"{REGISTRY}/avsc-cpu:0.1.0"


def test_image_smoke_check_as_its_user_and_an_arbitrary_uid(cpu_image, engine):
    began = time.perf_counter()
    done = subprocess.run(
        [str(ROOT / "scripts" / "check-image.sh"), cpu_image],
        cwd=ROOT,
        env={**os.environ, "CONTAINER_ENGINE": engine},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"smoke check failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.count("--- passed") == 2
    assert "ok  /tmp is empty in the image" in done.stdout
    assert done.stdout.count("ok  baked ImageNet weights load with no network") == 2
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith(("ok", "---", "    "))))
    print(f"smoke check: {time.perf_counter() - began:.0f} s")


def test_tiny_pipeline_runs_in_the_image_read_only_as_an_arbitrary_uid(cpu_image, docker_host, scratch):
    from avsc.data.demo import make_demo_dataset

    dataset = make_demo_dataset(
        scratch / "dataset", clips_per_class=6, locations_per_class=3, seconds=2.0, width=96, height=72, progress=False
    ).root
    output = scratch / "out"
    output.mkdir()
    command = [
        sys.executable,
        "pipeline.py",
        "run",
        "--local",
        "--runner",
        "docker",
        "--no-gpu",
        "--registry",
        REGISTRY,
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        "--preset",
        "quick",
        "--set",
        "train.epochs=1",
        "--shards",
        "2",
    ]
    uid = os.getuid()
    if uid == 0:
        uid = ARBITRARY_UID
        os.chown(output, uid, uid)
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "HOME": str(output),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.perf_counter() - began
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"pipeline run failed:\n{log[-6000:]}"
    image = f"{REGISTRY}/avsc-cpu:0.1.0"
    steps = log.count(f"Running in {image} as user {uid}:{uid}, read-only root")
    assert steps == log.count("Executing task") >= 20, f"{steps} steps ran in {image} as {uid}"
    assert "Running in " + REGISTRY + "/avsc-gpu" not in log, "--no-gpu: the CPU image for every step"
    metrics = json.loads((output / "metrics.json").read_text())
    assert len(metrics["results"]) == 18
    assert (output / "report.html").stat().st_uid == uid, "outputs belong to the caller"
    assert not any(dataset.rglob("*.npz")), "the dataset stays untouched (mounted read-only)"
    best = max(r["accuracy"] for r in metrics["results"])
    print(
        f"pipeline: {steps} steps in {image} as uid {uid}, read-only root, no network: "
        f"{seconds:.0f} s; best accuracy {best:.2f}"
    )


def test_a_step_that_exits_at_once_keeps_its_exit_code(cpu_image, docker_host):
    """kfp 2.17's own handler reports 0 for a container gone before it asks (auto-removed)."""
    import docker

    from components.local_runner import run_container

    client = docker.DockerClient(base_url=docker_host)
    try:
        codes = [
            run_container(client, cpu_image, ["sh", "-c", "exit 3"], {}, entrypoint=[], read_only=True)
            for _ in range(3)
        ]
    finally:
        client.close()
    assert codes == [3, 3, 3]
