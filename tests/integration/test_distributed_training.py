"""Strategies: TF_CONFIG checks, --strategy/--jit parsing, mirrored on two CPUs, two real workers."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import REPO, real_data_args
from helpers import tf_config

from mnist_tf import cli
from mnist_tf.training.fit import read_history


def real_train_args(run_dir, *extra):
    return [
        "train",
        "--preset",
        "fast",
        "--epochs",
        "1",
        "--validation-examples",
        "1000",
        "--run-dir",
        str(run_dir),
        *real_data_args(),
        *map(str, extra),
    ]


# Two logical CPU devices must be configured before TensorFlow initialises: a fresh interpreter.
MIRRORED_ON_TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mnist_tf.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")  # prepared once, so the subprocesses need no preparation
def test_mirrored_trains_on_two_logical_cpus(tmp_path):
    run_dir = tmp_path / "run"
    args = real_train_args(run_dir, "--strategy", "mirrored", "--train-examples", "1280", "--batch-size", "64")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_ON_TWO_CPUS, *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["replicas"]) == ("mirrored", 2)
    assert "mirrored strategy, 2 replica(s)" in result.stdout
    assert "20/20" in result.stdout  # 1280 examples in global batches of 64: 20 steps, not 40
    # 20 steps learn (about 0.73 training accuracy; chance is 0.1), though too few for
    # BatchNorm's moving statistics to make test accuracy meaningful yet.
    assert read_history(run_dir / "history.csv")["accuracy"][0] > 0.5


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_all(procs, timeout):
    """Waits for every process; kills all of them (and fails) past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a worker was still running after {timeout} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def start_workers(run_dir, logs, *extra):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for i, log in enumerate(logs):
        env = {**os.environ, "TF_CONFIG": tf_config(workers, index=i)}
        with open(log, "w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "mnist_tf", *real_train_args(run_dir, "--strategy", "multi-worker", *extra)],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def epochs_saved(run_dir):
    """The epochs the run dir's resume state holds."""
    from mnist_tf.training.resume import latest_state

    state = latest_state(run_dir / "backup")
    return state[1] if state else 0


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_two_workers_train_like_one_process_with_the_same_global_batch(tmp_path):
    extra = ("--train-examples", "6400", "--batch-size", "64", "--jit", "off")  # 100 steps of 64
    single = tmp_path / "single"
    result = subprocess.run(
        [sys.executable, "-m", "mnist_tf", *real_train_args(single, "--strategy", "default", *extra)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = tmp_path / "multi"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = start_workers(run_dir, logs, *extra)
    wait_all(procs, timeout=300)
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-3000:]

    # Only the chief wrote the run; the other worker's scratch folder is gone.
    assert not (tmp_path / "multi.worker-1").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("multi")) == ["multi"]
    for name in ("model.keras", "metrics.json", "history.csv", "learning_curves.png", "config.json"):
        assert (run_dir / name).is_file(), name
    assert "100/100" in logs[0].read_text()  # 6400 examples, global batches of 64: each worker ran 100 steps
    assert "the chief wrote the run" in logs[1].read_text()

    multi = json.loads((run_dir / "metrics.json").read_text())
    one = json.loads((single / "metrics.json").read_text())
    assert (multi["strategy"], multi["replicas"], multi["workers"]) == ("multi-worker", 2, 2)
    # Same data, global batch, seed and learning rate; they differ only in BatchNorm statistics
    # (per replica, 32 images each) and dropout masks, i.e. about as much as another seed. One
    # process with seeds 1, 2, 3, 42 scored 96.60-96.75% (loss 0.115-0.121); two workers 96.86%
    # (0.115). One point and 25% of loss is several times that spread, and far below what a
    # broken run gives (chance is 10%).
    assert one["test_accuracy"] > 0.9 and multi["test_accuracy"] > 0.9, (one, multi)
    assert abs(multi["test_accuracy"] - one["test_accuracy"]) < 0.01, (one["test_accuracy"], multi["test_accuracy"])
    assert multi["test_loss"] < 1.25 * one["test_loss"] and one["test_loss"] < 1.25 * multi["test_loss"]

    # The chief's model is an ordinary model: it loads and evaluates without any strategy.
    evaluated = CliRunner().invoke(cli.main, ["evaluate", "--model", str(run_dir), *real_data_args()])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(multi["test_accuracy"])


@pytest.mark.slow
@pytest.mark.usefixtures("real_source")
def test_killed_workers_resume_from_their_own_backups(tmp_path):
    run_dir, scratch = tmp_path / "run", tmp_path / "run.worker-1"
    extra = ("--train-examples", "1280", "--batch-size", "64", "--epochs", "3", "--jit", "off")
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    procs = start_workers(run_dir, logs, *extra)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if epochs_saved(run_dir) >= 1 and epochs_saved(scratch) >= 1:  # both hold a resume state
                break
            time.sleep(0.05)
        assert all(p.poll() is None for p in procs), "training ended before it could be killed"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    done = epochs_saved(run_dir)
    assert done == epochs_saved(scratch), "the workers saved different epochs"  # they step together
    assert 1 <= done < 3 and (scratch / "backup").is_dir() and not (run_dir / "metrics.json").exists()

    procs = start_workers(run_dir, logs, *extra)
    wait_all(procs, timeout=300)
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert f"after epoch {done}" in log.read_text()  # each resumed from its own backup
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed_after_epoch"] == done and metrics["workers"] == 2
    assert not scratch.exists()
