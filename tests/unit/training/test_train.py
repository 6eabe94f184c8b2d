"""Training on the real archives: accuracy, resume after a kill, reproducibility."""

import json

import keras
import pytest

from mnist_tf import config
from mnist_tf.modeling.optimizer import make_optimizer, make_schedule
from mnist_tf.training.fit import read_history


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


@pytest.mark.slow  # trains the fast preset on real MNIST (the shared trained run)
def test_fast_preset_reaches_98_5_percent_on_real_mnist(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.985, metrics["test_accuracy"]
    assert metrics["test"]["examples"] == 10000 and metrics["train_examples"] == 60000
    history = read_history(trained_run / "history.csv")
    assert len(history["loss"]) == config.FAST.epochs and history["loss"][-1] < history["loss"][0]
