"""The pipeline run for real on this machine.

Slow: the whole DAG through kfp.local (``pipeline.py run --local``) on a tiny demo dataset:
ten scenes, six clips each at three locations (two clips each for train, val and test per
scene), quick preset with two epochs and 309-frame spectrograms (``--set``), two
preprocessing shards, with ``--cache``; then the same command again, which must reuse
every step. And the 1-second protocol (``--set data.segment_seconds=1``) on a smaller one.

Fast: the steps that touch the object store (ingest and preprocessing from ``s3://``,
publishing to it), each component's own function called with artifacts on local paths,
against a real S3 server on localhost (moto).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp.dsl import Artifact, Dataset, Markdown, Metrics, Model
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

import avsc.storage.sync
from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.data.demo import make_demo_dataset
from avsc.data.manifest import read_manifest
from avsc.features.shards import shard_rows
from avsc.labels import LABELS
from avsc.storage.sync import pull_dir, push_dir
from components import ingest_dataset, preprocess_shard, publish_outputs, resolve_config
from components.cli import local_step_count

ROOT = Path(__file__).resolve().parents[1]
CHANCE = 1.0 / len(LABELS)
FRAMES = 309  # the paper's spectrogram width, set on the command line (the preset leaves it free)


def _run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "pipeline.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The one whole run of the suite: (output folder, its process, the command line)."""
    base = tmp_path_factory.mktemp("pipeline")
    dataset = make_demo_dataset(base / "dataset", clips_per_class=6, locations_per_class=3, progress=False).root
    output = base / "out"
    argv = (
        "run",
        "--local",
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        "--preset",
        "quick",
        "--set",
        "train.epochs=2",
        "--set",
        f"features.audio.frames={FRAMES}",
        "--shards",
        "2",
        "--cache",
    )
    done = _run(*argv)
    assert done.returncode == 0, f"run --local failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return output, done, argv


@pytest.fixture(scope="module")
def cached_rerun(local_run):
    """The same command again into the same output: (its process, metrics.json before it)."""
    output, _, argv = local_run
    before = (output / "metrics.json").read_text()
    done = _run(*argv, timeout=300)
    assert done.returncode == 0, f"second run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, before


def _runs(output: Path) -> list[Path]:
    """The runs' folders under the pipeline root, oldest first."""
    return sorted((output / "pipeline-root").iterdir())


@pytest.mark.slow
def test_metrics_hold_every_fusion_result_and_the_best_beats_chance(local_run):
    output, _, _ = local_run
    metrics = json.loads((output / "metrics.json").read_text())
    keys = {(r["method"], r["modalities"]) for r in metrics["results"]}
    assert keys == {(m, s) for m in FUSION_METHODS for s in MODALITY_SETS}  # 18 results
    for result in metrics["results"]:
        assert result["n_clips"] == 20  # the test split: 2 clips x 10 scenes
        assert 0.0 <= result["accuracy"] <= 1.0
    multimodal = [r["accuracy"] for r in metrics["results"] if r["modalities"] == "audio+visual"]
    assert max(multimodal) >= 3 * CHANCE, f"best audio+visual accuracy {max(multimodal)} near chance"
    assert {b["backbone"] for b in metrics["backbones"]} == set(BACKBONES)


@pytest.mark.slow
def test_report_bundle_and_embeddings_are_published(local_run):
    output, _, _ = local_run
    assert "<html" in (output / "report.html").read_text().lower()
    bundle = json.loads((output / "bundle" / "bundle.json").read_text())
    assert set(bundle["backbones"]) == set(BACKBONES)
    for backbone in BACKBONES:
        assert (output / "bundle" / bundle["backbones"][backbone]).is_file()
    parquet = sorted((output / "embeddings").glob("*.parquet"))
    assert [p.stem for p in parquet] == sorted(BACKBONES)
    for path in parquet:
        table = pq.read_table(path)
        assert {"clip_id", "fc1024", "fc10"} <= set(table.column_names)
        assert table.num_rows == 60


@pytest.mark.slow
def test_the_run_ends_with_the_results_table_and_output_paths(local_run):
    output, done, _ = local_run
    tail = done.stdout[-4000:]
    for method in FUSION_METHODS:
        assert f"\n{method}" in tail
    for name in ("config.json", "metrics.json", "report.html", "bundle"):
        assert str(output / name) in tail


@pytest.mark.slow
def test_the_kubeflow_ui_artifacts_are_written(local_run):
    output, _, _ = local_run
    first = _runs(output)[0]
    outputs = [json.loads(p.read_text()) for p in first.rglob("executor_output.json")]
    confusions = [
        a
        for out in outputs
        for name, arts in out.get("artifacts", {}).items()
        if name.startswith("confusion_")
        for a in arts["artifacts"]
    ]
    assert len(confusions) == len(FUSION_METHODS) * len(MODALITY_SETS)
    for artifact in confusions:
        matrix = artifact["metadata"]["confusionMatrix"]
        assert [c["displayName"] for c in matrix["annotationSpecs"]] == list(LABELS)
        assert sum(sum(row["row"]) for row in matrix["rows"]) == 20
    # Every metrics artifact has its file (kfp.local's cache needs it), holding what the UI shows.
    for out in outputs:
        for name, arts in out.get("artifacts", {}).items():
            for artifact in arts["artifacts"]:
                if name == "metrics" or name.startswith("confusion_"):
                    assert json.loads(Path(artifact["uri"]).read_text()) == artifact["metadata"], artifact["uri"]
    summary = next(first.rglob("resolve-config/summary")).read_text()
    assert re.search(rf"\|\s*features\.audio\.frames\s*\|\s*{FRAMES}\s*\|\s*yes", summary)  # the UI's Markdown


@pytest.mark.slow
def test_settings_given_with_set_reach_every_feature_store(local_run):
    output, _, _ = local_run
    record = json.loads((output / "config.json").read_text())  # published beside metrics.json
    assert record["preset"] == "quick"
    assert record["overrides"] == {"features": {"audio": {"frames": FRAMES}}, "train": {"epochs": 2}}
    assert record["config"]["features"]["audio"]["frames"] == FRAMES
    from avsc.features.store import FeatureStore

    refs = sorted(_runs(output)[0].rglob("preprocess-shard/features/feature-store.json"))
    assert len(refs) == 2  # one per shard, each a few bytes naming the one shared store
    uris = {json.loads(ref.read_text())["uri"] for ref in refs}
    source = record["config"]["data"]["audio_source"]  # features of the WAVs' sound have a store of their own
    suffix = "" if source == "video" else f"-audio-{source}"
    assert uris == {str(output / "features" / (record["hashes"]["features"] + suffix))}
    store = FeatureStore.open([ref.parent for ref in refs])
    assert store.config_hash == record["hashes"]["features"]
    assert store.shapes["mel"] == (128, FRAMES, 2)
    assert store.read_clip(store.clips()["clip_id"][0], "gam").shape == (128, FRAMES, 2)
    checkpoints = sorted(p.name.rsplit("-", 1)[0] for p in (output / "checkpoints").iterdir())
    assert checkpoints == sorted([*BACKBONES, *(f"fusion-{m}" for m in FUSION_METHODS)])


@pytest.mark.slow
def test_a_second_cached_run_reexecutes_no_step(local_run, cached_rerun):
    output, _, _ = local_run
    done, metrics_before = cached_rerun
    runs = _runs(output)
    assert len(runs) == 2
    # Only publishing ran again (never cached: it always copies the results out).
    executed = sorted(p.parent.name for p in runs[1].rglob("executor_output.json"))
    assert executed == ["publish-outputs"], executed
    # What it says: every step but publishing reused, one line each.
    assert re.findall(r"\] (.+?): done in ", done.stdout) == ["Publish outputs"]
    assert done.stdout.count(": reused (cached)") == local_step_count(2) - 1  # --shards 2
    assert (output / "metrics.json").read_text() == metrics_before  # the same results, published again


@pytest.mark.slow
def test_the_one_second_protocol_runs_through_the_pipeline(tmp_path):
    """``--set data.segment_seconds=1`` with the matching clip length: ingest cuts 2-s clips into
    1-s segments, every later step treats a segment as a clip, the evaluation adds whole clips."""
    dataset = make_demo_dataset(
        tmp_path / "dataset",
        classes=2,
        clips_per_class=3,
        locations_per_class=3,
        seconds=2.0,
        width=64,
        height=48,
        progress=False,
    ).root
    output = tmp_path / "out"
    done = _run(
        "run",
        "--local",
        "--dataset",
        str(dataset),
        "--output",
        str(output),
        "--preset",
        "quick",
        "--set",
        "data.segment_seconds=1",
        "--set",
        "features.audio.clip_seconds=1",
        "--set",
        "features.audio.frames=40",
        "--set",
        "train.epochs=1",
        "--set",
        "fusion.epochs=2",
        "--shards",
        "1",
    )
    assert done.returncode == 0, f"run --local failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    data_config = json.loads((output / "config.json").read_text())["config"]["data"]
    assert data_config == {"segment_seconds": 1.0, "audio_source": "auto"}
    ingest = json.loads(next(_runs(output)[0].rglob("ingest-dataset/metrics")).read_text())
    assert (ingest["segment_seconds"], ingest["test_clips"]) == (1.0, 4)  # two 2-s clips, two segments each
    metrics = json.loads((output / "metrics.json").read_text())
    assert "1-second segments" in metrics["provenance"]["protocol"]
    assert metrics["provenance"]["dataset"]["parent_clips_per_split"] == {"train": 2, "val": 2, "test": 2}
    for result in metrics["results"]:
        assert (result["n_clips"], result["clip_level"]["n_clips"]) == (4, 2)
        clip_rows = (output / result["clip_submission_csv"]).read_text().splitlines()[1:]
        assert sorted(row.split("\t")[0] for row in clip_rows) == sorted(
            f"video/{c}.mp4"
            for c in read_manifest(next(_runs(output)[0].rglob("manifest.parquet")))
            .query("split == 'test'")["parent_clip"]
            .unique()
        )
    assert (output / "calibration-audio+visual.png").is_file() and (output / "training-curves.png").is_file()


@pytest.mark.slow
def test_a_failing_step_fails_the_run_with_a_message(tmp_path):
    empty = tmp_path / "not-a-dataset"
    empty.mkdir()
    done = _run(
        "run", "--local", "--preset", "quick", "--dataset", str(empty), "--output", str(tmp_path / "out"), timeout=300
    )
    assert done.returncode != 0
    assert "step 'Ingest dataset' failed" in done.stderr and "ingest-dataset.log" in done.stderr
    assert "fold1_train.csv" in done.stderr  # the library's own message is shown, in one line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_ingest_and_preprocess_read_a_remote_dataset_in_place(s3_env, tmp_path, monkeypatch):
    """The components as a cluster runs them: nothing of the dataset is copied to a scratch
    folder; the shard's features land in the run's store on s3://, the artifact only names it."""
    dataset = make_demo_dataset(
        tmp_path / "dataset",
        classes=2,
        clips_per_class=3,
        locations_per_class=3,
        seconds=1.0,
        width=64,
        height=48,
        progress=False,
    ).root
    push_dir(dataset, s3_env.uri("tau"), progress=False)
    scratch = tmp_path / "scratch"  # a pod's scratch disk
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))

    def no_pull(*args, **kwargs):
        raise AssertionError("the dataset must not be copied")

    monkeypatch.setattr(avsc.storage.sync, "pull_dir", no_pull)

    manifest = Dataset(uri=str(tmp_path / "manifest"))
    ingest_dataset.python_func(
        dataset=s3_env.uri("tau"), manifest=manifest, metrics=Metrics(uri=str(tmp_path / "ingest-metrics"))
    )
    rows = read_manifest(Path(manifest.path) / "manifest.parquet")
    assert len(rows) == 6 and not rows["video"].str.startswith("/").any()  # paths relative to the root

    config = Artifact(uri=str(tmp_path / "config"))
    resolve_config.python_func(
        preset="quick",
        overrides="features.audio.clip_seconds = 1.0",
        config=config,
        summary=Markdown(uri=str(tmp_path / "summary")),
    )
    features = Dataset(uri=str(tmp_path / "features"))
    shard_metrics = Metrics(uri=str(tmp_path / "shard-metrics"))
    preprocess_shard.python_func(
        config=config,
        manifest=manifest,
        dataset=s3_env.uri("tau"),
        shard_index=1,
        shard_count=2,
        workers=1,
        output_uri=s3_env.uri("runs/r1"),
        features=features,
        metrics=shard_metrics,
    )
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in Path(features.path).iterdir()) == ["feature-store.json"]
    store_uri = json.loads((Path(features.path) / "feature-store.json").read_text())["uri"]
    assert store_uri.startswith(s3_env.uri("runs/r1/features/")) and features.metadata["store"] == store_uri
    from avsc.features.store import FeatureStore

    mine = shard_rows(rows, (1, 2))
    assert sorted(FeatureStore.open(features.path).index["clip_id"]) == sorted(mine["clip_id"])
    assert shard_metrics.metadata["processed_clips"] == len(mine) == 3
    again = Metrics(uri=str(tmp_path / "shard-metrics-2"))  # a retried pod: the clips are there
    preprocess_shard.python_func(
        config=config,
        manifest=manifest,
        dataset=s3_env.uri("tau"),
        shard_index=1,
        shard_count=2,
        workers=1,
        output_uri=s3_env.uri("runs/r1"),
        features=Dataset(uri=str(tmp_path / "features-2")),
        metrics=again,
    )
    assert again.metadata["processed_clips"] == 0 and again.metadata["skipped_clips"] == 3


def test_publish_pushes_report_bundle_and_embeddings(s3_env, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    (report / "report.html").write_text("<html></html>")
    bundle = tmp_path / "bundle"
    (bundle / "backbones").mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    (bundle / "backbones" / "aud-mel.keras").write_bytes(b"model")
    embeddings = []
    for number, backbone in enumerate(BACKBONES):  # artifacts at paths of their own, tagged
        path = tmp_path / f"iteration-{number}" / "embeddings"
        path.parent.mkdir()
        path.write_bytes(backbone.encode())
        embeddings.append(Dataset(uri=str(path), metadata={"backbone": backbone}))
    config = tmp_path / "config"
    config.write_text('{"preset": "quick"}')
    publish_outputs.python_func(
        output_uri=s3_env.uri("runs/one"),
        config=Artifact(uri=str(config)),
        report=Dataset(uri=str(report)),
        bundle=Model(uri=str(bundle)),
        embeddings=embeddings,
    )
    expected = {
        "runs/one/config.json",
        "runs/one/metrics.json",
        "runs/one/report.html",
        "runs/one/bundle/bundle.json",
        "runs/one/bundle/backbones/aud-mel.keras",
    }
    expected |= {f"runs/one/embeddings/{b}.parquet" for b in BACKBONES}
    assert set(s3_env.keys("runs/")) == expected
    back = tmp_path / "back"
    pull_dir(s3_env.uri("runs/one/embeddings"), back, progress=False)
    assert (back / "vis-conv.parquet").read_bytes() == b"vis-conv"
