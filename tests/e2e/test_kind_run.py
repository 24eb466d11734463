"""The whole pipeline on a real cluster: demo data in the object store, a submitted run,
and its published outputs checked in the store (metrics.json and the five backbones'
Parquet embeddings)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    print("$", " ".join(args), flush=True)
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
    return done


def _avsc(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "avsc", *args], timeout)


def _objects(store, bucket: str, prefix: str) -> dict[str, int]:
    return {obj.object_name: obj.size for obj in store.list_objects(bucket, prefix=prefix, recursive=True)}


def test_pipeline_run_publishes_metrics_and_embeddings(cluster, store, tmp_path):
    assert store.bucket_exists(cluster.bucket), f"bucket {cluster.bucket} missing in the store"
    prefix = f"e2e/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    dataset_uri = f"s3://{cluster.bucket}/{prefix}/dataset"
    output_uri = f"s3://{cluster.bucket}/{prefix}/outputs"

    dataset = tmp_path / "dataset"
    made = _avsc("demo-data", str(dataset), "--clips-per-class", "4", "--seconds", "3")
    assert made.returncode == 0, made.stderr
    local_files = sorted(p for p in dataset.rglob("*") if p.is_file())
    assert local_files, "demo-data wrote nothing"

    pushed = _avsc("data", "push", str(dataset), dataset_uri)
    assert pushed.returncode == 0, pushed.stderr
    in_store = _objects(store, cluster.bucket, f"{prefix}/dataset/")
    assert len(in_store) == len(local_files), "not every dataset file reached the store"

    submit = [
        sys.executable,
        "pipeline.py",
        "submit",
        "--host",
        cluster.host,
        "--experiment",
        "avsc-e2e",
        "--preset",
        "quick",
        "--dataset",
        dataset_uri,
        "--output-uri",
        output_uri,
        "--wait",
        "--timeout",
        str(cluster.timeout_s),
    ]
    if cluster.no_gpu:
        submit.append("--no-gpu")
    run = _run(submit, timeout=cluster.timeout_s + 300)
    assert run.returncode == 0, f"pipeline run failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    assert "/#/runs/details/" in run.stdout, "submit should print the run's UI link"

    outputs = _objects(store, cluster.bucket, f"{prefix}/outputs/")
    metrics_keys = [key for key in outputs if key.endswith("metrics.json")]
    assert metrics_keys, f"no metrics.json under {output_uri}: {sorted(outputs)}"
    metrics = json.loads(store.get_object(cluster.bucket, metrics_keys[0]).read())
    assert metrics["results"], "metrics.json holds no results"
    for result in metrics["results"]:
        assert 0.0 <= float(result["accuracy"]) <= 1.0, result

    embeddings = []
    for key in (k for k in outputs if k.endswith(".parquet")):
        table = pq.read_table(io.BytesIO(store.get_object(cluster.bucket, key).read()))
        if {"clip_id", "fc1024", "fc10"} <= set(table.column_names):
            assert table.num_rows > 0, key
            embeddings.append(key)
    assert len(embeddings) >= 5, f"expected one embeddings file per backbone, found {embeddings}"

    if cluster.pipeline_root:
        bucket, _, root_prefix = cluster.pipeline_root.removeprefix("s3://").partition("/")
        assert any(True for _ in store.list_objects(bucket, prefix=root_prefix, recursive=True)), (
            f"no artifacts under the pipeline root {cluster.pipeline_root} (kfp-launcher config)"
        )
