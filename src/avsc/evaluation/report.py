"""The evaluation report: tables laid out like the paper's, confusion-matrix figures, CSV.

- ``report.html``: one self-contained page (inline CSS, figures as base64 PNGs) with the
  dataset summary, Table I (per-class accuracy of f1-f6 on audio+visual, overall accuracy
  and log loss), Table II (audio / visual / both for the best method beside the published
  numbers of the paper and of the DCASE 2021 Task 1B baseline), Figure 4 (confusion
  matrices of the best method) and the per-backbone table.
- ``report.md``: the same tables in Markdown, linking the PNGs.
- :func:`results_table`: a plain-text table for terminals and logs.
- :func:`write_submission_csv`: the DCASE submission format.

Published numbers are copied from the paper (Tables I and II) and from the DCASE 2021
Task 1B baseline results; they were measured on the real TAU Urban Audio-Visual Scenes
2021 dataset and are always labelled as such. A number not published stays blank.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avsc.config import FUSION_METHODS
from avsc.labels import LABELS
from avsc.storage.files import atomic_path

__all__ = ["PUBLISHED", "results_table", "plot_confusion", "write_submission_csv", "write_report"]

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
    "table2": [
        ("Paper, best system (f4)", "paper, Table II", 80.5, 91.8, 95.3, None, None, None),
        ("DCASE 2021 Task 1B baseline", "official baseline results", 65.1, 64.9, 77.0, None, None, 0.658),
        ("DCASE baseline as listed in the paper", "paper, Table II", 65.1, 77.0, 77.4, None, None, None),
    ],
}

_MODALITY_COLUMNS = ("audio", "visual", "audio+visual")


# --- Plain text --------------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.{digits}f}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def results_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of an :func:`avsc.evaluation.evaluate.evaluate` result, one row per model.

    Columns: method, modalities, clips, accuracy (%), log loss, val accuracy (%); then one
    row per backbone when the metrics have them. The best result is marked with ``*``.
    """
    best = metrics.get("best") or {}
    rows = [("method", "modalities", "clips", "acc %", "log loss", "val acc %")]
    for r in metrics.get("results", []):
        mark = "*" if (r["method"], r["modalities"]) == (best.get("method"), best.get("modalities")) else ""
        rows.append((r["method"] + mark, r["modalities"], str(r["n_clips"]), _pct(r["accuracy"]),
                     _num(r["log_loss"]), _pct(r.get("val_accuracy"))))
    for b in metrics.get("backbones", []):
        rows.append((b["backbone"], "backbone", str(b.get("n_clips", "")), _pct(b["accuracy"]),
                     _num(b["log_loss"]), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    split = metrics.get("split", "test")
    lines.append(f"({split} split; * = best on val, shown in Table II)")
    return "\n".join(lines)


# --- Files ---------------------------------------------------------------------------------


def write_submission_csv(path: str | Path, clip_ids: Sequence[str], probs: np.ndarray) -> Path:
    """DCASE submission CSV, tab-separated, one row per clip.

    Header ``filename  scene_label  <10 labels, alphabetical>``; ``filename`` is
    ``video/<clip_id>.mp4``, ``scene_label`` the most probable class.

    Args:
        probs: [shape=(n_clips, 10)] probabilities in :data:`LABELS` order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    lines = ["\t".join(["filename", "scene_label", *LABELS])]
    for clip_id, row in zip(clip_ids, probs):
        lines.append("\t".join([f"video/{clip_id}.mp4", LABELS[int(row.argmax())],
                                *(f"{p:.6f}" for p in row)]))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return Path(path)


def _readable(label: str) -> str:
    return label.replace("_", " ")


def plot_confusion(matrix: np.ndarray, path: str | Path, *, labels: Sequence[str] = LABELS,
                   title: str = "") -> Path:
    """A confusion-matrix PNG: colour = share of the true class (rows sum to 1), text = count.

    Args:
        matrix: [shape=(n_classes, n_classes), int] rows = true class, columns = predicted.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    n = len(labels)
    fig = Figure(figsize=(7.2, 6.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), [_readable(lab) for lab in labels], rotation=45, ha="right")
    ax.set_yticks(range(n), [_readable(lab) for lab in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# --- Tables (shared by HTML and Markdown) -------------------------------------------------------


def _by_key(metrics: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["method"], r["modalities"]): r for r in metrics.get("results", [])}


def _table1(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = classes (+ overall accuracy, log loss), columns = f1..f6 on audio+visual."""
    results = _by_key(metrics)
    methods = [m for m in FUSION_METHODS if (m, "audio+visual") in results]
    header = ["Class", *methods]
    rows = []
    for label in LABELS:
        rows.append([label, *(_pct(results[(m, "audio+visual")]["per_class_accuracy"].get(label))
                              for m in methods)])
    rows.append(["Overall accuracy", *(_pct(results[(m, "audio+visual")]["accuracy"]) for m in methods)])
    rows.append(["Log loss", *(_num(results[(m, "audio+visual")]["log_loss"]) for m in methods)])
    return header, rows


def _table1_published() -> tuple[list[str], list[list[str]]]:
    table = PUBLISHED["paper_table1"]
    header = ["Class", *FUSION_METHODS]
    rows = [[label, *(f"{v:.1f}" for v in table[label])] for label in LABELS]
    rows.append(["Overall accuracy", *(f"{v:.1f}" for v in table["overall"])])
    return header, rows


def _table2(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    best = metrics.get("best") or {}
    results = _by_key(metrics)
    method = best.get("method", "")
    header = ["System", "Source", "Acc. audio %", "Acc. visual %", "Acc. audio+visual %",
              "Log loss audio", "Log loss visual", "Log loss audio+visual"]
    measured = [results.get((method, m)) for m in _MODALITY_COLUMNS]
    rows = [[f"This run, {method}" if method else "This run",
             f"measured here, {metrics.get('split', 'test')} split",
             *(_pct(r["accuracy"]) if r else "" for r in measured),
             *(_num(r["log_loss"]) if r else "" for r in measured)]]
    for name, source, *values in PUBLISHED["table2"]:
        accs, losses = values[:3], values[3:]
        rows.append([name, f"{source} ({PUBLISHED_NOTE})",
                     *("" if v is None else f"{v:.1f}" for v in accs),
                     *("" if v is None else f"{v:.3f}" for v in losses)])
    return header, rows


def _backbone_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["Backbone", "Clips", "Accuracy %", "Log loss"]
    rows = [[b["backbone"], str(b.get("n_clips", "")), _pct(b["accuracy"]), _num(b["log_loss"])]
            for b in metrics.get("backbones", [])]
    return header, rows


def _all_results_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["Method", "Modalities", "Clips", "Accuracy %", "Log loss", "Val accuracy %", "Val log loss"]
    rows = [[r["method"], r["modalities"], str(r["n_clips"]), _pct(r["accuracy"]), _num(r["log_loss"]),
             _pct(r.get("val_accuracy")), _num(r.get("val_log_loss"))] for r in metrics.get("results", [])]
    return header, rows


def _dataset_lines(metrics: dict[str, Any]) -> list[str]:
    data = metrics.get("dataset", {})
    lines = []
    per_split = data.get("clips_per_split") or {}
    if per_split:
        lines.append("Clips per split: " + ", ".join(f"{k} {v}" for k, v in sorted(per_split.items())) + ".")
    counts = data.get("class_counts") or {}
    if counts:
        lines.append(f"Evaluated split `{metrics.get('split', 'test')}`: {data.get('n_clips', sum(counts.values()))} "
                     "clips (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ").")
    lines.append("Model selection used the val split only; the best method (Table II, Figure 4) is the one "
                 "with the highest val accuracy.")
    return lines


# --- Markdown -----------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _figure4(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    best = metrics.get("best") or {}
    results = _by_key(metrics)
    return [results[(best["method"], m)] for m in _MODALITY_COLUMNS if best and (best["method"], m) in results]


def _markdown(metrics: dict[str, Any]) -> str:
    parts = ["# Audio-visual scene classification: evaluation report", ""]
    parts += _dataset_lines(metrics) + [""]
    parts += ["## Table I: per-class accuracy (%) of the fusion methods, audio+visual", "",
              _md_table(*_table1(metrics)), "",
              f"### Table I as published in the paper ({PUBLISHED_NOTE})", "",
              _md_table(*_table1_published()), ""]
    parts += ["## Table II: audio / visual / audio+visual for the best method", "",
              _md_table(*_table2(metrics)), ""]
    figures = _figure4(metrics)
    if figures:
        parts += ["## Figure 4: confusion matrices of the best method", ""]
        parts += [f"![{r['method']} {r['modalities']}]({r['confusion_png']})" for r in figures] + [""]
    if metrics.get("backbones"):
        parts += ["## Backbones alone (softmax of fc10)", "", _md_table(*_backbone_table(metrics)), ""]
    parts += ["## All results", "", _md_table(*_all_results_table(metrics)), ""]
    others = [r for r in metrics.get("results", []) if r not in figures]
    if others:
        parts += ["## Other confusion matrices", ""]
        parts += [f"![{r['method']} {r['modalities']}]({r['confusion_png']})" for r in others] + [""]
    return "\n".join(parts)


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 72em; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f3f7; }
tr.published td { color: #555; background: #fafafa; }
td.source { text-align: left; font-size: 0.85em; }
.note { color: #666; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em; text-align: center; }
figure img { max-width: 34em; border: 1px solid #eee; }
"""


def _html_table(header: list[str], rows: list[list[str]], *, published_from: int | None = None,
                source_col: int | None = None) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>",
           "<tbody>"]
    for n, row in enumerate(rows):
        cls = ' class="published"' if published_from is not None and n >= published_from else ""
        cells = []
        for i, cell in enumerate(row):
            attr = ' class="source"' if i == source_col else ""
            cells.append(f"<td{attr}>{html.escape(cell)}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(metrics: dict[str, Any], report_dir: Path) -> str:
    esc = html.escape
    body = ["<h1>Audio-visual scene classification: evaluation report</h1>"]
    body += [f"<p>{esc(line).replace('`', '')}</p>" for line in _dataset_lines(metrics)]
    body += ["<h2>Table I: per-class accuracy (%) of the fusion methods, audio+visual</h2>",
             _html_table(*_table1(metrics)),
             f"<h3>Table I as published in the paper</h3><p class=\"note\">{esc(PUBLISHED_NOTE.capitalize())}; "
             "not comparable one-to-one with a run on other data.</p>",
             _html_table(*_table1_published(), published_from=0)]
    body += ["<h2>Table II: audio / visual / audio+visual for the best method</h2>",
             f"<p class=\"note\">First row: measured here. Grey rows: {esc(PUBLISHED_NOTE)}. "
             "Blank cells: not published.</p>",
             _html_table(*_table2(metrics), published_from=1, source_col=1)]
    figures = _figure4(metrics)
    if figures:
        body.append("<h2>Figure 4: confusion matrices of the best method</h2>")
        body += [f"<figure>{_img(report_dir / r['confusion_png'], r['method'] + ' ' + r['modalities'])}"
                 f"<figcaption>{esc(r['method'])}, {esc(r['modalities'])}</figcaption></figure>"
                 for r in figures]
    if metrics.get("backbones"):
        body += ["<h2>Backbones alone (softmax of fc10)</h2>", _html_table(*_backbone_table(metrics))]
    body += ["<h2>All results</h2>", _html_table(*_all_results_table(metrics))]
    others = [r for r in metrics.get("results", []) if r not in figures]
    if others:
        body.append("<h2>Other confusion matrices</h2>")
        body += [f"<figure>{_img(report_dir / r['confusion_png'], r['method'] + ' ' + r['modalities'])}"
                 f"<figcaption>{esc(r['method'])}, {esc(r['modalities'])}</figcaption></figure>"
                 for r in others]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>avsc evaluation report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(metrics: dict[str, Any], report_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` from evaluation metrics.

    The confusion-matrix PNGs named in ``metrics["results"][i]["confusion_png"]`` must
    already be in ``report_dir``.

    Returns:
        The paths of ``report.html`` and ``report.md``.
    """
    report_dir = Path(report_dir)
    html_path, md_path = report_dir / "report.html", report_dir / "report.md"
    with atomic_path(html_path) as tmp:
        tmp.write_text(_html(metrics, report_dir), encoding="utf-8")
    with atomic_path(md_path) as tmp:
        tmp.write_text(_markdown(metrics), encoding="utf-8")
    return html_path, md_path
