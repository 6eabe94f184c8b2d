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
from conftest import ARCHIVES, REPO, real_data_args
from test_cli import QUICK, assert_one_line_error, run, sha256
from test_train import cli, real_args

from mnist_tf import config, optimizer, runlock, saved_model
from mnist_tf.callbacks import HistoryLogger, LastGoodCheckpoint
from mnist_tf.io import FAULT_ENV, DiskFull, disk_full_reason, write_bytes
from mnist_tf.model import build_model
from mnist_tf.models import load_keras
from mnist_tf.resume import latest_state, trim_history

# 2 x 63 steps: about 96% test accuracy, in seconds.
SHORT = ("--train-examples", "2000", "--epochs", "2", "--batch-size", "32")


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


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
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


def file_size_limit(limit):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG, as they fail with ENOSPC on a full disk.

    SIGXFSZ is ignored, or the kernel would kill the child at the first such write."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def run_child(args, fault=None, limit=None):
    """Runs the CLI in a child process, with a fault at a write (`MNIST_TF_FAULT`) or a file-size limit."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    preexec = file_size_limit(limit) if limit else None
    return subprocess.run(
        cli(*args), capture_output=True, text=True, env=env, preexec_fn=preexec, cwd=REPO, timeout=600, check=False
    )


def error_line(result):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def killed(result):
    return result.returncode == -signal.SIGKILL


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


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


HOLD = "import sys\nfrom mnist_tf import runlock\nwith runlock.hold(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()"


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


@pytest.mark.parametrize("signum, kind", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, runlock.Terminated)])
def test_an_interrupt_dropped_on_the_way_still_stops_training_after_the_step(signum, kind):
    from mnist_tf.callbacks import StopOnSignal

    stop = StopOnSignal()
    # Started as a background job, this process may ignore SIGINT: a terminal's Ctrl-C is what is tested.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with runlock.signals_as_interrupts():
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
        with runlock.signals_as_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # an ignored Ctrl-C stays ignored
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_a_full_disk_and_kills_at_each_training_write_leave_a_run_that_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    backup = run_dir / "backup"
    args = real_args(run_dir, *SHORT)

    # The resume state (1.3 MB) is the first file over 1 MB: epoch 1 cannot be saved.
    line = error_line(run_child(args, limit=1_000_000))
    assert f"could not write the resume state {backup / 'epoch-1.keras'} (file too large)" in line, line
    assert list(backup.iterdir()) == [] and not (run_dir / "model.keras").exists()

    # Killed mid-write of model.keras after epoch 1: its state was saved first.
    assert killed(result := run_child(args, fault="model.keras:kill")), result.stderr[-2000:]
    assert latest_state(backup)[1] == 1 and not (run_dir / "model.keras").exists()
    assert len(list(run_dir.glob(".model.*.tmp.keras"))) == 1  # the half-written temporary, hidden
    assert (run_dir / ".lock").read_text().strip() != ""  # the killed process's lock: taken over below

    # Killed mid-write of epoch 2's state: epoch 1's stays.
    assert killed(result := run_child(args, fault="epoch-2.keras:kill")), result.stderr[-2000:]
    assert "after epoch 1" in result.stderr and latest_state(backup) == (backup / "epoch-1.keras", 1)
    assert hidden(run_dir) == [".lock"]  # the rerun cleared the earlier run's temporary
    assert (run_dir / "model.keras").is_file()  # saved again from the resumed state

    # Killed mid-write of metrics.json, after training and evaluation.
    assert killed(result := run_child(args, fault="metrics.json:kill")), result.stderr[-2000:]
    assert "after epoch 1" in result.stderr and latest_state(backup)[1] == 2
    assert not (run_dir / "metrics.json").exists() and load_keras(run_dir / "model.keras")

    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after epoch 2" in result.stderr and "Epoch 1/2" not in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["resumed_after_epoch"] == 2 and metrics["test_accuracy"] > 0.93
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert not backup.exists() and hidden(run_dir) == [".lock"]


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_sigterm_mid_write_stops_like_ctrl_c_with_143_and_the_rerun_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = real_args(run_dir, *SHORT)
    result = run_child(args, fault="epoch-2.keras:term")  # SIGTERM while epoch 2's state is half written
    assert result.returncode == 143, result.stderr[-2000:]
    assert "Stopped by SIGTERM. Re-run the same command to resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert latest_state(run_dir / "backup")[1] == 1 and hidden(run_dir / "backup") == []

    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after epoch 1" in result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] > 0.93


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_a_second_training_on_the_same_run_dir_refuses_naming_the_first_which_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = real_args(run_dir, *SHORT)
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cli(*args), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(first.pid):  # written once the lock is held
            break
        time.sleep(0.02)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    first.send_signal(signal.SIGSTOP)  # holds the lock, frozen, for as long as the second takes
    try:
        second = run_child(args)
    finally:
        first.send_signal(signal.SIGCONT)
    assert f"in use by another training (PID {first.pid})" in error_line(second)
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] > 0.93


@pytest.mark.slow
def test_a_full_disk_while_preparing_mnist_is_one_line_and_the_rerun_prepares_it(tmp_path, tiny_keras):
    if not (ARCHIVES / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST archives not found in {ARCHIVES}")
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "tfds"
    args = ["evaluate", "--model", tiny_keras, "--out", tmp_path / "report"]
    args += ["--data-dir", data_dir, "--manual-dir", ARCHIVES]
    line = error_line(run_child(args, limit=1_000_000))
    assert f"could not prepare MNIST in {data_dir} (file too large)" in line, line
    assert not tfds.builder("mnist", data_dir=data_dir).is_prepared()
    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on 10,000 images" in result.stdout


@pytest.mark.slow
def test_a_full_disk_and_kills_at_each_export_write_leave_no_partial_version_or_file(tmp_path, real_source, tiny_keras):
    import numpy as np
    import tensorflow as tf

    out = tmp_path / "export"
    base = out / "saved_model" / "mnist"
    config_file = out / "saved_model" / "models.config"
    tflite = out / "tflite"
    args = ["export", "--model", tiny_keras, "--out", out, "--tflite-kind", "float32"]
    args += real_data_args()

    # The SavedModel's variables (1.2 MB) are the first file over 200 kB.
    line = error_line(run_child(args, limit=200_000))
    assert f"could not write SavedModel version {base / '1'} (file too large)" in line, line
    assert saved_model.versions(base) == [] and saved_model.stray_temporaries(out) == [] and not config_file.exists()

    # Killed with the whole version written but not yet renamed into place.
    assert killed(result := run_child(args, fault="saved_model/mnist/1:kill")), result.stderr[-2000:]
    # TF Serving loads the highest all-digit folder: there must be none, only the hidden leftover.
    writing = saved_model.stray_temporaries(out)
    assert saved_model.versions(base) == [] and len(writing) == 1 and not config_file.exists()

    for fault, written in [
        ("models.config:kill", config_file),
        ("mnist_float32.tflite:kill", tflite / "mnist_float32.tflite"),
        ("report.json:kill", tflite / "report.json"),
    ]:
        assert killed(result := run_child(args, fault=fault)), (fault, result.stderr[-2000:])
        assert not written.exists(), fault
        assert [p for p in written.parent.iterdir() if p.name.startswith(f".{written.stem}.")], fault  # hidden
    assert saved_model.versions(base) == [1, 2, 3] and (tflite / "mnist_float32.tflite").is_file()

    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert saved_model.versions(base) == [1, 2, 3, 4] and (tflite / "report.json").is_file() and config_file.is_file()
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and writing[0].name in note[0] and "delete them" in note[0], result.stderr
    signature = tf.saved_model.load(str(base / "4")).signatures["serving_default"]
    probabilities = signature(image=tf.zeros([2, 28, 28, 1], tf.uint8))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
