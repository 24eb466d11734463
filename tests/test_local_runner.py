"""``pipeline.py run --local --runner docker``: the container settings, the mounts, the images,
and the guard against steps that "succeed" without their outputs.

No container engine is needed: the Docker API is the remote service here, played by a small
fake client; kfp's own Docker task handler and executor input are real. The run inside real
images is in test_containers.py (marker ``container``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest
import yaml
from kfp import local
from kfp.local import docker_task_handler, status

import pipeline
from components import cli
from components.images import CPU_IMAGE, GPU_IMAGE, resolve_image
from components.local_runner import (
    bind_mounts,
    container_settings,
    executor_output_file,
    local_runner,
    run_container,
)


def test_resolve_image_applies_no_gpu_then_the_registry():
    assert resolve_image(CPU_IMAGE) == CPU_IMAGE and resolve_image(GPU_IMAGE) == GPU_IMAGE
    assert resolve_image(GPU_IMAGE, gpu=False) == CPU_IMAGE
    assert (
        resolve_image(GPU_IMAGE, registry="registry.local:5000/ml/")
        == "registry.local:5000/ml/" + GPU_IMAGE.rsplit("/", 1)[1]
    )
    assert (
        resolve_image(GPU_IMAGE, registry="localhost/avsc-dev", gpu=False)
        == "localhost/avsc-dev/" + CPU_IMAGE.rsplit("/", 1)[1]
    )


def test_compiled_without_gpus_every_step_names_the_cpu_image(tmp_path):
    path = tmp_path / "no-gpu.yaml"
    assert pipeline.main(["compile", "-o", str(path), "--no-gpu", "--registry", "localhost/avsc-dev"]) == 0
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    images = {executor["container"]["image"] for executor in executors.values()}
    assert images == {"localhost/avsc-dev/" + CPU_IMAGE.rsplit("/", 1)[1]}


def test_steps_run_as_the_caller_read_only_with_only_the_store_settings():
    environ = {
        "AVSC_S3_ENDPOINT": "minio.example:9000",
        "AVSC_S3_ACCESS_KEY": "key",
        "AVSC_S3_SECRET_KEY": "secret",
        "HOME": "/root",
        "AWS_PROFILE": "x",
    }
    settings = container_settings(dataset="/data/tau", output="/runs/out", environ=environ)
    assert settings["user"] == f"{os.getuid()}:{os.getgid()}"
    assert settings["read_only"] is True
    assert settings["tmpfs"] == {"/tmp": "rw,nosuid,nodev,mode=1777"}
    assert settings["cap_drop"] == ["ALL"] and settings["security_opt"] == ["no-new-privileges"]
    assert settings["environment"] == {
        "AVSC_S3_ENDPOINT": "minio.example:9000",
        "AVSC_S3_ACCESS_KEY": "key",
        "AVSC_S3_SECRET_KEY": "secret",
    }
    assert "network_mode" not in settings  # a remote store: the engine's default network
    local.DockerRunner(**settings)  # every key is one kfp's DockerRunner accepts


@pytest.mark.parametrize(
    "environ, dataset, network",
    [
        ({}, "/data/tau", "none"),
        ({"AVSC_S3_ENDPOINT": "localhost:9000"}, "s3://avsc/tau", "host"),
        ({"AVSC_S3_ENDPOINT": "127.0.0.1"}, "/data/tau", "host"),
        ({"AVSC_S3_ENDPOINT": "[::1]:9000"}, "/data/tau", "host"),
        ({"AVSC_S3_ENDPOINT": "http://localhost:9000"}, "/data/tau", "host"),
        ({"AVSC_S3_ENDPOINT": "localhost.example.org:9000"}, "/data/tau", None),
        ({}, "s3://avsc/tau", None),
    ],
)
def test_network_is_off_unless_the_store_is_used(environ, dataset, network):
    settings = container_settings(dataset=dataset, output="/runs/out", environ=environ, user="1234:0")
    assert settings.get("network_mode") == network
    assert settings["user"] == "1234:0"


def test_dataset_is_mounted_read_only_and_the_output_read_write(tmp_path):
    mounts = bind_mounts(dataset=str(tmp_path / "data" / ".." / "data"), output=tmp_path / "out")
    assert mounts == {
        str(tmp_path / "out"): {"bind": str(tmp_path / "out"), "mode": "rw"},
        str(tmp_path / "data"): {"bind": str(tmp_path / "data"), "mode": "ro"},
    }
    remote = bind_mounts(dataset="s3://avsc/tau", output=tmp_path / "out", selinux=True)
    assert remote == {str(tmp_path / "out"): {"bind": str(tmp_path / "out"), "mode": "rw,z"}}


def test_executor_output_file_is_read_from_the_command_line():
    command = [
        "sh",
        "-c",
        "...",
        "--executor_input",
        json.dumps({"outputs": {"outputFile": "/runs/out/task/executor_output.json"}}),
        "--function_to_execute",
        "ingest_dataset",
    ]
    assert executor_output_file(command) == "/runs/out/task/executor_output.json"
    assert executor_output_file(["python", "-c", "pass"]) is None


# ---------------------------------------------------------------- the Docker API, faked


class FakeContainer:
    def __init__(self, exit_code: int, on_run=None):
        self.exit_code, self.on_run, self.removed = exit_code, on_run, False

    def logs(self, stream: bool, follow: bool):
        assert stream and follow
        if self.on_run:
            self.on_run()
        yield b"step log line\n"

    def wait(self):
        # kfp's auto-removed container would be gone here; ours must still exist.
        assert not self.removed, "container removed before its exit code was read"
        return {"StatusCode": self.exit_code}

    def remove(self, force: bool):
        self.removed = True


class FakeClient:
    def __init__(self, container: FakeContainer, images: set[str]):
        self.container, self.runs, self.closed = container, [], False
        client = self

        class Images:
            def get(self, name):
                if name not in images:
                    raise docker.errors.ImageNotFound(name)

            def pull(self, name):
                raise docker.errors.APIError(f"pull access denied for {name}")

        class Containers:
            def run(self, **kwargs):
                client.runs.append(kwargs)
                return client.container

        self.images, self.containers = Images(), Containers()

    def info(self):
        return {"SecurityOptions": ["name=seccomp,profile=default"]}

    def close(self):
        self.closed = True


def test_run_container_reads_the_real_exit_code_before_removing(capsys):
    container = FakeContainer(exit_code=3)
    client = FakeClient(container, images={CPU_IMAGE})
    code = run_container(client, CPU_IMAGE, ["false"], {}, auto_remove=True, read_only=True)
    assert code == 3 and container.removed
    (run,) = client.runs
    assert "auto_remove" not in run and run["read_only"] is True and run["detach"] is True
    out = capsys.readouterr().out
    assert f"Running in {CPU_IMAGE} as user of the image, read-only root" in out and "step log line" in out


def test_a_missing_image_that_cannot_be_pulled_says_how_to_build_it():
    client = FakeClient(FakeContainer(0), images=set())
    with pytest.raises(RuntimeError, match="make images"):
        run_container(client, "localhost/avsc-dev/avsc-cpu:0.1.0", ["true"], {})


def _task_command(output_file: Path) -> list[str]:
    return [
        "sh",
        "-c",
        "run the step",
        "--executor_input",
        json.dumps({"outputs": {"outputFile": str(output_file)}}),
        "--function_to_execute",
        "step",
    ]


@pytest.mark.parametrize(
    "exit_code, writes_output, expected",
    [
        (0, True, status.Status.SUCCESS),
        (0, False, status.Status.FAILURE),  # "succeeded" without its outputs
        (1, True, status.Status.FAILURE),
    ],
)
def test_guarded_handler_counts_a_step_by_exit_code_and_outputs(
    tmp_path, monkeypatch, capsys, exit_code, writes_output, expected
):
    output_file = tmp_path / "pipeline-root" / "task" / "executor_output.json"

    def write_outputs():
        if writes_output:
            output_file.parent.mkdir(parents=True, exist_ok=True)
            output_file.write_text("{}")

    container = FakeContainer(exit_code, on_run=write_outputs)
    client = FakeClient(container, images={CPU_IMAGE})
    monkeypatch.setattr(docker, "from_env", lambda: client)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(local.config.LocalExecutionConfig, "instance", None)
    with local_runner(
        "docker", dataset=str(tmp_path / "data"), output=tmp_path / "out", gpu=False, environ={}
    ) as runner:
        handler_class = docker_task_handler.DockerTaskHandler
        assert handler_class.__name__ == "GuardedDockerTaskHandler"
        handler = handler_class(
            image=GPU_IMAGE,
            full_command=_task_command(output_file),
            pipeline_root=str(tmp_path / "out" / "pipeline-root"),
            runner=runner,
            env_vars={"AVSC_S3_ENDPOINT": "x"},
        )
        assert handler.run() == expected
    assert docker_task_handler.DockerTaskHandler.__name__ == "DockerTaskHandler"  # restored
    (run,) = client.runs
    assert run["image"] == CPU_IMAGE  # --no-gpu: the CPU image for a GPU step
    assert run["environment"] == {"AVSC_S3_ENDPOINT": "x"}
    assert run["volumes"][str(tmp_path / "data")] == {"bind": str(tmp_path / "data"), "mode": "ro"}
    assert run["volumes"][str(tmp_path / "out")]["mode"] == "rw"
    assert run["volumes"][str(tmp_path / "out" / "pipeline-root")]["mode"] == "rw"
    assert run["read_only"] is True and run["network_mode"] == "none"
    assert container.removed and client.closed
    assert (tmp_path / "out" / "pipeline-root").is_dir(), "made by the caller, not by the engine as root"
    if exit_code == 0 and not writes_output:
        assert "wrote no " + str(output_file) in capsys.readouterr().out


def test_no_docker_api_is_a_clear_error(monkeypatch, tmp_path):
    def unreachable():
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", unreachable)
    with (
        pytest.raises(RuntimeError, match="podman system service"),
        local_runner("docker", dataset="s3://avsc/tau", output=tmp_path / "out"),
    ):
        pass


def test_subprocess_runner_is_the_default_and_patches_nothing(tmp_path):
    args = cli.build_parser().parse_args(["run", "--local"])
    assert args.runner == "subprocess" and args.registry is None and args.no_gpu is False
    before = docker_task_handler.DockerTaskHandler
    with local_runner(args.runner, dataset="/data", output=tmp_path) as runner:
        assert isinstance(runner, local.SubprocessRunner) and runner.use_venv is False
        assert docker_task_handler.DockerTaskHandler is before
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--local", "--runner", "kubernetes"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--local", "--runner", "docker", "--registry", "Bad Registry!"])
    args = cli.build_parser().parse_args(
        ["run", "--local", "--runner", "docker", "--registry", "registry.local:5000/ml", "--no-gpu"]
    )
    assert (args.runner, args.registry, args.no_gpu) == ("docker", "registry.local:5000/ml", True)
