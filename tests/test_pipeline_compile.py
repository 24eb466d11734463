"""The compiled pipeline's structure: stages, fan-out, parallel GPU trainings, pinned images,
no credentials; and the command line of pipeline.py (parsing only, nothing submitted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pipeline
from avsc.config import BACKBONES, FUSION_METHODS
from components.images import CPU_IMAGE, GPU_IMAGE

# Values that must never reach the YAML even when they are in the compiling environment.
FAKE_ACCESS_KEY = "AKIAFAKEACCESSKEY1234"
FAKE_SECRET_KEY = "fake+secret/key+9f8e7d6c5b4a"
TRAIN_NAMES = {f"Train {pipeline.display_backbone(b)}" for b in BACKBONES}


class Compiled:
    """A compiled package: the pipeline spec, the Kubernetes platform spec and the raw text."""

    def __init__(self, path: Path):
        self.text = path.read_text()
        docs = list(yaml.safe_load_all(self.text))
        self.spec = docs[0]
        self.platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"] if len(docs) > 1 else {}
        self.components = self.spec["components"]
        self.executors = self.spec["deploymentSpec"]["executors"]
        self.root = self.spec["root"]["dag"]["tasks"]

    def all_tasks(self) -> dict[str, dict]:
        """Every task of the root DAG and of nested DAGs (ParallelFor bodies)."""
        found = {}
        pending = [self.root]
        while pending:
            tasks = pending.pop()
            for name, task in tasks.items():
                found[name] = task
                component = self.components[task["componentRef"]["name"]]
                if "dag" in component:
                    pending.append(component["dag"]["tasks"])
        return found

    def by_display(self, display: str) -> tuple[str, dict]:
        matches = [(n, t) for n, t in self.all_tasks().items() if t["taskInfo"]["name"] == display]
        assert len(matches) == 1, f"expected one task shown as {display!r}, found {len(matches)}"
        return matches[0]

    def executor(self, task: dict) -> tuple[str, dict]:
        label = self.components[task["componentRef"]["name"]]["executorLabel"]
        return label, self.executors[label]["container"]

    def upstream(self, name: str) -> set[str]:
        """Root-DAG tasks ``name`` depends on, directly or through others."""
        seen, pending = set(), [name]
        while pending:
            for dep in self.root[pending.pop()].get("dependentTasks", []):
                if dep not in seen:
                    seen.add(dep)
                    pending.append(dep)
        return seen


def _compile(tmp_path_factory, monkeypatch_env: dict[str, str], *flags: str) -> Compiled:
    path = tmp_path_factory.mktemp("compiled") / "avsc_pipeline.yaml"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in monkeypatch_env.items():
            mp.setenv(key, value)
        assert pipeline.main(["compile", "-o", str(path), *flags]) == 0
    return Compiled(path)


CREDENTIAL_ENV = {"AVSC_S3_ACCESS_KEY": FAKE_ACCESS_KEY, "AVSC_S3_SECRET_KEY": FAKE_SECRET_KEY,
                  "AVSC_S3_ENDPOINT": "store.internal.example:9000"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Compiled:
    return _compile(tmp_path_factory, CREDENTIAL_ENV)


@pytest.fixture(scope="module")
def compiled_no_gpu(tmp_path_factory) -> Compiled:
    return _compile(tmp_path_factory, CREDENTIAL_ENV, "--no-gpu")


def test_every_stage_is_present_with_a_readable_name(compiled):
    names = [t["taskInfo"]["name"] for t in compiled.all_tasks().values()
             if "executorLabel" in compiled.components[t["componentRef"]["name"]]]
    expected = {"Ingest dataset", "List shards", "Preprocess shard", "Fuse embeddings",
                "Evaluate and bundle", "Publish outputs"} | TRAIN_NAMES
    expected |= {f"Embed {pipeline.display_backbone(b)}" for b in BACKBONES}
    assert set(names) == expected
    assert len(names) == len(expected)  # one task each
    for name in names:  # no task left with its generated name
        assert not re.fullmatch(r"[a-z0-9-]+", name), name


def test_pipeline_parameters_and_defaults(compiled):
    params = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"dataset", "output_uri", "preset", "epochs", "image_size", "shard_count",
                           "fusion_epochs", "seed"}
    assert "defaultValue" not in params["dataset"]  # required
    assert params["shard_count"]["defaultValue"] == 4
    for name in ("epochs", "image_size", "fusion_epochs"):
        assert params[name]["defaultValue"] == 0  # 0 = the preset's value
    assert params["preset"]["defaultValue"] in ("quick", "paper")


def test_preprocessing_fans_out_over_the_shard_list(compiled):
    shard_list, _ = compiled.by_display("List shards")
    assert compiled.root[shard_list]["inputs"]["parameters"]["shard_count"] == {
        "componentInputParameter": "shard_count"}
    loops = [n for n, t in compiled.root.items() if "parameterIterator" in t
             and "preprocess-shard" in compiled.components[t["componentRef"]["name"]]["dag"]["tasks"]]
    assert len(loops) == 1
    loop = compiled.root[loops[0]]
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert loop["inputs"]["parameters"][items]["taskOutputParameter"]["producerTask"] == shard_list
    body = compiled.components[loop["componentRef"]["name"]]["dag"]["tasks"]["preprocess-shard"]
    assert body["inputs"]["parameters"]["shard_index"]["componentInputParameter"] == \
        loop["parameterIterator"]["itemInput"]
    # The loop's features are collected into one list for every training task.
    outputs = compiled.components[loop["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    assert all(spec.get("isArtifactList") for spec in outputs.values())
    for display in TRAIN_NAMES:
        name, task = compiled.by_display(display)
        assert task["inputs"]["artifacts"]["features"]["taskOutputArtifact"]["producerTask"] == loops[0]


def test_five_trainings_are_independent_and_each_requests_a_gpu(compiled):
    trains = {compiled.by_display(display)[0] for display in TRAIN_NAMES}
    assert len(trains) == len(BACKBONES) == 5
    backbones = set()
    for name in trains:
        task = compiled.root[name]
        backbones.add(task["inputs"]["parameters"]["backbone"]["runtimeValue"]["constant"])
        assert not (compiled.upstream(name) & trains), f"{name} waits for another training"
        label, container = compiled.executor(task)
        accelerator = container["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1
        assert container["resources"]["resourceCpuRequest"] and container["resources"]["resourceMemoryLimit"]
        k8s = compiled.platform["executors"][label]
        assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
        assert container["image"] == GPU_IMAGE
    assert backbones == set(BACKBONES)


def test_fusion_fans_out_over_the_six_methods_with_a_confusion_matrix_per_modality_set(compiled):
    loops = [t for t in compiled.root.values() if "parameterIterator" in t
             and "fuse-method" in compiled.components[t["componentRef"]["name"]]["dag"]["tasks"]]
    assert len(loops) == 1
    assert json.loads(loops[0]["parameterIterator"]["items"]["raw"]) == list(FUSION_METHODS)
    outputs = compiled.components["comp-fuse-method"]["outputDefinitions"]["artifacts"]
    confusions = [n for n, o in outputs.items()
                  if o["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"]
    assert len(confusions) == 3
    _, evaluate = compiled.by_display("Evaluate and bundle")
    produced = compiled.components[evaluate["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    kinds = {o["artifactType"]["schemaTitle"] for o in produced.values()}
    assert {"system.HTML", "system.Metrics", "system.Model"} <= kinds
    # Evaluation waits for every training, every embedding and the fusion loop.
    name, _ = compiled.by_display("Evaluate and bundle")
    upstream = compiled.upstream(name)
    for display in TRAIN_NAMES:
        assert compiled.by_display(display)[0] in upstream


def test_every_image_is_pinned(compiled):
    images = {e["container"]["image"] for e in compiled.executors.values()}
    assert images == {CPU_IMAGE, GPU_IMAGE}
    for image in images:
        name, _, digest = image.partition("@")
        assert digest.startswith("sha256:") or re.fullmatch(r"[^:]+:[0-9]+\.[0-9]+\.[0-9]+\S*", name), image
        assert not name.endswith(":latest")


def test_no_credentials_in_the_package_only_the_secret_name(compiled):
    for value in CREDENTIAL_ENV.values():
        assert value not in compiled.text
    params = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if re.search(r"key|secret|password|token|credential", p)]
    for executor in compiled.executors.values():
        assert not [e for e in executor["container"].get("env", []) if e["name"].startswith("AVSC_S3")]
    readers = {}
    for label, k8s in compiled.platform["executors"].items():
        for entry in k8s.get("secretAsEnv", []):
            assert entry["secretName"] == "avsc-s3"
            readers[label] = {m["secretKey"]: m["envVar"] for m in entry["keyToEnv"]}
    for display in ("Ingest dataset", "Preprocess shard", "Publish outputs"):
        label, _ = compiled.executor(compiled.by_display(display)[1])
        assert readers[label] == pipeline.SECRET_ENV
    trains = {compiled.executor(compiled.by_display(d)[1])[0] for d in TRAIN_NAMES}
    assert not trains & set(readers), "training never touches the store"


def test_retries_and_caching(compiled):
    for display in ("Ingest dataset", "Preprocess shard", "Publish outputs", *TRAIN_NAMES):
        policy = compiled.by_display(display)[1]["retryPolicy"]
        assert policy["maxRetryCount"] >= 1 and policy["backoffDuration"].endswith("s")
    assert compiled.by_display("Publish outputs")[1]["cachingOptions"].get("enableCache", False) is False
    for display in ("Ingest dataset", "Preprocess shard", *TRAIN_NAMES):
        assert compiled.by_display(display)[1]["cachingOptions"]["enableCache"] is True


def test_no_gpu_drops_every_gpu_setting_and_shrinks_requests(compiled, compiled_no_gpu):
    for executor in compiled_no_gpu.executors.values():
        assert "accelerator" not in executor["container"].get("resources", {})
    for k8s in compiled_no_gpu.platform.get("executors", {}).values():
        assert "nodeSelector" not in k8s and "tolerations" not in k8s
    assert "nvidia.com" not in compiled_no_gpu.text
    # Still reads the store through the secret, and fits a small CPU-only cluster.
    assert any("secretAsEnv" in k for k in compiled_no_gpu.platform["executors"].values())
    name, task = compiled_no_gpu.by_display("Train Aud-MEL")
    small = compiled_no_gpu.executor(task)[1]["resources"]
    large = compiled.executor(compiled.by_display("Train Aud-MEL")[1])[1]["resources"]
    assert small["memoryRequest"] < large["memoryRequest"]


def test_cluster_flags_reach_the_package(tmp_path):
    path = tmp_path / "custom.yaml"
    assert pipeline.main(["compile", "-o", str(path), "--accelerator", "amd.com/gpu", "--secret", "my-store",
                          "--node-selector", "pool=gpu", "--toleration", "dedicated"]) == 0
    custom = Compiled(path)
    label, container = custom.executor(custom.by_display("Train Vis-INC")[1])
    assert container["resources"]["accelerator"]["resourceType"] == "amd.com/gpu"
    assert custom.platform["executors"][label]["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert custom.platform["executors"][label]["tolerations"][0]["key"] == "dedicated"
    secrets = {e["secretName"] for k in custom.platform["executors"].values() for e in k.get("secretAsEnv", [])}
    assert secrets == {"my-store"}


def test_registry_flag_retargets_every_image(tmp_path):
    path = tmp_path / "mine.yaml"
    assert pipeline.main(["compile", "-o", str(path), "--registry", "registry.example.com:5000/ml"]) == 0
    images = {e["container"]["image"] for e in Compiled(path).executors.values()}
    assert images == {"registry.example.com:5000/ml/" + image.rsplit("/", 1)[1] for image in (CPU_IMAGE, GPU_IMAGE)}
    with pytest.raises(SystemExit, match="--registry"):
        pipeline.main(["compile", "-o", str(tmp_path / "bad.yaml"), "--registry", "Bad Registry!"])


def test_submit_arguments_parse_into_pipeline_parameters():
    args = pipeline.build_parser().parse_args([
        "submit", "--host", "http://localhost:8080", "--dataset", "s3://avsc/data", "--output-uri",
        "s3://avsc/out", "--preset", "quick", "--epochs", "3", "--shards", "2", "--no-gpu", "--wait",
        "--timeout", "600", "--namespace", "team"])
    assert args.handler is pipeline._cmd_submit
    assert (args.host, args.wait, args.timeout, args.namespace) == ("http://localhost:8080", True, 600, "team")
    assert args.service_account == "avsc-pipeline-runner"
    assert pipeline.pipeline_arguments(args, args.dataset, args.output_uri) == {
        "dataset": "s3://avsc/data", "output_uri": "s3://avsc/out", "preset": "quick", "epochs": 3,
        "image_size": 0, "shard_count": 2, "fusion_epochs": 0, "seed": 0}
    options = pipeline._options(args)
    assert options.gpu is False and options.resources == "small" and options.secret == "avsc-s3"


@pytest.mark.parametrize("argv", [
    ["submit", "--dataset", "s3://b/d"],  # no --host
    ["run"],  # no --local
    ["run", "--local", "--preset", "huge"],
    ["compile", "--resources", "tiny"],
])
def test_bad_command_lines_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_values_are_refused_before_anything_runs(tmp_path):
    args = pipeline.build_parser().parse_args(["run", "--local", "--shards", "0"])
    with pytest.raises(SystemExit, match="--shards"):
        pipeline.pipeline_arguments(args, "data", str(tmp_path))
    args = pipeline.build_parser().parse_args(["compile", "--node-selector", "no-equals-sign"])
    with pytest.raises(SystemExit, match="LABEL=VALUE"):
        pipeline._options(args)


def test_compiling_imports_no_heavy_library():
    code = ("import sys, pipeline, components; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'librosa', 'pandas', 'minio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(pipeline.__file__).parent)
    assert done.stdout.strip() == "[]"
