"""Runtime settings (oneDNN, XLA, thread split, augmentation parallelism): measured in child processes, cached,
applied before TensorFlow starts, printed and recorded."""

import json
import os
import subprocess

import pytest
from helpers import REPO, cli

from mnist_tf import config
from mnist_tf.training import tuning
from mnist_tf.training.tuning import Settings

TINY = config.FAST.replace(stages=((4,),), dense_units=(8,), batch_size=32, augment=True)


@pytest.fixture
def probe_on(tmp_path, monkeypatch):
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv(tuning.PROBE_ENV, "on")
    monkeypatch.delenv(tuning.ONEDNN_ENV, raising=False)
    return tmp_path / "settings.json"


def test_choose_keeps_the_default_unless_another_is_clearly_faster():
    base = tuning.default_settings(2)
    xla = Settings(True, 2, 1, True, 1)
    assert tuning.choose(base, [(base, "off", 100.0), (xla, "off", 80.0)]) == xla
    assert tuning.choose(base, [(base, "off", 100.0), (xla, "off", 93.0)]) == base  # inside the 10% margin
    # The default's best precision is what another setting has to beat.
    assert tuning.choose(base, [(base, "off", 100.0), (base, "bfloat16", 60.0), (xla, "off", 80.0)]) == base
    assert tuning.choose(base, [(xla, "off", float("inf"))]) == base  # nothing finished: the default


def test_the_thread_splits_tried_fit_the_cores():
    assert tuning.thread_splits(1) == [(1, 2)]
    assert tuning.thread_splits(2) == [(2, 2), (1, 1)]
    assert tuning.thread_splits(8) == [(8, 2), (7, 1)]


@pytest.mark.slow
def test_the_probe_times_real_steps_in_children_then_reads_its_cache(probe_on, monkeypatch):
    lines = []
    chosen, decision = tuning.resolve(TINY, progress=lines.append)
    assert decision["how"] == "measured" and Settings(**decision["chosen"]) == chosen
    tried = decision["step_ms"]
    # oneDNN on with XLA off and on and the other augmentation count, oneDNN off, then two thread splits.
    assert {t["onednn"] for t in tried} == {True, False}
    assert any(t["jit"] for t in tried) and len({t["augment_calls"] for t in tried}) == 2
    assert {(t["intra_op"], t["inter_op"]) for t in tried} >= {(2, 1), (2, 2), (1, 1)}
    assert all(0 < t["ms"] < 10_000 for t in tried), tried  # every child ran real steps
    fastest = min(tried, key=lambda t: t["ms"])
    assert chosen == tuning.default_settings() or decision["chosen"] == {
        k: v for k, v in fastest.items() if k not in ("precision", "ms")
    }
    assert any("oneDNN off" in line for line in lines)
    cached = json.loads(probe_on.read_text())
    assert list(cached) == [tuning.cache_key(TINY)]
    # Read from the cache: no child runs.
    monkeypatch.setattr(tuning, "run_child", lambda *a: pytest.fail("measured again"))
    again, how = tuning.resolve(TINY)
    assert again == chosen and how["how"] == "cached" and "measured on this CPU earlier" in tuning.describe(how)


def test_a_setting_that_fails_loses_and_the_others_are_still_timed(probe_on):
    good = {"jit": False, "augment_calls": 1, "precision": "off"}
    refused = {"jit": False, "augment_calls": 0, "precision": "off"}  # no such parallelism
    good_ms, refused_ms = tuning.run_child(TINY, True, 1, 1, [good, refused])
    assert 0 < good_ms < 10_000 and refused_ms == float("inf")


@pytest.mark.slow
def test_train_applies_cached_settings_before_tensorflow_starts(probe_on, tmp_path, real_source):
    """A cached decision (here: oneDNN off, XLA on, 1 intra-op and 2 inter-op threads, one more batch augmenting
    than the default) is what the training process runs with, says at start and records in metrics.json."""
    cfg = config.preset("fast").replace(epochs=1, batch_size=16, train_examples=64, validation_examples=0)
    augment_calls = tuning.default_settings().augment_calls + 1
    wanted = Settings(onednn=False, intra_op=1, inter_op=2, jit=True, augment_calls=augment_calls)
    probe_on.write_text(json.dumps({tuning.cache_key(cfg): {"chosen": wanted.__dict__, "step_ms": []}}))
    from conftest import real_data_args

    run_dir = tmp_path / "run"
    args = ["train", "--preset", "fast", "--epochs", "1", "--batch-size", "16", "--train-examples", "64"]
    done = subprocess.run(
        cli(*args, "--run-dir", run_dir, *real_data_args()),
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, tuning.PROBE_ENV: "on"},
    )
    assert done.returncode == 0, done.stderr
    assert f"settings: oneDNN off, XLA on, threads 1 intra-op / 2 inter-op, {augment_calls} augmenting" in done.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["settings"]["how"] == "cached" and metrics["settings"]["chosen"] == wanted.__dict__
    assert metrics["threads"] == {"intra_op": 1, "inter_op": 2} and metrics["jit_compile"] is True
    assert metrics["onednn"] is False
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["jit"] is True and saved["augment_calls"] == augment_calls
