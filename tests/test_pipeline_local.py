"""The whole pipeline through kfp.local (``pipeline.py run --local``) on a tiny demo dataset.

Ten scenes, six clips each at three locations (two clips each for train, val and test per
scene), quick preset with two epochs, two preprocessing shards: every step runs for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from avsc.config import BACKBONES, FUSION_METHODS, MODALITY_SETS
from avsc.demo import make_demo_dataset
from avsc.labels import LABELS

pytestmark = pytest.mark.slow

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


def test_the_run_ends_with_the_results_table_and_output_paths(local_run):
    output, done = local_run
    tail = done.stdout[-4000:]
    for method in FUSION_METHODS:
        assert f"\n{method}" in tail
    for name in ("metrics.json", "report.html", "bundle"):
        assert str(output / name) in tail


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


def test_a_failing_step_fails_the_run_with_a_message(tmp_path):
    empty = tmp_path / "not-a-dataset"
    empty.mkdir()
    done = _run("run", "--local", "--dataset", str(empty), "--output", str(tmp_path / "out"), timeout=300)
    assert done.returncode != 0
    assert "ingest-dataset" in done.stderr
    assert "fold1_train.csv" in done.stdout + done.stderr  # the library's own message is shown
    assert not (tmp_path / "out" / "metrics.json").exists()
