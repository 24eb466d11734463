"""The report's tables, as (header, rows) of strings, shared by HTML, Markdown and text.

Every accuracy is shown with its count (correct / rows) and its 95 % Wilson interval, and
log loss stands next to accuracy everywhere. The cell formats are here; Tables I and II,
beside the published numbers, are :mod:`avsc.evaluation.paper_tables`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from avsc.records.evaluation_result import (
    BackboneResult,
    CalibratedScores,
    ClassificationScores,
    EvaluationResult,
    FusionResult,
)

__all__ = ["results_table", "level_of", "by_key"]

DASH = "—"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None or _missing(value) else f"{100 * value:.{digits}f}"


def num(value: float | None, digits: int = 3) -> str:
    return DASH if _missing(value) else f"{value:.{digits}f}"


def interval(ci: list[float] | tuple[float, float] | None) -> str:
    """``[0.31, 0.86]`` -> ``30.6–86.3`` (percent)."""
    if not ci or any(_missing(v) for v in ci):
        return DASH
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


def accuracy_cell(
    accuracy: float | None,
    correct: int | None,
    n: int | None,
    ci: tuple[float, float] | None,
    published: float | None = None,
    *,
    with_published: bool = False,
) -> str:
    """``62.5 / 87.9 (5/8, 30.6–86.3)``: measured / published (count, 95 % Wilson interval)."""
    text = pct(accuracy)
    if with_published:
        text += f" / {DASH if published is None else f'{published:.1f}'}"
    if n:
        text += f" ({correct}/{n}, {interval(ci)})"
    return text


def scores_cell(scores: ClassificationScores) -> str:
    """:func:`accuracy_cell` of one model's scores (no published number)."""
    return accuracy_cell(scores.accuracy, scores.n_correct, scores.n_clips, scores.accuracy_ci)


def by_key(result: EvaluationResult) -> dict[tuple[str, str], FusionResult]:
    return {(r.method, r.modalities): r for r in result.results}


def level_of(result: FusionResult, level: str) -> CalibratedScores:
    """A result's scores at ``level``: ``rows`` (clips or segments as evaluated) or ``clips``
    (whole clips: the segment average when the run was on segments, else the rows)."""
    if level == "clips" and result.clip_level is not None:
        return result.clip_level
    return result


def _val_calibration_cell(row: FusionResult | BackboneResult) -> str:
    """Val log loss raw → calibrated (``—`` for a backbone whose model folder was not given)."""
    cal = row.val_calibration
    if cal is None:
        return DASH
    return f"{num(cal.before.get('log_loss'))} → {num(cal.after.get('log_loss'))}"


def calibration_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Per model: temperature, val log loss before → after, evaluated-split log loss and
    ECE before → after (accuracy is unchanged by calibration)."""
    split = result.split
    header = [
        "Model",
        "Modalities",
        "T",
        "Val log loss raw → cal.",
        f"{split.capitalize()} log loss raw → cal.",
        f"{split.capitalize()} ECE raw → cal.",
    ]
    models: list[tuple[str, str, FusionResult | BackboneResult]] = [
        *((r.method, r.modalities, r) for r in result.results),
        *((b.backbone, "backbone", b) for b in result.backbones),
    ]
    rows = [
        [
            name,
            modalities,
            _temperature_cell(row),
            _val_calibration_cell(row),
            f"{num(row.uncalibrated.log_loss)} → {num(row.log_loss)}",
            f"{num(row.uncalibrated.ece)} → {num(row.ece)}",
        ]
        for name, modalities, row in models
    ]
    return header, rows


def _temperature_cell(row: FusionResult | BackboneResult) -> str:
    """``T``, marked ``(none)`` when calibration did not pay on val and ``(at bound)``."""
    cell = num(row.temperature, 2)
    if row.calibration_method == "none":
        cell += " (none)"
    if row.temperature_at_bound:
        cell += " (at bound!)"
    return cell


def _selection_cell(result: FusionResult) -> str:
    """``0.512 ± 0.081``: the selection log loss and its standard error over the val clips."""
    value = num(result.val_selection_log_loss)
    se = result.val_selection_log_loss_se
    return value if se is None or _missing(se) else f"{value} ± {num(se)}"


def selection_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """The candidates of the model selection, val (what chose) beside the evaluated split
    (what it would have been worth), best first by the selection log loss.

    The last column marks the model chosen for each modality set (``✓`` the overall best)
    and the candidates within one standard error of it (``≈``: val cannot tell them apart)."""
    split = result.split.capitalize()
    best = result.best
    per = {m: (c.method, m) for m, c in result.best_per_modalities.items()}
    header = [
        "Method",
        "Modalities",
        "Val accuracy %",
        "Val log loss (cross-validated) ± SE",
        "Best step / run",
        f"{split} accuracy %",
        f"{split} log loss",
        "Chosen (≈: within 1 SE)",
    ]
    results = sorted(
        result.results,
        key=lambda r: (r.modalities != "audio+visual", r.val_selection_log_loss or r.val_log_loss or 0.0),
    )

    def mark(r: FusionResult) -> str:
        key = (r.method, r.modalities)
        if best is not None and key == (best.method, best.modalities):
            return "✓"
        if per.get(r.modalities) == key:
            return f"✓ ({r.modalities})"
        return "≈" if r.val_within_one_se else ""

    rows = [
        [
            r.method,
            r.modalities,
            pct(r.val_accuracy),
            _selection_cell(r),
            f"{r.best_step} / {r.steps_run}",
            pct(r.accuracy),
            num(r.log_loss),
            mark(r),
        ]
        for r in results
    ]
    return header, rows


def reference_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """The logistic-regression reference beside the best fusion model of each modality set."""
    split = result.split.capitalize()
    header = [
        "Model",
        "Modalities",
        "Embedding",
        "Val log loss",
        f"{split} accuracy % (correct/rows, 95 % CI)",
        f"{split} log loss",
    ]
    rows = []
    results = by_key(result)
    for modalities in ("audio+visual", "audio", "visual"):
        chosen = result.best_per_modalities.get(modalities)
        if chosen and (chosen.method, modalities) in results:
            r = results[(chosen.method, modalities)]
            rows.append(
                [
                    f"fusion {r.method} (chosen on val)",
                    modalities,
                    "fc1024" if r.method in ("f1", "f2", "f3") else "fc10",
                    num(r.val_selection_log_loss),
                    scores_cell(r),
                    num(r.log_loss),
                ]
            )
        rows.extend(
            [
                f"logistic regression (C={ref.C:.3g})",
                modalities,
                ref.level,
                num(ref.val_log_loss),
                scores_cell(ref),
                num(ref.log_loss),
            ]
            for ref in result.reference
            if ref.modalities == modalities
        )
    return header, rows


def backbone_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    header = ["Backbone", "Rows", "Accuracy % (correct/rows, 95 % CI)", "Log loss", "ECE"]
    rows = [[b.backbone, str(b.n_clips), scores_cell(b), num(b.log_loss), num(b.ece)] for b in result.backbones]
    return header, rows


def _clip_cells(clip: CalibratedScores | None) -> list[str]:
    """Whole-clip accuracy and log loss of a segment run's result (``—`` without them)."""
    if clip is None:
        return [pct(None), num(None)]
    return [scores_cell(clip), num(clip.log_loss)]


def all_results_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Every method × modality set: evaluated-split and val scores (and clip level on segments)."""
    segmented = any(r.clip_level is not None for r in result.results)
    header = [
        "Method",
        "Modalities",
        "Rows",
        "Accuracy % (correct/rows, 95 % CI)",
        "Log loss",
        "ECE",
        "Val accuracy %",
        "Val log loss",
    ]
    if segmented:
        header += ["Clip accuracy % (mean of segments)", "Clip log loss"]
    rows = []
    for r in result.results:
        row = [
            r.method,
            r.modalities,
            str(r.n_clips),
            scores_cell(r),
            num(r.log_loss),
            num(r.ece),
            pct(r.val_accuracy),
            num(r.val_log_loss),
        ]
        if segmented:
            row += _clip_cells(r.clip_level)
        rows.append(row)
    return header, rows


def _hashes_text(hashes: Mapping[str, Any]) -> str:
    """The config hashes (features, train per backbone, fusion) in one line."""
    parts = []
    if hashes.get("features"):
        parts.append(f"features {hashes['features']}")
    if hashes.get("train"):
        parts.append("train " + ", ".join(f"{b} {h}" for b, h in hashes["train"].items()))
    fusion_hashes = sorted(set((hashes.get("fusion") or {}).values()) - {None})
    if fusion_hashes:
        parts.append("fusion " + ", ".join(fusion_hashes))
    return "; ".join(parts) or DASH


def provenance_rows(result: EvaluationResult) -> list[list[str]]:
    """The provenance block as (field, value) rows (``—`` where a hand-made result has none)."""
    prov = result.provenance
    data: Mapping[str, Any] = (prov.dataset if prov else None) or {}
    synthetic = data.get("synthetic")
    kind = {
        True: f"synthetic ({data.get('generator') or 'generated'}): numbers say nothing about real scenes",
        False: "real recordings",
        None: "unknown (no manifest given)",
    }[synthetic]
    counts = data.get("clips_per_split") or {}
    count_text = ", ".join(f"{k} {v}" for k, v in counts.items()) or DASH
    if data.get("parent_clips_per_split"):
        count_text += (
            " segments, from " + ", ".join(f"{k} {v}" for k, v in data["parent_clips_per_split"].items()) + " clips"
        )
    differences = prov.differences_from_paper if prov else ()
    rule = f"{prov.selection.rule}: {prov.selection.description}" if prov else f"{DASH}: "

    def field(name: str) -> str:
        return str(getattr(prov, name)) if prov else DASH

    return [
        ["Dataset", f"{data.get('name') or DASH} ({data.get('path') or 'path unknown'})"],
        ["Data", kind],
        ["Clips per split", count_text],
        ["Evaluated split", str(prov.split if prov else result.split)],
        ["Protocol", field("protocol")],
        ["Preset", field("preset")],
        ["Settings that differ from the paper's", f"{len(differences)} (listed below)" if differences else "none"],
        ["Config hashes", _hashes_text((prov.config_hashes if prov else None) or {})],
        ["Selection rule (val split only)", rule],
        ["Calibration", field("calibration")],
        ["avsc version", field("avsc_version")],
        ["Created (UTC)", field("created")],
        ["Run id", field("run_id")],
    ]


def differences_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Each recorded setting of this run that differs from the paper preset."""
    differences = result.provenance.differences_from_paper if result.provenance else ()
    rows = [[d["setting"], str(d["value"]), str(d.get("paper"))] for d in differences]
    return ["Setting", "This run", "Paper preset"], rows or [["(none)", "", ""]]


def results_table(result: EvaluationResult) -> str:
    """A plain-text table (``tabulate``) of an evaluation, one row per model, the best marked ``*``.

    Columns: method, modalities, rows, accuracy % with its 95 % Wilson interval, log loss
    (calibrated, and raw), ECE, val accuracy %, val log loss; then one row per backbone.
    """
    from tabulate import tabulate

    best = result.best
    header = [
        "method",
        "modalities",
        "rows",
        "acc %",
        "95% CI",
        "log loss",
        "raw log loss",
        "ECE",
        "val acc %",
        "val log loss",
    ]
    rows: list[list[Any]] = []
    for r in result.results:
        mark = "*" if best is not None and (r.method, r.modalities) == (best.method, best.modalities) else ""
        rows.append(
            [
                r.method + mark,
                r.modalities,
                r.n_clips,
                pct(r.accuracy),
                interval(r.accuracy_ci),
                num(r.log_loss),
                num(r.uncalibrated.log_loss),
                num(r.ece),
                pct(r.val_accuracy),
                num(r.val_log_loss),
            ]
        )
    rows.extend(
        [
            b.backbone,
            "backbone",
            b.n_clips,
            pct(b.accuracy),
            interval(b.accuracy_ci),
            num(b.log_loss),
            num(b.uncalibrated.log_loss),
            num(b.ece),
            "",
            "",
        ]
        for b in result.backbones
    )
    rule = result.provenance.selection.rule if result.provenance else "log_loss"
    table = tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True)
    return (
        f"{table}\n({result.split} split; log loss after temperature scaling; "
        f"* = best on val by {rule.replace('_', ' ')}, shown in Table II)"
    )
