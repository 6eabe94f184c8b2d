"""Training on the real archives: accuracy, resume after a kill, reproducibility."""

import json
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
from helpers import cli, real_args

from mnist_tf import config
from mnist_tf.modeling.losses import SmoothedSparseCrossentropy, make_loss
from mnist_tf.training.fit import read_history
from mnist_tf.training.resume import latest_state


@pytest.mark.slow
def test_label_smoothing_is_keras_crossentropy_against_smoothed_one_hot_targets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 10)).astype("float32") * 4
    labels = rng.integers(0, 10, size=64)
    one_hot = np.eye(10, dtype="float32")[labels]
    for smoothing in (0.0, 0.1, 0.3):
        ours = float(SmoothedSparseCrossentropy(smoothing)(labels, logits))
        keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
        assert ours == pytest.approx(float(keras_loss(one_hot, logits)), rel=1e-5)
    plain = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits))
    assert float(make_loss(config.DEFAULT.replace(label_smoothing=0.0))(labels, logits)) == pytest.approx(plain)
    assert float(make_loss(config.DEFAULT.replace(label_smoothing=0.1))(labels, logits)) != pytest.approx(plain)


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")  # prepared once, so the subprocesses need no preparation
def test_resume_after_sigkill_continues_from_the_saved_epoch(tmp_path):
    run_dir = tmp_path / "run"
    args = real_args(run_dir, "--train-examples", "5000", "--epochs", "4", "--batch-size", "64")
    proc = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if latest_state(run_dir / "backup"):  # epoch 1 is saved
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = latest_state(run_dir / "backup")[1]
    assert 1 <= done < 4 and not (run_dir / "metrics.json").exists()

    result = subprocess.run(cli(*args), check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"after epoch {done}" in result.stderr
    assert "Epoch 1/4" not in result.stdout  # it did not start over
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["resumed_after_epoch"] == done
    assert metrics["test_accuracy"] > 0.9


def weights_of(run_dir):
    import keras

    return keras.models.load_model(run_dir / "model.keras").get_weights()


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_deterministic_runs_with_the_same_seed_are_identical(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run_dir in runs:
        args = real_args(run_dir, "--train-examples", "1000", "--epochs", "1", "--augment", "--deterministic")
        result = subprocess.run(cli(*args), check=False, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
    for wa, wb in zip(weights_of(runs[0]), weights_of(runs[1])):
        assert np.array_equal(wa, wb)


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_training_without_a_validation_split_finishes_and_reports(tmp_path):
    run_dir = tmp_path / "run"
    args = real_args(
        run_dir, "--train-examples", "1000", "--epochs", "1", "--validation-examples", "0"
    )  # last one wins
    result = subprocess.run(cli(*args), check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation_examples"] == 0 and metrics["test"]["examples"] == 10000
    # Calibrated on training images this run did not use (it used the first 1,000): held out after all.
    fitted = json.loads((run_dir / "calibration.json").read_text())
    assert (fitted["fitted_on"], fitted["held_out"], fitted["examples"]) == ("mnist train[55000:]", True, 5000)
    assert metrics["calibration"]["temperature"] == fitted["temperature"]
    assert f"calibration: temperature {fitted['temperature']:.2f} on 5,000 held-out images" in result.stdout
    # Keras writes val_* columns of "NA" without validation data; they are left out, not a crash.
    history = read_history(run_dir / "history.csv")
    assert set(history) == {"accuracy", "loss"}
    assert (run_dir / "learning_curves.png").stat().st_size > 0
