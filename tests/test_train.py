"""Training on the real archives: accuracy, resume after a kill, reproducibility."""

import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import real_data_args

from mnist_tf import config
from mnist_tf.losses import SmoothedSparseCrossentropy, make_loss
from mnist_tf.optimizer import make_optimizer, make_schedule
from mnist_tf.resume import latest_state
from mnist_tf.train import read_history


def test_schedules_reach_their_peak_and_decay():
    onecycle = make_schedule(config.FAST.replace(epochs=1), steps_per_epoch=100)
    rates = [float(onecycle(s)) for s in (0, 20, 60, 99)]
    assert rates[0] == pytest.approx(config.FAST.learning_rate / 25, rel=1e-3)
    assert rates[1] == pytest.approx(config.FAST.learning_rate, rel=1e-3)
    assert rates[3] < rates[2] < rates[1]
    cosine = make_schedule(config.DEFAULT.replace(epochs=2, schedule="cosine"), steps_per_epoch=50)
    assert float(cosine(0)) == pytest.approx(config.DEFAULT.learning_rate) and float(cosine(100)) < 1e-6
    assert make_schedule(config.SEED, 100) == 0.01
    assert isinstance(make_optimizer(config.SEED, 100), keras.optimizers.SGD)


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


def test_fast_preset_reaches_98_5_percent_on_real_mnist(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.985, metrics["test_accuracy"]
    assert metrics["test"]["examples"] == 10000 and metrics["train_examples"] == 60000
    history = read_history(trained_run / "history.csv")
    assert len(history["loss"]) == config.FAST.epochs and history["loss"][-1] < history["loss"][0]


def cli(*args):
    return [sys.executable, "-m", "mnist_tf", *map(str, args)]


def real_args(run_dir, *extra):
    return [
        "train",
        "--preset",
        "fast",
        "--run-dir",
        run_dir,
        *real_data_args(),
        "--validation-examples",
        "1000",
        *extra,
    ]


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
    # Keras writes val_* columns of "NA" without validation data; they are left out, not a crash.
    history = read_history(run_dir / "history.csv")
    assert set(history) == {"accuracy", "loss"}
    assert (run_dir / "learning_curves.png").stat().st_size > 0
