"""Stage 6: calibration, scores and the report.

- :mod:`avsc.evaluation.metrics`: the one implementation of the metrics (scikit-learn, SciPy):
  accuracy with Wilson intervals, log loss, expected calibration error, confusion matrix.
- :mod:`avsc.evaluation.calibration`: temperature scaling fitted on val; selection rules.
- :mod:`avsc.evaluation.predictions`: the fusion folder's ``predictions.parquet`` and ``fusion.json``.
- :mod:`avsc.evaluation.evaluate`: score fusion folders on a split, write ``metrics.json`` and the report.
- :mod:`avsc.evaluation.provenance`: where the numbers came from (dataset, settings, version, run).
- :mod:`avsc.evaluation.tables`, :mod:`avsc.evaluation.figures`: Tables I-II and the others;
  confusion matrices, reliability diagrams, training curves.
- :mod:`avsc.evaluation.report`: ``report.html``, ``report.md``, the Markdown summary, DCASE CSVs.
"""
