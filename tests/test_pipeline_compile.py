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
from avsc.config import BACKBONES, DEFAULT_PRESET, FUSION_METHODS
from avsc.errors import ConfigError
from components import (
    cli,
    embed_backbone,
    evaluate_fusions,
    fuse_method,
    ingest_dataset,
    list_shards,
    pipeline_settings,
    preprocess_shard,
    publish_outputs,
    resolve_config,
    train_backbone,
)
from components.cluster import SECRET_ENV
from components.images import CPU_IMAGE, GPU_IMAGE

# Values that must never reach the YAML even when they are in the compiling environment.
FAKE_ACCESS_KEY = "AKIAFAKEACCESSKEY1234"
FAKE_SECRET_KEY = "fake+secret/key+9f8e7d6c5b4a"
TRAIN, EMBED = "Train backbone", "Embed backbone"
COMPONENTS = [
    resolve_config,
    ingest_dataset,
    list_shards,
    preprocess_shard,
    train_backbone,
    embed_backbone,
    fuse_method,
    evaluate_fusions,
    publish_outputs,
]


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

    def all_tasks(self) -> list[tuple[str, dict]]:
        """(name, task) of every task of the root DAG and of nested DAGs (loop bodies,
        sub-pipelines); names are unique only within their own DAG."""
        found = []
        pending = [self.root]
        while pending:
            tasks = pending.pop()
            for name, task in tasks.items():
                found.append((name, task))
                component = self.components[task["componentRef"]["name"]]
                if "dag" in component:
                    pending.append(component["dag"]["tasks"])
        return found

    def by_display(self, display: str) -> tuple[str, dict]:
        matches = [(n, t) for n, t in self.all_tasks() if t["taskInfo"]["name"] == display]
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


CREDENTIAL_ENV = {
    "AVSC_S3_ACCESS_KEY": FAKE_ACCESS_KEY,
    "AVSC_S3_SECRET_KEY": FAKE_SECRET_KEY,
    "AVSC_S3_ENDPOINT": "store.internal.example:9000",
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Compiled:
    return _compile(tmp_path_factory, CREDENTIAL_ENV)


@pytest.fixture(scope="module")
def compiled_no_gpu(tmp_path_factory) -> Compiled:
    return _compile(tmp_path_factory, CREDENTIAL_ENV, "--no-gpu")


def test_every_stage_is_present_with_a_readable_name(compiled):
    tasks = [task for _, task in compiled.all_tasks()]
    steps = [t["taskInfo"]["name"] for t in tasks if "executorLabel" in compiled.components[t["componentRef"]["name"]]]
    assert sorted(steps) == sorted(
        {
            "Resolve config",
            "Ingest dataset",
            "List shards",
            "Preprocess shard",
            TRAIN,
            EMBED,
            "Fuse embeddings",
            "Evaluate and bundle",
            "Publish outputs",
        }
    )
    groups = [t["taskInfo"]["name"] for t in tasks if "dag" in compiled.components[t["componentRef"]["name"]]]
    assert sorted(groups) == ["Each backbone", "Each fusion method", "Each shard", "Train and embed backbones"]
    for name in steps + groups:  # no task left with its generated name
        assert not re.fullmatch(r"[a-z0-9-]+", name), name


def test_pipeline_parameters_and_defaults(compiled):
    params = compiled.spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"dataset", "output_uri", "preset", "config", "shard_count"}
    assert "defaultValue" not in params["dataset"]  # required
    assert params["shard_count"]["defaultValue"] == 4
    assert params["preset"]["defaultValue"] == DEFAULT_PRESET == "paper"
    assert params["config"]["defaultValue"] == ""  # no overrides: the preset as it is


def test_settings_are_resolved_once_and_read_from_the_config_artifact(compiled):
    resolve, task = compiled.by_display("Resolve config")
    assert task["inputs"]["parameters"] == {
        "preset": {"componentInputParameter": "preset"},
        "overrides": {"componentInputParameter": "config"},
    }
    outputs = compiled.components[task["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    assert outputs["summary"]["artifactType"]["schemaTitle"] == "system.Markdown"  # shown in the UI
    # Every step that needs settings reads that artifact (through its loop or sub-pipeline);
    # none takes a preset or a setting of its own.
    readers = {"preprocess-shard", "train-backbone", "fuse-method", "publish-outputs"}
    for component in readers:
        assert "config" in compiled.components[f"comp-{component}"]["inputDefinitions"]["artifacts"]
    for name, spec in compiled.components.items():
        params = set(spec.get("inputDefinitions", {}).get("parameters", {}))
        if name != "comp-resolve-config" and "executorLabel" in spec:
            assert not params & {"preset", "overrides", "epochs", "image_size", "fusion_epochs", "seed"}, name
    consumers = [t for t in compiled.root.values() if resolve in json.dumps(t.get("inputs", {}).get("artifacts", {}))]
    assert {t["taskInfo"]["name"] for t in consumers} == {
        "Each shard",
        "Train and embed backbones",
        "Each fusion method",
        "Publish outputs",
    }
    # Ingest reads one setting, data.segment_seconds, as a parameter output of that step: a
    # change to any other setting leaves ingest's inputs, and so its cached result, as they were.
    ingest = compiled.root[compiled.by_display("Ingest dataset")[0]]
    for name in ("segment_seconds", "audio_source"):  # and data.audio_source, the clips' sound
        assert ingest["inputs"]["parameters"][name] == {
            "taskOutputParameter": {"outputParameterKey": name, "producerTask": resolve}
        }
    assert "artifacts" not in ingest["inputs"]
    produced = compiled.components[task["componentRef"]["name"]]["outputDefinitions"]["parameters"]
    assert set(produced) == {"segment_seconds", "audio_source"}
    assert produced["segment_seconds"]["parameterType"] == "NUMBER_DOUBLE"
    assert produced["audio_source"]["parameterType"] == "STRING"


def test_preprocessing_fans_out_over_the_shard_list(compiled):
    shard_list, _ = compiled.by_display("List shards")
    assert compiled.root[shard_list]["inputs"]["parameters"]["shard_count"] == {
        "componentInputParameter": "shard_count"
    }
    loop_name, loop = compiled.by_display("Each shard")
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert loop["inputs"]["parameters"][items]["taskOutputParameter"]["producerTask"] == shard_list
    body = compiled.components[loop["componentRef"]["name"]]["dag"]["tasks"]["preprocess-shard"]
    assert (
        body["inputs"]["parameters"]["shard_index"]["componentInputParameter"] == loop["parameterIterator"]["itemInput"]
    )
    # The loop's features are collected into one list for the backbone trainings.
    outputs = compiled.components[loop["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    assert all(spec.get("isArtifactList") for spec in outputs.values())
    _, phase_one = compiled.by_display("Train and embed backbones")
    assert phase_one["inputs"]["artifacts"]["features"]["taskOutputArtifact"]["producerTask"] == loop_name


def test_five_trainings_are_independent_and_each_requests_a_gpu(compiled):
    _, phase_one = compiled.by_display("Train and embed backbones")
    assert phase_one["inputs"]["parameters"]["backbones"]["runtimeValue"]["constant"] == list(BACKBONES)
    _, loop = compiled.by_display("Each backbone")
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--backbones"
    # No limit below five: the five iterations run side by side, one GPU each.
    assert loop.get("iteratorPolicy", {}).get("parallelismLimit", 0) in (0, *range(len(BACKBONES), 100))
    body = compiled.components[loop["componentRef"]["name"]]["dag"]["tasks"]
    train_name, train = compiled.by_display(TRAIN)
    embed_name, embed = compiled.by_display(EMBED)
    assert set(body) == {train_name, embed_name}
    assert (
        train["inputs"]["parameters"]["backbone"]["componentInputParameter"] == loop["parameterIterator"]["itemInput"]
    )
    assert not train.get("dependentTasks")  # an iteration waits for nothing inside the loop
    assert embed["dependentTasks"] == [train_name]
    assert embed["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == train_name
    for task in (train, embed):
        label, container = compiled.executor(task)
        accelerator = container["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and int(accelerator["resourceCount"]) == 1
        assert container["resources"]["resourceCpuRequest"] and container["resources"]["resourceMemoryLimit"]
        k8s = compiled.platform["executors"][label]
        assert k8s["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
        assert container["image"] == GPU_IMAGE
    # The loop hands on one model and one embeddings artifact per backbone, as lists.
    outputs = compiled.components[phase_one["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    assert {name: spec.get("isArtifactList") for name, spec in outputs.items()} == {"models": True, "embeddings": True}


def test_fusion_fans_out_over_the_six_methods_with_a_confusion_matrix_per_modality_set(compiled):
    phase_one, _ = compiled.by_display("Train and embed backbones")
    loop_name, loop = compiled.by_display("Each fusion method")
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == list(FUSION_METHODS)
    assert phase_one in loop["dependentTasks"]
    outputs = compiled.components["comp-fuse-method"]["outputDefinitions"]["artifacts"]
    confusions = [n for n, o in outputs.items() if o["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"]
    assert len(confusions) == 3
    assert compiled.components["comp-fuse-method"]["inputDefinitions"]["artifacts"]["embeddings"]["isArtifactList"]
    name, evaluate = compiled.by_display("Evaluate and bundle")
    produced = compiled.components[evaluate["componentRef"]["name"]]["outputDefinitions"]["artifacts"]
    kinds = {o["artifactType"]["schemaTitle"] for o in produced.values()}
    assert {"system.HTML", "system.Metrics", "system.Model"} <= kinds
    assert produced["summary"]["artifactType"]["schemaTitle"] == "system.Markdown"  # the report's tables in the UI
    # Evaluation reads every fusion (collected), the models and embeddings of the backbone loop,
    # and the manifest (the dataset in the report's provenance block).
    artifacts = evaluate["inputs"]["artifacts"]
    assert artifacts["fusions"]["taskOutputArtifact"]["producerTask"] == loop_name
    for key in ("models", "embeddings"):
        assert artifacts[key]["taskOutputArtifact"] == {"outputArtifactKey": key, "producerTask": phase_one}
    ingest, _ = compiled.by_display("Ingest dataset")
    assert artifacts["manifest"]["taskOutputArtifact"] == {"outputArtifactKey": "manifest", "producerTask": ingest}
    assert {phase_one, loop_name} <= compiled.upstream(name)


def test_every_component_documents_every_input_and_output():
    for component in COMPONENTS:
        spec = component.component_spec
        assert spec.description, component.name
        for name, io in {**(spec.inputs or {}), **(spec.outputs or {})}.items():
            assert io.description, f"{component.name}: {name} is not described in its docstring"


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
    # Every step that reads or writes the object store: the dataset, the features (streamed by
    # training and embedding), the checkpoints (training, fusion), the published outputs.
    for display in ("Ingest dataset", "Preprocess shard", TRAIN, EMBED, "Fuse embeddings", "Publish outputs"):
        label, _ = compiled.executor(compiled.by_display(display)[1])
        assert readers[label] == SECRET_ENV
    steps = {compiled.executor(compiled.by_display(d)[1])[0] for d in ("Resolve config", "List shards")}
    assert not steps & set(readers), "the config step and the shard list never touch the store"


def test_retries_and_caching(compiled):
    for display in ("Ingest dataset", "Preprocess shard", "Publish outputs", TRAIN, EMBED):
        policy = compiled.by_display(display)[1]["retryPolicy"]
        assert policy["maxRetryCount"] >= 1 and policy["backoffDuration"].endswith("s")
    # The GPU steps and preprocessing, the ones a preempted node interrupts: retried with a
    # growing, bounded wait, so a node pool's churn is ridden out rather than hammered.
    for display in ("Preprocess shard", TRAIN, EMBED):
        policy = compiled.by_display(display)[1]["retryPolicy"]
        assert policy["backoffDuration"] == "30s" and policy["backoffFactor"] == 2.0
        assert policy["backoffMaxDuration"] == "600s"
    for display in ("Resolve config", "List shards", "Evaluate and bundle"):  # nothing to retry for
        assert "retryPolicy" not in compiled.by_display(display)[1]
    assert compiled.by_display("Publish outputs")[1]["cachingOptions"].get("enableCache", False) is False
    for display in (
        "Resolve config",
        "Ingest dataset",
        "List shards",
        "Preprocess shard",
        TRAIN,
        EMBED,
        "Fuse embeddings",
        "Evaluate and bundle",
    ):
        assert compiled.by_display(display)[1]["cachingOptions"]["enableCache"] is True


def test_no_gpu_drops_every_gpu_setting_and_shrinks_requests(compiled, compiled_no_gpu):
    for executor in compiled_no_gpu.executors.values():
        assert "accelerator" not in executor["container"].get("resources", {})
    for k8s in compiled_no_gpu.platform.get("executors", {}).values():
        assert "nodeSelector" not in k8s and "tolerations" not in k8s
    assert "nvidia.com" not in compiled_no_gpu.text
    # Still reads the store through the secret, and fits a small CPU-only cluster.
    assert any("secretAsEnv" in k for k in compiled_no_gpu.platform["executors"].values())
    _, task = compiled_no_gpu.by_display(TRAIN)
    small = compiled_no_gpu.executor(task)[1]["resources"]
    large = compiled.executor(compiled.by_display(TRAIN)[1])[1]["resources"]
    assert small["memoryRequest"] < large["memoryRequest"]


def test_cluster_flags_reach_the_package(tmp_path):
    path = tmp_path / "custom.yaml"
    assert (
        pipeline.main(
            [
                "compile",
                "-o",
                str(path),
                "--accelerator",
                "amd.com/gpu",
                "--secret",
                "my-store",
                "--node-selector",
                "pool=gpu",
                "--toleration",
                "dedicated",
            ]
        )
        == 0
    )
    custom = Compiled(path)
    label, container = custom.executor(custom.by_display(TRAIN)[1])
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


def test_submit_arguments_parse_into_pipeline_parameters(tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text("[train]\nepochs = 3\nbatch_size = 16\n\n[fusion]\nseed = 7\n")
    args = cli.build_parser().parse_args(
        [
            "submit",
            "--host",
            "http://localhost:8080",
            "--dataset",
            "s3://avsc/data",
            "--output-uri",
            "s3://avsc/out",
            "--preset",
            "quick",
            "--config",
            str(settings),
            "--set",
            "train.epochs=4",
            "--set",
            "features.audio.frames=309",
            "--shards",
            "2",
            "--no-gpu",
            "--wait",
            "--timeout",
            "600",
            "--namespace",
            "team",
        ]
    )
    assert args.handler is cli._cmd_submit
    assert (args.host, args.wait, args.timeout, args.namespace) == ("http://localhost:8080", True, 600, "team")
    assert args.service_account == "avsc-pipeline-runner"
    arguments = pipeline_settings.pipeline_arguments(args, args.dataset, args.output_uri)
    # --set wins over the file; batch_size 16 is the quick preset's own value, so not an override.
    assert json.loads(arguments.pop("config")) == {
        "train": {"epochs": 4},
        "fusion": {"seed": 7},
        "features": {"audio": {"frames": 309}},
    }
    assert arguments == {
        "dataset": "s3://avsc/data",
        "output_uri": "s3://avsc/out",
        "preset": "quick",
        "shard_count": 2,
    }
    options = pipeline_settings.cluster_options(args)
    assert options.gpu is False and options.resources == "small" and options.secret == "avsc-s3"


def test_run_defaults_to_the_default_preset_and_no_overrides():
    args = cli.build_parser().parse_args(["run", "--local"])
    arguments = pipeline_settings.pipeline_arguments(args, "data", "out")
    assert (arguments["preset"], arguments["config"]) == (DEFAULT_PRESET, "")
    assert pipeline_settings.config_parameter("quick", None, ["train.epochs=6"]) == ""  # the preset's own value


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--dataset", "s3://b/d"],  # no --host
        ["run"],  # no --local
        ["run", "--local", "--preset", "huge"],
        ["run", "--local", "--epochs", "3"],  # settings go through --set / --config
        ["compile", "--resources", "tiny"],
    ],
)
def test_bad_command_lines_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys):
    args = cli.build_parser().parse_args(["run", "--local", "--shards", "0"])
    with pytest.raises(SystemExit, match="--shards"):
        pipeline_settings.pipeline_arguments(args, "data", str(tmp_path))
    args = cli.build_parser().parse_args(["compile", "--node-selector", "no-equals-sign"])
    with pytest.raises(SystemExit, match="LABEL=VALUE"):
        pipeline_settings.cluster_options(args)
    for setting, message in (
        ("train.epochz=3", "unknown setting.*epochz"),
        ("train.epochs=ten", "train.epochs"),
        ("nonsense", "section.key=value"),
        # 1-s segments under the paper's 10-s clip length: refused before ingest runs
        ("data.segment_seconds=1", "features.audio.clip_seconds is 10"),
    ):
        args = cli.build_parser().parse_args(["run", "--local", "--set", setting])
        with pytest.raises(ConfigError, match=message):
            pipeline_settings.pipeline_arguments(args, "data", str(tmp_path))
    missing = tmp_path / "missing.toml"
    out = tmp_path / "out"
    assert pipeline.main(["run", "--local", "--config", str(missing), "--output", str(out)]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert not out.exists()  # refused before the demo dataset or any step


def test_compiling_imports_no_heavy_library():
    code = (
        "import sys, pipeline, components; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'librosa', 'pandas', 'minio') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(pipeline.__file__).parent
    )
    assert done.stdout.strip() == "[]"
