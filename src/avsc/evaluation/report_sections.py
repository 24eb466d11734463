"""The evaluation report's sections, in report order, shared by ``report.html`` and ``report.md``.

Each section is ``(kind, title, content, note)``: ``table`` (content ``(header, rows)``),
``table2`` (``(header, rows, n_measured)``: the rows from ``n_measured`` on are published
numbers), ``figures`` or ``details`` (a collapsed group of figures; content
``[(png_name, caption), ...]``). The order is the one :mod:`avsc.evaluation.report` lists.
"""

from __future__ import annotations

from typing import Any

from avsc.evaluation.paper_tables import PUBLISHED_NOTE, table1, table2
from avsc.evaluation.tables import (
    all_results_table,
    backbone_table,
    by_key,
    calibration_table,
    differences_table,
    provenance_rows,
    reference_table,
    selection_table,
)
from avsc.records.evaluation_result import EvaluationResult, FusionResult

__all__ = ["Section", "report_sections"]

Section = tuple[str, str, Any, str]


def _figure4(result: EvaluationResult) -> list[FusionResult]:
    best = result.best
    results = by_key(result)
    return [
        results[(best.method, m)] for m in ("audio", "visual", "audio+visual") if best and (best.method, m) in results
    ]


def _notes(result: EvaluationResult) -> dict[str, str]:
    split = result.split
    synthetic = result.provenance.dataset.get("synthetic") if result.provenance else None
    caution = (
        " These numbers were measured on synthetic data: they check that the system runs end to "
        "end and say nothing about real scenes; the published numbers beside them are for layout only."
        if synthetic
        else ""
    )
    return {
        "table1": (
            f"Each cell: measured on the {split} split / {PUBLISHED_NOTE} (correct/clips, 95 % Wilson "
            "interval of the measured accuracy). Log loss and ECE after temperature scaling; the paper "
            f"published accuracy only (—).{caution}"
        ),
        "table2": (
            f"First rows: measured here (correct/clips, 95 % Wilson interval). Other rows: "
            f"{PUBLISHED_NOTE}. — : not published.{caution}"
        ),
        "calibration": (
            "One temperature T per model, fitted on the val split only (raw: T = 1) with a prior "
            "towards 1, never below 1 when every val clip is right, and applied only when it lowers "
            "the val log loss cross-validated over 5 folds of val ('(none)': it did not). "
            "Calibration never changes a prediction's class, so accuracies are the same before and "
            "after."
        ),
        "selection": (
            "The model kept for each modality set is the one with the lowest val log loss of its "
            "calibrated probabilities, cross-validated on val (ties: higher val accuracy); the "
            f"{split} columns show what each candidate was worth, never used to choose. ± is the "
            "standard error of the mean of the per-clip val losses; ≈ marks a candidate within one "
            "standard error (the chosen model's) of the one chosen for its modality set: val cannot tell "
            "these apart, and the choice among them rests on noise."
        ),
        "reference": (
            "Standardised multinomial logistic regression (scikit-learn) on the same embeddings, "
            "concatenated across the modality set's backbones, C chosen on val by log loss: a fusion "
            "model earns its place only if it does about as well."
        ),
        "curves": ("Per epoch on the val split; the dotted line marks the epoch kept by the selection rule."),
    }


def report_sections(result: EvaluationResult) -> list[Section]:
    """(kind, title, content, note) in report order, from an evaluation's scores."""
    notes = _notes(result)
    best_figures = _figure4(result)
    return [
        *_comparison_sections(result, notes),
        *_figure_sections(result, notes, best_figures),
        *_appendix_sections(result, best_figures),
    ]


def _comparison_sections(result: EvaluationResult, notes: dict[str, str]) -> list[Section]:
    """Warnings, provenance, Tables I and II, the model selection and the reference."""
    sections: list[Section] = []
    if result.warnings:
        sections.append(("table", "Warnings", (["Warning"], [[w] for w in result.warnings]), ""))
    sections += [
        ("table", "Provenance", (["Field", "Value"], provenance_rows(result)), ""),
        ("table", "Settings that differ from the paper's", differences_table(result), ""),
        (
            "table",
            "Table I: per-class accuracy (%) of the fusion methods, audio+visual, measured / published",
            table1(result),
            notes["table1"],
        ),
        ("table2", "Table II: audio / visual / audio+visual for the best method", table2(result), notes["table2"]),
        (
            "table",
            "Model selection: every candidate's val and " + result.split + " scores",
            selection_table(result),
            notes["selection"],
        ),
    ]
    if result.reference:
        sections.append(
            (
                "table",
                "Reference: logistic regression on the same embeddings",
                reference_table(result),
                notes["reference"],
            )
        )
    return sections


def _figure_sections(
    result: EvaluationResult, notes: dict[str, str], best_figures: list[FusionResult]
) -> list[Section]:
    """Figure 4 (the best method's confusion matrices), calibration and training curves."""
    sections: list[Section] = []
    if best_figures:
        sections.append(
            (
                "figures",
                "Figure 4: confusion matrices of the best method",
                [(r.confusion_png, f"{r.method}, {r.modalities}") for r in best_figures],
                "",
            )
        )
    sections.append(
        (
            "table",
            "Calibration: log loss and expected calibration error before and after",
            calibration_table(result),
            notes["calibration"],
        )
    )
    figures = result.figures
    if figures and figures.reliability:
        sections.append(
            (
                "figures",
                "Reliability diagrams (before and after temperature scaling)",
                [(name, name.removesuffix(".png")) for name in figures.reliability],
                (
                    "Accuracy against confidence in bins of equal counts (n = rows per bin; bars: 95 % "
                    "Wilson intervals); a calibrated model lies on the diagonal, "
                    "an over-confident one below it."
                ),
            )
        )
    if figures and figures.training_curves:
        sections.append(
            (
                "figures",
                "Training curves: the five backbones and the best fusion model",
                [(figures.training_curves, "training curves")],
                notes["curves"],
            )
        )
    return sections


def _appendix_sections(result: EvaluationResult, best_figures: list[FusionResult]) -> list[Section]:
    """Backbones alone, all results, and the other confusion matrices (collapsed)."""
    sections: list[Section] = []
    if result.backbones:
        sections.append(("table", "Backbones alone (calibrated softmax of fc10)", backbone_table(result), ""))
    sections.append(("table", "All results", all_results_table(result), ""))
    shown = {r.name for r in best_figures}
    others = [r for r in result.results if r.name not in shown]
    if others:
        sections.append(
            (
                "details",
                f"Other confusion matrices ({len(others)})",
                [(r.confusion_png, f"{r.method}, {r.modalities}") for r in others],
                "",
            )
        )
    return sections
