"""The records layer: strict, versioned files handed between stages (local and s3://)."""

from __future__ import annotations

import json

import pytest
from records_factory import write_model_info
from s3_server import s3_env, s3_server, s3_store  # noqa: F401  (fixtures)

from avsc.errors import DataError
from avsc.records import Calibration, EvaluationResult, Lineage, ModelInfo, RecordError


def _written(tmp_path):
    info = write_model_info(
        tmp_path, "aud-gam", best_epoch=3, lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1")
    )
    return info, json.loads((tmp_path / "config.json").read_text())


def test_a_record_reads_back_equal_with_its_nested_types(tmp_path):
    info, data = _written(tmp_path)
    assert data["format"] == "avsc-model-info" and data["version"] == ModelInfo.VERSION
    back = ModelInfo.read(tmp_path)
    assert back == info
    assert isinstance(back.calibration, Calibration) and isinstance(back.lineage, Lineage)
    assert back.feature_shapes["mel"] == (128, 715, 2) and back.labels == info.labels
    assert back.temperature == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("format"), "not a avsc-model-info record .no format field"),
        (lambda d: d.update(format="avsc-fusion-info"), "format 'avsc-fusion-info'"),
        (lambda d: d.update(version=ModelInfo.VERSION + 1), "newer than this avsc reads"),
        (lambda d: d.update(version=0), "older than this avsc reads"),
        (lambda d: d.update(version="1"), "without an integer version"),
        (lambda d: d.update(epochs_trained=4), "unknown field.s. epochs_trained"),
        (lambda d: d.pop("best_epoch"), "missing field.s. best_epoch"),
        (lambda d: d["calibration"].pop("temperature"), r"calibration: missing field.s. temperature"),
        (lambda d: d["lineage"].update(rows=3), r"lineage: unknown field.s. rows"),
    ],
)
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
        "labels differ",
        "splits differ",
    ]
    assert a.differences(Lineage("demo", "m1", store_hash="s2"))[0].startswith("feature store s2 there, s1 here")
    with pytest.raises(DataError, match=r"ck/state\.json: checkpoint was made from other data \(dataset 'other'"):
        a.check_same(b, source="ck/state.json", what="checkpoint", hint="use another folder")


# --- predictions.parquet and metrics.json ----------------------------------------------------


def _predictions(logits=True):
    import numpy as np

    from avsc.records.predictions import Predictions

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 10))
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return Predictions(
        clip_ids=np.array(["c", "a", "b", "d"]),
        splits=np.array(["val", "test", "test", "train"]),
        labels=np.array(["bus", "park", "tram", "metro"]),
        probs=probs,
        logits=scores if logits else None,
    )


@pytest.mark.parametrize("logits", [True, False])
def test_predictions_read_back_as_written(tmp_path, logits):
    import numpy as np
    import pyarrow.parquet as pq

    from avsc.records.predictions import Predictions

    preds = _predictions(logits)
    preds.write(tmp_path)
    back = Predictions.read(tmp_path)
    assert back.clip_ids.tolist() == ["c", "a", "b", "d"] and back.splits.tolist() == preds.splits.tolist()
    np.testing.assert_allclose(back.probs, preds.probs, rtol=1e-6)  # stored as float32
    assert (back.logits is None) == (not logits)
    table = pq.read_table(tmp_path / "predictions.parquet")  # readable without avsc
    assert table.column("predicted").to_pylist() == preds.predicted
    assert table.schema.metadata[b"avsc.format"] == b"avsc-predictions"
    test = back.of_split("test").sorted_by_clip()
    assert test.clip_ids.tolist() == ["a", "b"] and test.labels.tolist() == ["park", "tram"]


@pytest.mark.parametrize(
    "metadata, message",
    [
        (None, "no avsc.format metadata"),
        ({b"avsc.format": b"avsc-embeddings", b"avsc.version": b"1"}, "format 'avsc-embeddings'"),
        ({b"avsc.format": b"avsc-predictions", b"avsc.version": b"0"}, "older than this avsc reads"),
        ({b"avsc.format": b"avsc-predictions", b"avsc.version": b"9"}, "newer than this avsc reads"),
    ],
)
def test_predictions_of_another_format_or_version_are_refused_naming_the_file(tmp_path, metadata, message):
    import pyarrow.parquet as pq

    from avsc.records.predictions import Predictions

    _predictions().write(tmp_path)
    path = tmp_path / "predictions.parquet"
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(RecordError, match=message) as caught:
        Predictions.read(tmp_path)
    assert str(path) in str(caught.value)


def test_predictions_round_trip_through_the_object_store(s3_env):
    from avsc.records.predictions import Predictions

    _predictions().write(s3_env.uri("fusion/f1-audio"))
    assert Predictions.read(s3_env.uri("fusion/f1-audio")).labels.tolist() == ["bus", "park", "tram", "metro"]


def _evaluation_result():
    import numpy as np

    from avsc.evaluation.model_scores import calibrated_scores
    from avsc.records.evaluation_result import (
        BackboneResult,
        Choice,
        EvaluatedData,
        EvaluationResult,
        FusionResult,
        ReliabilityBins,
        ValCalibration,
    )

    y = np.array([0, 1, 1, 2])
    probs = np.full((4, 10), 0.05)
    probs[np.arange(4), [0, 1, 2, 2]] = 0.55
    scores = calibrated_scores(y, probs, probs)
    fusion = FusionResult(
        **scores,
        method="f4",
        modalities="audio+visual",
        temperature=1.5,
        calibration_method="temperature",
        temperature_at_bound=False,
        val_accuracy=0.75,
        val_log_loss=0.9,
        val_selection_log_loss=0.95,
        val_selection_log_loss_se=0.1,
        val_within_one_se=True,
        val_calibration=ValCalibration({"log_loss": 1.0, "ece": 0.2}, {"log_loss": 0.9, "ece": 0.1}, 0.95),
        best_epoch=2,
        best_step=20,
        steps_run=40,
        stopped="patience",
        fusion_dir="fusion/f4-audio+visual",
        confusion_png="confusion-f4-audio+visual.png",
        submission_csv="submission-f4-audio+visual.csv",
        reliability=ReliabilityBins((0.55,), (0.75,), (4,), (0.3,), (0.95,), ((0.55, 0.55),)),
    )
    return EvaluationResult(
        split="test",
        labels=scores["labels"],
        provenance=None,
        dataset=EvaluatedData("test", {"train": 8, "val": 4, "test": 4}, 4, {"airport": 1}),
        results=(fusion,),
        best=Choice("f4", "audio+visual"),
        best_per_modalities={"audio+visual": Choice("f4", "audio+visual")},
        backbones=(BackboneResult(**scores, backbone="aud-mel", temperature=1.0),),
        warnings=("a warning",),
    )


def test_an_evaluation_result_reads_back_equal_and_keeps_the_documented_keys(tmp_path):
    from avsc.records import EvaluationResult

    result = _evaluation_result()
    result.write(tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["format"] == "avsc-evaluation-result" and data["version"] == EvaluationResult.VERSION
    assert {
        "split",
        "labels",
        "provenance",
        "dataset",
        "results",
        "backbones",
        "reference",
        "warnings",
        "best",
        "best_per_modalities",
    } <= set(data)
    assert data["best"] == {"method": "f4", "modalities": "audio+visual"}
    row = data["results"][0]
    assert row["uncalibrated"]["log_loss"] == row["log_loss"]
    assert row["accuracy_ci"] == list(result.results[0].accuracy_ci)
    # Optional parts that do not apply are absent, as the documented layout has them.
    assert "clip_level" not in row and "val_calibration" not in data["backbones"][0]
    assert "rows" not in data and "histories" not in data  # in memory only
    back = EvaluationResult.read(tmp_path)
    assert back == result
    assert back.results[0].clip_level is None and back.result(back.best) == result.results[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("format"), "no format field"),
        (lambda d: d.update(version=0), "older than this avsc reads"),
        (lambda d: d.update(version=EvaluationResult.VERSION + 1), "newer than this avsc reads"),
        (lambda d: d["results"][0].pop("method"), r"results: missing field.s. method"),
        (lambda d: d["dataset"].update(rows=3), r"dataset: unknown field.s. rows"),
    ],
)
def test_an_evaluation_result_of_another_format_version_or_shape_is_refused_naming_the_file(tmp_path, change, message):
    _evaluation_result().write(tmp_path)
    path = tmp_path / "metrics.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message) as caught:
        EvaluationResult.read(tmp_path)
    assert str(path) in str(caught.value)


# --------------------------------------------------------------------------- StoreSummary (summary.json)


def _store_summary():
    from avsc.records import RejectedClip, StoreSummary

    return StoreSummary(
        processed=7,
        rejected=(RejectedClip("bus-lyon-1-1", "bus-lyon-1-1.mp4: no audio stream"),),
        shapes={"mel": (128, 715, 2), "frames": (20, 224, 224, 3)},
        shards=((0, 2), (1, 2)),
        lineage=Lineage("demo", "m1", store_hash="s1"),
    )


def test_a_store_summary_reads_back_equal_from_a_folder_and_the_object_store(s3_env, tmp_path):
    from avsc.records import RejectedClip, StoreSummary

    summary = _store_summary()
    assert summary.write(tmp_path) == str(tmp_path / "summary.json")
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["format"] == "avsc-store-summary" and data["version"] == StoreSummary.VERSION
    assert data["rejected"] == [{"clip_id": "bus-lyon-1-1", "reason": "bus-lyon-1-1.mp4: no audio stream"}]
    back = StoreSummary.read(tmp_path)
    assert back == summary and isinstance(back.rejected[0], RejectedClip) and isinstance(back.lineage, Lineage)
    assert back.shapes["frames"] == (20, 224, 224, 3) and back.shards == ((0, 2), (1, 2))
    folder = s3_env.uri("features/abc")
    summary.write(folder)
    assert StoreSummary.read(folder) == summary


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("format"), "not a avsc-store-summary record .no format field"),
        (lambda d: d.update(version=0), "older than this avsc reads"),
        (lambda d: d.update(version=99), "newer than this avsc reads"),
        (lambda d: d["rejected"][0].pop("reason"), r"rejected: missing field.s. reason"),
        (lambda d: d.update(skipped=3), r"unknown field.s. skipped"),
    ],
)
def test_a_store_summary_of_another_format_or_version_is_refused_naming_the_file(tmp_path, change, message):
    from avsc.records import StoreSummary

    data = _store_summary().to_dict()
    change(data)
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message) as caught:
        StoreSummary.read(tmp_path)
    assert caught.value.path == str(tmp_path / "summary.json")
    with pytest.raises(RecordError, match=r"summary\.json: not found \(write it with `avsc preprocess`\)"):
        StoreSummary.read(tmp_path / "elsewhere")


# --- EmbeddingsInfo: the record in an embedding file's Parquet metadata -----------------------


def _embedding_file(path, **info_fields):
    import numpy as np

    from avsc.training.embeddings import write_embeddings

    fields = dict(
        backbone="vis-inc",
        config_hash="c1",
        model_sha256="ab" * 32,
        lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1"),
        temperature=1.5,
    )
    fields.update(info_fields)
    return write_embeddings(
        path,
        clip_ids=["a", "b"],
        splits=["train", "val"],
        labels=["bus", "park"],
        fc1024=np.zeros((2, 4)),
        fc10=np.zeros((2, 10)),
        **fields,
    )


def test_embeddings_info_round_trips_through_a_parquet_file_local_and_on_the_store(s3_env, tmp_path):
    from avsc.labels import LABELS
    from avsc.records import EmbeddingsInfo
    from avsc.training.embeddings import read_embeddings

    path = _embedding_file(tmp_path / "vis-inc.parquet")
    info = EmbeddingsInfo.read_parquet(path)
    assert info == EmbeddingsInfo(
        backbone="vis-inc",
        config_hash="c1",
        model_sha256="ab" * 32,
        labels=tuple(LABELS),
        lineage=Lineage(dataset="demo", manifest_hash="m1", store_hash="s1"),
        temperature=1.5,
    )
    assert read_embeddings(path).info == info
    remote = _embedding_file(s3_env.uri("emb/vis-inc.parquet"))
    assert EmbeddingsInfo.read_parquet(remote) == info == read_embeddings(remote).info


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({}, r"not an avsc embedding file \(no avsc.embeddings metadata\)"),
        ({"avsc.backbone": "vis-inc", "avsc.lineage": "{}"}, "an embedding file written by an older avsc"),
        ({"avsc.embeddings": "{not json"}, "avsc.embeddings metadata is not valid JSON"),
        (
            {"avsc.embeddings": json.dumps({"format": "avsc-embeddings-info", "version": 0})},
            "older than this avsc reads",
        ),
        (
            {"avsc.embeddings": json.dumps({"format": "avsc-embeddings-info", "version": 2})},
            "newer than this avsc reads",
        ),
    ],
)
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
