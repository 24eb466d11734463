"""The pipeline run for real on this machine.

Slow: the whole DAG through kfp.local (``pipeline.py run --local``) on a tiny demo dataset:
ten scenes, six clips each at three locations (two clips each for train, val and test per
scene), quick preset with two epochs, two preprocessing shards.

Fast: the steps that touch the object store (ingest and preprocessing from ``s3://``,
publishing to it), each component's own function called with artifacts on local paths,
against a real S3 server on localhost (moto).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp.dsl import Dataset, Metrics, Model
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

import avsc.storage.sync
from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.data.demo import make_demo_dataset
from avsc.data.manifest import read_manifest
from avsc.features.preprocess import shard_rows
from avsc.labels import LABELS
from avsc.storage.sync import pull_dir, push_dir
from components import ingest_dataset, preprocess_shard, publish_outputs

ROOT = Path(__file__).resolve().parents[1]
CHANCE = 1.0 / len(LABELS)


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipeline.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    dataset = make_demo_dataset(base / "dataset", clips_per_class=6, locations_per_class=3,
                                progress=False).root
    output = base / "out"
    done = _run("run", "--local", "--dataset", str(dataset), "--output", str(output), "--preset", "quick",
                "--epochs", "2", "--shards", "2")
    assert done.returncode == 0, f"run --local failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return output, done


@pytest.mark.slow
def test_metrics_hold_every_fusion_result_and_the_best_beats_chance(local_run):
    output, _ = local_run
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
    output, _ = local_run
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
    output, done = local_run
    tail = done.stdout[-4000:]
    for method in FUSION_METHODS:
        assert f"\n{method}" in tail
    for name in ("metrics.json", "report.html", "bundle"):
        assert str(output / name) in tail


@pytest.mark.slow
def test_the_kubeflow_ui_artifacts_are_written(local_run):
    output, _ = local_run
    runs = sorted((output / "pipeline-root").iterdir())
    assert len(runs) == 1
    outputs = [json.loads(p.read_text()) for p in runs[0].rglob("executor_output.json")]
    confusions = [a for out in outputs for name, arts in out.get("artifacts", {}).items()
                  if name.startswith("confusion_") for a in arts["artifacts"]]
    assert len(confusions) == len(FUSION_METHODS) * len(MODALITY_SETS)
    for artifact in confusions:
        matrix = artifact["metadata"]["confusionMatrix"]
        assert [c["displayName"] for c in matrix["annotationSpecs"]] == list(LABELS)
        assert sum(sum(row["row"]) for row in matrix["rows"]) == 20


@pytest.mark.slow
def test_a_failing_step_fails_the_run_with_a_message(tmp_path):
    empty = tmp_path / "not-a-dataset"
    empty.mkdir()
    done = _run("run", "--local", "--dataset", str(empty), "--output", str(tmp_path / "out"), timeout=300)
    assert done.returncode != 0
    assert "ingest-dataset" in done.stderr
    assert "fold1_train.csv" in done.stdout + done.stderr  # the library's own message is shown
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_ingest_and_preprocess_read_a_remote_dataset_shard_by_shard(s3_env, tmp_path, monkeypatch):
    dataset = make_demo_dataset(tmp_path / "dataset", classes=2, clips_per_class=3, locations_per_class=3,
                                seconds=1.0, width=64, height=48, progress=False).root
    push_dir(dataset, s3_env.uri("tau"), progress=False)
    scratch = tmp_path / "scratch"  # where the steps pull to
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    pulls = []  # what each real pull left in its folder, recorded before the step removes it
    real_pull_dir = avsc.storage.sync.pull_dir

    def recording_pull_dir(uri, local_dir, **kwargs):
        result = real_pull_dir(uri, local_dir, **kwargs)
        pulls.append(sorted(str(p.relative_to(local_dir)) for p in Path(local_dir).rglob("*") if p.is_file()))
        return result

    monkeypatch.setattr(avsc.storage.sync, "pull_dir", recording_pull_dir)

    manifest = Dataset(uri=str(tmp_path / "manifest"))
    ingest_dataset.python_func(dataset=s3_env.uri("tau"), manifest=manifest,
                               metrics=Metrics(uri=str(tmp_path / "ingest-metrics")))
    rows = read_manifest(Path(manifest.path) / "manifest.parquet")
    assert len(rows) == 6 and not rows["video"].str.startswith("/").any()  # paths relative to the root

    features = Dataset(uri=str(tmp_path / "features"))
    shard_metrics = Metrics(uri=str(tmp_path / "shard-metrics"))
    preprocess_shard.python_func(manifest=manifest, dataset=s3_env.uri("tau"), shard_index=1, shard_count=2,
                                 preset="quick", workers=1, features=features, metrics=shard_metrics)
    assert len(pulls) == 2  # the whole dataset for ingest, then one shard's media
    mine = shard_rows(rows, (1, 2))
    assert pulls[1] == sorted(list(mine["video"]) + [a for a in mine["audio"] if a])  # its own media only
    assert list(scratch.iterdir()) == []  # both steps removed what they pulled
    from avsc.features.store import FeatureStore

    stored = sorted(FeatureStore.open(features.path).index["clip_id"])
    assert stored == sorted(mine["clip_id"])
    assert shard_metrics.metadata["processed_clips"] == len(mine) == 3


def test_publish_pushes_report_bundle_and_embeddings(s3_env, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    (report / "report.html").write_text("<html></html>")
    bundle = tmp_path / "bundle"
    (bundle / "backbones").mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    (bundle / "backbones" / "aud-mel.keras").write_bytes(b"model")
    embeddings = {}
    for backbone in BACKBONES:
        path = tmp_path / "embed" / backbone.replace("-", "_")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(backbone.encode())
        embeddings[backbone.replace("-", "_")] = Dataset(uri=str(path))
    publish_outputs.python_func(output_uri=s3_env.uri("runs/one"), report=Dataset(uri=str(report)),
                                bundle=Model(uri=str(bundle)), **embeddings)
    expected = {"runs/one/metrics.json", "runs/one/report.html", "runs/one/bundle/bundle.json",
                "runs/one/bundle/backbones/aud-mel.keras"}
    expected |= {f"runs/one/embeddings/{b}.parquet" for b in BACKBONES}
    assert set(s3_env.keys("runs/")) == expected
    back = tmp_path / "back"
    pull_dir(s3_env.uri("runs/one/embeddings"), back, progress=False)
    assert (back / "vis-conv.parquet").read_bytes() == b"vis-conv"
