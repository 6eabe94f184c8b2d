"""Faults a run must survive: divergence, interruption, half-written files."""

import json
import math
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from mnist_tf import config, export
from mnist_tf.model import build_model
from mnist_tf.models import load_keras
from mnist_tf import train as train_module
from mnist_tf.train import LastGoodCheckpoint

from conftest import REPO
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


def test_checkpoint_keeps_the_last_epoch_with_a_finite_loss(tmp_path):
    path = tmp_path / "model.keras"
    callback = LastGoodCheckpoint(path)
    callback.set_model(build_model(config.FAST))
    logits = callback.model.layers[-1]
    callback.on_epoch_end(0, {"loss": 0.3, "val_accuracy": 0.90})
    logits.kernel.assign(logits.kernel + 1.0)
    callback.on_epoch_end(1, {"loss": 0.2, "val_accuracy": 0.85})  # lower validation score: still the newer model
    saved = load_keras(path).layers[-1].kernel.numpy()
    np.testing.assert_array_equal(saved, logits.kernel.numpy())
    good = sha256(path)
    logits.kernel.assign(logits.kernel * math.nan)
    callback.on_epoch_end(2, {"loss": math.nan, "val_accuracy": 0.95})  # diverged: never saved
    assert sha256(path) == good
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary files left


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, real_source):
    real_source
    run_dir = tmp_path / "run"
    # Many epochs, so the run cannot finish on its own between the check and the signal.
    args = real_args(run_dir, "--train-examples", "5000", "--epochs", "40", "--batch-size", "64")
    # A shell without job control starts background jobs with SIGINT ignored, and an ignored
    # signal stays ignored across exec: handle it here while starting the child, so the child
    # starts with the default and Python turns ^C into KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    history = run_dir / "history.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (stdout[-1500:], stderr[-1500:])
    assert "Re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert (run_dir / "backup").is_dir() and not (run_dir / "metrics.json").exists()
    json.loads((run_dir / "config.json").read_text())


@pytest.mark.slow
def test_export_killed_while_writing_leaves_no_version_and_the_next_export_works(tmp_path, real_source, tiny_keras):
    import numpy as np
    import tensorflow as tf

    out = tmp_path / "export"
    base = out / "saved_model" / "mnist"
    args = ["export", "--model", tiny_keras, "--out", out]
    args += ["--data-dir", real_source.data_dir, "--manual-dir", real_source.manual_dir]
    for _ in range(3):  # The write takes about 0.2 s: on a busy machine the poll may miss it.
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(cli(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        writing = kill_when_writing(proc, out)
        if writing:
            break
    assert writing, "each export ended before it could be killed mid-write"
    assert proc.returncode == -signal.SIGKILL
    # TF Serving loads the highest all-digit folder: there must be none, only the hidden leftover.
    assert export.versions(base) == [] and export.stray_temporaries(out) == writing
    assert not (out / "saved_model" / "models.config").exists()

    result = run(*args)
    assert result.exit_code == 0, result.output
    assert export.versions(base) == [1]
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and writing[0].name in note[0] and "delete them" in note[0], result.stderr
    signature = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    probabilities = signature(image=tf.zeros([2, 28, 28, 1], tf.uint8))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (out / "saved_model" / "models.config").is_file()


def kill_when_writing(proc, out):
    """SIGKILLs `proc` once a hidden temporary version folder holds files; returns those folders."""
    deadline = time.monotonic() + 240
    writing = []
    while time.monotonic() < deadline and proc.poll() is None:
        writing = [p for p in export.stray_temporaries(out) if holds_files(p)]
        if writing:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return writing


def holds_files(folder):
    try:
        return any(folder.iterdir())
    except FileNotFoundError:  # renamed into place or removed meanwhile
        return False
