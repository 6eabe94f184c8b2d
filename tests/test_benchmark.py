"""The benchmark's measuring functions, on tiny inputs: right quantities, no hangs."""

import json
import struct

import numpy as np
import pytest

from mnist_tf import benchmark, config, plots
from mnist_tf.benchmark import inference, measurements, report, training
from mnist_tf.data import Source
from mnist_tf.model import build_model


def test_forward_flops_counts_convolutions_and_dense_layers():
    # Seed network: conv 1->32 and 32->64 at 28x28 (3x3), dense 12,544->128, logits 128->10.
    expected = 2 * (28 * 28 * 9 * 1 * 32 + 28 * 28 * 9 * 32 * 64 + 14 * 14 * 64 * 128 + 128 * 10)
    assert measurements.forward_flops(build_model(config.SEED)) == expected


def test_training_throughput_measures_every_repeat():
    settings = benchmark.Settings(throughput_images=256, repeats=2)
    row = training.training_throughput(config.FAST.replace(batch_size=32), settings)
    assert len(row["repeats"]) == 2 and all(r > 0 for r in row["repeats"])
    assert row["images_per_second"] == pytest.approx(float(np.median(row["repeats"])), rel=1e-3)
    assert row["train_mflops_per_image"] == pytest.approx(3 * row["forward_mflops_per_image"], rel=1e-2)


def test_throughput_cases_cover_two_batch_sizes_and_xla_on_and_off():
    cases = training.throughput_cases(benchmark.Settings(presets=("fast",)))
    bfloat16 = {(cfg.batch_size, cfg.jit) for _, cfg in cases if cfg.mixed_precision == "bfloat16"}
    assert bfloat16 == {(b, j) for b in (config.FAST.batch_size, 2 * config.FAST.batch_size) for j in (False, True)}
    assert [(cfg.batch_size, cfg.jit) for _, cfg in cases if cfg.mixed_precision == "off"] == [
        (config.FAST.batch_size, False)
    ]


def test_a_failing_training_process_is_reported_not_waited_for(tmp_path):
    # No archives and no data dir: the child fails at once with a UserError.
    source = Source(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "no-such-folder")
    result = training.accuracy_run(config.FAST, tmp_path / "run", source, threads=1)
    assert "error" in result and "manual dir" in result["error"]


def test_accuracy_table_has_a_column_per_target_and_a_row_per_run_failed_or_not():
    run = {
        "seed": 1,
        "test_accuracy": 0.991,
        "fit_seconds": 10.0,
        "train_images_per_second": 5000.0,
        "seconds_to": {"0.990": 8.0, "0.995": None},
        "peak_rss_mib": 900.0,
        "steal_percent": None,
    }
    summary = training.summarise_runs([run, {"seed": 2, "error": "RuntimeError: boom"}])
    lines = report.accuracy_table({"fast": summary})
    assert "| s to 99.0% | s to 99.5% |" in lines[0]
    assert "| fast | 1 | 99.10% | 10.0 | 5,000 | 8.0 | not reached | 900 | n/a |" in lines
    assert any(line.startswith("| fast | 2 | failed: RuntimeError: boom |") for line in lines)
    assert any(line.startswith("| **fast median** | | **99.10%** |") for line in lines)
    assert {line.count("|") for line in lines} == {lines[1].count("|")}  # every row has every column


def is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 100


@pytest.mark.slow
def test_accuracy_run_times_test_accuracy_per_epoch_and_tables_show_it(tmp_path, real_source):
    cfg = config.FAST.replace(train_examples=3000, validation_examples=500, epochs=2, batch_size=64, seed=3)
    run = training.accuracy_run(cfg, tmp_path / "run", real_source, threads=2)
    assert "error" not in run, run
    assert [p["epoch"] for p in run["curve"]] == [1, 2]
    assert 0 < run["curve"][0]["seconds"] < run["curve"][1]["seconds"] <= run["fit_seconds"] + 1e-6
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["test_accuracy"] == metrics["test_accuracy"]
    assert run["peak_rss_mib"] > 100  # TensorFlow alone takes more
    summary = training.summarise_runs([run])
    result = {
        "machine": measurements.machine(),
        "threads": {"intra_op": 2, "inter_op": 1},
        "accuracy": {"fast": summary},
    }
    table = benchmark.tables(result)
    assert f"{run['test_accuracy']:.2%}" in table and "fast median" in table
    assert is_png(plots.time_to_accuracy(result["accuracy"], tmp_path / "tta.png"))


@pytest.mark.slow
def test_inference_speeds_cover_every_deployable_format(tmp_path, tiny_keras):
    from mnist_tf.models import load_proba_fn

    images = np.random.default_rng(0).integers(0, 256, (1100, 28, 28, 1), dtype=np.uint8)
    labels = load_proba_fn(tiny_keras)(images).argmax(-1)  # the Keras model's own answers
    settings = benchmark.Settings(repeats=1, latency_images=5)
    rows = inference.inference_speeds(tiny_keras, tmp_path, images, settings, labels)
    formats = [r["format"] for r in rows]
    accuracy = {r["format"]: r["test_accuracy"] for r in rows}
    assert accuracy["keras (tf.function)"] == 1.0 and accuracy["savedmodel"] >= 0.999
    assert accuracy["tflite float32"] >= 0.99 and all(0 <= a <= 1 for a in accuracy.values())
    assert formats[:2] == ["keras (tf.function)", "savedmodel"]
    assert {f.split()[-1] for f in formats[2:]} == {"float32", "dynamic_range", "float16", "int8"}
    assert all(r["latency_ms_batch1"] > 0 and r["images_per_second_batch256"] > 0 for r in rows)
    assert all((r["size_bytes"] or 0) > 0 for r in rows[2:])


@pytest.mark.slow
def test_measure_saves_after_every_measurement(tmp_path):
    saved = []
    settings = benchmark.Settings(presets=("fast",), throughput_images=256, repeats=1)
    result = benchmark.measure(
        ("throughput",), settings, None, tmp_path, progress=lambda m: None, save=lambda r: saved.append(json.dumps(r))
    )
    rows_seen = [len(json.loads(s)["throughput"]) for s in saved]
    assert rows_seen[:5] == [1, 2, 3, 4, 5]  # a stopped benchmark keeps every finished row
    assert json.loads(saved[-1]) == json.loads(json.dumps(result))
    assert "bfloat16" in result["peak_gflops"] and "| fast |" in benchmark.tables(result)


@pytest.mark.slow
def test_serve_part_loads_a_real_server_and_calls_the_model_directly(tmp_path, tiny_keras, real_source):
    settings = benchmark.Settings(serve_seconds=1.0)
    out = tmp_path / "bench"
    result = benchmark.run_benchmark(out, real_source, ("serve",), settings, model=tiny_keras, progress=lambda m: None)
    assert json.loads((out / "benchmark.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "benchmark.md").read_text() == benchmark.tables(result) + "\n"
    serve = result["serve"]
    assert [r["clients"] for r in serve["rows"]] == [1, 8, 32]
    for row in serve["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["requests_per_second"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert serve["server_peak_rss_mib"] > 100 and serve["server_exit_status"] == 0  # TF alone is more
    assert serve["direct"]["calls"] > 0 and serve["direct"]["p50_ms"] > 0
    table = benchmark.tables(result)
    assert "| 32 |" in table and "in-process, no HTTP" in table
