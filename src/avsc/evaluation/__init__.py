"""Stage 6: calibration, scores and the report.

Scoring itself (metrics, calibration, selection rules) is :mod:`avsc.scoring`; the fusion
folder's ``predictions.parquet`` is :mod:`avsc.records.predictions`.

- :mod:`avsc.evaluation.evaluate`: score fusion folders on a split, write ``metrics.json`` and the report.
- :mod:`avsc.evaluation.provenance`: where the numbers came from (dataset, settings, version, run).
- :mod:`avsc.evaluation.tables`, :mod:`avsc.evaluation.figures`: Tables I-II and the others;
  confusion matrices, reliability diagrams, training curves.
- :mod:`avsc.evaluation.report`: ``report.html``, ``report.md``, the Markdown summary, DCASE CSVs.
"""
