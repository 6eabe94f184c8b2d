"""Strategies: TF_CONFIG checks, --strategy/--jit parsing, mirrored on two CPUs, two real workers."""

import dataclasses
import json

import pytest
from click.testing import CliRunner
from helpers import tf_config

from mnist_tf import cli
from mnist_tf.core.errors import UserError
from mnist_tf.training import distribute

TWO = ["127.0.0.1:1111", "127.0.0.1:2222"]


def test_tf_config_gives_each_task_its_role():
    assert distribute.parse_tf_config(tf_config(TWO, index=0)) == distribute.Role("worker", 0, 2)
    assert distribute.parse_tf_config(tf_config(TWO, index=0)).is_chief
    assert not distribute.parse_tf_config(tf_config(TWO, index=1)).is_chief
    # With a "chief" task, worker 0 is an ordinary worker.
    with_chief = {"chief": ["127.0.0.1:3333"]}
    assert distribute.parse_tf_config(tf_config(TWO, "chief", 0, **with_chief)).is_chief
    role = distribute.parse_tf_config(tf_config(TWO, "worker", 0, **with_chief))
    assert not role.is_chief and role.num_workers == 3 and role.name == "worker-0"


@pytest.mark.parametrize(
    "text, words",
    [
        (None, "not set"),
        ("", "not set"),
        ("{cluster", "not JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', '"task"'),
        (tf_config(TWO, index=2), "index 2"),
        (tf_config(TWO, index="0"), "index '0'"),
        (tf_config(TWO, "evaluator"), "'evaluator'"),
        (tf_config(["localhost"]), "host:port"),
        (tf_config(TWO, ps=["127.0.0.1:4444"]), "ps"),
    ],
)
def test_bad_tf_config_is_one_clear_user_error(text, words):
    with pytest.raises(UserError) as e:
        distribute.parse_tf_config(text)
    assert words in str(e.value) and "TF_CONFIG" in str(e.value) and "\n" not in str(e.value)


def test_worker_files_go_beside_the_run_dir(tmp_path):
    assert distribute.worker_dir(tmp_path / "run", distribute.Role("worker", 1, 2)) == tmp_path / "run.worker-1"
    assert distribute.role("mirrored") == distribute.Role() and distribute.Role().is_chief


def test_multi_worker_without_tf_config_stops_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(cli.main, ["train", "--strategy", "multi-worker", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "TF_CONFIG" in errors[0], result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, jit, strategy",
    [
        ([], None, "auto"),
        (["--jit", "auto"], None, "auto"),
        (["--jit", "on"], True, "auto"),
        (["--jit"], True, "auto"),  # a bare --jit, as before
        (["--jit", "off", "--strategy", "mirrored"], False, "mirrored"),
        (["--no-jit", "--strategy", "default"], False, "default"),  # the old spelling still works
    ],
)
def test_jit_and_strategy_options_reach_the_library(args, jit, strategy, monkeypatch, tmp_path):
    from mnist_tf.jobs import train

    seen = {}

    def fake_train(cfg, run_dir, source, overwrite, strategy, **_):
        seen.update(cfg=cfg, strategy=strategy)
        raise UserError("stop here")

    monkeypatch.setattr(train, "train_and_evaluate", fake_train)
    result = CliRunner().invoke(cli.main, ["train", *args, "--run-dir", str(tmp_path)])
    assert "stop here" in result.output, result.output
    assert seen["cfg"].jit is jit and seen["strategy"] == strategy


def test_jit_auto_is_on_for_one_gpu_replica_only(monkeypatch):
    from mnist_tf import config
    from mnist_tf.training import setup

    monkeypatch.setattr(setup, "gpu_available", lambda: True)
    auto = config.FAST.replace(epochs=1)
    assert auto.jit is None and setup.resolve_jit(auto, replicas=1) and not setup.resolve_jit(auto, replicas=2)
    assert setup.resolve_jit(dataclasses.replace(auto, jit=True), replicas=2)  # --jit on forces it
    monkeypatch.setattr(setup, "gpu_available", lambda: False)
    assert not setup.resolve_jit(auto) and not setup.resolve_jit(dataclasses.replace(auto, jit=False))


def test_unknown_jit_or_strategy_is_a_usage_error(tmp_path):
    for args in (["--jit", "maybe"], ["--strategy", "tpu"]):
        result = CliRunner().invoke(cli.main, ["train", *args, "--run-dir", str(tmp_path / "run")])
        assert result.exit_code == 2 and args[1] in result.output, result.output


def test_pipelines_shard_by_data_without_autotuning(mock_mnist):
    import tensorflow as tf

    from mnist_tf import config
    from mnist_tf.data import pipeline

    datasets = pipeline.make_datasets(config.FAST.replace(validation_examples=8), mock_mnist)
    for ds in (datasets.train, datasets.validation, datasets.test):
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        assert ds.options().autotune.enabled is False


def test_default_strategy_run_records_one_replica(tmp_path, mock_mnist):
    from mnist_tf import config
    from mnist_tf.jobs.train import train_and_evaluate

    cfg = config.FAST.replace(epochs=1, batch_size=16, validation_examples=8)
    metrics = train_and_evaluate(cfg, tmp_path / "run", mock_mnist, strategy="default")
    assert (metrics["strategy"], metrics["replicas"], metrics["workers"]) == ("default", 1, 1)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["replicas"] == 1
