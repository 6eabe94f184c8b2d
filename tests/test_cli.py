"""The CLI end to end on mock MNIST, and every bad input it must refuse cleanly."""

import hashlib
import json
import struct

import pytest
from click.testing import CliRunner

from mnist_tf import __version__
from mnist_tf.cli import main

QUICK = ["--preset", "fast", "--epochs", "2", "--batch-size", "16"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def is_png(path):
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    return data[:8] == b"\x89PNG\r\n\x1a\n" and width > 100 and height > 100


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, result.output
    for word in words:
        assert word in error_lines[0], result.output


def test_version_and_help():
    assert __version__ in run("--version").output
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "evaluate"):
        assert command in result.output


@pytest.fixture
def finished_run(tmp_path, mock_mnist):
    run_dir = tmp_path / "run"
    result = run("train", *QUICK, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_train_writes_every_artefact(finished_run):
    for name in ("model.keras", "metrics.json", "config.json", "history.csv"):
        assert (finished_run / name).is_file(), name
    assert any((finished_run / "logs").rglob("events.out.tfevents.*"))
    assert is_png(finished_run / "learning_curves.png")
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["epochs"] == 2 and metrics["train_seconds"] > 0
    assert metrics["config"]["epochs"] == 2 and metrics["config"]["batch_size"] == 16
    assert len((finished_run / "history.csv").read_text().splitlines()) == 1 + 2
    assert not (finished_run / "backup").exists()  # a finished run keeps no resume state


def test_finished_run_is_never_overwritten_without_the_flag(finished_run, mock_mnist):
    before = sha256(finished_run / "model.keras")
    assert_one_line_error(run("train", *QUICK, "--run-dir", finished_run), "finished run", "--overwrite")
    assert sha256(finished_run / "model.keras") == before
    result = run("train", *QUICK, "--epochs", "1", "--run-dir", finished_run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((finished_run / "metrics.json").read_text())["epochs"] == 1


def test_evaluate_writes_reports(finished_run, mock_mnist, tmp_path):
    out = tmp_path / "report"
    result = run("evaluate", "--model", finished_run, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["examples"] == 48 and sum(map(sum, report["confusion_matrix"])) == 48
    assert len(report["per_class"]) == 10
    assert is_png(out / "confusion_matrix.png") and is_png(out / "misclassified.png")
    assert "precision" in result.output and "test accuracy" in result.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "0"], ["--epochs", "0"]),
        (["--batch-size", "-4"], ["--batch-size"]),
        (["--preset", "huge"], ["huge", "default"]),
        (["--learning-rate", "0"], ["--learning-rate"]),
        (["--train-examples", "59999"], ["train examples"]),
    ],
)
def test_invalid_train_options_are_usage_errors(args, words, tmp_path):
    result = run("train", *args, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_a_file_or_unwritable(tmp_path, mock_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_one_line_error(run("train", *QUICK, "--run-dir", blocker), "--run-dir")
    assert_one_line_error(run("train", *QUICK, "--run-dir", blocker / "sub"), "cannot write", "--run-dir")
    assert blocker.read_text() == "not a folder"


def test_run_dir_holding_other_files_is_refused(tmp_path, mock_mnist):
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(run("train", *QUICK, "--run-dir", tmp_path, "--overwrite"), "no mnist-tf run")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_evaluate_refuses_missing_and_non_model_paths(tmp_path):
    assert_one_line_error(run("evaluate", "--model", tmp_path / "nope.keras"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("evaluate", "--model", tmp_path / "empty"), "neither model.keras")
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"this is not a zip archive")
    assert_one_line_error(run("evaluate", "--model", fake), "not a readable Keras model")
