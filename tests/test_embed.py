"""`avsc train` and `avsc embed` from the command line; embeddings round-trip through Parquet."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

keras = pytest.importorskip("keras")

from features_factory import make_feature_store  # noqa: E402

from avsc.cli import main  # noqa: E402
from avsc.features.store import FeatureStore  # noqa: E402
from avsc.models.backbones import embedding_model  # noqa: E402
from avsc.records import EmbeddingsInfo  # noqa: E402
from avsc.storage.files import sha256_file  # noqa: E402
from avsc.training.embeddings import embed_arrays, read_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    store_dir = make_feature_store(
        root / "features", per_class={"train": 3, "val": 1, "test": 1}, features=("mel", "gam"), seed=3
    )
    model_dir = root / "aud-gam"
    assert (
        main(
            [
                "train",
                "aud-gam",
                str(store_dir),
                "-o",
                str(model_dir),
                "--preset",
                "quick",
                "--epochs",
                "2",
                "--batch-size",
                "10",
                "--learning-rate",
                "0.003",
                "--quiet",
            ]
        )
        == 0
    )
    out = root / "aud-gam.parquet"
    assert main(["embed", str(model_dir), str(store_dir), "-o", str(out), "--quiet"]) == 0
    return store_dir, model_dir, out


def test_cli_flags_reach_the_recorded_config(exported):
    _, model_dir, _ = exported
    config = json.loads((model_dir / "config.json").read_text())
    assert config["train"]["epochs"] == 2 and config["train"]["batch_size"] == 10
    assert config["train"]["learning_rate"] == 0.003 and config["train"]["audio_base_filters"] == 8


def test_parquet_schema_and_metadata(exported):
    _, model_dir, out = exported
    schema = pq.read_schema(out)
    assert schema.field("fc1024").type == pa.list_(pa.float32(), 1024)
    assert schema.field("fc10").type == pa.list_(pa.float32(), 10)
    meta = EmbeddingsInfo.from_metadata(schema.metadata, source=out)
    assert meta == EmbeddingsInfo.read_parquet(out) == read_embeddings(out).info
    assert meta.backbone == "aud-gam"
    assert meta.config_hash == json.loads((model_dir / "config.json").read_text())["config_hash"]
    assert meta.model_sha256 == sha256_file(model_dir / "model.keras")
    assert meta.temperature == json.loads((model_dir / "config.json").read_text())["calibration"]["temperature"]


def test_every_clip_of_every_split_sorted(exported):
    store_dir, _, out = exported
    table = read_embeddings(out)
    assert list(table.clip_ids) == sorted(FeatureStore.open(store_dir).clips()["clip_id"])
    assert sorted(set(table.splits)) == ["test", "train", "val"]
    assert table.fc1024.shape == (50, 1024) and table.fc10.shape == (50, 10)


def test_pandas_and_duckdb_read_the_file(exported):
    import duckdb
    import pandas as pd

    _, _, out = exported
    frame = pd.read_parquet(out)
    assert len(frame) == 50 and len(frame["fc1024"].iloc[0]) == 1024
    count, width = duckdb.sql(f"select count(*), max(len(fc10)) from '{out}'").fetchall()[0]
    assert (count, width) == (50, 10)


def test_embeddings_equal_the_models_own_outputs(exported):
    store_dir, model_dir, out = exported
    table = read_embeddings(out)
    model = keras.models.load_model(model_dir / "model.keras")
    spec = FeatureStore.open(store_dir).read_clip(table.clip_ids[4], "gam")[None].astype(np.float32)
    fc1024, fc10 = embed_arrays("aud-gam", embedding_model(model), spec)
    np.testing.assert_allclose(table.fc1024[4], fc1024[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table.fc10[4], fc10[0], rtol=1e-4, atol=1e-5)
    probs = np.asarray(model(spec, training=False))[0]
    soft = np.exp(table.fc10[4] - table.fc10[4].max())
    np.testing.assert_allclose(soft / soft.sum(), probs, rtol=1e-4, atol=1e-6)


def test_embed_errors_are_one_line(exported, tmp_path, capsys):
    _, model_dir, _ = exported
    other = make_feature_store(tmp_path / "other", per_class={"train": 1}, n_bins=8, features=("gam",))
    assert main(["embed", str(model_dir), str(other), "-o", str(tmp_path / "x.parquet"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "differs" in err and "Traceback" not in err
    assert not (tmp_path / "x.parquet").exists()
    assert main(["embed", str(tmp_path), str(other), "-o", str(tmp_path / "x.parquet")]) == 1
    assert "model.keras: not found" in capsys.readouterr().err
