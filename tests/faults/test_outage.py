"""The object store goes down, stalls or leaves uploads behind: every case ends in one clear
error or the right result, and never in good clips recorded as bad ones.

The store is the moto S3 server on 127.0.0.1 behind a :class:`TcpForwarder`, which is
stopped (connections refused and reset), stalled (connections open, no byte moves) and
started again, as a store that restarts or hangs.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)
from tcp_forwarder import TcpForwarder

from avsc.cli import main
from avsc.errors import StoreError
from avsc.storage import locations, objects, sync
from avsc.storage.s3 import S3Settings


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from avsc.data.demo import make_demo_dataset

    return make_demo_dataset(
        tmp_path_factory.mktemp("demo") / "demo",
        classes=2,
        clips_per_class=3,
        locations_per_class=3,
        seconds=1.0,
        width=64,
        height=48,
        fps=5.0,
        progress=False,
    ).root


@pytest.fixture
def forwarder(s3_env, monkeypatch):
    """A forwarder in front of the test's store; ``AVSC_S3_ENDPOINT`` names the forwarder."""
    with TcpForwarder(s3_env.server.host, s3_env.server.port) as fwd:
        monkeypatch.setenv("AVSC_S3_ENDPOINT", f"http://{fwd.endpoint}")
        yield fwd


def test_the_default_settings_report_a_dead_store_within_60_s():
    settings = S3Settings(endpoint="127.0.0.1:9", access_key="a", secret_key="b")
    assert settings.give_up_after_s <= 60
    assert dataclasses.replace(settings, read_timeout_s=120.0, retries=4).give_up_after_s > 60


def test_a_stalled_store_is_reported_not_waited_for(s3_store, demo):
    sync.push_dir(demo, s3_store.uri("tau"), settings=s3_store.settings, progress=False)
    with TcpForwarder(s3_store.server.host, s3_store.server.port) as fwd:
        settings = dataclasses.replace(
            s3_store.settings, endpoint=fwd.endpoint, read_timeout_s=0.5, retries=2, backoff_s=0.05
        )
        assert len(objects.list_objects(s3_store.uri("tau"), settings=settings)) > 0
        fwd.stall()
        with pytest.raises(StoreError, match=r"cannot reach the object store.*ReadTimeoutError"):
            objects.list_objects(s3_store.uri("tau"), settings=settings)
        with pytest.raises(StoreError, match="cannot reach the object store"):
            locations.read_bytes(s3_store.uri("tau/meta.csv"), settings=settings)
        fwd.resume()
        assert locations.read_bytes(s3_store.uri("tau/meta.csv"), settings=settings)


def test_a_store_down_while_pushing_fails_the_push_and_a_rerun_completes(s3_store, demo):
    with TcpForwarder(s3_store.server.host, s3_store.server.port) as fwd:
        settings = dataclasses.replace(s3_store.settings, endpoint=fwd.endpoint, backoff_s=0.05)
        fwd.stop()
        with pytest.raises(StoreError, match=f"cannot reach the object store at http://{fwd.endpoint}"):
            sync.push_dir(demo, s3_store.uri("tau"), settings=settings, progress=False)
        fwd.start()
        result = sync.push_dir(demo, s3_store.uri("tau"), settings=settings, progress=False)
    assert result.transferred == len(s3_store.keys("tau/")) and result.skipped == 0


PREPROCESS = [
    "--preset",
    "quick",
    "--quiet",
    "--set",
    "features.audio.clip_seconds=1",
    "--set",
    "features.frames.size=32",
]


def test_a_store_outage_during_preprocess_fails_the_step_and_rejects_no_clip(
    s3_env, forwarder, demo, tmp_path, monkeypatch, capsys
):
    from avsc.data.ingest import ingest_dataset
    from avsc.features import clip_workers

    sync.push_dir(demo, s3_env.uri("tau"), progress=False)
    manifest = tmp_path / "manifest.parquet"
    ingest = ingest_dataset(s3_env.uri("tau"), manifest, val_fraction=0.3, progress=False)
    assert ingest.n_clips == 6 and not ingest.rejected

    real, calls = clip_workers.process_clip, []

    def outage_from_the_third_clip(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            forwarder.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_workers, "process_clip", outage_from_the_third_clip)
    features = tmp_path / "features"
    command = ["preprocess", str(manifest), "-o", str(features), *PREPROCESS]
    assert main(command) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"avsc preprocess: error: cannot reach the object store at http://{forwarder.endpoint}"
    )
    assert not (features / "summary.json").exists()  # no clip recorded as rejected

    forwarder.start()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "4 processed, 2 already done, 0 rejected of 6 clips" in out  # the 2 finished before kept
    summary = json.loads((features / "summary.json").read_text())
    assert summary["rejected"] == [] and summary["processed"] == 6


def test_a_clip_that_failed_during_a_passing_fault_is_tried_again(
    s3_env, forwarder, demo, tmp_path, monkeypatch, capsys
):
    from avsc.data.ingest import ingest_dataset

    sync.push_dir(demo, s3_env.uri("tau"), progress=False)
    manifest = tmp_path / "manifest.parquet"
    ingest_dataset(s3_env.uri("tau"), manifest, val_fraction=0.3, progress=False)
    from avsc.media import ffmpeg

    # The store is down while ffmpeg reads the first video (from when its presigned URL is
    # made, just before ffmpeg starts, to when its report is read, just after it ended), and
    # back when the clip's failure is judged.
    real_url, real_redact, reads = locations.ffmpeg_input, ffmpeg.redact, []

    def url(uri, **kwargs):
        reads.append(str(uri))
        if len(reads) == 1:
            forwarder.stop()
        return real_url(uri, **kwargs)

    def redact(report, urls):
        if not forwarder.listening:
            forwarder.start()
        return real_redact(report, urls)

    monkeypatch.setattr(locations, "ffmpeg_input", url)
    monkeypatch.setattr(ffmpeg, "redact", redact)
    assert main(["preprocess", str(manifest), "-o", str(tmp_path / "features"), *PREPROCESS]) == 0
    assert "6 processed, 0 already done, 0 rejected of 6 clips" in capsys.readouterr().out
    assert reads[0] == reads[1]  # the first ffmpeg run failed and the clip was read again


def test_incomplete_multipart_uploads_are_listed_and_aborted(s3_env, capsys):
    client = s3_env.client
    # What a push killed during a large upload leaves: an upload begun, parts sent, never completed.
    upload_id = client._create_multipart_upload(s3_env.bucket, "runs/r1/big.bin", {})
    client._upload_part(s3_env.bucket, "runs/r1/big.bin", b"x" * (5 << 20), None, upload_id, 1)
    client._create_multipart_upload(s3_env.bucket, "other/kept.bin", {})

    assert main(["data", "uploads", s3_env.uri("runs")]) == 0
    out = capsys.readouterr().out
    assert f"{s3_env.uri('runs/r1/big.bin')}  {upload_id}" in out and "1 incomplete uploads" in out
    assert main(["data", "uploads", s3_env.uri("runs"), "--abort", "--older-than", "0"]) == 0
    assert "1 incomplete uploads aborted" in capsys.readouterr().out
    assert s3_env.pending_multipart_uploads() == ["other/kept.bin"]


TRAIN = [
    "--preset",
    "quick",
    "--quiet",
    "--set",
    "train.epochs=1",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.audio_stages=2",
]


def test_a_store_outage_during_training_is_one_line_and_a_rerun_completes(
    s3_env, forwarder, tmp_path, monkeypatch, capsys
):
    from features_factory import make_feature_store

    from avsc.training import checkpoints as ck

    local = make_feature_store(tmp_path / "features", features=("mel",), part_clips=4)
    sync.push_dir(local, s3_env.uri("features"), progress=False)
    real = ck.StepCheckpoints.on_train_batch_end

    def outage_at_step_3(self, batch, logs=None):
        if self.first_step + batch + 1 == 3:
            forwarder.stop()
        return real(self, batch, logs)

    monkeypatch.setattr(ck.StepCheckpoints, "on_train_batch_end", outage_at_step_3)
    command = [
        "train",
        "aud-mel",
        s3_env.uri("features"),
        "-o",
        str(tmp_path / "model"),
        "--checkpoints",
        str(tmp_path / "checkpoints"),
        *TRAIN,
    ]
    assert main(command) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # not TensorFlow's start-up lines
    assert errors == [errors[0]] and errors[0].startswith(
        f"avsc train: error: cannot reach the object store at http://{forwarder.endpoint}"
    ), err

    forwarder.start()
    monkeypatch.setattr(ck.StepCheckpoints, "on_train_batch_end", real)
    assert main(command) == 0
    assert (tmp_path / "model" / "model.keras").is_file()
