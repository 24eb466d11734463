"""The report's tables, as (header, rows) of strings, shared by HTML, Markdown and text.

Every accuracy is shown with its count (correct / rows) and its 95 % Wilson interval, and
log loss stands next to accuracy everywhere. The cell formats are here; Tables I and II,
beside the published numbers, are :mod:`avsc.evaluation.paper_tables`.
"""

from __future__ import annotations

import math
from typing import Any

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
    ci,
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


def by_key(metrics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["method"], r["modalities"]): r for r in metrics.get("results", [])}


def level_of(result: dict[str, Any], level: str) -> dict[str, Any]:
    """A result's scores at ``level``: ``rows`` (clips or segments as evaluated) or ``clips``
    (whole clips: the segment average when the run was on segments, else the rows)."""
    if level == "clips" and result.get("clip_level"):
        return result["clip_level"]
    return result


def calibration_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per model: temperature, val log loss before → after, evaluated-split log loss and
    ECE before → after (accuracy is unchanged by calibration)."""
    split = metrics.get("split", "test")
    header = [
        "Model",
        "Modalities",
        "T",
        "Val log loss raw → cal.",
        f"{split.capitalize()} log loss raw → cal.",
        f"{split.capitalize()} ECE raw → cal.",
    ]
    rows = []
    for r in metrics.get("results", []):
        raw = r.get("uncalibrated", {})
        cal = r.get("val_calibration") or {}
        rows.append(
            [
                r["method"],
                r["modalities"],
                _temperature_cell(r),
                f"{num(cal.get('before', {}).get('log_loss'))} → {num(cal.get('after', {}).get('log_loss'))}",
                f"{num(raw.get('log_loss'))} → {num(r['log_loss'])}",
                f"{num(raw.get('ece'))} → {num(r.get('ece'))}",
            ]
        )
    for b in metrics.get("backbones", []):
        raw = b.get("uncalibrated", {})
        cal = b.get("val_calibration")  # present when the model folders were given
        val = (
            f"{num(cal.get('before', {}).get('log_loss'))} → {num(cal.get('after', {}).get('log_loss'))}"
            if cal
            else DASH
        )
        rows.append(
            [
                b["backbone"],
                "backbone",
                _temperature_cell(b),
                val,
                f"{num(raw.get('log_loss'))} → {num(b['log_loss'])}",
                f"{num(raw.get('ece'))} → {num(b.get('ece'))}",
            ]
        )
    return header, rows


def _temperature_cell(row: dict[str, Any]) -> str:
    """``T``, marked ``(none)`` when calibration did not pay on val and ``(at bound)``."""
    cell = num(row.get("temperature"), 2)
    if row.get("calibration_method") == "none":
        cell += " (none)"
    if row.get("temperature_at_bound"):
        cell += " (at bound!)"
    return cell


def _selection_cell(result: dict[str, Any]) -> str:
    """``0.512 ± 0.081``: the selection log loss and its standard error over the val clips."""
    value = num(result.get("val_selection_log_loss", result.get("val_log_loss")))
    se = result.get("val_selection_log_loss_se")
    return value if se is None or _missing(se) else f"{value} ± {num(se)}"


def selection_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The candidates of the model selection, val (what chose) beside the evaluated split
    (what it would have been worth), best first by the selection log loss.

    The last column marks the model chosen for each modality set (``✓`` the overall best)
    and the candidates within one standard error of it (``≈``: val cannot tell them apart)."""
    split = metrics.get("split", "test").capitalize()
    best = metrics.get("best") or {}
    per = {m: (c["method"], m) for m, c in (metrics.get("best_per_modalities") or {}).items()}
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
        metrics.get("results", []),
        key=lambda r: (
            r["modalities"] != "audio+visual",
            r.get("val_selection_log_loss") or r.get("val_log_loss") or 0.0,
        ),
    )

    def mark(r: dict[str, Any]) -> str:
        key = (r["method"], r["modalities"])
        if key == (best.get("method"), best.get("modalities")):
            return "✓"
        if per.get(r["modalities"]) == key:
            return f"✓ ({r['modalities']})"
        return "≈" if r.get("val_within_one_se") else ""

    rows = [
        [
            r["method"],
            r["modalities"],
            pct(r.get("val_accuracy")),
            _selection_cell(r),
            f"{r.get('best_step', DASH)} / {r.get('steps_run', DASH)}",
            pct(r["accuracy"]),
            num(r["log_loss"]),
            mark(r),
        ]
        for r in results
    ]
    return header, rows


def reference_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The logistic-regression reference beside the best fusion model of each modality set."""
    split = metrics.get("split", "test").capitalize()
    header = [
        "Model",
        "Modalities",
        "Embedding",
        "Val log loss",
        f"{split} accuracy % (correct/rows, 95 % CI)",
        f"{split} log loss",
    ]
    rows = []
    per = metrics.get("best_per_modalities") or {}
    results = by_key(metrics)
    for modalities in ("audio+visual", "audio", "visual"):
        chosen = per.get(modalities)
        if chosen and (chosen["method"], modalities) in results:
            r = results[(chosen["method"], modalities)]
            rows.append(
                [
                    f"fusion {r['method']} (chosen on val)",
                    modalities,
                    "fc1024" if r["method"] in ("f1", "f2", "f3") else "fc10",
                    num(r.get("val_selection_log_loss")),
                    accuracy_cell(r["accuracy"], r.get("n_correct"), r["n_clips"], r.get("accuracy_ci")),
                    num(r["log_loss"]),
                ]
            )
        rows.extend(
            [
                f"logistic regression (C={ref['C']:.3g})",
                modalities,
                ref["level"],
                num(ref["val_log_loss"]),
                accuracy_cell(ref["accuracy"], ref.get("n_correct"), ref["n_clips"], ref.get("accuracy_ci")),
                num(ref["log_loss"]),
            ]
            for ref in metrics.get("reference", [])
            if ref["modalities"] == modalities
        )
    return header, rows


def backbone_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["Backbone", "Rows", "Accuracy % (correct/rows, 95 % CI)", "Log loss", "ECE"]
    rows = [
        [
            b["backbone"],
            str(b.get("n_clips", "")),
            accuracy_cell(b["accuracy"], b.get("n_correct"), b.get("n_clips"), b.get("accuracy_ci")),
            num(b["log_loss"]),
            num(b.get("ece")),
        ]
        for b in metrics.get("backbones", [])
    ]
    return header, rows


def all_results_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every method × modality set: evaluated-split and val scores (and clip level on segments)."""
    segmented = any(r.get("clip_level") for r in metrics.get("results", []))
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
    for r in metrics.get("results", []):
        row = [
            r["method"],
            r["modalities"],
            str(r["n_clips"]),
            accuracy_cell(r["accuracy"], r.get("n_correct"), r["n_clips"], r.get("accuracy_ci")),
            num(r["log_loss"]),
            num(r.get("ece")),
            pct(r.get("val_accuracy")),
            num(r.get("val_log_loss")),
        ]
        if segmented:
            c = r.get("clip_level") or {}
            row += [
                accuracy_cell(c.get("accuracy"), c.get("n_correct"), c.get("n_clips"), c.get("accuracy_ci")),
                num(c.get("log_loss")),
            ]
        rows.append(row)
    return header, rows


def provenance_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """The provenance block as (field, value) rows."""
    prov = metrics.get("provenance") or {}
    data = prov.get("dataset") or {}
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
    hashes = prov.get("config_hashes") or {}
    hash_parts = []
    if hashes.get("features"):
        hash_parts.append(f"features {hashes['features']}")
    if hashes.get("train"):
        hash_parts.append("train " + ", ".join(f"{b} {h}" for b, h in hashes["train"].items()))
    fusion_hashes = sorted(set((hashes.get("fusion") or {}).values()) - {None})
    if fusion_hashes:
        hash_parts.append("fusion " + ", ".join(fusion_hashes))
    differences = prov.get("differences_from_paper") or []
    selection = prov.get("selection") or {}
    return [
        ["Dataset", f"{data.get('name') or DASH} ({data.get('path') or 'path unknown'})"],
        ["Data", kind],
        ["Clips per split", count_text],
        ["Evaluated split", str(prov.get("split", metrics.get("split", "test")))],
        ["Protocol", str(prov.get("protocol", DASH))],
        ["Preset", str(prov.get("preset", DASH))],
        ["Settings that differ from the paper's", f"{len(differences)} (listed below)" if differences else "none"],
        ["Config hashes", "; ".join(hash_parts) or DASH],
        ["Selection rule (val split only)", f"{selection.get('rule', DASH)}: {selection.get('description', '')}"],
        ["Calibration", str(prov.get("calibration", DASH))],
        ["avsc version", str(prov.get("avsc_version", DASH))],
        ["Created (UTC)", str(prov.get("created", DASH))],
        ["Run id", str(prov.get("run_id", DASH))],
    ]


def differences_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each recorded setting of this run that differs from the paper preset."""
    differences = (metrics.get("provenance") or {}).get("differences_from_paper") or []
    rows = [[d["setting"], str(d["value"]), str(d.get("paper"))] for d in differences]
    return ["Setting", "This run", "Paper preset"], rows or [["(none)", "", ""]]


def results_table(metrics: dict[str, Any]) -> str:
    """A plain-text table (``tabulate``) of an evaluation, one row per model, the best marked ``*``.

    Columns: method, modalities, rows, accuracy % with its 95 % Wilson interval, log loss
    (calibrated, and raw), ECE, val accuracy %, val log loss; then one row per backbone.
    """
    from tabulate import tabulate

    best = metrics.get("best") or {}
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
    rows = []
    for r in metrics.get("results", []):
        mark = "*" if (r["method"], r["modalities"]) == (best.get("method"), best.get("modalities")) else ""
        rows.append(
            [
                r["method"] + mark,
                r["modalities"],
                r["n_clips"],
                pct(r["accuracy"]),
                interval(r.get("accuracy_ci")),
                num(r["log_loss"]),
                num(r.get("uncalibrated", {}).get("log_loss")),
                num(r.get("ece")),
                pct(r.get("val_accuracy")),
                num(r.get("val_log_loss")),
            ]
        )
    rows.extend(
        [
            b["backbone"],
            "backbone",
            b.get("n_clips", ""),
            pct(b["accuracy"]),
            interval(b.get("accuracy_ci")),
            num(b["log_loss"]),
            num(b.get("uncalibrated", {}).get("log_loss")),
            num(b.get("ece")),
            "",
            "",
        ]
        for b in metrics.get("backbones", [])
    )
    rule = (metrics.get("provenance") or {}).get("selection", {}).get("rule", "log_loss")
    table = tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True)
    return (
        f"{table}\n({metrics.get('split', 'test')} split; log loss after temperature scaling; "
        f"* = best on val by {rule.replace('_', ' ')}, shown in Table II)"
    )
