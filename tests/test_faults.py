"""Faults a run must survive: divergence, interruption, half-written files."""

import json
import math
import signal
import subprocess
import time

import pytest

from mnist_tf import config
from mnist_tf.model import build_model
from mnist_tf import train as train_module
from mnist_tf.train import BestCheckpoint

from test_cli import QUICK, assert_one_line_error, run, sha256
from test_train import cli, real_args


def test_nan_loss_stops_with_one_line_and_nonzero_exit(tmp_path, mock_mnist, monkeypatch):
    # No learning rate the CLI accepts diverges reliably (BatchNorm absorbs it), so force one.
    monkeypatch.setattr(train_module, "make_schedule", lambda cfg, steps: 1e30)
    run_dir = tmp_path / "run"
    result = run("train", *QUICK, "--run-dir", run_dir)
    assert_one_line_error(result, "loss became", "lower --learning-rate")
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "model.keras").exists()  # nothing diverged was saved as a checkpoint


def test_checkpoint_ignores_diverged_epochs_and_keeps_the_best(tmp_path):
    path = tmp_path / "model.keras"
    callback = BestCheckpoint(path, monitor="val_accuracy")
    callback.set_model(build_model(config.FAST))
    callback.on_epoch_end(0, {"loss": 0.3, "val_accuracy": 0.90})
    good = sha256(path)
    callback.on_epoch_end(1, {"loss": math.nan, "val_accuracy": 0.95})
    callback.on_epoch_end(2, {"loss": 0.2, "val_accuracy": 0.85})
    assert sha256(path) == good and callback.best == 0.90
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary files left


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, real_source):
    real_source
    run_dir = tmp_path / "run"
    args = real_args(run_dir, "--train-examples", "5000", "--epochs", "6", "--batch-size", "64")
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = run_dir / "history.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    json.loads((run_dir / "config.json").read_text())
