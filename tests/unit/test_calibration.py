"""Calibrated confidence: temperature scaling, the `uncertain` threshold and the ECE."""

from __future__ import annotations

import numpy as np
import pytest

from handler.calibration import Calibration, apply_temperature
from train import calibrate


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_apply_temperature_is_the_softmax_of_scaled_logits():
    logits = np.array([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]])
    np.testing.assert_allclose(apply_temperature(logits, 1.0), _softmax(logits))
    np.testing.assert_allclose(apply_temperature(logits, 2.0), _softmax(logits / 2))
    np.testing.assert_allclose(apply_temperature(logits[0], 2.0), _softmax(logits[:1] / 2)[0])
    softened = apply_temperature(logits, 3.0)
    np.testing.assert_allclose(softened.sum(axis=1), 1.0)
    assert (softened.argmax(axis=1) == logits.argmax(axis=1)).all()
    assert (softened.max(axis=1) < _softmax(logits).max(axis=1)).all()
    # Huge logits do not overflow.
    assert np.isfinite(apply_temperature(np.array([[1e4, 0.0]]), 0.5)).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_apply_temperature_refuses_invalid_temperatures(bad):
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((1, 10)), bad)


def test_calibration_reads_the_metadata_and_defaults_to_identity():
    assert Calibration.from_metadata({}) == Calibration(1.0, 0.0, None)
    cal = Calibration.from_metadata(
        {
            "calibration": {
                "temperature": 1.5,
                "uncertain_below": 0.8,
                "target_error_among_confident": 0.005,
            }
        }
    )
    assert (cal.temperature, cal.uncertain_below) == (1.5, 0.8)
    np.testing.assert_allclose(cal.probabilities(np.array([[3.0, 0.0]])), _softmax([[2.0, 0.0]]))
    # Strictly below the threshold is uncertain; at the threshold it is not.
    assert cal.is_uncertain(0.79) is True and cal.is_uncertain(0.8) is False
    np.testing.assert_array_equal(cal.is_uncertain(np.array([0.5, 0.8, 0.9])), [True, False, False])
    with pytest.raises(ValueError):
        Calibration(temperature=1.0, uncertain_below=1.5)


def test_fit_temperature_recovers_a_known_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.5, size=(20_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(true_logits)])
    # A model 2.5x over-confident: its logits are the calibrated ones times 2.5.
    fitted = calibrate.fit_temperature(2.5 * true_logits, labels)
    assert fitted == pytest.approx(2.5, rel=0.05)
    before = calibrate.expected_calibration_error(
        _softmax(2.5 * true_logits).max(axis=1), (2.5 * true_logits).argmax(axis=1) == labels
    )
    after = calibrate.expected_calibration_error(
        apply_temperature(2.5 * true_logits, fitted).max(axis=1),
        true_logits.argmax(axis=1) == labels,
    )
    assert after < 0.01 < before


def test_weights_let_each_set_count_equally():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, size=(4000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(z)])
    # 3,000 rows over-confident by 2, 1,000 rows under-confident by 2.
    logits = np.concatenate([2 * z[:3000], 0.5 * z[3000:]])
    unweighted = calibrate.fit_temperature(logits, labels)
    weights = np.r_[np.full(3000, 1 / 3000), np.full(1000, 1 / 1000)]
    weighted = calibrate.fit_temperature(logits, labels, weights)
    assert weighted < unweighted  # the smaller, under-confident set pulls harder


def test_choose_threshold_meets_the_target_error_on_its_data():
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
    # Error 0 down to 0.96; 1/5 at 0.95; so for a 10 % target the cut is at 0.96 ...
    assert calibrate.choose_threshold(confidence, correct, 0.10) == 0.96
    # ... for 20 %: 0.8 keeps 7 answers with 1 wrong (14 %), 0.7 would give 2/8 = 25 %.
    assert calibrate.choose_threshold(confidence, correct, 0.20) == 0.8
    assert calibrate.choose_threshold(confidence, correct, 0.5) == 0.0  # nothing to flag
    assert calibrate.choose_threshold(confidence, ~correct, 0.0) == 1.0  # nothing qualifies
    chosen = calibrate.selective(confidence, correct, 0.8)
    assert chosen["flagged_share"] == pytest.approx(0.3)
    assert chosen["error_among_confident"] == pytest.approx(1 / 7)


def test_ties_are_flagged_together():
    confidence = np.array([0.9, 0.9, 0.9, 0.5])
    correct = np.array([True, False, True, True])
    # Cutting inside the tie would claim an error rate no threshold can deliver.
    assert calibrate.choose_threshold(confidence, correct, 0.0) == 1.0


def test_ece_of_a_hand_computed_example():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    # Bin (0.933, 1]: conf 0.95, acc 0.5; bin (0.533, 0.6]: conf 0.55, acc 1.0.
    assert calibrate.expected_calibration_error(confidence, correct) == pytest.approx(
        0.5 * 0.45 + 0.5 * 0.45
    )
    rows = calibrate.reliability(confidence, correct)
    assert len(rows) == calibrate.ECE_BINS and sum(r["n"] for r in rows) == 4


def test_fit_returns_the_metadata_block():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, size=(3000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(z)])
    block = calibrate.fit({"a": (2 * z[:2000], labels[:2000]), "b": (2 * z[2000:], labels[2000:])},
                          threshold_on="b", target_error=0.05)  # fmt: skip
    assert block["temperature"] == pytest.approx(2.0, rel=0.1)
    assert block["fitted_on"] == {"a": 2000, "b": 1000} and block["threshold_chosen_on"] == "b"
    cal = Calibration.from_metadata({"calibration": block})
    confidence = cal.probabilities(2 * z[2000:]).max(axis=1)
    kept = ~cal.is_uncertain(confidence)
    assert ((2 * z[2000:]).argmax(axis=1) != labels[2000:])[kept].mean() <= 0.05
