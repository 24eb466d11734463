"""Stage 6: scores and the report.

- :mod:`avsc.evaluation.metrics`: the one implementation of the metrics (scikit-learn).
- :mod:`avsc.evaluation.predictions`: the fusion folder's ``predictions.parquet`` and ``fusion.json``.
- :mod:`avsc.evaluation.evaluate`: score fusion folders on a split, write ``metrics.json``.
- :mod:`avsc.evaluation.report`: Tables I-II, Figure 4, confusion matrices, DCASE CSVs.
"""
