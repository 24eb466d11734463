"""Calibration and the metrics beside it: temperature scaling, ECE, Wilson intervals, selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss

from avsc.scoring.calibration import (
    TEMPERATURE_BOUNDS,
    calibrate,
    calibrated_probabilities,
    fit_temperature,
    selection_key,
)
from avsc.scoring.metrics import (
    classification_metrics,
    equal_count_reliability,
    expected_calibration_error,
    reliability_bins,
    softmax,
    wilson_interval,
)


def _calibrated_model(rng, n: int, k: int = 10, scale: float = 2.0):
    """Logits of a perfectly calibrated model: labels are drawn from softmax(logits)."""
    logits = scale * rng.normal(size=(n, k))
    probs = softmax(logits)
    y = np.array([rng.choice(k, p=row) for row in probs])
    return logits, y


def test_temperature_scaling_repairs_an_over_confident_model(rng):
    logits, y = _calibrated_model(rng, 4000)
    over = 4.0 * logits  # the same ranking, four times too sure
    val, test = slice(0, 2000), slice(2000, None)
    temperature = fit_temperature(over[val], y[val])
    assert temperature == pytest.approx(4.0, rel=0.1)

    before, after = softmax(over[test]), calibrated_probabilities(over[test], temperature)
    assert log_loss(y[test], after, labels=range(10)) < log_loss(y[test], before, labels=range(10)) - 0.5
    assert expected_calibration_error(y[test], after) < expected_calibration_error(y[test], before) / 3
    # Argmax invariance: accuracy and confusion matrix do not move.
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))
    m_before, m_after = classification_metrics(y[test], before), classification_metrics(y[test], after)
    assert m_after["accuracy"] == m_before["accuracy"]
    assert m_after["confusion_matrix"] == m_before["confusion_matrix"]


def test_temperature_below_one_sharpens_an_under_confident_model(rng):
    logits, y = _calibrated_model(rng, 3000)
    assert fit_temperature(logits / 3.0, y) == pytest.approx(1 / 3, rel=0.1)


def test_fit_temperature_minimises_the_log_loss(rng):
    logits, y = _calibrated_model(rng, 500, scale=3.0)
    logits = 2.5 * logits
    best = fit_temperature(logits, y, prior_sd=None)
    nll = lambda t: log_loss(y, calibrated_probabilities(logits, t), labels=range(10))  # noqa: E731
    assert nll(best) <= min(nll(best * 0.9), nll(best * 1.1), nll(1.0))


def test_fit_temperature_edge_cases():
    assert fit_temperature(np.zeros((0, 10)), np.zeros(0, int)) == 1.0
    # Every row right: the log loss alone falls all the way as T -> 0, so these rows cannot
    # tell how much sharper the model may be: the search stays at T >= 1 (here T = 1).
    logits = np.eye(3)[[0, 1, 2]] * 2.0
    y = np.array([0, 1, 2])
    assert fit_temperature(logits, y, prior_sd=None) == 1.0
    assert fit_temperature(logits, y) == 1.0
    # One row wrong: sharpening is allowed again (the log loss has an interior minimum).
    y_wrong = np.array([0, 1, 0])
    assert fit_temperature(3 * logits, y_wrong, prior_sd=None) > 1.0


def _lucky_val(rng, n_val: int = 30, n_test: int = 300, scale: float = 8.0):
    """A 10-class model, calibrated on its own data, whose small val set it happens to get all right."""
    while True:
        logits, y = _calibrated_model(rng, n_val + n_test, scale=scale)
        if (logits[:n_val].argmax(1) == y[:n_val]).all():
            return logits[:n_val], y[:n_val], logits[n_val:], y[n_val:]


def test_a_separable_val_set_never_sharpens(rng):
    # The failure of plain temperature scaling on 30 val clips that are all right: fitted
    # freely, T goes to its lower bound and doubles the test log loss.
    val_logits, val_y, test_logits, test_y = _lucky_val(rng)
    assert fit_temperature(val_logits, val_y, prior_sd=None) == 1.0
    result = calibrate(val_logits, val_y)
    assert result["temperature"] == 1.0 and result["method"] == "none" and not result["at_bound"]
    raw = log_loss(test_y, softmax(test_logits), labels=range(10))
    calibrated = log_loss(test_y, calibrated_probabilities(test_logits, result["temperature"]), labels=range(10))
    assert calibrated == pytest.approx(raw)


def test_calibration_cannot_hurt_much_on_small_val_sets(rng):
    """Over 60 small val sets (30 rows) of models 1/3 to 4 times too sure, calibration raises the
    test log loss by more than 10 % in none, and lowers it on average; the 30-row val sets
    that decide it are as small as the demo data's."""
    ratios = []
    for trial in range(60):
        scale = [1 / 3, 1.0, 2.0, 4.0][trial % 4]
        logits, y = _calibrated_model(rng, 30 + 500)
        logits = scale * logits
        result = calibrate(logits[:30], y[:30])
        raw = log_loss(y[30:], softmax(logits[30:]), labels=range(10))
        cal = log_loss(y[30:], calibrated_probabilities(logits[30:], result["temperature"]), labels=range(10))
        ratios.append(cal / raw)
    assert max(ratios) < 1.10, max(ratios)
    assert np.mean(ratios) < 0.95


def test_thirty_val_rows_cannot_sharpen_much(rng):
    """Sharpening is what hurt on test when val was easier than test (docs/fusion.md): on 30
    rows of a model three times too unsure, the prior lets T fall to 0.83-0.93 (measured over
    40 draws), never below 0.8 (with the earlier width, sd 0.25: 0.41-0.68). A model four
    times too sure is still softened (T > 1)."""
    for _ in range(20):
        logits, y = _calibrated_model(rng, 30)
        assert 0.8 <= fit_temperature(logits / 3.0, y) < 1.0
        assert fit_temperature(4.0 * logits, y) > 1.1


def test_calibrate_applies_a_temperature_only_when_cross_validation_says_it_pays(rng):
    # 2,000 rows: enough for the data to outweigh the prior (on 400 it holds T at about 3.1).
    logits, y = _calibrated_model(rng, 2000)
    over = calibrate(4.0 * logits, y)
    assert over["method"] == "temperature" and over["temperature"] == pytest.approx(4.0, rel=0.15)
    assert over["cv_log_loss"] < over["before"]["log_loss"]
    assert over["selection_log_loss"] == over["cv_log_loss"]
    # Too few rows to check anything: left raw.
    few = calibrate(4.0 * logits[:9], y[:9])
    assert few["method"] == "none" and few["temperature"] == 1.0 and math.isnan(few["cv_log_loss"])
    assert few["selection_log_loss"] == pytest.approx(few["before"]["log_loss"])


def test_a_temperature_at_its_bound_is_flagged(rng):
    # Sure and unrelated to the labels: only an almost uniform output is honest. (5,000 rows:
    # on 2,000 the prior on log T holds T at 96-100.)
    logits = 50.0 * rng.normal(size=(5000, 10))
    y = rng.integers(0, 10, size=5000)
    result = calibrate(logits, y)
    assert result["method"] == "temperature" and result["at_bound"]
    assert result["temperature"] == pytest.approx(TEMPERATURE_BOUNDS[1], rel=0.01)


def test_the_prior_hardly_moves_a_well_determined_temperature(rng):
    # 10,000 rows: within 2 % of the unregularised fit (on 1,000 rows the prior keeps T 9 % nearer 1).
    logits, y = _calibrated_model(rng, 10000)
    with_prior, without = fit_temperature(3.0 * logits, y), fit_temperature(3.0 * logits, y, prior_sd=None)
    assert with_prior == pytest.approx(without, rel=0.02)
    with pytest.raises(ValueError, match="positive"):
        calibrated_probabilities(logits, 0.0)


def test_calibrate_reports_before_and_after(rng):
    logits, y = _calibrated_model(rng, 1000)
    result = calibrate(5.0 * logits, y)
    assert result["after"]["log_loss"] < result["before"]["log_loss"]
    assert result["after"]["ece"] < result["before"]["ece"]
    assert result["metrics"]["log_loss"] == result["after"]["log_loss"]
    assert result["before"]["log_loss"] == pytest.approx(log_loss(y, softmax(5.0 * logits), labels=range(10)))


# --- ECE and reliability, by hand -------------------------------------------------------------


def test_expected_calibration_error_by_hand():
    # Confidence 0.9 twice (one right, one wrong): |0.5 - 0.9| = 0.4 on half the rows;
    # confidence 0.6 twice (both right): |1.0 - 0.6| = 0.4 on the other half. ECE = 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.4)
    bins = reliability_bins(y, probs)
    assert sum(bins["count"]) == 4 and len(bins["edges"]) == 16
    filled = [i for i, c in enumerate(bins["count"]) if c]
    assert [bins["accuracy"][i] for i in filled] == [1.0, 0.5]
    assert [bins["confidence"][i] for i in filled] == pytest.approx([0.6, 0.9])
    # A model sure and always right is perfectly calibrated.
    assert expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert math.isnan(expected_calibration_error(np.zeros(0, int), np.zeros((0, 2))))


def test_equal_count_reliability_by_hand():
    # Six rows, confidences 0.5 .. 1.0; two bins of three rows each, in increasing confidence.
    confidence = np.array([0.9, 0.5, 0.6, 1.0, 0.7, 0.8])
    probs = np.stack([confidence, 1 - confidence], axis=1)
    y = np.array([0, 1, 0, 0, 0, 1])  # rows 0.5 and 0.8 wrong
    bins = equal_count_reliability(y, probs, n_bins=2)
    assert bins["count"] == [3, 3]
    assert bins["confidence"] == pytest.approx([0.6, 0.9])
    assert bins["accuracy"] == pytest.approx([2 / 3, 2 / 3])
    assert bins["low"][0] == pytest.approx(wilson_interval(2, 3)[0])
    assert bins["edges"] == [[0.5, 0.7], [0.8, 1.0]]
    # By default about ten rows a bin: 30 test clips give 3 bins of 10, never 15 bins of 2.
    rows = np.random.default_rng(0).dirichlet(np.ones(10), size=30)
    assert equal_count_reliability(np.zeros(30, int), rows)["count"] == [10, 10, 10]
    assert equal_count_reliability(np.zeros(0, int), np.zeros((0, 10)))["count"] == []


# --- Wilson intervals --------------------------------------------------------------------------


def test_wilson_interval_against_hand_computation():
    # p = 0.7, n = 10, z = 1.959964: centre = (p + z^2 / 2n) / (1 + z^2 / n) = 0.644499...,
    # half width = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n) = 0.247721...
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.396778, abs=1e-6)
    assert high == pytest.approx(0.892209, abs=1e-6)
    # 0 of 3: [0, z^2 / (n + z^2)] = [0, 0.561497]; 3 of 3 mirrors it.
    assert wilson_interval(0, 3) == pytest.approx((0.0, 0.561497), abs=1e-6)
    assert wilson_interval(3, 3) == pytest.approx((0.438503, 1.0), abs=1e-6)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_classification_metrics_carry_counts_and_intervals():
    y = np.array([0, 0, 0, 1])
    probs = np.array([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])
    m = classification_metrics(y, probs, labels=("a", "b"))
    assert m["n_correct"] == 3 and m["accuracy"] == 0.75
    assert m["accuracy_ci"] == pytest.approx(list(wilson_interval(3, 4)))
    assert m["per_class_correct"] == {"a": 2, "b": 1}
    assert m["per_class_ci"]["a"] == pytest.approx(list(wilson_interval(2, 3)))
    assert 0.0 < m["ece"] < 1.0


# --- Selection rules ---------------------------------------------------------------------------


def test_selection_key_orders_by_the_chosen_rule():
    sharp = (0.90, 0.60)  # accuracy, cross-validated log loss
    careful = (0.88, 0.40)
    by_loss = max([sharp, careful], key=lambda c: selection_key(*c, "log_loss"))
    by_acc = max([sharp, careful], key=lambda c: selection_key(*c, "accuracy"))
    assert by_loss == careful and by_acc == sharp
    # Ties go to the other metric; NaN never wins.
    assert selection_key(0.9, 0.5, "accuracy") > selection_key(0.9, 0.6, "accuracy")
    assert selection_key(0.5, 0.5, "log_loss") > selection_key(0.9, float("nan"), "log_loss")
    with pytest.raises(ValueError, match="selection rule"):
        selection_key(0.5, 0.5, "f1")
