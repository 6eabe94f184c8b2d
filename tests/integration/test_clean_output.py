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
    r"^(mnist-tf \d|config: |settings: |threads: |mixed precision: |Downloading and preparing dataset |"
    r"Dataset mnist downloaded and prepared |Epoch \d+/\d+$|\d+/\d+ - |test accuracy |wrote )"
)
CHATTER = ("cuda", "cuInit", "oneDNN", "absl", "dataset_info.json", "MiB/s", "I0000", "E0000", "W0000")


def train(tmp_path, *extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MNIST_TF_QUIET")}
    args = ["train", "--preset", "fast", "--epochs", "1", "--train-examples", "512", "--run-dir", tmp_path / "run"]
    args += ["--data-dir", tmp_path / "tfds", "--manual-dir", ARCHIVES]
    return subprocess.run(
        [sys.executable, "-m", "mnist_tf", *extra, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_a_first_run_prints_only_its_own_lines(tmp_path):
    done = train(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    strangers = [line for line in lines if not OWN_LINES.match(line)]
    assert strangers == [], strangers
    assert any(line.startswith("test accuracy ") for line in lines)


@pytest.mark.slow
@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_verbose_shows_what_is_otherwise_left_out(tmp_path):
    done = train(tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(word in done.stderr for word in CHATTER), done.stderr[-3000:]
