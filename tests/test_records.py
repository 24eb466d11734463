"""The records layer: strict, versioned files handed between stages (local and s3://)."""

from __future__ import annotations

import json

import pytest
from records_factory import write_model_info
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.errors import DataError
from avsc.records import Calibration, Lineage, ModelInfo, RecordError


def _written(tmp_path):
    info = write_model_info(tmp_path, "aud-gam", best_epoch=3,
                            lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1"))
    return info, json.loads((tmp_path / "config.json").read_text())


def test_a_record_reads_back_equal_with_its_nested_types(tmp_path):
    info, data = _written(tmp_path)
    assert data["format"] == "avsc-model-info" and data["version"] == ModelInfo.VERSION
    back = ModelInfo.read(tmp_path)
    assert back == info
    assert isinstance(back.calibration, Calibration) and isinstance(back.lineage, Lineage)
    assert back.feature_shapes["mel"] == (128, 715, 2) and back.labels == info.labels
    assert back.temperature == 1.0


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("format"), "not a avsc-model-info record .no format field"),
    (lambda d: d.update(format="avsc-fusion-info"), "format 'avsc-fusion-info'"),
    (lambda d: d.update(version=ModelInfo.VERSION + 1), "newer than this avsc reads"),
    (lambda d: d.update(version=0), "older than this avsc reads"),
    (lambda d: d.update(version="1"), "without an integer version"),
    (lambda d: d.update(epochs_trained=4), "unknown field.s. epochs_trained"),
    (lambda d: d.pop("best_epoch"), "missing field.s. best_epoch"),
    (lambda d: d["calibration"].pop("temperature"), r"calibration: missing field.s. temperature"),
    (lambda d: d["lineage"].update(rows=3), r"lineage: unknown field.s. rows"),
])
def test_a_record_of_another_format_or_version_or_shape_is_refused_naming_the_file(tmp_path, change, message):
    _, data = _written(tmp_path)
    change(data)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message) as caught:
        ModelInfo.read(tmp_path)
    assert caught.value.path == str(tmp_path / "config.json")
    assert isinstance(caught.value, DataError)  # the CLI prints it as one line


def test_a_missing_or_broken_record_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(RecordError, match=r"config\.json: not found \(write it with `avsc train`\)"):
        ModelInfo.read(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        ModelInfo.read(tmp_path)


def test_a_record_round_trips_through_the_object_store(s3_env, tmp_path):
    info, _ = _written(tmp_path)
    folder = s3_env.uri("models/aud-gam")
    assert not ModelInfo.exists_in(folder)
    assert info.write(folder) == f"{folder}/config.json"
    assert ModelInfo.exists_in(folder) and ModelInfo.read(folder) == info


def test_lineages_name_what_differs():
    a = Lineage(dataset="demo", manifest_hash="m1", store_hash="s1")
    assert a.differences(a) == [] and a.differences(Lineage("demo", "m1")) == []  # unknown is no difference
    b = Lineage(dataset="other", manifest_hash="m2", store_hash="s1")
    assert a.differences(b) == ["dataset 'other' there, 'demo' here", "manifest m2 there, m1 here"]
    c = Lineage("demo", "m3", clips_hash="c", labels_hash="l2", splits_hash="s2")
    assert c.differences(Lineage("demo", "m1", clips_hash="c", labels_hash="l1", splits_hash="s1")) == [
        "labels differ", "splits differ"]
    assert a.differences(Lineage("demo", "m1", store_hash="s2"))[0].startswith("feature store s2 there, s1 here")
    with pytest.raises(DataError, match=r"ck/state\.json: checkpoint was made from other data \(dataset 'other'"):
        a.check_same(b, source="ck/state.json", what="checkpoint", hint="use another folder")


# --- EmbeddingsInfo: the record in an embedding file's Parquet metadata -----------------------

def _embedding_file(path, **info_fields):
    import numpy as np

    from avsc.training.embeddings import write_embeddings

    fields = dict(backbone="vis-inc", config_hash="c1", model_sha256="ab" * 32,
                  lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1"), temperature=1.5)
    fields.update(info_fields)
    return write_embeddings(path, clip_ids=["a", "b"], splits=["train", "val"], labels=["bus", "park"],
                            fc1024=np.zeros((2, 4)), fc10=np.zeros((2, 10)), **fields)


def test_embeddings_info_round_trips_through_a_parquet_file_local_and_on_the_store(s3_env, tmp_path):
    from avsc.labels import LABELS
    from avsc.records import EmbeddingsInfo
    from avsc.training.embeddings import read_embeddings

    path = _embedding_file(tmp_path / "vis-inc.parquet")
    info = EmbeddingsInfo.read_parquet(path)
    assert info == EmbeddingsInfo(backbone="vis-inc", config_hash="c1", model_sha256="ab" * 32, labels=tuple(LABELS),
                                  lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1"),
                                  temperature=1.5)
    assert read_embeddings(path).info == info
    remote = _embedding_file(s3_env.uri("emb/vis-inc.parquet"))
    assert EmbeddingsInfo.read_parquet(remote) == info == read_embeddings(remote).info


@pytest.mark.parametrize("metadata, message", [
    ({}, r"not an avsc embedding file \(no avsc.embeddings metadata\)"),
    ({"avsc.backbone": "vis-inc", "avsc.lineage": "{}"}, "an embedding file written by an older avsc"),
    ({"avsc.embeddings": "{not json"}, "avsc.embeddings metadata is not valid JSON"),
    ({"avsc.embeddings": json.dumps({"format": "avsc-embeddings-info", "version": 0})}, "older than this avsc reads"),
    ({"avsc.embeddings": json.dumps({"format": "avsc-embeddings-info", "version": 2})}, "newer than this avsc reads"),
])
def test_an_embedding_file_without_a_current_record_is_refused_naming_it(tmp_path, metadata, message):
    import pyarrow.parquet as pq

    from avsc.records import EmbeddingsInfo
    from avsc.training.embeddings import read_embeddings

    path = _embedding_file(tmp_path / "vis-inc.parquet")
    pq.write_table(pq.read_table(path).replace_schema_metadata(metadata), path)
    for read in (EmbeddingsInfo.read_parquet, read_embeddings):
        with pytest.raises(RecordError, match=message) as caught:
            read(path)
        assert caught.value.path == str(path) and caught.value.hint  # says what to do: embed again, upgrade
    with pytest.raises(RecordError, match="not found"):
        EmbeddingsInfo.read_parquet(tmp_path / "aud-mel.parquet")
