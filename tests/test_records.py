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


# --------------------------------------------------------------------------- StoreSummary (summary.json)

def _store_summary():
    from avsc.records import RejectedClip, StoreSummary

    return StoreSummary(processed=7, rejected=(RejectedClip("bus-lyon-1-1", "bus-lyon-1-1.mp4: no audio stream"),),
                        shapes={"mel": (128, 715, 2), "frames": (20, 224, 224, 3)}, shards=((0, 2), (1, 2)),
                        lineage=Lineage("demo", "m1", store_hash="s1"))


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


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("format"), "not a avsc-store-summary record .no format field"),
    (lambda d: d.update(version=0), "older than this avsc reads"),
    (lambda d: d.update(version=99), "newer than this avsc reads"),
    (lambda d: d["rejected"][0].pop("reason"), r"rejected: missing field.s. reason"),
    (lambda d: d.update(skipped=3), r"unknown field.s. skipped"),
])
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
