"""Tables I and II of the paper: this run's numbers beside the published ones.

Measured and published numbers share one Table I: each cell reads
``measured / published (correct/rows, interval)``. Table II puts the best method's audio,
visual and audio+visual scores above the published systems.

Published numbers are copied from the paper (Tables I and II) and from the DCASE 2021
Task 1B baseline results; they were measured on the real TAU Urban Audio-Visual Scenes
2021 dataset and are always labelled as such. A number not published stays blank (—).
"""

from __future__ import annotations

from typing import Any

from avsc.config import FUSION_METHODS
from avsc.evaluation.tables import DASH, accuracy_cell, by_key, level_of, num, scores_cell
from avsc.labels import LABELS
from avsc.records.evaluation_result import EvaluationResult

__all__ = ["PUBLISHED", "PUBLISHED_NOTE", "MODALITY_COLUMNS", "table1", "table2"]

PUBLISHED_NOTE = "published, on the real TAU Urban Audio-Visual Scenes 2021 dataset"

# Accuracy in percent (and log loss where published). None = not published.
PUBLISHED: dict[str, Any] = {
    # Paper, Table I: per-class accuracy (%) of f1..f6 with audio and visual data.
    "paper_table1": {
        "airport": (87.9, 82.2, 85.4, 87.9, 86.8, 83.3),
        "bus": (96.9, 96.3, 99.1, 97.6, 99.1, 97.6),
        "metro": (97.5, 94.2, 96.9, 97.2, 98.1, 96.9),
        "metro_station": (98.2, 97.7, 98.2, 98.7, 99.0, 97.9),
        "park": (95.6, 92.7, 93.8, 97.9, 99.0, 98.2),
        "public_square": (92.0, 91.7, 89.7, 91.5, 87.9, 88.1),
        "shopping_mall": (91.0, 90.7, 88.9, 93.5, 92.5, 92.0),
        "street_pedestrian": (99.3, 99.5, 99.5, 99.5, 99.5, 99.0),
        "street_traffic": (96.3, 96.5, 96.8, 96.0, 95.8, 95.5),
        "tram": (83.1, 91.2, 84.1, 90.6, 90.3, 85.7),
        "overall": (94.1, 93.7, 93.6, 95.3, 95.0, 93.9),
    },
    # Table II rows: (name, source, accuracy audio, visual, audio+visual, log loss a, v, a+v).
    # The baseline's log loss was computed on 1-second segments (the challenge's protocol).
    "table2": [
        ("Paper, best system (f4)", "paper, Table II", 80.5, 91.8, 95.3, None, None, None),
        ("DCASE 2021 Task 1B baseline", "official baseline results", 65.1, 64.9, 77.0, None, None, 0.658),
        ("DCASE baseline as listed in the paper", "paper, Table II", 65.1, 77.0, 77.4, None, None, None),
    ],
}


MODALITY_COLUMNS = ("audio", "visual", "audio+visual")


def table1(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Rows = classes, overall accuracy, log loss, ECE; columns = f1..f6 on audio+visual.

    Accuracy cells: measured / published (correct/clips, 95 % Wilson interval)."""
    results = by_key(result)
    methods = [m for m in FUSION_METHODS if (m, "audio+visual") in results]
    # The paper scores whole clips: on a segment run, the clip level (mean of segments).
    views = {m: level_of(results[(m, "audio+visual")], "clips") for m in methods}
    published = PUBLISHED["paper_table1"]
    header = ["Class", *methods]
    rows = []
    for label in LABELS:
        row = [label]
        for m in methods:
            v = views[m]
            row.append(
                accuracy_cell(
                    v.per_class_accuracy.get(label),
                    v.per_class_correct.get(label),
                    v.per_class_count.get(label),
                    v.per_class_ci.get(label),
                    published[label][FUSION_METHODS.index(m)],
                    with_published=True,
                )
            )
        rows.append(row)
    rows.append(
        [
            "Overall accuracy",
            *(
                accuracy_cell(
                    views[m].accuracy,
                    views[m].n_correct,
                    views[m].n_clips,
                    views[m].accuracy_ci,
                    published["overall"][FUSION_METHODS.index(m)],
                    with_published=True,
                )
                for m in methods
            ),
        ]
    )
    rows.append(["Log loss (calibrated)", *(f"{num(views[m].log_loss)} / {DASH}" for m in methods)])
    rows.append(["Log loss (raw)", *(f"{num(views[m].uncalibrated.log_loss)} / {DASH}" for m in methods)])
    rows.append(["ECE (calibrated)", *(f"{num(views[m].ece)} / {DASH}" for m in methods)])
    return header, rows


def table2(result: EvaluationResult) -> tuple[list[str], list[list[str]], int]:
    """The best method's audio / visual / audio+visual scores beside published systems.

    Returns:
        ``(header, rows, n_measured)``: the first ``n_measured`` rows are this run's.
    """
    results = by_key(result)
    method = result.best.method if result.best else ""
    header = [
        "System",
        "Source",
        "Acc. audio %",
        "Acc. visual %",
        "Acc. audio+visual %",
        "Log loss audio",
        "Log loss visual",
        "Log loss audio+visual",
    ]
    measured = [results.get((method, m)) for m in MODALITY_COLUMNS]
    segmented = any(r is not None and r.clip_level is not None for r in measured)
    levels = (
        [("rows", "1-s segments" if segmented else ""), ("clips", "whole clips, mean of segments")]
        if segmented
        else [("rows", "")]
    )
    rows = []
    for level, note in levels:
        views = [level_of(r, level) if r else None for r in measured]
        name = f"This run, {method}" if method else "This run"
        rows.append(
            [
                name + (f" ({note})" if note else ""),
                f"measured here, {result.split} split",
                *(scores_cell(v) if v else DASH for v in views),
                *(num(v.log_loss) if v else DASH for v in views),
            ]
        )
    n_measured = len(rows)
    for name, source, *values in PUBLISHED["table2"]:
        accs, losses = values[:3], values[3:]
        rows.append(
            [
                name,
                f"{source} ({PUBLISHED_NOTE})",
                *(DASH if v is None else f"{v:.1f}" for v in accs),
                *(DASH if v is None else f"{v:.3f}" for v in losses),
            ]
        )
    return header, rows, n_measured
