"""Each pipeline component called as a plain function (``component.python_func``) on tiny
data, with artifacts on local paths: what it writes, what it logs for the Kubeflow UI, and
that every output artifact has its file (kfp.local's cache counts a missing one as absent).

The whole DAG, with artifacts passed by kfp.local, is tests/test_pipeline_local.py; the
steps' object-store paths are tested there too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from embeddings_factory import make_embeddings
from features_factory import make_feature_store
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Markdown,
    Metrics,
    Model,
)
from records_factory import write_model_info

from avsc.config import (
    BACKBONES,
    MODALITY_SETS,
    FeatureConfig,
    config_hash,
    load_config,
    to_dict,
)
from avsc.data.demo import make_demo_dataset
from avsc.data.manifest import read_manifest
from avsc.errors import ConfigError
from avsc.labels import LABELS
from avsc.storage.files import sha256_file
from avsc.storage.locations import read_json
from avsc.training.embeddings import read_embeddings, write_embeddings
from components import (
    embed_backbone,
    evaluate_fusions,
    fuse_method,
    ingest_dataset,
    list_shards,
    preprocess_shard,
    publish_outputs,
    resolve_config,
    train_backbone,
)
from components.artifacts import by_backbone, read_config, save_metrics

# Small enough for a CPU test: 1-s clips, 40 spectrogram frames, one epoch, tiny networks.
OVERRIDES = """
features.audio.clip_seconds = 1.0
features.audio.frames = 40

[train]
epochs = 1
batch_size = 8
audio_stages = 2
seed = 3

[fusion]
epochs = 2
"""


def _metrics_file(artifact: Artifact) -> dict:
    """What a step wrote to its metrics artifact's file (and so what kfp.local caches)."""
    return json.loads(Path(artifact.path).read_text())


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Artifact:
    """The config artifact of a run: the quick preset with :data:`OVERRIDES`."""
    root = tmp_path_factory.mktemp("config")
    artifact = Artifact(uri=str(root / "config"))
    resolve_config.python_func(
        preset="quick", overrides=OVERRIDES, config=artifact, summary=Markdown(uri=str(root / "summary"))
    )
    return artifact


# --- Resolve config -----------------------------------------------------------------------------


def test_resolve_config_records_the_settings_their_hashes_and_a_summary(config):
    record = read_json(config.path)
    expected = load_config(preset="quick", overrides=OVERRIDES)
    assert record["format"] == "avsc-pipeline-config/1" and record["preset"] == "quick"
    assert record["config"] == to_dict(expected)
    assert record["overrides"]["features"] == {"audio": {"clip_seconds": 1.0, "frames": 40}}
    assert record["overrides"]["train"]["seed"] == 3
    assert record["config_hash"] == config_hash(expected)
    assert record["hashes"] == {name: config_hash(getattr(expected, name)) for name in ("features", "train", "fusion")}
    assert config.metadata["preset"] == "quick"
    assert config.metadata["features_hash"] == record["hashes"]["features"]
    assert read_config(config) == expected  # what every later step reads
    summary = (Path(config.path).parent / "summary").read_text()
    assert record["config_hash"] in summary
    overridden = [line for line in summary.splitlines() if line.rstrip("| ").endswith("yes")]
    assert len(overridden) == 7  # the seven settings of OVERRIDES, marked in the table of every setting
    assert any("train.seed" in line and "| 3 " in line for line in overridden)


def test_resolve_config_takes_json_and_nothing(tmp_path):
    config = Artifact(uri=str(tmp_path / "config"))
    summary = Markdown(uri=str(tmp_path / "summary"))
    resolve_config.python_func(preset="paper", overrides='{"fusion": {"seed": 9}}', config=config, summary=summary)
    assert read_config(config).fusion.seed == 9
    resolve_config.python_func(preset="paper", overrides="", config=config, summary=summary)
    assert read_config(config) == load_config()
    assert read_json(config.path)["overrides"] == {}
    assert "None: the preset as it is." in Path(summary.path).read_text()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("train.epochz = 3", "unknown setting.*epochz"),
        ('train.epochs = "ten"', "train.epochs"),
        ("[train", "neither a TOML table nor a JSON object"),
    ],
)
def test_resolve_config_refuses_bad_settings(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config.python_func(
            preset="quick",
            overrides=overrides,
            config=Artifact(uri=str(tmp_path / "c")),
            summary=Markdown(uri=str(tmp_path / "s")),
        )
    assert not (tmp_path / "c").exists()


def test_resolve_config_hands_ingest_the_segment_length(tmp_path):
    def resolve(overrides: str):
        return resolve_config.python_func(
            preset="quick",
            overrides=overrides,
            config=Artifact(uri=str(tmp_path / "c")),
            summary=Markdown(uri=str(tmp_path / "s")),
        )

    assert resolve("").segment_seconds == 0.0  # whole clips
    one_second = resolve("data.segment_seconds = 1\nfeatures.audio.clip_seconds = 1.0")
    assert one_second.segment_seconds == 1.0
    assert read_json(tmp_path / "c")["config"]["data"] == {"segment_seconds": 1.0, "audio_source": "auto"}
    assert (resolve("").audio_source, resolve('data.audio_source = "video"').audio_source) == ("auto", "video")
    # A segment length the features would not match fails the first step, before any work.
    with pytest.raises(ConfigError, match=r"data.segment_seconds is 1, but features.audio.clip_seconds is 4"):
        resolve("data.segment_seconds = 1")
    with pytest.raises(ConfigError, match="positive"):
        resolve("data.segment_seconds = -1.0\nfeatures.audio.clip_seconds = -1.0")


# --- Ingest, shards, preprocess -------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "dataset",
        classes=2,
        clips_per_class=3,
        locations_per_class=3,
        seconds=1.0,
        width=64,
        height=48,
        progress=False,
    ).root


@pytest.fixture(scope="module")
def manifest(dataset, tmp_path_factory) -> tuple[Dataset, Metrics]:
    root = tmp_path_factory.mktemp("ingest")
    manifest, metrics = Dataset(uri=str(root / "manifest")), Metrics(uri=str(root / "metrics"))
    ingest_dataset.python_func(dataset=str(dataset), manifest=manifest, metrics=metrics)
    return manifest, metrics


def test_ingest_writes_the_manifest_and_its_counts(manifest):
    manifest, metrics = manifest
    rows = read_manifest(Path(manifest.path) / "manifest.parquet")
    assert len(rows) == 6 and set(rows["split"]) == {"train", "val", "test"}
    logged = _metrics_file(metrics)
    assert logged["rejected_clips"] == 0
    assert sum(logged[f"{split}_clips"] for split in ("train", "val", "test")) == 6
    assert logged == metrics.metadata


def test_ingest_cuts_segments_when_the_config_asks(dataset, tmp_path):
    manifest, metrics = Dataset(uri=str(tmp_path / "manifest")), Metrics(uri=str(tmp_path / "metrics"))
    ingest_dataset.python_func(dataset=str(dataset), manifest=manifest, metrics=metrics, segment_seconds=0.5)
    rows = read_manifest(Path(manifest.path) / "manifest.parquet")
    assert len(rows) == 12 and set(rows["segment_s"]) == {0.5}  # six 1-s clips, two segments each
    assert sorted(rows.loc[rows["parent_clip"] == rows["parent_clip"].iloc[0], "offset_s"]) == [0.0, 0.5]
    logged = _metrics_file(metrics)
    assert logged["segment_seconds"] == 0.5
    assert sum(logged[f"{split}_clips"] for split in ("train", "val", "test")) == 12


def test_list_shards():
    assert list_shards.python_func(shard_count=3) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 1"):
        list_shards.python_func(shard_count=0)


def test_preprocess_shard_follows_the_config(config, dataset, manifest, tmp_path):
    from avsc.features.store import FeatureStore

    features, metrics = Dataset(uri=str(tmp_path / "features")), Metrics(uri=str(tmp_path / "metrics"))
    preprocess_shard.python_func(
        config=config,
        manifest=manifest[0],
        dataset=str(dataset),
        shard_index=0,
        shard_count=2,
        workers=1,
        output_uri="",
        features=features,
        metrics=metrics,
    )
    store = read_json(Path(features.path) / "store.json")  # without an output URI: the shard's own store
    assert store["config_hash"] == read_json(config.path)["hashes"]["features"]
    assert store["features"]["mel"]["shape"] == [128, 40, 2]  # features.audio.frames of the config
    opened = FeatureStore.open(features.path)
    assert len(opened.index) == 3  # clips 0, 2, 4 of six, round-robin
    assert opened.read_clip(opened.index["clip_id"][0], "cqt").shape == (128, 40, 2)
    assert _metrics_file(metrics)["processed_clips"] == 3


def test_preprocess_shards_share_the_run_store_and_hand_on_a_reference(config, dataset, manifest, tmp_path):
    from avsc.features.store import FeatureStore

    refs = []
    for index in (0, 1):
        features = Dataset(uri=str(tmp_path / f"features-{index}"))
        preprocess_shard.python_func(
            config=config,
            manifest=manifest[0],
            dataset=str(dataset),
            shard_index=index,
            shard_count=2,
            workers=1,
            output_uri=str(tmp_path / "run"),
            features=features,
            metrics=Metrics(uri=str(tmp_path / f"metrics-{index}")),
        )
        assert sorted(p.name for p in Path(features.path).iterdir()) == ["feature-store.json"]
        refs.append(features.path)
    # Keyed by the feature settings and, sound from WAVs where there are some (data.audio_source
    # = auto), by where the sound comes from: a store of the videos' tracks is never mixed in.
    shared = tmp_path / "run" / "features" / f"{read_json(config.path)['hashes']['features']}-audio-auto"
    assert features.metadata["store"] == str(shared) and (shared / "store.json").is_file()
    opened = FeatureStore.open(refs)
    assert opened.roots == (str(shared),) and len(opened.index) == 6


# --- Train and embed --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(config, tmp_path_factory) -> tuple[Model, Metrics, Dataset]:
    """aud-mel trained for one epoch on a tiny two-scene store (one of the five loop iterations)."""
    root = tmp_path_factory.mktemp("train")
    store = make_feature_store(
        root / "features", per_class={"train": 4, "val": 2, "test": 2}, labels=LABELS[:2], features=("mel",)
    )
    model, metrics = Model(uri=str(root / "model")), Metrics(uri=str(root / "metrics"))
    train_backbone.python_func(
        backbone="aud-mel",
        config=config,
        features=[Dataset(uri=str(store))],
        output_uri="",
        model=model,
        metrics=metrics,
    )
    return model, metrics, Dataset(uri=str(store))


def test_train_backbone_writes_the_model_tagged_with_its_backbone(trained, config):
    model, metrics, _ = trained
    assert (Path(model.path) / "model.keras").is_file()
    assert not (Path(model.path) / "checkpoints").exists()  # only a retry of the task needs them
    assert model.metadata == {"backbone": "aud-mel", "best_epoch": 1}
    recorded = read_json(Path(model.path) / "config.json")
    assert recorded["config_hash"] == read_json(config.path)["hashes"]["train"]  # the run's train settings
    logged = _metrics_file(metrics)
    assert set(logged) == {"val_accuracy", "val_log_loss", "temperature", "best_epoch", "seconds"}
    assert 0.0 <= logged["val_accuracy"] <= 1.0
    assert logged["temperature"] == recorded["calibration"]["temperature"]  # fitted on val, kept with the model


def test_train_backbone_checkpoints_under_the_output_uri_for_a_retried_pod(trained, config, tmp_path):
    _, _, store = trained
    first = Model(uri=str(tmp_path / "pod-1" / "model"))
    train_backbone.python_func(
        backbone="aud-mel",
        config=config,
        features=[store],
        output_uri=str(tmp_path / "run"),
        model=first,
        metrics=Metrics(uri=str(tmp_path / "pod-1" / "metrics")),
    )
    [location] = (tmp_path / "run" / "checkpoints").iterdir()
    assert location.name.startswith("aud-mel-") and read_json(location / "state.json")["epoch"] == 1
    assert not (Path(first.path) / "checkpoints").exists()
    retried = Model(uri=str(tmp_path / "pod-2" / "model"))  # a new pod, an empty disk: nothing to train
    train_backbone.python_func(
        backbone="aud-mel",
        config=config,
        features=[store],
        output_uri=str(tmp_path / "run"),
        model=retried,
        metrics=Metrics(uri=str(tmp_path / "pod-2" / "metrics")),
    )
    assert read_json(Path(retried.path) / "history.json") == read_json(Path(first.path) / "history.json")
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [location.name]


def test_embed_backbone_writes_every_clip(trained, tmp_path):
    model, _, store = trained
    embeddings, metrics = Dataset(uri=str(tmp_path / "embeddings")), Metrics(uri=str(tmp_path / "metrics"))
    embed_backbone.python_func(model=model, features=[store], embeddings=embeddings, metrics=metrics)
    table = read_embeddings(embeddings.path)
    assert table.info.backbone == "aud-mel" and len(table.clip_ids) == 16
    assert table.fc10.shape == (16, len(LABELS))
    assert embeddings.metadata["backbone"] == "aud-mel"  # how later steps tell the loop's outputs apart
    assert embeddings.metadata["model_sha256"] == sha256_file(Path(model.path) / "model.keras")
    assert _metrics_file(metrics)["clips"] == 16


# --- Fuse, evaluate, publish ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def phase_one(manifest, tmp_path_factory) -> tuple[list[Model], list[Dataset]]:
    """What the backbone loop hands on: five model folders and five embeddings files, each at a
    path of its own and tagged with its backbone (model files stand in for real models), all
    recording the ingested manifest's data."""
    lineage = read_manifest(Path(manifest[0].path) / "manifest.parquet").attrs["lineage"]
    root = tmp_path_factory.mktemp("phase-one")
    synthetic = make_embeddings(root / "synthetic", width=8, per_class={"train": 6, "val": 2, "test": 2})
    features = FeatureConfig()
    models, embeddings = [], []
    for number, backbone in enumerate(BACKBONES):
        iteration = root / f"iteration-{number}"
        (iteration / "model").mkdir(parents=True)
        (iteration / "model" / "model.keras").write_bytes(f"model of {backbone}".encode())
        write_model_info(iteration / "model", backbone, features=features, config_hash="train0000001", lineage=lineage)
        source = read_embeddings(synthetic / f"{backbone}.parquet")
        write_embeddings(
            iteration / "embeddings",
            clip_ids=list(source.clip_ids),
            splits=list(source.splits),
            labels=list(source.labels),
            fc1024=source.fc1024,
            fc10=source.fc10,
            backbone=backbone,
            config_hash=source.info.config_hash,
            model_sha256=sha256_file(iteration / "model" / "model.keras"),
            lineage=lineage,
        )
        models.append(Model(uri=str(iteration / "model"), metadata={"backbone": backbone}))
        embeddings.append(Dataset(uri=str(iteration / "embeddings"), metadata={"backbone": backbone}))
    return models[::-1], embeddings[::-1]  # Collected lists come in no promised order


@pytest.fixture(scope="module")
def fused(config, phase_one, tmp_path_factory) -> tuple[Model, Metrics, dict[str, ClassificationMetrics]]:
    root = tmp_path_factory.mktemp("fuse")
    fusions, metrics = Model(uri=str(root / "fusions")), Metrics(uri=str(root / "metrics"))
    confusions = {name: ClassificationMetrics(uri=str(root / name)) for name in ("audio_visual", "audio", "visual")}
    fuse_method.python_func(
        method="f4",
        config=config,
        embeddings=phase_one[1],
        output_uri="",
        fusions=fusions,
        metrics=metrics,
        **{f"confusion_{name}": artifact for name, artifact in confusions.items()},
    )
    return fusions, metrics, confusions


def test_fuse_method_trains_three_modality_sets_with_the_run_settings(fused, config):
    fusions, metrics, confusions = fused
    folders = sorted(p.name for p in Path(fusions.path).iterdir())
    assert folders == sorted(f"f4-{modalities}" for modalities in MODALITY_SETS)
    meta = read_json(Path(fusions.path) / "f4-audio+visual" / "fusion.json")
    assert meta["config_hash"] == read_json(config.path)["hashes"]["fusion"]
    assert meta["config"]["epochs"] == 2
    logged = _metrics_file(metrics)
    assert {"f4_audio_visual_accuracy", "f4_audio_log_loss", "f4_visual_accuracy", "seconds"} <= set(logged)
    for artifact in confusions.values():
        matrix = _metrics_file(artifact)["confusionMatrix"]
        assert [c["displayName"] for c in matrix["annotationSpecs"]] == list(LABELS)
        assert sum(sum(row["row"]) for row in matrix["rows"]) == 20  # the test split: 2 clips x 10 scenes


def test_evaluate_fusions_reports_and_bundles_the_best(fused, phase_one, manifest, tmp_path):
    fusions, _, _ = fused
    models, embeddings = phase_one
    report, bundle = Dataset(uri=str(tmp_path / "report")), Model(uri=str(tmp_path / "bundle"))
    html, metrics = HTML(uri=str(tmp_path / "report.html")), Metrics(uri=str(tmp_path / "metrics"))
    summary = Markdown(uri=str(tmp_path / "summary"))
    evaluate_fusions.python_func(
        fusions=[fusions],
        models=models,
        embeddings=embeddings,
        report=report,
        report_html=html,
        metrics=metrics,
        bundle=bundle,
        summary=summary,
        manifest=manifest[0],
    )
    result = read_json(Path(report.path) / "metrics.json")
    assert len(result["results"]) == 3
    # The provenance block names the ingested dataset (the demo data, synthetic) and the
    # models' recorded settings, found through the tagged artifacts.
    provenance = result["provenance"]
    assert provenance["dataset"]["synthetic"] is True
    assert provenance["config_hashes"]["train"] == dict.fromkeys(BACKBONES, "train0000001")
    text = Path(summary.path).read_text()
    assert text.startswith("#") and "Provenance" in text and "synthetic" in text
    assert "f4" in text and "<img" not in text and ".png" not in text  # tables, no figures
    assert (Path(report.path) / "calibration-audio+visual.png").is_file()
    assert [row["backbone"] for row in result["backbones"]] == list(BACKBONES)
    assert Path(html.path).read_text() == (Path(report.path) / "report.html").read_text()
    meta = read_json(Path(bundle.path) / "bundle.json")
    assert meta["fusion"]["modalities"] == "audio+visual" and meta["visual_fusion"]["modalities"] == "visual"
    assert meta["provenance"]["synthetic"] is True  # the ingest step's manifest reached the bundle
    for backbone in BACKBONES:  # each backbone's own model, found through its metadata
        assert (Path(bundle.path) / meta["backbones"][backbone]).read_bytes() == f"model of {backbone}".encode()
    assert bundle.metadata["method"] == "f4"
    logged = _metrics_file(metrics)
    assert logged["best_accuracy"] == result["results"][0]["accuracy"]
    assert {f"{b}_accuracy" for b in BACKBONES} | {f"{b}_log_loss" for b in BACKBONES} <= set(logged)
    for row in result["results"]:  # every method x modality set, calibrated test scores
        name = f"f4_{row['modalities'].replace('+', '_')}"
        assert logged[f"{name}_accuracy"] == row["accuracy"] and logged[f"{name}_log_loss"] == row["log_loss"]


def test_publish_outputs_to_a_local_folder(config, phase_one, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    out = tmp_path / "out"
    publish_outputs.python_func(
        output_uri=str(out),
        config=config,
        report=Dataset(uri=str(report)),
        bundle=Model(uri=str(bundle)),
        embeddings=phase_one[1],
    )
    assert read_json(out / "config.json") == read_json(config.path)
    assert (out / "metrics.json").is_file() and (out / "bundle" / "bundle.json").is_file()
    for backbone in BACKBONES:
        assert read_embeddings(out / "embeddings" / f"{backbone}.parquet").info.backbone == backbone
    shutil.rmtree(out)
    publish_outputs.python_func(
        output_uri="",
        config=config,
        report=Dataset(uri=str(report)),
        bundle=Model(uri=str(bundle)),
        embeddings=phase_one[1],
    )
    assert not out.exists()  # empty output_uri: nothing published


# --- Shared helpers ---------------------------------------------------------------------------------


def test_by_backbone_needs_one_tagged_artifact_per_backbone(tmp_path):
    tagged = [Dataset(uri=str(tmp_path / b), metadata={"backbone": b}) for b in ("vis-inc", "aud-mel")]
    assert by_backbone(tagged) == {"vis-inc": str(tmp_path / "vis-inc"), "aud-mel": str(tmp_path / "aud-mel")}
    with pytest.raises(ValueError, match="no 'backbone'"):
        by_backbone([*tagged, Dataset(uri=str(tmp_path / "x"))])
    with pytest.raises(ValueError, match="two artifacts for backbone aud-mel"):
        by_backbone([*tagged, Dataset(uri=str(tmp_path / "y"), metadata={"backbone": "aud-mel"})])


def test_save_metrics_writes_what_it_logs(tmp_path):
    metrics = Metrics(uri=str(tmp_path / "task" / "metrics"))
    save_metrics(metrics, {"accuracy": 0.5, "seconds": 1.25})
    assert metrics.metadata == {"accuracy": 0.5, "seconds": 1.25}
    assert _metrics_file(metrics) == metrics.metadata
