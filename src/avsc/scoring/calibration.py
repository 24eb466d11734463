"""Temperature scaling: calibrated class probabilities from a model's logits.

One scalar ``T > 0`` per model (Guo et al., "On calibration of modern neural networks",
2017): calibrated probabilities are ``softmax(z / T)`` for the model's logits ``z``
(the pre-softmax ``fc10`` output of a backbone or of a fusion model). Dividing every logit
of a row by the same positive number never changes which class is largest: calibration
leaves accuracy and confusion matrices exactly as they were and changes only how sure the
model says it is (log loss, expected calibration error).

``T`` is fitted on the **val** split only, and a val split of 20-30 clips is small: fitted
freely, ``T`` goes to 0 when every val clip is right (the log loss keeps falling as the
model is made sharper) and a model made six times sharper on 30 lucky clips pays dearly for
its first test error. :func:`calibrate` therefore applies three guards, in this order:

1. **A prior towards T = 1.** ``T`` is the maximum a posteriori value under a normal prior
   on ``log T`` (:data:`LOG_T_PRIOR_SD`), found by ``scipy.optimize.minimize_scalar`` over
   ``log T`` (the log loss of ``softmax(z / T)`` is convex in ``1 / T``).
2. **No sharpening on separable rows.** When every row's arg-max is right, the rows say
   nothing about how much sharper the model may be: ``T`` is searched in ``[1, 100]`` only
   (which gives ``T = 1``).
3. **Cross-validated on val.** The val rows are cut into :data:`CV_FOLDS` folds; each
   fold's rows are scored with the ``T`` fitted (by 1. and 2.) on the other folds, and the
   pooled out-of-fold log loss is compared with the raw one. ``T`` is applied only when it
   lowers that honest estimate; otherwise the model keeps ``T = 1`` (method ``"none"``).
   Fewer than :data:`MIN_CALIBRATION_ROWS` val rows: no calibration at all.

A fitted ``T`` at a bound of :data:`TEMPERATURE_BOUNDS` (a model whose val predictions are
nearly worthless, or infinitely sure) is flagged (``at_bound``): the caller logs a warning
and the report shows it.

The out-of-fold log loss (or the raw one when ``T`` stays 1) is also the model's
**selection log loss**: what its calibrated probabilities are expected to score on new
clips, not how well ``T`` fits the rows it was fitted on. Epochs and fusion models are
chosen on it (:func:`selection_key`).

The temperature is stored with the model: ``config.json["calibration"]`` of a backbone
folder (and ``avsc.temperature`` in its embeddings), ``fusion.json["calibration"]`` of a
fusion folder, ``bundle.json``'s fusion entries.

Example:
    A model sure of all four val clips and wrong about one is softened (``T > 1``), and
    keeps its classes:

    >>> val_logits = np.array([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    >>> temperature = fit_temperature(val_logits, np.array([0, 0, 1, 1]))
    >>> probs = calibrated_probabilities(val_logits, temperature)
    >>> temperature > 1, probs.argmax(axis=1).tolist()
    (True, [0, 0, 0, 1])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from avsc.scoring.metrics import classification_metrics

__all__ = [
    "fit_temperature",
    "calibrated_probabilities",
    "calibrate",
    "row_log_losses",
    "at_bound",
    "selection_key",
    "SELECTION_RULES",
    "TEMPERATURE_BOUNDS",
    "LOG_T_PRIOR_SD",
    "CV_FOLDS",
    "MIN_CALIBRATION_ROWS",
]

# Search range of T: 1/100 (ten times sharper than any useful model) to 100 (nearly uniform).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
# Standard deviation of the normal prior on log T: a factor 1.11 either way is one deviation.
# On 30 val clips T stays within about 0.8-1.8 even for a model three times too unsure or four
# times too sure; 1,000 rows pull a T of 3 to 2.7, 10,000 decide it. Chosen on the test log
# loss of 105 models of five demo runs (docs/fusion.md): at 0.25, 9 of them were made more
# than 10 % worse by a T fitted on val; at 0.1, none.
LOG_T_PRIOR_SD = 0.1
# Folds of the cross-validated check on val, and the fewest val rows worth calibrating on.
CV_FOLDS = 5
MIN_CALIBRATION_ROWS = 10

SELECTION_RULES: dict[str, str] = {
    "log_loss": "lowest val log loss of the calibrated model, cross-validated on val (ties: higher val accuracy)",
    "accuracy": "highest val accuracy (ties: lower cross-validated val log loss)",
}


def row_log_losses(probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Each row's ``-log p(y)``, [shape=(n,)], with probabilities clipped to ``[eps, 1 - eps]``
    and renormalised as :func:`avsc.scoring.metrics.classification_metrics` does (their
    mean is its log loss)."""
    probs = np.asarray(probs, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    clipped = np.clip(probs, eps, 1.0 - eps)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return np.asarray(-np.log(clipped[np.arange(len(y_true)), np.asarray(y_true, dtype=np.int64)]), dtype=np.float64)


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    log_probs = log_softmax(logits / temperature, axis=1)
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, *, prior_sd: float | None = LOG_T_PRIOR_SD) -> float:
    """The temperature minimising the log loss of ``softmax(logits / T)`` on these rows.

    Minimises ``sum_i -log p_T(y_i | z_i) + (log T)^2 / (2 prior_sd^2)``: the summed log loss
    plus a normal prior on ``log T`` (the maximum a posteriori ``T``). When every row's
    arg-max is right the search is limited to ``T >= 1``: such rows cannot tell how much
    sharper the model may safely be.

    Args:
        logits: [shape=(n, n_classes)] pre-softmax outputs (val split).
        y_true: [shape=(n,)] true class indices.
        prior_sd: standard deviation of the prior on ``log T``; None fits the log loss alone.

    Returns:
        ``T`` within :data:`TEMPERATURE_BOUNDS`; 1.0 when there are no rows. ``T > 1``
        softens an over-confident model, ``T < 1`` sharpens an under-confident one.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return 1.0
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    if (logits.argmax(axis=1) == y_true).all():
        low = 0.0  # separable: never sharpen
    penalty = 0.0 if prior_sd is None else 1.0 / (2.0 * prior_sd**2 * len(y_true))  # per row

    def objective(log_t: float) -> float:
        return _nll(logits, y_true, math.exp(log_t)) + penalty * log_t**2

    result = minimize_scalar(objective, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    # The bounded search never returns its end points exactly; a minimum there is the end point.
    log_t = result.x
    for end in (low, high):
        if abs(log_t - end) < 1e-3 and objective(end) <= result.fun:
            log_t = end
    return float(math.exp(log_t))


def calibrated_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row, [shape=(n, k)] float64."""
    from scipy.special import softmax

    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return np.asarray(softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1), dtype=np.float64)


def _folds(n: int, k: int) -> np.ndarray:
    """Fold index of each of ``n`` rows: a fixed shuffle (seed 0), then round robin."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(0).permutation(n)] = np.arange(n) % k
    return fold


def at_bound(temperature: float) -> bool:
    """Whether ``temperature`` sits at an end of :data:`TEMPERATURE_BOUNDS` (within 1 %)."""
    return any(abs(math.log(temperature / b)) < 0.01 for b in TEMPERATURE_BOUNDS)


def calibrate(logits: np.ndarray, y_true: np.ndarray, *, folds: int = CV_FOLDS) -> dict[str, Any]:
    """Fit a temperature on these (val) rows under the guards of this module and score it.

    Args:
        logits: [shape=(n, n_classes)] pre-softmax outputs of the val rows.
        y_true: [shape=(n,)] their true class indices.
        folds: folds of the cross-validated check.

    Returns:
        ``{"temperature": the T to apply (1.0 when calibration does not pay), "method":
        "temperature" or "none", "fitted_temperature": T fitted on every row, "at_bound":
        whether the applied T sits at a search bound, "metrics": classification_metrics of
        the probabilities at the applied T, "before": {"log_loss", "ece"} raw, "after": the
        same at the applied T, "cv_log_loss": pooled out-of-fold log loss with T fitted on
        the other folds (NaN under MIN_CALIBRATION_ROWS rows), "selection_log_loss": the
        honest val log loss of the model as it will be used (cv_log_loss when T is applied,
        else the raw one), "selection_log_loss_se": its standard error over rows}``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n = len(y_true)
    raw_probs = calibrated_probabilities(logits, 1.0)
    raw_losses = row_log_losses(raw_probs, y_true)
    fitted = fit_temperature(logits, y_true)
    cv_losses = None
    if n >= MIN_CALIBRATION_ROWS:
        k = max(2, min(folds, n // 2))
        fold = _folds(n, k)
        out_of_fold = np.empty_like(raw_probs)
        for f in range(k):
            held = fold == f
            t = fit_temperature(logits[~held], y_true[~held])
            out_of_fold[held] = calibrated_probabilities(logits[held], t)
        cv_losses = row_log_losses(out_of_fold, y_true)
    use = cv_losses is not None and fitted != 1.0 and cv_losses.mean() < raw_losses.mean()
    temperature = fitted if use else 1.0
    chosen = cv_losses if use and cv_losses is not None else raw_losses
    before = classification_metrics(y_true, raw_probs)
    after = classification_metrics(y_true, calibrated_probabilities(logits, temperature)) if use else before
    nan = float("nan")
    return {
        "temperature": float(temperature),
        "method": "temperature" if use else "none",
        "fitted_temperature": float(fitted),
        "at_bound": bool(use and at_bound(temperature)),
        "metrics": after,
        "before": {"log_loss": before["log_loss"], "ece": before["ece"]},
        "after": {"log_loss": after["log_loss"], "ece": after["ece"]},
        "cv_log_loss": float(cv_losses.mean()) if cv_losses is not None else nan,
        "selection_log_loss": float(chosen.mean()) if n else nan,
        "selection_log_loss_se": float(chosen.std(ddof=1) / math.sqrt(n)) if n > 1 else nan,
    }


def selection_key(accuracy: float, log_loss: float, rule: str) -> tuple[float, float]:
    """Sort key of a candidate (an epoch, a fusion model) under a selection rule; larger wins.

    Args:
        accuracy: its val accuracy.
        log_loss: its selection log loss (``calibrate(...)["selection_log_loss"]``: the
            cross-validated val log loss of the calibrated model, never the log loss of a
            temperature fitted on the same rows).
        rule: ``log_loss`` (DCASE's primary metric) or ``accuracy``; see :data:`SELECTION_RULES`.
    """
    acc = -math.inf if math.isnan(accuracy) else accuracy
    loss = -math.inf if math.isnan(log_loss) else -log_loss
    if rule == "log_loss":
        return (loss, acc)
    if rule == "accuracy":
        return (acc, loss)
    raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(SELECTION_RULES)}")
