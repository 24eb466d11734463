"""Stage 6: calibration, scores and the report.

Scoring itself (metrics, calibration, selection rules) is :mod:`avsc.scoring`; the fusion
folder's ``predictions.parquet`` is :mod:`avsc.records.predictions`.

- :mod:`avsc.evaluation.evaluate`: :func:`~avsc.evaluation.evaluate.score` fusion folders on a split
  (an :class:`avsc.records.EvaluationResult`, nothing drawn); ``evaluate``: score, draw, write
  ``metrics.json`` and the report.
- :mod:`avsc.evaluation.model_scores`: the scores of one fusion folder or backbone.
- :mod:`avsc.evaluation.selection`: the best fusion model, chosen on val.
- :mod:`avsc.evaluation.provenance`: where the numbers came from (dataset, settings, version, run).
- :mod:`avsc.evaluation.paper_tables`, :mod:`avsc.evaluation.tables`,
  :mod:`avsc.evaluation.figures`: Tables I-II beside the published numbers; the other tables;
  confusion matrices, reliability diagrams, training curves.
- :mod:`avsc.evaluation.report`: ``render`` an evaluation result: ``report.html``, ``report.md``,
  the figures, DCASE CSVs; the Markdown summary. Its sections, in order:
  :mod:`avsc.evaluation.report_sections`.
"""
