"""Temperature scaling: calibrated class probabilities from a model's logits.

One scalar ``T > 0`` per model (Guo et al., "On calibration of modern neural networks",
2017): calibrated probabilities are ``softmax(z / T)`` for the model's logits ``z``
(the pre-softmax ``fc10`` output of a backbone or of a fusion model). ``T`` is fitted on
the **val** split only, by minimising the multi-class log loss (negative log-likelihood)
over ``log T`` with ``scipy.optimize.minimize_scalar``; the log loss of ``softmax(z / T)``
is convex in ``1 / T``, so this one-dimensional search finds the global minimum within its
bounds. A weak standard-normal prior on ``log T`` (:data:`LOG_T_PRIOR_SD`) is added to the
summed log loss: it moves ``T`` by little once the val split has more than a few dozen
clips, and it keeps ``T`` finite when every val clip is classified right (where the log
loss alone keeps falling as ``T -> 0``, and a model made 100 times sharper on 30 lucky
val clips would pay dearly for its first test error). Dividing every logit of a row by the same positive number never changes which
class is largest: calibration leaves accuracy and confusion matrices exactly as they were
and changes only how sure the model says it is (log loss, expected calibration error).

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

from avsc.evaluation.metrics import classification_metrics

__all__ = [
    "fit_temperature",
    "calibrated_probabilities",
    "calibrate",
    "selection_key",
    "SELECTION_RULES",
    "TEMPERATURE_BOUNDS",
    "LOG_T_PRIOR_SD",
]

# Search range of T: 1/100 (ten times sharper than any useful model) to 100 (nearly uniform).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
# Standard deviation of the normal prior on log T (a factor e either way is one deviation).
LOG_T_PRIOR_SD = 1.0

SELECTION_RULES: dict[str, str] = {
    "log_loss": "lowest val log loss after temperature scaling (ties: higher val accuracy)",
    "accuracy": "highest val accuracy (ties: lower val log loss after temperature scaling)",
}


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    log_probs = log_softmax(logits / temperature, axis=1)
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, *,
                    prior_sd: float | None = LOG_T_PRIOR_SD) -> float:
    """The temperature minimising the log loss of ``softmax(logits / T)`` on these rows.

    Minimises ``sum_i -log p_T(y_i | z_i) + (log T)^2 / (2 prior_sd^2)``: the summed log loss
    plus a normal prior on ``log T`` (the maximum a posteriori ``T``).

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
    penalty = 0.0 if prior_sd is None else 1.0 / (2.0 * prior_sd ** 2 * len(y_true))  # per row

    def objective(log_t: float) -> float:
        return _nll(logits, y_true, math.exp(log_t)) + penalty * log_t ** 2

    result = minimize_scalar(objective, bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))


def calibrated_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row, [shape=(n, k)] float64."""
    from scipy.special import softmax

    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def calibrate(logits: np.ndarray, y_true: np.ndarray) -> dict[str, Any]:
    """Fit a temperature on these (val) rows and score the model before and after.

    Returns:
        ``{"temperature", "metrics": classification_metrics of the calibrated
        probabilities, "before": {"log_loss", "ece"}, "after": {"log_loss", "ece"}}``.
    """
    temperature = fit_temperature(logits, y_true)
    before = classification_metrics(y_true, calibrated_probabilities(logits, 1.0))
    after = classification_metrics(y_true, calibrated_probabilities(logits, temperature))
    return {"temperature": temperature, "metrics": after,
            "before": {"log_loss": before["log_loss"], "ece": before["ece"]},
            "after": {"log_loss": after["log_loss"], "ece": after["ece"]}}


def selection_key(accuracy: float, log_loss: float, rule: str) -> tuple[float, float]:
    """Sort key of a candidate (an epoch, a fusion model) under a selection rule; larger wins.

    Args:
        accuracy: its val accuracy.
        log_loss: its val log loss after temperature scaling.
        rule: ``log_loss`` (DCASE's primary metric) or ``accuracy``; see :data:`SELECTION_RULES`.
    """
    acc = -math.inf if math.isnan(accuracy) else accuracy
    loss = -math.inf if math.isnan(log_loss) else -log_loss
    if rule == "log_loss":
        return (loss, acc)
    if rule == "accuracy":
        return (acc, loss)
    raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(SELECTION_RULES)}")
