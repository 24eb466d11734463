"""The evaluation report: ``report.html``, ``report.md``, a Markdown summary and the DCASE CSV.

Both reports hold, in this order:

1. the provenance block (:mod:`avsc.evaluation.provenance`): dataset, synthetic or not,
   clips per split, protocol, preset and every setting that differs from the paper's,
   config hashes, avsc version, date, run id, selection rule, calibration;
2. Table I: per-class accuracy of f1-f6 (audio+visual), each cell measured / published
   with its count and 95 % Wilson interval, then overall accuracy, log loss and ECE;
3. Table II: audio / visual / audio+visual for the best method beside published systems;
4. Figure 4: confusion matrices of the best method;
5. calibration: temperatures, log loss and ECE before and after, reliability diagrams;
6. training curves of the five backbones and the best fusion model;
7. backbones alone, all results, and the other confusion matrices (a collapsed section).

``report.html`` is one self-contained page (inline CSS, figures as base64 PNGs);
``report.md`` links the PNGs beside it. The sections and their order are
:mod:`avsc.evaluation.report_sections`; the tables are laid out by :mod:`avsc.evaluation.tables`
and :mod:`avsc.evaluation.paper_tables` (Markdown and text with ``tabulate``).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avsc.config import MODALITY_SETS
from avsc.data.segments import average_segments
from avsc.evaluation.figures import Curves, Reliability, plot_confusion, plot_reliability, plot_training_curves
from avsc.evaluation.paper_tables import PUBLISHED, PUBLISHED_NOTE
from avsc.evaluation.report_sections import report_sections
from avsc.evaluation.tables import results_table
from avsc.labels import LABELS
from avsc.records.evaluation_result import EvaluationResult, Figures
from avsc.storage.files import atomic_path

__all__ = [
    "PUBLISHED",
    "results_table",
    "plot_confusion",
    "write_submission_csv",
    "render",
    "write_report",
    "summary_markdown",
]

TITLE = "Audio-visual scene classification: evaluation report"
_PUBLISHED_SENTENCE = PUBLISHED_NOTE[0].upper() + PUBLISHED_NOTE[1:]


# --- Files ---------------------------------------------------------------------------------


def write_submission_csv(path: str | Path, clip_ids: Sequence[str], probs: np.ndarray) -> Path:
    """DCASE submission CSV, tab-separated, one row per clip (or segment).

    Header ``filename  scene_label  <10 labels, alphabetical>``; ``filename`` is
    ``video/<clip_id>.mp4``, ``scene_label`` the most probable class.

    Args:
        probs: [shape=(n_clips, 10)] (calibrated) probabilities in :data:`LABELS` order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    lines = ["\t".join(["filename", "scene_label", *LABELS])]
    for clip_id, row in zip(clip_ids, probs, strict=True):
        lines.append("\t".join([f"video/{clip_id}.mp4", LABELS[int(row.argmax())], *(f"{p:.6f}" for p in row)]))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return Path(path)


# --- Markdown -----------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


def _markdown(result: EvaluationResult, *, images: bool = True) -> str:
    parts = [f"# {TITLE}", ""]
    for kind, title, content, note in report_sections(result):
        if kind in ("figures", "details") and not images:
            continue
        if kind == "details":
            parts += [f"<details><summary>{title}</summary>", ""]
            parts += [f"![{alt}]({name})" for name, alt in content] + ["", "</details>", ""]
            continue
        parts += [f"## {title}", ""]
        if note:
            parts += [note, ""]
        if kind == "table":
            parts += [_md_table(*content), ""]
        elif kind == "table2":
            parts += [_md_table(content[0], content[1]), ""]
        elif kind == "figures":
            parts += [f"![{alt}]({name})" for name, alt in content] + [""]
    return "\n".join(parts)


def summary_markdown(result: EvaluationResult) -> str:
    """The report's text and tables without figures (e.g. a Kubeflow Markdown artifact)."""
    return _markdown(result, images=False)


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 80em; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f3f7; }
table.provenance td { text-align: left; }
tr.published td { color: #555; background: #fafafa; }
.note { color: #555; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em; text-align: center; }
figure img { max-width: 100%; border: 1px solid #eee; }
figure.small img { max-width: 30em; }
details summary { cursor: pointer; font-weight: 600; margin: 1em 0; }
"""


def _html_table(header: list[str], rows: list[list[str]], *, published_from: int | None = None, css: str = "") -> str:
    out = [
        f"<table{f' class={css!r}' if css else ''}>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>",
        "<tbody>",
    ]
    for n, row in enumerate(rows):
        cls = ' class="published"' if published_from is not None and n >= published_from else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _img(report_dir: Path, name: str, alt: str, small: bool) -> str:
    data = base64.b64encode((report_dir / name).read_bytes()).decode("ascii")
    return (
        f'<figure{" class=small" if small else ""}><img alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'
    )


def _html(result: EvaluationResult, report_dir: Path) -> str:
    body = [f"<h1>{html.escape(TITLE)}</h1>"]
    for kind, title, content, note in report_sections(result):
        if kind == "details":
            body.append(f"<details><summary>{html.escape(title)}</summary>")
            body += [_img(report_dir, name, alt, True) for name, alt in content]
            body.append("</details>")
            continue
        body.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            body.append(f'<p class="note">{html.escape(note)}</p>')
        if kind == "table":
            body.append(_html_table(*content, css="provenance" if title == "Provenance" else ""))
        elif kind == "table2":
            header, rows, n_measured = content
            body.append(_html_table(header, rows, published_from=n_measured))
        elif kind == "figures":
            small = "confusion" in content[0][0]
            body += [_img(report_dir, name, alt, small) for name, alt in content]
    body.append(
        f'<p class="note">{html.escape(_PUBLISHED_SENTENCE)}: the paper (Tables I and II) and the '
        "DCASE 2021 Task 1B baseline; not comparable one-to-one with a run on other data.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>avsc evaluation report</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _submissions(result: EvaluationResult, report_dir: Path) -> None:
    """One DCASE submission CSV per fusion model (and one of whole clips on a segment run)."""
    for r in result.results:
        rows = result.rows[r.name]
        write_submission_csv(report_dir / r.submission_csv, list(rows.clip_ids), rows.calibrated)
        if r.clip_submission_csv is not None:
            parents, _, clip_probs = average_segments(list(rows.clip_ids), list(rows.labels), rows.calibrated)
            write_submission_csv(report_dir / r.clip_submission_csv, list(parents), clip_probs)


def _figures(result: EvaluationResult, report_dir: Path) -> Figures:
    """Confusion matrices, reliability diagrams per modality set (and of the backbones) and the
    training curves; the names of the last two."""
    for r in result.results:
        plot_confusion(
            np.asarray(r.confusion_matrix),
            report_dir / r.confusion_png,
            title=f"{r.method} {r.modalities} ({result.split}): "
            f"accuracy {100 * r.accuracy:.1f}%, log loss {r.log_loss:.3f}",
        )
    reliability = []
    for group in (*MODALITY_SETS, "backbones"):
        panels = [
            Reliability(rows.name, rows.y_true, rows.raw, rows.calibrated, rows.temperature)
            for rows in result.rows.values()
            if rows.group == group
        ]
        if panels:
            name = f"calibration-{group}.png"
            plot_reliability(panels, report_dir / name, title=f"{group} ({result.split} split)")
            reliability.append(name)
    curves = None
    if result.histories:
        curves = "training-curves.png"
        plot_training_curves(
            [Curves(h.name, [dict(e) for e in h.epochs], h.best_epoch) for h in result.histories], report_dir / curves
        )
    return Figures(tuple(reliability), curves)


def render(result: EvaluationResult, report_dir: str | Path) -> EvaluationResult:
    """Draw an evaluation: submission CSVs, figures, ``report.html`` and ``report.md``.

    Args:
        result: what :func:`avsc.evaluation.evaluate.score` returned (with its rows: a
            result read back from ``metrics.json`` has none to draw from).
        report_dir: an existing local folder; files of the same names are replaced.

    Returns:
        ``result`` with ``figures`` naming the figures drawn (what ``metrics.json`` records).

    Raises:
        ValueError: ``result`` lacks the rows of a fusion model (read back from a file).
    """
    missing = [r.name for r in result.results if r.name not in result.rows]
    if missing:
        raise ValueError(
            f"no scored rows for {', '.join(missing)}: render the result of score(), not one read from metrics.json"
        )
    report_dir = Path(report_dir)
    _submissions(result, report_dir)
    drawn = dataclasses.replace(result, figures=_figures(result, report_dir))
    write_report(drawn, report_dir)
    return drawn


def write_report(result: EvaluationResult, report_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` from an evaluation's scores.

    The PNGs the result names (``results[i].confusion_png``, ``figures``) must already be in
    ``report_dir``.

    Returns:
        The paths of ``report.html`` and ``report.md``.
    """
    report_dir = Path(report_dir)
    html_path, md_path = report_dir / "report.html", report_dir / "report.md"
    with atomic_path(html_path) as tmp:
        tmp.write_text(_html(result, report_dir), encoding="utf-8")
    with atomic_path(md_path) as tmp:
        tmp.write_text(_markdown(result), encoding="utf-8")
    return html_path, md_path
