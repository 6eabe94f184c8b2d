"""The benchmark's measuring functions, on tiny inputs: right quantities, no hangs."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ARCHIVES, REPO, archives_present
from helpers import is_png

from mnist_tf import benchmark, config
from mnist_tf.benchmark import inference, measurements, references, training
from mnist_tf.data.sources import Source
from mnist_tf.evaluation import plots
from mnist_tf.imaging import mnist_form


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
    from mnist_tf.inference.loading import load_proba_fn

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
    assert [(r["api"], r["clients"]) for r in serve["rows"]] == [(a, n) for a in ("REST", "gRPC") for n in (1, 8, 32)]
    for row in serve["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["requests_per_second"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert serve["server_peak_rss_mib"] > 100 and serve["server_exit_status"] == 0  # TF alone is more
    assert serve["direct"]["calls"] > 0 and serve["direct"]["p50_ms"] > 0
    table = benchmark.tables(result)
    assert "| REST | 32 |" in table and "| gRPC | 32 |" in table and "| in-process | no server |" in table
    # The preprocessing costed stage by stage, for the request's 28x28 PNG and its digit photographed.
    stages = serve["preprocessing_stages"]
    assert stages[0]["size"] == [28, 28] and all(min(r["size"]) > 100 for r in stages[1:])
    for row in stages:
        assert list(row["stages_ms"]) == [name for name, _ in mnist_form.STEPS]
        assert row["whole_ms"] > 0 and min(row["stages_ms"].values()) >= 0
    assert stages[1]["whole_ms"] > stages[0]["whole_ms"]  # a photo costs more than 28x28 pixels
    assert "| the whole preprocessing |" in table


def _torch_python_for_tests():
    """$MNIST_TF_TORCH_PYTHON, else ../torch-venv beside the repository, where it imports torch."""
    python = os.environ.get(references.TORCH_PYTHON_ENV) or str(REPO.parent / "torch-venv" / "bin" / "python")
    if not Path(python).exists():
        return None
    done = subprocess.run([python, "-c", "import torch, numpy"], capture_output=True, check=False)
    return python if done.returncode == 0 else None


def _programs():
    programs = references.bench_dir()
    if not (programs / references.KERAS_PROGRAM).is_file() or not archives_present():
        pytest.skip(f"needs the reference programs in {programs} and the MNIST archives in {ARCHIVES}")
    return programs


@pytest.mark.slow
def test_keras_reference_runs_and_is_read_for_real(tmp_path):
    # A target it passes in its first epoch: one epoch (about 20 s on 2 busy cores), its smallest run.
    run = references.keras_reference(_programs(), Source(manual_dir=ARCHIVES), threads=2, target=0.5)
    assert "error" not in run, run
    assert run["epochs"] == 1 and run["reached"] and 0.5 <= run["test_accuracy"] <= 1
    assert run["seconds_to_target"] > 0
    # The curve prints one decimal, the result line two: they agree to the curve's rounding.
    assert run["curve"][0]["seconds"] == pytest.approx(run["seconds_to_target"], abs=0.05 + 1e-9)
    missing = references.keras_reference(_programs(), Source(manual_dir=tmp_path), threads=2, target=0.5)
    assert missing["error"].startswith("exit status 1:") and "No such file" in missing["error"]  # it read MNIST_GZ_DIR


@pytest.mark.slow
def test_torch_reference_runs_and_is_read_for_real():
    python = _torch_python_for_tests()
    if python is None:
        pytest.skip(f"no Python with torch: set {references.TORCH_PYTHON_ENV} or create ../torch-venv")
    run = references.torch_reference(python, _programs(), Source(manual_dir=ARCHIVES), threads=2, seed=3, steps=8)
    assert "error" not in run, run
    assert (run["seed"], run["steps"], run["images"], run["threads"], run["batch_size"]) == (3, 8, 512, 2, 64)
    assert run["images_per_second"] > 0 and run["images_per_second_with_warmup"] > 0
