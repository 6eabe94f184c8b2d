"""`--mixed-precision auto`: measured once per machine and network, cached, recorded."""

import json

import pytest
from helpers import QUICK, run

from mnist_tf import config
from mnist_tf.training import precision, tuning


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(tuning.CACHE_ENV, str(tmp_path))
    return tmp_path / "precision.json"


def test_choose_takes_16_bits_only_when_clearly_faster():
    assert precision.choose({"off": 100.0, "bfloat16": 60.0}) == "bfloat16"
    assert precision.choose({"off": 100.0, "bfloat16": 97.0}) == "off"  # inside the 5% margin: exact float32
    assert precision.choose({"off": 100.0, "bfloat16": 140.0}) == "off"
    assert precision.choose({"off": 100.0, "float16": 50.0, "bfloat16": 70.0}) == "float16"


def test_auto_is_measured_once_then_read_from_the_cache(cache, monkeypatch):
    calls = []

    def fake_step_ms(cfg, p):
        calls.append((cfg.batch_size, p))
        return {"off": 80.0, "bfloat16": 50.0}[p]

    monkeypatch.setattr(precision, "step_ms", fake_step_ms)
    cfg = config.FAST
    assert cfg.mixed_precision == "auto"
    chosen, decision = precision.resolve(cfg)
    assert (
        chosen == "bfloat16"
        and decision["how"] == "measured"
        and decision["step_ms"] == {"off": 80.0, "bfloat16": 50.0}
    )
    assert calls == [(512, "off"), (512, "bfloat16")]
    assert precision.resolve(cfg)[1]["how"] == "cached" and len(calls) == 2
    # Another network or batch is another measurement; the cache keeps both.
    precision.resolve(cfg.replace(batch_size=64))
    assert len(calls) == 4 and len(json.loads(cache.read_text())) == 2
    assert "bfloat16 (auto, cached" in precision.describe(precision.resolve(cfg)[1])


def test_a_forced_precision_is_never_measured(cache, monkeypatch):
    monkeypatch.setattr(precision, "step_ms", lambda cfg, p: pytest.fail("measured"))
    for forced in ("off", "float16", "bfloat16"):
        assert precision.resolve(config.FAST.replace(mixed_precision=forced)) == (
            forced,
            {"chosen": forced, "how": "set"},
        )
    assert not cache.exists()


def test_the_probe_times_real_training_steps():
    cfg = config.FAST.replace(batch_size=32)
    assert all(precision.step_ms(cfg, p) > 0 for p in ("off", "bfloat16"))


def test_train_with_auto_prints_and_records_the_decision_and_keeps_auto_as_the_config(tmp_path, mock_mnist, cache):
    run_dir = tmp_path / "run"
    result = run("train", *QUICK, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "mixed precision: " in result.output and "(auto, measured" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["mixed_precision"] == "auto"  # the run's identity: a resume elsewhere may differ
    assert metrics["mixed_precision"]["chosen"] in ("off", "bfloat16")
    assert set(metrics["mixed_precision"]["step_ms"]) == {"off", "bfloat16"}
    assert cache.is_file()
