"""Faults a run must survive: divergence, interruption, half-written files, a full disk, a second process.

Faults are injected at the write itself: `MNIST_TF_FAULT=<path-end>:kill` makes the child SIGKILL
(or `:term` SIGTERM) itself with the temporary file half written, and a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored) makes writes past it fail with EFBIG as a full disk fails with ENOSPC.
"""

import contextlib
import errno
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import QUICK, assert_one_line_error, run, sha256

from mnist_tf import config
from mnist_tf.core.files import DiskFull, disk_full_reason, write_bytes
from mnist_tf.inference.loading import load_keras
from mnist_tf.modeling import optimizer
from mnist_tf.modeling.network import build_model
from mnist_tf.training import runlock, signals
from mnist_tf.training.callbacks import HistoryLogger, LastGoodCheckpoint
from mnist_tf.training.resume import trim_history


def test_nan_loss_stops_with_one_line_and_nonzero_exit(tmp_path, mock_mnist, monkeypatch):
    # No learning rate the CLI accepts diverges reliably (BatchNorm absorbs it), so force one.
    monkeypatch.setattr(optimizer, "make_schedule", lambda cfg, steps: 1e30)
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


def test_disk_full_is_recognised_through_wrappers_and_error_texts():
    assert disk_full_reason(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    try:  # Keras and h5py re-raise with the OS error as the cause or in the text.
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as e:
            raise ValueError("could not save the model") from e
    except ValueError as wrapped:
        assert disk_full_reason(wrapped) == "file too large"
    h5py_text = "Can't synchronously write data (file write failed: errno = 28, error message = 'No space')"
    assert disk_full_reason(RuntimeError(h5py_text)) == "no space left on device"
    assert disk_full_reason(RuntimeError("/r/logs/events.out; File too large")) == "file too large"  # TensorFlow


@contextlib.contextmanager
def limited_file_size(limit):
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    with limited_file_size(4096), pytest.raises(DiskFull) as caught:
        write_bytes(path, b"0" * 10000, "the float32 TFLite model")
    assert str(caught.value).startswith(f"could not write the float32 TFLite model {path} (file too large): free")
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"] and path.read_bytes() == b"old"


def test_a_full_disk_while_logging_history_names_history_csv(tmp_path):
    path = tmp_path / "history.csv"
    logger = HistoryLogger(str(path), append=True)
    logger.set_model(build_model(config.FAST))
    logger.on_train_begin()
    with limited_file_size(64), pytest.raises(DiskFull) as caught:
        logger.on_epoch_end(0, {"loss": 0.123456789, "accuracy": 0.987654321, "val_loss": 0.1, "val_accuracy": 0.9})
        logger.on_epoch_end(1, {"loss": 0.123456789, "accuracy": 0.987654321, "val_loss": 0.1, "val_accuracy": 0.9})
    assert str(caught.value).startswith(f"could not write the training history {path} (file too large)")


def test_history_is_trimmed_to_the_resume_state(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,0.5\n1,0.3\n2,0.2\n3,0.")  # epoch 3 cut short mid-write
    trim_history(path, 2)  # the state holds two epochs: epoch 2 is trained again
    assert path.read_text() == "epoch,loss\n0,0.5\n1,0.3\n"
    trim_history(path, 0)
    assert not path.exists()


def test_an_unreadable_resume_state_is_one_line_with_the_way_out_and_an_earlier_whole_one_resumes(tmp_path, mock_mnist):
    run_dir = tmp_path / "run"
    assert run("train", *QUICK, "--run-dir", run_dir).exit_code == 0
    (run_dir / "metrics.json").unlink()  # as if stopped after its first epoch, the state half-written
    backup = run_dir / "backup"
    backup.mkdir()
    half = (run_dir / "model.keras").read_bytes()[:50000]
    # Keras' BackupAndRestore files of earlier versions, then this version's (written whole, but damaged later).
    for state, metadata in [("latest.weights.h5", "training_metadata.json"), ("epoch-1.keras", None)]:
        for path in backup.iterdir():
            path.unlink()
        (backup / state).write_bytes(half)
        if metadata:
            (backup / metadata).write_text('{"epoch": 1, "batch": 0}')
        result = run("train", *QUICK, "--run-dir", run_dir)
        assert_one_line_error(result, str(backup / state), "cannot be read", "--overwrite")
    assert run("train", *QUICK, "--run-dir", run_dir, "--overwrite").exit_code == 0

    # A whole state in the earlier layout resumes.
    (run_dir / "metrics.json").unlink()
    backup.mkdir()
    # Saved from the training model, as Keras' BackupAndRestore saved it (model.keras holds standard layers).
    trained = build_model(config.FAST)
    trained.set_weights(load_keras(run_dir / "model.keras").get_weights())
    trained.save_weights(backup / "latest.weights.h5")
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    result = run("train", *QUICK, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "after epoch 1" in result.output and "Epoch 1/2" not in result.output
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_after_epoch"] == 1


HOLD = "import sys\nfrom mnist_tf.training import runlock\nwith runlock.hold(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()"


def test_a_run_dir_in_use_is_refused_by_train_and_export_and_taken_over_once_its_holder_dies(
    tmp_path, tiny_keras, mock_mnist
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(tiny_keras, run_dir / "model.keras")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run_dir], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        assert runlock.holder(run_dir) == f"PID {holder.pid}"
        assert_one_line_error(
            run("train", *QUICK, "--run-dir", run_dir), f"in use by another training (PID {holder.pid})"
        )
        assert_one_line_error(
            run("export", "--model", run_dir, "--out", tmp_path / "out"), "still training", "model.keras"
        )
        assert not (tmp_path / "out").exists()
        evaluated = run("evaluate", "--model", run_dir, "--out", tmp_path / "report")  # reads the last whole model
        assert evaluated.exit_code == 0, evaluated.output
        assert f"note: {run_dir} is still training (PID {holder.pid})" in evaluated.stderr
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own; the kernel drops the lock
        holder.wait()
    assert (run_dir / ".lock").read_text().strip() == str(holder.pid)  # the dead holder's lock file stays
    assert runlock.holder(run_dir) is None
    with runlock.hold(run_dir):
        assert (run_dir / ".lock").read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("signum, kind", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, signals.Terminated)])
def test_an_interrupt_dropped_on_the_way_still_stops_training_after_the_step(signum, kind):
    from mnist_tf.training.callbacks import StopOnSignal

    stop = StopOnSignal()
    # Started as a background job, this process may ignore SIGINT: a terminal's Ctrl-C is what is tested.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with signals.signals_as_interrupts():
            stop.on_train_batch_end(0)  # nothing pending: training goes on
            with contextlib.suppress(KeyboardInterrupt):  # code that drops the signal's exception
                os.kill(os.getpid(), signum)
                time.sleep(5)  # the handler raises within this sleep
                pytest.fail("the signal raised nothing")
            with pytest.raises(kind):
                stop.on_train_batch_end(1)
            stop.on_epoch_end(0)  # raised once: nothing pending any more
            with contextlib.suppress(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
                time.sleep(5)
            with pytest.raises(kind):
                stop.on_epoch_end(1)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with signals.signals_as_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # an ignored Ctrl-C stays ignored
    finally:
        signal.signal(signal.SIGINT, previous)
