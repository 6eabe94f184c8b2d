"""Temperature scaling: the fit, what it does to the calibration error, and calibration.json."""

import json

import numpy as np
import pytest

from mnist_tf.core.errors import UserError
from mnist_tf.core.types import DECLINE_BELOW
from mnist_tf.evaluation import calibration
from mnist_tf.evaluation.metrics import expected_calibration_error


def drawn(temperature: float, n: int = 20000, classes: int = 10, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): a model whose calibrated temperature is
    `temperature`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += 4  # a clear favourite, as a trained network has
    p = calibration.softmax(logits, temperature)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.4, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    logits, labels = drawn(true_temperature)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_already_calibrated_logits_keep_a_temperature_of_one():
    logits, labels = drawn(1.0, seed=1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)


def test_the_fit_is_the_minimum_of_the_negative_log_likelihood_and_is_deterministic():
    logits, labels = drawn(0.6, n=3000, seed=2)
    t = calibration.fit_temperature(logits, labels)
    assert calibration.fit_temperature(logits, labels) == t
    best = calibration.negative_log_likelihood(logits, labels, t)
    for other in (t * 0.99, t * 1.01, 1.0):
        assert calibration.negative_log_likelihood(logits, labels, other) > best


def test_calibrating_an_underconfident_model_lowers_its_calibration_error_and_keeps_its_answers():
    logits, labels = drawn(0.4, n=10000, seed=3)  # the plain softmax of these logits is underconfident
    fitted = calibration.calibrate(logits, labels, "synthetic", held_out=True)
    assert fitted.temperature < 1 and fitted.ece_before > 0.05 and fitted.ece_after < 0.02
    assert fitted.nll_after < fitted.nll_before and fitted.examples == 10000
    # Fitted on one half, the temperature calibrates the other half too.
    half = calibration.fit_temperature(logits[:5000], labels[:5000])
    before = expected_calibration_error(calibration.softmax(logits[5000:]), labels[5000:])
    after = expected_calibration_error(calibration.softmax(logits[5000:], half), labels[5000:])
    assert after < before / 3
    np.testing.assert_array_equal(calibration.softmax(logits, half).argmax(1), logits.argmax(1))


def test_softmax_with_a_temperature_is_the_softmax_of_scaled_logits_even_for_huge_logits():
    logits = np.array([[1000.0, 998.0, 0.0], [-5.0, 0.0, 5.0]])
    p = calibration.softmax(logits, 0.5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[1], np.exp([-10, 0, 10]) / np.exp([-10, 0, 10]).sum())
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-4)))


def test_calibration_json_round_trips_keeps_other_keys_and_missing_means_one(tmp_path):
    logits, labels = drawn(0.5, n=2000, seed=4)
    path = tmp_path / "calibration.json"
    assert calibration.read(path) is None and calibration.temperature(calibration.read(path)) == 1.0
    fitted = calibration.calibrate(logits, labels, "mnist train[55000:]", held_out=True)
    calibration.write(path, fitted)
    saved = json.loads(path.read_text())
    assert saved == fitted.to_dict() and set(saved) == {
        "temperature",
        "fitted_on",
        "held_out",
        "examples",
        "ece_before",
        "ece_after",
        "nll_before",
        "nll_after",
        "decline_evidence_below",
    }
    assert saved["decline_evidence_below"] is None and calibration.decline_below(calibration.read(path)) is None
    later = {**saved, "decline_evidence_below": 2.5, "later_field": 1}  # a later field: read, not refused
    path.write_text(json.dumps(later))
    assert calibration.temperature(calibration.read(path)) == fitted.temperature
    assert calibration.read(path)["later_field"] == 1 and calibration.decline_below(calibration.read(path)) == 2.5


@pytest.mark.parametrize("content", ["{not json", '{"temperature": -1}', '{"temperature": "0.5"}', "[]", "{}"])
def test_an_unreadable_calibration_is_one_user_error_naming_the_file(tmp_path, content):
    path = tmp_path / "calibration.json"
    path.write_text(content)
    with pytest.raises(UserError, match="calibration.json") as error:
        calibration.temperature(calibration.read(path))
    assert "\n" not in str(error.value)


def test_the_held_out_images_are_validation_then_unused_training_images_then_the_last_ones():
    from mnist_tf import config
    from mnist_tf.data.sources import calibration_split

    assert calibration_split(config.FAST.replace(validation_examples=5000)) == ("train[55000:]", True)
    assert calibration_split(config.FAST.replace(validation_examples=800)) == ("train[59200:]", True)
    unused = config.FAST.replace(validation_examples=0, train_examples=1000)
    assert calibration_split(unused) == ("train[55000:]", True)
    assert calibration_split(config.FAST.replace(validation_examples=0, train_examples=58000)) == (
        "train[58000:]",
        True,
    )
    assert calibration_split(config.FAST.replace(validation_examples=0, train_examples=None)) == (
        "train[55000:]",
        False,
    )
    assert calibration_split(config.FAST.replace(validation_examples=0), train_size=3000) == ("train[0:]", False)


def test_the_decline_threshold_is_capped_and_lowered_for_a_model_unsure_of_real_digits():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, 4000)
    sure_logits = rng.normal(0, 1, (4000, 10))
    sure_logits[np.arange(4000), labels] += 12  # every digit read right, and surely
    unsure_logits, unsure_labels = drawn(3.0, n=4000, seed=5)  # a model often wrong, and calibrated to say so
    assert calibration.calibrate(sure_logits, labels, "x", held_out=True).decline_evidence_below is None
    sure = calibration.calibrate(sure_logits, labels, "x", held_out=True, decline_below=DECLINE_BELOW)
    unsure = calibration.calibrate(unsure_logits, unsure_labels, "x", held_out=True, decline_below=DECLINE_BELOW)
    assert sure.decline_evidence_below == DECLINE_BELOW and unsure.decline_evidence_below < DECLINE_BELOW - 1
    weak = calibration.evidence(unsure_logits, unsure.temperature) < unsure.decline_evidence_below
    assert 0 < weak.mean() <= calibration.DECLINE_AT_MOST  # it declines no more real digits than that


def test_the_evidence_is_the_log_of_the_summed_exponentiated_scaled_logits_computed_stably():
    logits = np.array([[1000.0, 1000.0, -5.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(calibration.evidence(logits), [1000 + np.log(2 + np.exp(-1005.0)), np.log(3)])
    np.testing.assert_allclose(calibration.evidence(logits, 2.0), [500 + np.log(2 + np.exp(-502.5)), np.log(3)])
