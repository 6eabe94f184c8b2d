"""Faults a run must survive: divergence, interruption, half-written files, a full disk, a second process.

Faults are injected at the write itself: `MNIST_TF_FAULT=<path-end>:kill` makes the child SIGKILL
(or `:term` SIGTERM) itself with the temporary file half written, and a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored) makes writes past it fail with EFBIG as a full disk fails with ENOSPC.
"""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import ARCHIVES, REPO, real_data_args
from helpers import SHORT, cli, error_line, killed, real_args, run_child

from mnist_tf.export import saved_model
from mnist_tf.inference.loading import load_keras
from mnist_tf.training.resume import latest_state


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


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_a_full_disk_and_kills_at_each_training_write_leave_a_run_that_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    backup = run_dir / "backup"
    args = real_args(run_dir, *SHORT)

    # The resume state (about 0.9 MB: weights and Adam's two moments) is the first file over 600 kB: epoch 1
    # cannot be saved.
    line = error_line(run_child(args, limit=600_000))
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

    # Killed mid-write of calibration.json, after training: no half file, and the run is not finished.
    assert killed(result := run_child(args, fault="calibration.json:kill")), result.stderr[-2000:]
    assert "after epoch 1" in result.stderr and latest_state(backup)[1] == 2
    assert not (run_dir / "calibration.json").exists() and not (run_dir / "metrics.json").exists()
    assert len(list(run_dir.glob(".calibration.*.tmp.json"))) == 1  # the half-written temporary, hidden

    # Killed mid-write of metrics.json, after calibration and evaluation: calibration.json is whole.
    assert killed(result := run_child(args, fault="metrics.json:kill")), result.stderr[-2000:]
    assert "after epoch 2" in result.stderr and latest_state(backup)[1] == 2
    assert not (run_dir / "metrics.json").exists() and load_keras(run_dir / "model.keras")
    assert json.loads((run_dir / "calibration.json").read_text())["temperature"] > 0
    assert not list(run_dir.glob(".calibration.*"))  # the earlier temporary was cleared

    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after epoch 2" in result.stderr and "Epoch 1/2" not in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["resumed_after_epoch"] == 2 and metrics["test_accuracy"] > 0.93
    # A resumed run ends calibrated too: the temperature in metrics.json is the one in calibration.json.
    assert (
        metrics["calibration"]["temperature"] == json.loads((run_dir / "calibration.json").read_text())["temperature"]
    )
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
    assert f"could not prepare mnist in {data_dir} (file too large)" in line, line
    assert not tfds.builder("mnist", data_dir=data_dir).is_prepared()
    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on 10,000 images" in result.stdout


@pytest.mark.slow
@pytest.mark.long
def test_a_full_disk_and_kills_at_each_export_write_leave_no_partial_version_or_file(tmp_path, real_source, tiny_keras):
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
    ]:
        assert killed(result := run_child(args, fault=fault)), (fault, result.stderr[-2000:])
        assert not written.exists(), fault
        assert [p for p in written.parent.iterdir() if p.name.startswith(f".{written.stem}.")], fault  # hidden
    assert saved_model.versions(base) == [1, 2] and not (tflite / "mnist_float32.tflite").exists()

    result = run_child(args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert saved_model.versions(base) == [1, 2, 3] and (tflite / "report.json").is_file() and config_file.is_file()
    note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and writing[0].name in note[0] and "delete them" in note[0], result.stderr
    signature = tf.saved_model.load(str(base / "3")).signatures["serving_default"]
    probabilities = signature(image=tf.zeros([2, 28, 28, 1], tf.uint8))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
