"""Evaluation: metrics against hand computation, the report files, the DCASE CSV, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss
from embeddings_factory import make_embeddings

from avsc.cli import main
from avsc.config import BACKBONES
from avsc.errors import DataError
from avsc.evaluation.evaluate import evaluate
from avsc.evaluation.metrics import classification_metrics, softmax
from avsc.evaluation.predictions import write_predictions
from avsc.evaluation.report import results_table, write_submission_csv
from avsc.labels import LABELS
from avsc.storage.files import write_json

# --- Metrics on a tiny example: 3 classes, 4 clips -------------------------------------------

Y = np.array([0, 1, 2, 2])
P = np.array([
    [0.7, 0.2, 0.1],  # true 0, predicted 0
    [0.5, 0.4, 0.1],  # true 1, predicted 0
    [0.2, 0.2, 0.6],  # true 2, predicted 2
    [0.1, 0.8, 0.1],  # true 2, predicted 1
])


def _metrics(y, p, labels=("a", "b", "c")):
    return classification_metrics(np.asarray(y), np.asarray(p, dtype=float), labels=labels)


def test_accuracy_and_per_class_accuracy_by_hand():
    m = _metrics(Y, P)
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.5})
    assert m["per_class_count"] == {"a": 1, "b": 1, "c": 2}


def test_log_loss_by_hand():
    expected = -(math.log(0.7) + math.log(0.4) + math.log(0.6) + math.log(0.1)) / 4
    assert _metrics(Y, P)["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_confusion_matrix_rows_true_columns_predicted():
    expected = [[1, 0, 0],
                [1, 0, 0],
                [0, 1, 1]]
    assert _metrics(Y, P)["confusion_matrix"] == expected


def test_classification_metrics_bundle():
    m = _metrics(Y, P)
    assert m["accuracy"] == pytest.approx(0.5) and m["n_clips"] == 4
    assert m["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.5})
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    # a class without clips has no per-class accuracy (not 0)
    m = _metrics([0, 0], P[:2])
    assert set(m["per_class_accuracy"]) == {"a"}


def test_log_loss_clips_as_scikit_learn_and_renormalises_rows():
    # A zero probability for the true class costs -log(eps of float64), not infinity.
    eps = np.finfo(np.float64).eps
    assert _metrics([0], [[0.0, 1.0]], ("a", "b"))["log_loss"] == pytest.approx(-math.log(eps), rel=1e-9)
    # Rows are renormalised: (0.2, 0.6) counts as (0.25, 0.75).
    assert _metrics([1], [[0.2, 0.6]], ("a", "b"))["log_loss"] == pytest.approx(-math.log(0.75))
    assert np.isfinite(_metrics([0, 1], [[0.0, 0.0], [1.0, 0.0]], ("a", "b"))["log_loss"])


def test_metrics_of_no_rows_are_nan():
    m = _metrics(np.zeros(0, int), np.zeros((0, 3)))
    assert math.isnan(m["accuracy"]) and math.isnan(m["log_loss"]) and m["n_clips"] == 0


def test_softmax_rows():
    probs = softmax(np.array([[0.0, math.log(3.0)], [1000.0, 1000.0]]))
    np.testing.assert_allclose(probs, [[0.25, 0.75], [0.5, 0.5]])


# --- DCASE CSV ---------------------------------------------------------------------------------


def test_submission_csv_format(tmp_path):
    probs = np.full((2, 10), 0.05)
    probs[0, LABELS.index("park")] = 0.55
    probs[1, LABELS.index("tram")] = 0.55
    path = write_submission_csv(tmp_path / "sub.csv", ["park-lisbon-1-1", "tram-vienna-2-9"], probs)
    lines = path.read_text().splitlines()
    assert lines[0] == "\t".join(["filename", "scene_label", *LABELS])
    assert list(LABELS) == sorted(LABELS)
    rows = list(csv.reader(lines[1:], delimiter="\t"))
    assert rows[0][:2] == ["video/park-lisbon-1-1.mp4", "park"]
    assert rows[1][:2] == ["video/tram-vienna-2-9.mp4", "tram"]
    assert [float(v) for v in rows[0][2:]] == pytest.approx(list(probs[0]))
    assert all(len(r) == 12 for r in rows)


# --- evaluate() on hand-written fusion folders ----------------------------------------------------


def _fusion_dir(root: Path, method: str, modalities: str, *, rng, strength: float, val_accuracy: float,
                splits=("val", "test"), per_class: int = 3) -> Path:
    """A fusion folder with hand-made predictions (no training needed)."""
    out = root / f"{method}-{modalities}"
    ids, sp, labels, probs = [], [], [], []
    for split in splits:
        for k, label in enumerate(LABELS):
            for i in range(per_class):
                ids.append(f"{label}-x-{i}-{split}")
                sp.append(split)
                labels.append(label)
                logits = rng.normal(size=10)
                logits[k] += strength
                probs.append(np.exp(logits) / np.exp(logits).sum())
    write_predictions(out / "predictions.parquet", clip_ids=ids, splits=sp, labels=labels, probs=np.array(probs))
    write_json(out / "fusion.json", {"method": method, "modalities": modalities, "labels": list(LABELS),
                                     "backbones": [], "val_metrics": {"accuracy": val_accuracy, "log_loss": 0.5},
                                     "clips_per_split": {s: 10 * per_class for s in splits}})
    return out


@pytest.fixture(scope="module")
def fusion_root(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("eval") / "fusion"
    val = {"f1": 0.80, "f2": 0.70, "f3": 0.75, "f4": 0.90, "f5": 0.85, "f6": 0.60}
    for method, v in val.items():
        # f1 is the best on test but f4 is the best on val: the report must follow val.
        _fusion_dir(root, method, "audio+visual", rng=rng, strength=6.0 if method == "f1" else 2.0, val_accuracy=v)
    for modalities in ("audio", "visual"):
        _fusion_dir(root, "f4", modalities, rng=rng, strength=1.0, val_accuracy=0.5)
    return root


@pytest.fixture(scope="module")
def evaluated(fusion_root):
    report = fusion_root.parent / "report"
    return evaluate([fusion_root], report), report


def test_evaluate_metrics_json_matches_predictions(fusion_root, evaluated):
    metrics, report = evaluated
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["results"] == json.loads(json.dumps(metrics["results"]))
    assert [(r["method"], r["modalities"]) for r in metrics["results"]][:6] == [
        (m, "audio+visual") for m in ("f1", "f2", "f3", "f4", "f5", "f6")]
    assert len(metrics["results"]) == 8
    assert metrics["best"] == {"method": "f4", "modalities": "audio+visual"}

    from avsc.evaluation.predictions import read_predictions

    preds = read_predictions(fusion_root / "f2-audio+visual" / "predictions.parquet")
    test = preds["split"] == "test"
    y = np.array([LABELS.index(lab) for lab in preds["label"][test]])
    f2 = next(r for r in metrics["results"] if r["method"] == "f2")
    assert f2["n_clips"] == 30 and f2["labels"] == list(LABELS)
    assert f2["accuracy"] == pytest.approx((preds["probs"][test].argmax(1) == y).mean())
    assert f2["log_loss"] == pytest.approx(log_loss(y, preds["probs"][test]))
    assert np.asarray(f2["confusion_matrix"]).sum() == 30
    assert set(f2["per_class_accuracy"]) == set(LABELS)


def test_evaluate_writes_report_files(evaluated):
    metrics, report = evaluated
    for r in metrics["results"]:
        name = f"{r['method']}-{r['modalities']}"
        png = report / f"confusion-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = (report / f"submission-{name}.csv").read_text().splitlines()
        assert len(rows) == 1 + r["n_clips"]
    html = (report / "report.html").read_text()
    assert "Table I" in html and "Table II" in html and "Figure 4" in html
    for label in LABELS:
        assert label in html
    assert html.count("<img") == 8 and "data:image/png;base64," in html
    assert "src=\"confusion-" not in html  # self-contained: no links to files beside it
    assert "published, on the real TAU Urban Audio-Visual Scenes 2021 dataset" in html
    for number in ("95.3", "80.5", "91.8", "77.0", "64.9", "0.658"):  # paper and DCASE baseline
        assert number in html
    md = (report / "report.md").read_text()
    assert "Table I" in md and "Table II" in md and "confusion-f4-audio+visual.png" in md


def test_results_table_marks_best(evaluated):
    metrics, _ = evaluated
    table = results_table(metrics)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["method", "modalities"]
    assert any(line.startswith("f4*") and "audio+visual" in line for line in lines)
    f1 = next(r for r in metrics["results"] if r["method"] == "f1")
    assert f"{100 * f1['accuracy']:.1f}" in table


def test_evaluate_backbone_rows(fusion_root, tmp_path):
    emb = make_embeddings(tmp_path / "emb", width=4, per_class={"train": 1, "val": 1, "test": 3})
    metrics = evaluate([fusion_root / "f1-audio+visual"], tmp_path / "report", embeddings=emb)
    assert [b["backbone"] for b in metrics["backbones"]] == list(BACKBONES)
    from avsc.training.embeddings import read_embeddings

    e = read_embeddings(emb / "vis-inc.parquet")
    test = e.splits == "test"
    y = np.array([LABELS.index(lab) for lab in e.labels[test]])
    row = next(b for b in metrics["backbones"] if b["backbone"] == "vis-inc")
    assert row["accuracy"] == pytest.approx((e.fc10[test].argmax(1) == y).mean())
    assert row["log_loss"] == pytest.approx(log_loss(y, softmax(e.fc10[test])))
    assert "vis-inc" in (tmp_path / "report" / "report.html").read_text()
    # The same rows from a mapping backbone -> file (pipeline artifacts), here two backbones.
    given = {b: emb / f"{b}.parquet" for b in ("vis-inc", "aud-mel")}
    mapped = evaluate([fusion_root / "f1-audio+visual"], tmp_path / "report2", embeddings=given)
    assert [b["backbone"] for b in mapped["backbones"]] == ["aud-mel", "vis-inc"]
    assert next(b for b in mapped["backbones"] if b["backbone"] == "vis-inc") == row


def test_evaluate_errors(fusion_root, tmp_path, rng):
    with pytest.raises(DataError, match="not found"):
        evaluate([tmp_path / "nowhere"], tmp_path / "r1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="fusion.json"):
        evaluate([tmp_path / "empty"], tmp_path / "r2")
    with pytest.raises(DataError, match="no clips in the 'train' split"):
        evaluate([fusion_root], tmp_path / "r3", split="train")
    other = _fusion_dir(tmp_path / "other", "f4", "audio", rng=rng, strength=1.0, val_accuracy=0.5)
    with pytest.raises(DataError, match="second result for f4 audio"):
        evaluate([fusion_root, other], tmp_path / "r4")
    assert not (tmp_path / "r4").exists()  # nothing written before the check


def test_cli_evaluate_prints_table(fusion_root, tmp_path, capsys):
    assert main(["evaluate", str(fusion_root / "f4-audio"), str(fusion_root / "f4-visual"),
                 "-o", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "f4" in out and "audio" in out and "visual" in out and "report.html" in out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {r["modalities"] for r in metrics["results"]} == {"audio", "visual"}
