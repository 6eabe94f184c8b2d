"""A first run's output holds the project's own lines and real warnings, not TensorFlow's start-up chatter.

A real `mnist-tf train` in a child process, as a new user starts it: MNIST prepared from the archives into
an empty data dir, no TF_CPP_MIN_LOG_LEVEL of the user's own, output to a pipe (not a terminal).
"""

import os
import re
import subprocess
import sys

import pytest
from conftest import ARCHIVES, archives_present
from helpers import REPO

# Every line a run may print: the project's own, TFDS's two preparation lines, Keras' epoch lines.
OWN_LINES = re.compile(
    r"^(mnist-tf \d|config: |settings: |threads: |mixed precision: |time budget |calibration: |Downloading and preparing dataset |"
    r"Dataset mnist downloaded and prepared |Epoch \d+/\d+$|\d+/\d+ - |test accuracy |wrote )"
)
# Every line an export with TFLite may print: what it wrote, and the TFLite report's table.
EXPORT_LINES = re.compile(r"^(wrote |variant |keras |float32 |dynamic_range |float16 |int8 )")
CHATTER = ("cuda", "cuInit", "oneDNN", "absl", "dataset_info.json", "MiB/s", "I0000", "E0000", "W0000")


def command(*args):
    """`mnist-tf ARGS` in a child process, as a new user runs it: no log level of their own, output to a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MNIST_TF_QUIET")}
    return subprocess.run(
        [sys.executable, "-m", "mnist_tf", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
        check=False,
    )


def train(tmp_path, *extra, options=()):
    args = ["train", "--preset", "fast", "--epochs", "1", "--train-examples", "512", "--run-dir", tmp_path / "run"]
    return command(*extra, *args, *options, "--data-dir", tmp_path / "tfds", "--manual-dir", ARCHIVES)


def strangers(done: subprocess.CompletedProcess, own: re.Pattern) -> list[str]:
    """The lines of a finished command's output that are not its own."""
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and not own.match(line)]


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_a_first_run_and_its_export_print_only_their_own_lines(tmp_path):
    done = train(tmp_path, options=("--time-budget", "10m"))  # as make train: the budget's probe fits too
    assert done.returncode == 0, done.stderr[-3000:]
    assert strangers(done, OWN_LINES) == []
    assert "time budget 10.0 min: " in done.stderr
    assert "test accuracy " in done.stdout
    # The export converts (int8: the quantizer's "fully_quantize: 0, ..." line) and verifies in LiteRT (its
    # "Created TensorFlow Lite XNNPACK delegate" line): both are left out too.
    exported = command(
        *("export", "--model", tmp_path / "run", "--out", tmp_path / "export", "--tflite-kind", "int8"),
        *("--data-dir", tmp_path / "tfds", "--manual-dir", ARCHIVES),
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert strangers(exported, EXPORT_LINES) == []
    assert "int8" in exported.stdout


@pytest.mark.slow
@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_verbose_shows_what_is_otherwise_left_out(tmp_path):
    done = train(tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(word in done.stderr for word in CHATTER), done.stderr[-3000:]
