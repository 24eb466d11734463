"""Evaluation: metrics against hand computation, the report files, the DCASE CSV, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from embeddings_factory import make_embeddings
from records_factory import write_fusion_info, write_model_info
from sklearn.metrics import log_loss

from avsc.cli import main
from avsc.config import BACKBONES, load_config, to_dict
from avsc.errors import ConfigError, DataError
from avsc.evaluation.evaluate import evaluate
from avsc.evaluation.report import results_table, write_submission_csv
from avsc.labels import LABELS
from avsc.records import Calibration
from avsc.records.evaluation_result import Choice
from avsc.records.predictions import Predictions
from avsc.scoring.metrics import classification_metrics, softmax, wilson_interval
from avsc.storage.locations import write_json

# --- Metrics on a tiny example: 3 classes, 4 clips -------------------------------------------

Y = np.array([0, 1, 2, 2])
P = np.array(
    [
        [0.7, 0.2, 0.1],  # true 0, predicted 0
        [0.5, 0.4, 0.1],  # true 1, predicted 0
        [0.2, 0.2, 0.6],  # true 2, predicted 2
        [0.1, 0.8, 0.1],  # true 2, predicted 1
    ]
)


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
    expected = [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
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


# Val scores of the hand-made fusion models: f4 has the best val accuracy, f5 the lowest
# val log loss, f1 the best test scores (the test split must never choose).
VAL = {
    "f1": (0.80, 0.60),
    "f2": (0.70, 0.90),
    "f3": (0.75, 0.70),
    "f4": (0.90, 0.45),
    "f5": (0.85, 0.40),
    "f6": (0.60, 1.00),
}


def _fusion_dir(
    root: Path,
    method: str,
    modalities: str,
    *,
    rng,
    strength: float,
    val: tuple[float, float],
    splits=("val", "test"),
    per_class: int = 3,
    temperature: float = 2.0,
    segments: int = 0,
) -> Path:
    """A fusion folder with hand-made predictions (no training needed): over-confident
    logits (``strength`` on the true class, times ``temperature``) and ``probs`` =
    ``softmax(logits / temperature)``, as :func:`avsc.training.fusion.train_fusion` writes them."""
    out = root / f"{method}-{modalities}"
    ids, sp, labels, logits = [], [], [], []
    for split in splits:
        for k, label in enumerate(LABELS):
            for i in range(per_class):
                for seg in range(max(1, segments)):
                    clip = f"{label}-x-{i}-{split}"
                    ids.append(f"{clip}_s{seg:03d}" if segments else clip)
                    sp.append(split)
                    labels.append(label)
                    row = rng.normal(size=10)
                    row[k] += strength
                    logits.append(temperature * row)
    logits = np.array(logits)
    Predictions(
        clip_ids=np.array(ids),
        splits=np.array(sp),
        labels=np.array(labels),
        probs=softmax(logits / temperature),
        logits=logits,
    ).write(out)
    write_json(
        out / "history.json",
        [
            {
                "epoch": e,
                "loss": 1.0 / e,
                "val_accuracy": val[0],
                "val_log_loss": 2 * val[1],
                "val_log_loss_calibrated": val[1],
                "temperature": temperature,
            }
            for e in (1, 2, 3)
        ],
    )
    write_fusion_info(
        out,
        method,
        modalities,
        val_metrics={"accuracy": val[0], "log_loss": val[1]},
        best_epoch=2,
        calibration=Calibration(
            temperature,
            {"log_loss": 2 * val[1], "ece": 0.3},
            {"log_loss": val[1], "ece": 0.05},
            selection_log_loss=val[1],
        ),
        config=to_dict(load_config(preset="quick").fusion),
        config_hash="fusionhash01",
        clips_per_split={s: 10 * per_class * max(1, segments) for s in splits},
    )
    return out


@pytest.fixture(scope="module")
def fusion_root(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("eval") / "fusion"
    for method, val in VAL.items():
        _fusion_dir(root, method, "audio+visual", rng=rng, strength=6.0 if method == "f1" else 2.0, val=val)
    for modalities in ("audio", "visual"):
        _fusion_dir(root, "f4", modalities, rng=rng, strength=1.0, val=(0.5, 1.2))
    return root


@pytest.fixture(scope="module")
def evaluated(fusion_root):
    report = fusion_root.parent / "report"
    return evaluate([fusion_root], report), report


def test_evaluate_metrics_json_matches_predictions(fusion_root, evaluated):
    metrics, report = evaluated
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["results"] == json.loads(json.dumps(metrics.to_dict()["results"]))
    assert [(r.method, r.modalities) for r in metrics.results][:6] == [
        (m, "audio+visual") for m in ("f1", "f2", "f3", "f4", "f5", "f6")
    ]
    assert len(metrics.results) == 8
    # Chosen on val by log loss (the rule the models were trained with), not on test.
    assert metrics.best == Choice("f5", "audio+visual")
    assert metrics.best_per_modalities["visual"] == Choice("f4", "visual")
    assert metrics.provenance.selection.rule == "log_loss"

    from avsc.records.predictions import Predictions

    preds = Predictions.read(fusion_root / "f2-audio+visual")
    test = preds.splits == "test"
    y = np.array([LABELS.index(lab) for lab in preds.labels[test]])
    f2 = next(r for r in metrics.results if r.method == "f2")
    assert f2.n_clips == 30 and list(f2.labels) == list(LABELS)
    calibrated, raw = softmax(preds.logits[test] / 2.0), softmax(preds.logits[test])
    assert f2.temperature == 2.0
    assert f2.accuracy == pytest.approx((calibrated.argmax(1) == y).mean())
    assert f2.n_correct == int(round(30 * f2.accuracy))
    assert f2.log_loss == pytest.approx(log_loss(y, calibrated, labels=range(10)))
    assert f2.uncalibrated.log_loss == pytest.approx(log_loss(y, raw, labels=range(10)))
    assert np.asarray(f2.confusion_matrix).sum() == 30
    assert set(f2.per_class_accuracy) == set(LABELS)
    assert f2.per_class_count == dict.fromkeys(LABELS, 3)
    assert f2.clip_level is None and "clip_level" not in metrics.to_dict()["results"][1]


def test_evaluate_selection_by_accuracy(fusion_root, tmp_path):
    metrics = evaluate([fusion_root], tmp_path / "report", selection="accuracy")
    assert metrics.best == Choice("f4", "audio+visual")
    assert metrics.provenance.selection.rule == "accuracy"
    with pytest.raises(ConfigError, match="selection"):
        evaluate([fusion_root], tmp_path / "r2", selection="test_accuracy")


def test_evaluate_writes_report_files(evaluated):
    metrics, report = evaluated
    for r in metrics.results:
        name = f"{r.method}-{r.modalities}"
        png = report / f"confusion-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rows = list(csv.reader((report / f"submission-{name}.csv").read_text().splitlines(), delimiter="\t"))
        assert len(rows) == 1 + r.n_clips
        assert max(max(float(v) for v in row[2:]) for row in rows[1:]) < 0.9999  # calibrated, not raw
    assert list(metrics.figures.reliability) == [
        "calibration-audio+visual.png",
        "calibration-audio.png",
        "calibration-visual.png",
    ]
    assert metrics.figures.training_curves == "training-curves.png"
    html = (report / "report.html").read_text()
    assert "Table I" in html and "Table II" in html and "Figure 4" in html
    for label in LABELS:
        assert label in html
    # 8 confusion matrices, 3 reliability figures, 1 training-curves figure, all inline.
    assert html.count("<img") == 12 and "data:image/png;base64," in html
    assert 'src="confusion-' not in html  # self-contained: no links to files beside it
    assert "Published, on the real TAU Urban Audio-Visual Scenes 2021 dataset" in html  # name kept as spelled
    for number in ("95.3", "80.5", "91.8", "77.0", "64.9", "0.658"):  # paper and DCASE baseline
        assert number in html
    assert "<details>" in html  # the other confusion matrices, collapsed
    md = (report / "report.md").read_text()
    assert "Table I" in md and "Table II" in md and "confusion-f5-audio+visual.png" in md
    assert "training-curves.png" in md and "calibration-audio+visual.png" in md


def test_table_one_pairs_measured_and_published_with_counts_and_intervals(evaluated):
    metrics, report = evaluated
    md = (report / "report.md").read_text()
    table = md[md.index("## Table I") : md.index("## Table II")]
    assert table.count("| airport") == 1  # one Table I, not a measured and a published one
    f1 = next(r for r in metrics.results if r.method == "f1")
    k, n = f1.per_class_correct["airport"], f1.per_class_count["airport"]
    low, high = wilson_interval(k, n)
    cell = f"{100 * k / n:.1f} / 87.9 ({k}/{n}, {100 * low:.1f}–{100 * high:.1f})"  # measured / published
    assert cell in table
    overall = f"{100 * f1.accuracy:.1f} / 94.1 ({f1.n_correct}/30,"
    assert overall in table
    assert f"{f1.log_loss:.3f} / —" in table  # log loss next to accuracy


def test_report_shows_the_provenance_block(fusion_root, tmp_path):
    from avsc.config import load_config, to_dict
    from avsc.data.manifest import read_manifest, write_manifest

    quick = load_config(preset="quick")
    rows = [
        {
            "clip_id": f"park-x-{i}-test",
            "video": f"video/park-x-{i}.mp4",
            "label": "park",
            "city": "x",
            "location": "x-1",
            "split": split,
        }
        for i, split in enumerate(["train"] * 5 + ["val"] * 2 + ["test"] * 3)
    ]
    manifest = write_manifest(
        rows,
        tmp_path / "manifest.parquet",
        dataset_root=tmp_path / "demo",
        extra_metadata={
            "dataset": {
                "name": "demo",
                "path": str(tmp_path / "demo"),
                "synthetic": True,
                "generator": "avsc demo-data",
            }
        },
    )
    lineage = read_manifest(manifest).attrs["lineage"]
    models = tmp_path / "models"
    for i, backbone in enumerate(BACKBONES):
        write_model_info(
            models / backbone,
            backbone,
            train=to_dict(quick.train),
            config_hash=f"trainhash{i:03d}",
            features=to_dict(quick.features),
            feature_config_hash="featurehash1",
            best_epoch=2,
            lineage=lineage,
        )
        write_json(
            models / backbone / "history.json",
            [
                {
                    "epoch": e,
                    "loss": 2.0 / e,
                    "val_accuracy": 0.1 * e,
                    "val_log_loss": 2.0,
                    "val_log_loss_calibrated": 1.5,
                }
                for e in (1, 2, 3)
            ],
        )
    metrics = evaluate([fusion_root], tmp_path / "report", models=models, manifest=manifest, run_id="run-42")
    prov = metrics.provenance
    assert prov.dataset["synthetic"] is True and prov.dataset["name"] == "demo"
    assert list(prov.dataset["clips_per_split"].items()) == [("train", 5), ("val", 2), ("test", 3)]
    assert prov.preset == "quick"  # every recorded setting is the quick preset's
    differences = {d["setting"]: (d["value"], d["paper"]) for d in prov.differences_from_paper}
    assert differences["features.audio.clip_seconds"] == (4.0, 10.0)
    assert differences["train.epochs"] == (6, 60)
    assert prov.config_hashes["train"]["aud-mel"] == "trainhash000"
    assert prov.run_id == "run-42" and prov.avsc_version
    assert prov.lineage["manifest_hash"] == lineage.manifest_hash and prov.lineage["dataset"] == "demo"
    from avsc import __version__

    for path in (tmp_path / "report" / "report.md", tmp_path / "report" / "report.html"):
        text = path.read_text()
        head = text[: text.index("Table I")]  # the block comes first
        for expected in (
            "Provenance",
            "demo",
            "synthetic",
            "train 5, val 2, test 3",
            "features.audio.clip_seconds",
            "featurehash1",
            "trainhash000",
            "run-42",
            __version__,
            "log_loss",
            "temperature scaling",
        ):
            assert expected in head, (path.name, expected)
    assert metrics.figures.training_curves == "training-curves.png"  # five backbones + the best fusion
    # A mapping backbone -> model folder (pipeline artifacts) gives the same provenance.
    mapped = evaluate(
        [fusion_root],
        tmp_path / "report2",
        models={b: models / b for b in BACKBONES},
        manifest=manifest,
        run_id="run-42",
    )
    assert mapped.provenance.config_hashes == prov.config_hashes
    assert mapped.provenance.differences_from_paper == prov.differences_from_paper
    with pytest.raises(ConfigError, match="unknown backbone"):
        evaluate([fusion_root], tmp_path / "report3", models={"aud-xyz": models / "aud-mel"})


def test_clip_level_results_average_segment_probabilities(tmp_path, rng):
    root = tmp_path / "fusion"
    _fusion_dir(root, "f4", "audio+visual", rng=rng, strength=1.5, val=(0.5, 1.0), segments=4)
    metrics = evaluate([root], tmp_path / "report")
    result = metrics.results[0]
    assert result.n_clips == 10 * 3 * 4  # segments
    from avsc.records.predictions import Predictions

    preds = Predictions.read(root / "f4-audio+visual")
    test = preds.splits == "test"
    probs = softmax(preds.logits[test] / 2.0)
    # By hand: each clip's probabilities are the mean of its 4 segments' (ids <clip>_s000..s003).
    ids = preds.clip_ids[test]
    parents = sorted({c.rsplit("_s", 1)[0] for c in ids})
    clip_probs = np.array([probs[[c.rsplit("_s", 1)[0] == p for c in ids]].mean(axis=0) for p in parents])
    y = np.array([LABELS.index(p.split("-x-")[0]) for p in parents])
    clip = result.clip_level
    assert clip.n_clips == 30
    assert clip.accuracy == pytest.approx((clip_probs.argmax(1) == y).mean())
    assert clip.log_loss == pytest.approx(log_loss(y, clip_probs, labels=range(10)))
    rows = (tmp_path / "report" / result.clip_submission_csv).read_text().splitlines()
    assert len(rows) == 31 and rows[1].startswith(f"video/{parents[0]}.mp4\t")
    assert "segments" in metrics.provenance.protocol
    md = (tmp_path / "report" / "report.md").read_text()
    assert "whole clips, mean of segments" in md


def test_results_table_marks_best(evaluated):
    metrics, _ = evaluated
    table = results_table(metrics)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["method", "modalities"]
    assert any(line.startswith("f5*") and "audio+visual" in line for line in lines)
    f1 = next(r for r in metrics.results if r.method == "f1")
    assert f"{100 * f1.accuracy:.1f}" in table and f"{f1.log_loss:.3f}" in table


def test_evaluate_backbone_rows(fusion_root, tmp_path):
    emb = make_embeddings(tmp_path / "emb", width=4, per_class={"train": 1, "val": 1, "test": 3})
    metrics = evaluate([fusion_root / "f1-audio+visual"], tmp_path / "report", embeddings=emb)
    assert [b.backbone for b in metrics.backbones] == list(BACKBONES)
    from avsc.training.embeddings import read_embeddings

    e = read_embeddings(emb / "vis-inc.parquet")
    test = e.splits == "test"
    y = np.array([LABELS.index(lab) for lab in e.labels[test]])
    row = next(b for b in metrics.backbones if b.backbone == "vis-inc")
    assert row.accuracy == pytest.approx((e.fc10[test].argmax(1) == y).mean())
    assert row.log_loss == pytest.approx(log_loss(y, softmax(e.fc10[test] / e.info.temperature), labels=range(10)))
    assert "vis-inc" in (tmp_path / "report" / "report.html").read_text()
    assert "calibration-backbones.png" in metrics.figures.reliability
    # The same rows from a mapping backbone -> file (pipeline artifacts), here two backbones.
    given = {b: emb / f"{b}.parquet" for b in ("vis-inc", "aud-mel")}
    mapped = evaluate([fusion_root / "f1-audio+visual"], tmp_path / "report2", embeddings=given)
    assert [b.backbone for b in mapped.backbones] == ["aud-mel", "vis-inc"]
    assert next(b for b in mapped.backbones if b.backbone == "vis-inc") == row


def test_evaluate_errors(fusion_root, tmp_path, rng):
    with pytest.raises(DataError, match="not found"):
        evaluate([tmp_path / "nowhere"], tmp_path / "r1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"fusion\.json"):
        evaluate([tmp_path / "empty"], tmp_path / "r2")
    with pytest.raises(DataError, match="no clips in the 'train' split"):
        evaluate([fusion_root], tmp_path / "r3", split="train")
    other = _fusion_dir(tmp_path / "other", "f4", "audio", rng=rng, strength=1.0, val=(0.5, 1.0))
    with pytest.raises(DataError, match="second result for f4 audio"):
        evaluate([fusion_root, other], tmp_path / "r4")
    assert not (tmp_path / "r4").exists()  # nothing written before the check


def test_cli_evaluate_prints_table(fusion_root, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                str(fusion_root / "f4-audio"),
                str(fusion_root / "f4-visual"),
                "-o",
                str(tmp_path / "report"),
                "--run-id",
                "cli-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "f4" in out and "audio" in out and "visual" in out and "report.html" in out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {r["modalities"] for r in metrics["results"]} == {"audio", "visual"}
    assert metrics["provenance"]["run_id"] == "cli-run"


def test_provenance_names_a_backbone_trained_with_its_own_settings(tmp_path):
    from avsc.config import load_config, to_dict
    from avsc.evaluation.provenance import collect_provenance

    quick = to_dict(load_config(preset="quick"))
    for backbone in BACKBONES:
        train = dict(quick["train"], epochs=9 if backbone == "vis-conv" else quick["train"]["epochs"])
        write_model_info(tmp_path / backbone, backbone, train=train, features=quick["features"])
    prov = collect_provenance(metas={}, split="test", selection="accuracy", models=tmp_path, run_id="r")
    assert prov["preset"] == "custom (closest preset: quick) (fusion settings unknown)"
    assert {"setting": "train.epochs (vis-conv)", "value": 9, "paper": 60} in prov["differences_from_paper"]
    assert prov["dataset"]["synthetic"] is None  # no manifest: unknown, not guessed
    assert prov["selection"]["rule"] == "accuracy" and prov["protocol"].startswith("whole clips")


def test_backbone_rows_carry_the_val_calibration_of_their_model_folder(fusion_root, tmp_path):
    from avsc.evaluation.tables import calibration_table

    emb = make_embeddings(tmp_path / "emb", width=4, per_class={"train": 1, "val": 1, "test": 3})
    models = tmp_path / "models"
    write_model_info(
        models / "aud-mel",
        "aud-mel",
        calibration=Calibration(
            temperature=0.8,
            fitted_on="val",
            before={"log_loss": 1.851, "ece": 0.12},
            after={"log_loss": 1.843, "ece": 0.11},
        ),
    )
    metrics = evaluate(
        [fusion_root / "f1-audio+visual"], tmp_path / "report", embeddings=emb, models={"aud-mel": models / "aud-mel"}
    )
    rows = {b.backbone: b for b in metrics.backbones}
    assert rows["aud-mel"].val_calibration.before["log_loss"] == 1.851
    assert rows["vis-inc"].val_calibration is None  # no model folder given for it
    _, table = calibration_table(metrics)
    by_model = {row[0]: row for row in table}
    assert by_model["aud-mel"][3] == "1.851 → 1.843" and by_model["vis-inc"][3] == "—"


def test_logistic_reference_sits_beside_the_fusion_models(fusion_root, tmp_path):
    from avsc.evaluation.reference import REFERENCE_C_GRID, logistic_reference
    from avsc.evaluation.tables import reference_table

    emb = make_embeddings(tmp_path / "emb", width=4, per_class={"train": 8, "val": 4, "test": 4})
    rows = logistic_reference(emb)
    assert [(r["modalities"], r["level"]) for r in rows] == [
        ("audio+visual", "fc10"),
        ("audio", "fc10"),
        ("visual", "fc10"),
    ]
    for r in rows:
        assert r["C"] in REFERENCE_C_GRID and r["n_clips"] == 40
        assert r["accuracy"] > 0.5  # the factory's embeddings separate the classes; chance is 0.1
    # C is chosen on val: no other C of the grid has a lower val log loss.
    from avsc.evaluation.reference import _fit_reference, _probabilities
    from avsc.scoring.metrics import classification_metrics
    from avsc.training.fusion_data import load_fusion_data

    data = load_fusion_data(emb, BACKBONES)
    x = np.concatenate(data.inputs("fc10"), axis=1)
    y = np.array([LABELS.index(lab) for lab in data.labels])
    train, val = data.splits == "train", data.splits == "val"
    losses = [
        classification_metrics(y[val], _probabilities(_fit_reference(x[train], y[train], c), x[val]))["log_loss"]
        for c in REFERENCE_C_GRID
    ]
    assert rows[0]["val_log_loss"] == pytest.approx(min(losses))

    metrics = evaluate([fusion_root], tmp_path / "report", embeddings=emb)
    assert metrics.to_dict()["reference"] == logistic_reference(emb)
    _, table = reference_table(metrics)
    assert [row[0].split(" ")[0] for row in table[:2]] == ["fusion", "logistic"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Reference: logistic regression on the same embeddings" in text
    assert "Model selection: every candidate's val and test scores" in text


def test_model_selection_shows_standard_errors_and_what_val_cannot_tell_apart(fusion_root, evaluated):
    from avsc.evaluation.tables import selection_table
    from avsc.scoring.calibration import calibrate, row_log_losses

    metrics, report = evaluated
    rows = {(r.method, r.modalities): r for r in metrics.results}
    # The standard error of the mean of the 30 per-clip val losses the model is chosen on.
    val = Predictions.read(fusion_root / "f5-audio+visual").of_split("val")
    y = np.array([LABELS.index(lab) for lab in val.labels])
    chosen = calibrate(val.logits, y)
    if chosen["method"] == "none":  # the raw losses, by hand
        losses = row_log_losses(softmax(val.logits), y)
        assert chosen["selection_log_loss_se"] == pytest.approx(losses.std(ddof=1) / math.sqrt(30))
    f5 = rows[("f5", "audio+visual")]
    assert f5.val_selection_log_loss_se == pytest.approx(chosen["selection_log_loss_se"])
    # Within one standard error of the chosen model of their modality set (f5: 0.40).
    for (method, modalities), r in rows.items():
        if modalities == "audio+visual":
            expected = abs(r.val_selection_log_loss - 0.40) <= f5.val_selection_log_loss_se
            assert r.val_within_one_se == expected, method
    assert rows[("f4", "visual")].val_within_one_se  # the only visual candidate: the chosen one
    marks = {(row[0], row[1]): row[-1] for row in selection_table(metrics)[1]}
    assert marks[("f5", "audio+visual")] == "✓" and marks[("f4", "visual")] == "✓ (visual)"
    assert {m for (m, s), mark in marks.items() if mark == "≈"} == {
        m for (m, s), r in rows.items() if s == "audio+visual" and r.val_within_one_se and m != "f5"
    }
    assert f"{f5.val_selection_log_loss:.3f} ± {f5.val_selection_log_loss_se:.3f}" in (report / "report.md").read_text()


def test_score_draws_nothing_and_gives_the_scores_evaluate_writes(fusion_root, evaluated, tmp_path):
    from avsc.evaluation.evaluate import score
    from avsc.evaluation.report import render
    from avsc.records import EvaluationResult

    metrics, report = evaluated
    before = sorted(p.relative_to(fusion_root) for p in fusion_root.rglob("*"))
    result = score([fusion_root], run_id=metrics.provenance.run_id)
    assert isinstance(result, EvaluationResult) and result.figures is None
    assert sorted(p.relative_to(fusion_root) for p in fusion_root.rglob("*")) == before  # nothing written
    scored = result.to_dict()
    assert scored["results"] == metrics.to_dict()["results"] and scored["best"] == metrics.to_dict()["best"]
    assert result.result(result.best).method == "f5"
    # metrics.json reads back as the record; without the rows behind it there is nothing to draw.
    back = EvaluationResult.read(report)
    assert back.results == result.results and back.figures.training_curves == "training-curves.png"
    with pytest.raises(ValueError, match="no scored rows"):
        render(back, tmp_path)
