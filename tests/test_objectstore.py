"""avsc.storage (s3, sync) and ``avsc data`` against a real S3 server on 127.0.0.1 (moto standalone)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
from pathlib import Path

import pytest
from s3_server import FlakyProxy, iam_auth, s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.cli import main
from avsc.errors import StoreError
from avsc.storage import transfer
from avsc.storage.objects import list_objects
from avsc.storage.s3 import S3Settings, is_remote, parse_uri
from avsc.storage.sync import TransferResult, pull_dir, pull_file, push_dir, push_file

MULTIPART = 6 * 1024 * 1024  # above minio's 5 MiB part size: sent as a two-part upload


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path, rng) -> Path:
    """A small dataset: nested folders, an empty file, a multipart-sized file."""
    root = tmp_path / "dataset"
    files = {
        "meta.csv": b"filename\tscene_label\nvideo/a.mp4\tpark\n",
        "video/a.mp4": rng.bytes(70_000),
        "audio/a.wav": rng.bytes(33_000),
        "evaluation_setup/fold1_train.csv": b"filename\tscene_label\n",
        "deep/er/still/empty.txt": b"",
        "big/weights.bin": rng.bytes(MULTIPART),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- URIs and settings


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://avsc/datasets/tau2021", ("avsc", "datasets/tau2021")),
        ("s3://avsc/datasets/tau2021/", ("avsc", "datasets/tau2021")),
        ("s3://avsc//a//b/", ("avsc", "a/b")),
        ("s3://avsc", ("avsc", "")),
        ("s3://avsc/", ("avsc", "")),
    ],
)
def test_parse_uri(uri, expected):
    assert parse_uri(uri) == expected
    assert is_remote(uri)


@pytest.mark.parametrize("bad", ["/data/tau", "avsc/datasets", "S3:/avsc", "s3://", "s3:///x"])
def test_parse_uri_rejects_non_s3_locations(bad):
    with pytest.raises(StoreError, match="s3://bucket/prefix"):
        parse_uri(bad)


def test_is_remote_for_paths():
    assert not is_remote(Path("s3:/x"))
    assert not is_remote(None)
    assert not is_remote("data/s3://x")


@pytest.mark.parametrize(
    "endpoint, secure_env, endpoint_out, secure_out",
    [
        ("minio.avsc.svc:9000", None, "minio.avsc.svc:9000", True),
        ("minio.avsc.svc:9000", "false", "minio.avsc.svc:9000", False),
        ("http://127.0.0.1:9000", None, "127.0.0.1:9000", False),
        ("https://s3.example.internal/", None, "s3.example.internal", True),
        ("http://127.0.0.1:9000", "true", "127.0.0.1:9000", True),  # the variable wins
    ],
)
def test_settings_from_env(endpoint, secure_env, endpoint_out, secure_out):
    env = {"AVSC_S3_ENDPOINT": endpoint, "AVSC_S3_ACCESS_KEY": "AKEXAMPLE", "AVSC_S3_SECRET_KEY": "very-secret-value"}
    if secure_env is not None:
        env["AVSC_S3_SECURE"] = secure_env
    settings = S3Settings.from_env(env)
    assert (settings.endpoint, settings.secure) == (endpoint_out, secure_out)
    assert settings.region is None
    assert settings.url == f"{'https' if secure_out else 'http'}://{endpoint_out}"
    assert "very-secret-value" not in repr(settings)
    assert "AKEXAMPLE" not in repr(settings)


def test_settings_region_and_overrides():
    env = {
        "AVSC_S3_ENDPOINT": "h:1",
        "AVSC_S3_ACCESS_KEY": "a",
        "AVSC_S3_SECRET_KEY": "b",
        "AVSC_S3_REGION": "eu-west-1",
    }
    settings = S3Settings.from_env(env, retries=2)
    assert settings.region == "eu-west-1"
    assert settings.retries == 2


def test_settings_missing_variables_are_named():
    with pytest.raises(StoreError) as caught:
        S3Settings.from_env({"AVSC_S3_ENDPOINT": "h:9000", "AVSC_S3_SECRET_KEY": "s3cr3t-value"})
    message = str(caught.value)
    assert "AVSC_S3_ACCESS_KEY" in message and "avsc-s3" in message
    assert "AVSC_S3_ENDPOINT" not in message.split("not set")[0]  # it was given
    assert "s3cr3t-value" not in message


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"AVSC_S3_ENDPOINT": "http://h:9000/bucket"}, "without a path"),
        ({"AVSC_S3_ENDPOINT": "h:9000", "AVSC_S3_SECURE": "maybe"}, "AVSC_S3_SECURE"),
    ],
)
def test_settings_malformed_values(env, problem):
    env = {"AVSC_S3_ACCESS_KEY": "a", "AVSC_S3_SECRET_KEY": "b", **env}
    with pytest.raises(StoreError, match=problem):
        S3Settings.from_env(env)


# ---------------------------------------------------------------- push and pull


def test_push_pull_round_trip(s3_store, dataset, tmp_path):
    uri = s3_store.uri("datasets/demo")
    pushed = push_dir(dataset, uri, settings=s3_store.settings, workers=4, progress=False)
    local = _tree(dataset)
    assert pushed == TransferResult(transferred=len(local), skipped=0, bytes=sum(len(d) for d in local.values()))
    assert s3_store.keys() == {f"datasets/demo/{k}": len(v) for k, v in local.items()}
    stat = s3_store.client.stat_object(s3_store.bucket, "datasets/demo/big/weights.bin")
    assert stat.metadata["x-amz-meta-sha256"] == _sha256(local["big/weights.bin"])
    assert "-" in stat.etag  # really went as a multipart upload
    assert s3_store.pending_multipart_uploads() == []

    out = tmp_path / "copy"
    pulled = pull_dir(uri, out, settings=s3_store.settings, workers=3, progress=True)
    assert _tree(out) == local
    assert pulled.transferred == len(local) and pulled.skipped == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    again = pull_dir(uri, out, settings=s3_store.settings, progress=False)
    assert again == TransferResult(transferred=0, skipped=len(local), bytes=0)


def test_second_push_skips_and_changed_file_is_uploaded_again(s3_store, dataset):
    uri = s3_store.uri("ds")
    push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    count = len(_tree(dataset))
    assert push_dir(dataset, uri, settings=s3_store.settings, progress=False) == TransferResult(
        transferred=0, skipped=count, bytes=0
    )

    wav = dataset / "audio" / "a.wav"
    changed = bytes(b ^ 0xFF for b in wav.read_bytes())  # same size, other bytes
    wav.write_bytes(changed)
    (dataset / "new.txt").write_bytes(b"added later")
    result = push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    assert result == TransferResult(transferred=2, skipped=count - 1, bytes=len(changed) + 11)
    stored = s3_store.client.get_object(s3_store.bucket, "ds/audio/a.wav").read()
    assert stored == changed


def test_objects_from_other_tools_compare_by_etag(s3_store, tmp_path):
    """Objects without the sha256 metadata: a single-part ETag (an MD5) decides."""
    root = tmp_path / "d"
    root.mkdir()
    (root / "same.txt").write_bytes(b"identical content")
    (root / "other.txt").write_bytes(b"local version 1")
    client = s3_store.client
    for name, data in (("same.txt", b"identical content"), ("other.txt", b"store version 2")):
        client.put_object(s3_store.bucket, f"p/{name}", io.BytesIO(data), len(data))
    result = push_dir(root, s3_store.uri("p"), settings=s3_store.settings, progress=False)
    assert (result.transferred, result.skipped) == (1, 1)
    assert client.get_object(s3_store.bucket, "p/other.txt").read() == b"local version 1"


def test_pull_include_fetches_only_named_keys(s3_store, dataset, tmp_path):
    uri = s3_store.uri("ds")
    push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    out = tmp_path / "partial"
    result = pull_dir(uri, out, settings=s3_store.settings, progress=False, include=["meta.csv", "/video/a.mp4"])
    assert sorted(_tree(out)) == ["meta.csv", "video/a.mp4"]
    assert result.transferred == 2

    with pytest.raises(StoreError, match=r"video/missing\.mp4"):
        pull_dir(uri, out, settings=s3_store.settings, progress=False, include=["meta.csv", "video/missing.mp4"])


def test_pull_replaces_a_local_file_that_differs(s3_store, dataset, tmp_path):
    uri = s3_store.uri("ds")
    push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    out = tmp_path / "copy"
    pull_dir(uri, out, settings=s3_store.settings, progress=False)
    (out / "meta.csv").write_bytes(b"truncated")
    target = out / "audio" / "a.wav"
    target.write_bytes(bytes(len(target.read_bytes())))  # same size, wrong content
    result = pull_dir(uri, out, settings=s3_store.settings, progress=False)
    assert result.transferred == 2
    assert _tree(out) == _tree(dataset)


def test_pull_refuses_an_object_whose_bytes_differ_from_its_recorded_sha256(s3_store, tmp_path):
    """The download lands in a temporary file; a failed check leaves neither it nor the target."""
    data = b"weights that were damaged after upload"
    s3_store.client.put_object(
        s3_store.bucket,
        "ds/model.keras",
        io.BytesIO(data),
        len(data),
        metadata={"sha256": _sha256(b"the original weights")},
    )
    s3_store.client.put_object(
        s3_store.bucket, "ds/ok.txt", io.BytesIO(b"fine"), 4, metadata={"sha256": _sha256(b"fine")}
    )
    out = tmp_path / "copy"
    with pytest.raises(StoreError, match=r"ds/model\.keras: content does not match its recorded SHA-256"):
        pull_dir(s3_store.uri("ds"), out, settings=s3_store.settings, progress=False, workers=1)
    assert not (out / "model.keras").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_push_file_and_pull_file(s3_store, tmp_path):
    src = tmp_path / "bundle.json"
    src.write_text('{"format": "avsc-bundle/1"}')
    uri = s3_store.uri("runs/r1/bundle.json")
    assert push_file(src, uri, settings=s3_store.settings) == TransferResult(1, 0, src.stat().st_size)
    assert push_file(src, uri, settings=s3_store.settings) == TransferResult(0, 1, 0)
    dest = tmp_path / "back" / "bundle.json"
    assert pull_file(uri, dest, settings=s3_store.settings).transferred == 1
    assert dest.read_bytes() == src.read_bytes()

    with pytest.raises(StoreError, match=r"s3://test-\d+/runs/r1/nothing\.json: no such object"):
        pull_file(s3_store.uri("runs/r1/nothing.json"), tmp_path / "x", settings=s3_store.settings)
    assert not (tmp_path / "x").exists()


def test_pull_empty_prefix_is_an_error(s3_store, tmp_path):
    with pytest.raises(StoreError, match="no objects under this prefix"):
        pull_dir(s3_store.uri("nothing/here"), tmp_path / "o", settings=s3_store.settings, progress=False)


def test_list_objects(s3_store, dataset):
    push_dir(dataset, s3_store.uri("a/b"), settings=s3_store.settings, progress=False)
    listed = list_objects(s3_store.uri("a"), settings=s3_store.settings)
    local = _tree(dataset)
    assert [(o.key, o.size) for o in listed] == [(f"b/{k}", len(v)) for k, v in sorted(local.items())]


# ---------------------------------------------------------------- no partial objects


def _corrupt_after_hashing(monkeypatch, victims: dict[str, callable]) -> None:
    """Change chosen files right after push has hashed them, as a writer racing the upload would."""
    real_hash = transfer.file_digest

    def hash_then_corrupt(path, algorithm="sha256"):
        digest = real_hash(path, algorithm)
        change = victims.pop(Path(path).name, None)
        if change is not None:
            change(Path(path))
        return digest

    monkeypatch.setattr(transfer, "file_digest", hash_then_corrupt)


def test_failed_uploads_leave_no_object(s3_store, dataset, monkeypatch):
    """A file truncated during a multipart upload, and one rewritten before its single PUT."""

    def truncate(path):
        with open(path, "r+b") as handle:
            handle.truncate(MULTIPART - 1000)

    def rewrite(path):
        path.write_bytes(bytes(len(path.read_bytes())))

    _corrupt_after_hashing(monkeypatch, {"weights.bin": truncate, "a.wav": rewrite})
    uri = s3_store.uri("ds")
    with pytest.raises(StoreError) as caught:
        push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    message = str(caught.value)
    assert message.startswith(f"2 of {len(_tree(dataset))} files not pushed")
    assert "re-run" in message
    keys = s3_store.keys()
    assert "ds/big/weights.bin" not in keys and "ds/audio/a.wav" not in keys
    assert "ds/meta.csv" in keys and "ds/video/a.mp4" in keys  # the rest went through
    assert s3_store.pending_multipart_uploads() == []  # the started upload was aborted

    monkeypatch.undo()
    result = push_dir(dataset, uri, settings=s3_store.settings, progress=False)
    assert (result.transferred, result.skipped) == (2, len(_tree(dataset)) - 2)


def test_missing_local_folder(s3_store, tmp_path):
    with pytest.raises(StoreError, match="not a folder"):
        push_dir(tmp_path / "nope", s3_store.uri("x"), settings=s3_store.settings)


# ---------------------------------------------------------------- failures with clear messages


def test_missing_bucket_names_it_and_says_how_to_create_it(s3_server, dataset):
    settings = s3_server.settings()
    with pytest.raises(StoreError) as caught:
        push_dir(dataset, "s3://no-such-bucket/ds", settings=settings, progress=False)
    message = str(caught.value)
    assert "'no-such-bucket' does not exist" in message
    assert "mb" in message and s3_server.endpoint in message


def test_unreachable_endpoint_fails_with_its_address(s3_server, dataset):
    port = _closed_port()
    settings = s3_server.settings(endpoint=f"127.0.0.1:{port}", connect_timeout_s=1.0)
    with pytest.raises(StoreError) as caught:
        push_dir(dataset, "s3://avsc/ds", settings=settings, progress=False)
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "cannot reach" in message and "AVSC_S3_ENDPOINT" in message


def test_tls_to_plain_http_endpoint_suggests_secure_false(s3_server, tmp_path):
    settings = s3_server.settings(secure=True)
    with pytest.raises(StoreError, match="AVSC_S3_SECURE=false"):
        list_objects("s3://avsc", settings=settings)


def test_credential_errors(s3_store, iam_auth, tmp_path):
    secret = "wrong-secret-value-123"
    cases = {
        "InvalidAccessKeyId": ("AKIAUNKNOWNKEY000000", secret),
        "SignatureDoesNotMatch": (iam_auth.no_policy[0], secret),
        "AccessDenied": iam_auth.no_policy,
    }
    for code, (access, secret_key) in cases.items():
        settings = dataclasses.replace(s3_store.settings, access_key=access, secret_key=secret_key)
        with pytest.raises(StoreError) as caught:
            list_objects(s3_store.uri(), settings=settings)
        message = str(caught.value)
        assert code in message and "AVSC_S3_SECRET_KEY" in message, message
        assert secret_key not in message
    allowed = dataclasses.replace(s3_store.settings, access_key=iam_auth.allowed[0], secret_key=iam_auth.allowed[1])
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    assert push_dir(tmp_path / "d", s3_store.uri("p"), settings=allowed, progress=False).transferred == 1


def test_slow_down_is_retried_with_backoff(s3_store, s3_server, dataset, tmp_path):
    with FlakyProxy(s3_server, failures=2) as proxy:
        settings = dataclasses.replace(s3_store.settings, endpoint=proxy.endpoint)
        result = push_dir(dataset, s3_store.uri("ds"), settings=settings, workers=1, progress=False)
    assert proxy.refused == 2
    assert result.transferred == len(_tree(dataset))
    out = tmp_path / "copy"
    pull_dir(s3_store.uri("ds"), out, settings=s3_store.settings, progress=False)
    assert _tree(out) == _tree(dataset)


def test_persistent_slow_down_gives_up_after_the_configured_attempts(s3_store, s3_server, dataset):
    with FlakyProxy(s3_server, failures=1000) as proxy:
        settings = dataclasses.replace(s3_store.settings, endpoint=proxy.endpoint, retries=3)
        with pytest.raises(StoreError, match="SlowDown"):
            push_dir(dataset, s3_store.uri("ds"), settings=settings, progress=False)
    assert proxy.requests == 3
    assert s3_store.keys() == {}


# ---------------------------------------------------------------- command line


def test_cli_push_ls_pull(s3_env, dataset, tmp_path, capsys):
    uri = s3_env.uri("datasets/demo")
    local = _tree(dataset)
    assert main(["data", "push", str(dataset), uri, "--workers", "2", "--quiet"]) == 0
    assert f"{len(local)} uploaded" in capsys.readouterr().out
    assert main(["data", "push", str(dataset), uri, "--quiet"]) == 0
    assert f"0 uploaded (0 B), {len(local)} already there" in capsys.readouterr().out

    assert main(["data", "ls", s3_env.uri("datasets")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith(f"{len(local)} objects")
    assert f"{uri}/big/weights.bin" in "\n".join(lines)

    out = tmp_path / "pulled"
    assert main(["data", "pull", uri, str(out), "--quiet"]) == 0
    assert _tree(out) == local
    assert main(["data", "pull", uri, str(tmp_path / "one"), "--include", "meta.csv", "--quiet"]) == 0
    assert sorted(_tree(tmp_path / "one")) == ["meta.csv"]


def test_cli_errors_are_one_line(s3_env, dataset, capsys, monkeypatch):
    assert main(["data", "push", str(dataset), "s3://no-such-bucket/x", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("avsc data: error: bucket 'no-such-bucket' does not exist")
    assert len(err.splitlines()) == 1

    monkeypatch.delenv("AVSC_S3_SECRET_KEY")
    assert main(["data", "ls", s3_env.uri()]) == 1
    assert "AVSC_S3_SECRET_KEY not set" in capsys.readouterr().err
    assert os.environ.get("AVSC_S3_ACCESS_KEY")  # the others were left alone


# ---------------------------------------------------------------- a location's local copy


def test_copy_uploads_and_downloads_between_a_folder_and_the_store(s3_env, dataset, tmp_path):
    from avsc.storage import locations

    source = dataset / "big" / "weights.bin"
    locations.copy(source, s3_env.uri("copied/weights.bin"))
    assert s3_env.keys("copied/") == {"copied/weights.bin": MULTIPART}
    locations.copy(s3_env.uri("copied/weights.bin"), tmp_path / "back" / "weights.bin")
    assert (tmp_path / "back" / "weights.bin").read_bytes() == source.read_bytes()
    with pytest.raises(StoreError, match=r"copied/missing\.bin"):
        locations.copy(s3_env.uri("copied/missing.bin"), tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_local_copy_is_the_path_itself_an_object_as_a_file_or_a_prefix_as_a_folder(s3_env, dataset):
    from avsc.storage import staging

    push_dir(dataset, s3_env.uri("ds"), progress=False)
    with staging.local_copy(dataset) as same:
        assert same == dataset
    with staging.local_copy(s3_env.uri("ds/meta.csv")) as one:
        assert one.name == "meta.csv" and one.read_bytes() == (dataset / "meta.csv").read_bytes()
    with staging.local_copy(s3_env.uri("ds")) as folder:
        assert _tree(folder) == _tree(dataset)
    with staging.local_copy(s3_env.uri("ds"), include=["audio/a.wav"]) as part:
        assert list(_tree(part)) == ["audio/a.wav"]
    assert not one.exists() and not folder.exists() and not part.exists()  # removed when the block ends
