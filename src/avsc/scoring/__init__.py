"""Pure scoring, shared by training and evaluation: no files, no stages, arrays in, numbers out.

- :mod:`avsc.scoring.metrics`: the one implementation of the metrics (scikit-learn, SciPy):
  accuracy with Wilson intervals, log loss, expected calibration error, confusion matrix,
  equal-count reliability bins.
- :mod:`avsc.scoring.calibration`: temperature scaling fitted on val under a prior,
  cross-validated; the selection rules that pick an epoch or a model.
"""
