"""Outputs that belong together: a report or a bundle is one run's, whole, whatever kills the
run; a push killed mid-upload leaves no object, and its incomplete upload can be cleaned.

The kills are real: a child process sends itself SIGKILL at a chosen point (after the first
files of a report are written, after the first part of a multipart upload), so nothing of
Python's clean-up runs, as when the out-of-memory killer or a node loss ends a pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from records_factory import write_fusion_info
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.cli import main
from avsc.errors import DataError
from avsc.evaluation.evaluate import evaluate
from avsc.labels import LABELS
from avsc.records import OutputManifest
from avsc.records.predictions import Predictions
from avsc.scoring.metrics import softmax
from avsc.storage.files import file_digest
from avsc.storage.locations import write_json


def _fusion_dir(root: Path, method: str, seed: int) -> Path:
    """A fusion folder with hand-made predictions on val and test (3 clips a class each)."""
    rng = np.random.default_rng(seed)
    out = root / f"{method}-audio+visual"
    ids, splits, labels, logits = [], [], [], []
    for split in ("val", "test"):
        for k, label in enumerate(LABELS):
            for i in range(3):
                ids.append(f"{label}-x-{i}-{split}")
                splits.append(split)
                labels.append(label)
                row = rng.normal(size=10)
                row[k] += 2.0
                logits.append(row)
    logits = np.array(logits)
    Predictions(
        clip_ids=np.array(ids), splits=np.array(splits), labels=np.array(labels), probs=softmax(logits), logits=logits
    ).write(out)
    write_json(
        out / "history.json",
        [
            {
                "epoch": 1,
                "loss": 1.0,
                "val_accuracy": 0.5,
                "val_log_loss": 1.0,
                "val_log_loss_calibrated": 1.0,
                "temperature": 1.0,
            }
        ],
    )
    write_fusion_info(
        out,
        method,
        "audio+visual",
        config_hash="fusionhash01",
        val_metrics={"accuracy": 0.5 + seed / 100, "log_loss": 1.0 - seed / 100},
        best_epoch=1,
        clips_per_split={"val": 30, "test": 30},
    )
    return out


@pytest.fixture(scope="module")
def fusions(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("fusion")
    return [_fusion_dir(root, "f1", 1), _fusion_dir(root, "f4", 4)]


def assert_one_whole_run(folder: Path, run_id: str) -> None:
    """``folder`` holds exactly the files its manifest lists, with their hashes, of ``run_id``."""
    manifest = OutputManifest.read(folder)
    assert manifest.run_id == run_id
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert present == set(manifest.files) | {OutputManifest.FILE_NAME}
    for name, entry in manifest.files.items():
        assert file_digest(folder / name) == entry.sha256, name


def _run_killed(script: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == -9, result.stderr[-3000:]  # it really died of SIGKILL
    return result


def test_a_report_is_one_evaluation_whole_even_when_the_next_one_is_killed(fusions, tmp_path):
    report = tmp_path / "report"
    evaluate(fusions, report, run_id="run-a")
    assert_one_whole_run(report, "run-a")
    before = {p.name: p.read_bytes() for p in report.iterdir()}

    # The second evaluation dies after its submissions and metrics.json, before its report.
    _run_killed(f"""
        import os, signal
        from avsc.evaluation import report
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        report.write_report = killed
        from avsc.evaluation.evaluate import evaluate
        evaluate({[str(f) for f in fusions[:1]]!r}, {str(report)!r}, run_id="run-b")
    """)
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # untouched: run A, whole
    assert_one_whole_run(report, "run-a")

    # A finished evaluation of one fusion model replaces the folder: nothing of run A stays.
    evaluate(fusions[:1], report, run_id="run-c")
    assert_one_whole_run(report, "run-c")
    assert not (report / "submission-f4-audio+visual.csv").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "report"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".report.staging-")  # the killed run's, inert


def test_evaluate_refuses_a_folder_it_did_not_write(fusions, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="holds files that no `avsc evaluate` run published"):
        evaluate(fusions, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_report_on_the_store_lists_its_files_last_and_drops_an_earlier_runs(fusions, s3_env):
    uri = s3_env.uri("runs/report")
    evaluate(fusions, uri, run_id="run-a")
    evaluate(fusions[:1], uri, run_id="run-b")
    keys = {key[len("runs/report/") :] for key in s3_env.keys("runs/report/")}
    manifest = OutputManifest.read(uri)
    assert manifest.run_id == "run-b" and keys == set(manifest.files) | {OutputManifest.FILE_NAME}
    assert "submission-f4-audio+visual.csv" not in keys


@pytest.mark.parametrize("remote", [False, True], ids=["local", "s3"])
def test_a_report_merged_into_an_output_root_replaces_the_earlier_reports_files(fusions, tmp_path, s3_env, remote):
    from avsc.storage import locations
    from avsc.storage.publish import merge_output

    root = s3_env.uri("out") if remote else str(tmp_path / "out")
    locations.write_bytes(locations.join(root, "config.json"), b"{}")  # another output of the run
    evaluate(fusions, tmp_path / "report-a", run_id="run-a")
    merge_output(tmp_path / "report-a", root)
    evaluate(fusions[:1], tmp_path / "report-b", run_id="run-b")
    merge_output(tmp_path / "report-b", root)
    names = {location[len(root) + 1 :] for location in locations.list_files(root)}
    assert OutputManifest.read(root).run_id == "run-b"
    assert names == set(OutputManifest.read(root).files) | {"outputs.json", "config.json"}
    assert "submission-f4-audio+visual.csv" not in names


def test_a_push_killed_mid_multipart_upload_leaves_no_object_and_its_upload_is_cleaned(s3_env, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    big = folder / "big.bin"
    big.write_bytes(np.random.default_rng(0).bytes(12 << 20))  # 3 parts of 5 MiB (the last smaller)
    uri = s3_env.uri("pushed")
    env = {
        "AVSC_S3_ENDPOINT": s3_env.server.url,
        "AVSC_S3_ACCESS_KEY": s3_env.settings.access_key,
        "AVSC_S3_SECRET_KEY": s3_env.settings.secret_key,
        "AVSC_S3_REGION": "us-east-1",
    }
    _run_killed(
        f"""
        import os, signal
        from minio import Minio
        real = Minio._upload_part
        def killed_after_the_first_part(self, *args, **kwargs):
            etag = real(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        Minio._upload_part = killed_after_the_first_part
        from avsc.cli import main
        main(["data", "push", {str(folder)!r}, {uri!r}, "--quiet"])
    """,
        env,
    )
    assert s3_env.keys("pushed/") == {}  # no partial object
    assert s3_env.pending_multipart_uploads() == ["pushed/big.bin"]

    assert main(["data", "uploads", uri]) == 0
    assert f"s3://{s3_env.bucket}/pushed/big.bin" in capsys.readouterr().out
    assert main(["data", "uploads", uri, "--abort", "--older-than", "0"]) == 0
    assert s3_env.pending_multipart_uploads() == []
    assert main(["data", "push", str(folder), uri, "--quiet"]) == 0
    assert s3_env.keys("pushed/") == {"pushed/big.bin": 12 << 20}
