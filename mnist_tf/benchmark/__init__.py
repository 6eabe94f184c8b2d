"""`mnist-tf benchmark`: measured speed, time to accuracy, memory and serving.

`run_benchmark` is the whole job. Six parts, each runnable alone (`--part`),
all written to one JSON file and printed as tables (`report.py`):

    throughput  steady-state training images/s per preset, batch size and XLA
                setting, on synthetic uint8 images through the preset's own
                input pipeline (augmentation included); estimated FLOPs per
                training image and the fraction of the machine's measured peak
    accuracy    real training runs (one per preset and seed, each in a fresh
                process): test accuracy after every epoch against training
                time, time to reach 99.0% and 99.5%, final accuracy, fit time
                and the run's peak resident memory
    inference   batch-1 latency and batch-256 throughput of the Keras model,
                the SavedModel and each TFLite variant of a trained model
    peak        the largest matmul rate this machine reaches, float32 and
                bfloat16: the "peak" the throughput fractions divide by
    serve       `mnist-tf serve` under load on loopback, REST and gRPC: single-image
                PNG requests from 1, 8 and 32 concurrent clients (serve_load.py)
    compare     the `fast` and `seed` presets beside the reference programs in
                ../shared/bench, run as child processes in the same sitting:
                fit seconds to 99% against the Keras "simple MNIST convnet",
                training images/s against the seed network in PyTorch; the
                ratios and whether the targets hold (compare.py)

Timing rules: every figure is a median of repeats after warm-up, threads are
set explicitly (`--threads`) and reported, and nothing else should run on the
machine meanwhile.

The parts live in `training.py` (throughput, accuracy), `inference.py`
(inference, serve, with the load client in `serve_load.py`) and `compare.py`
(with `references.py`); `measurements.py` holds the settings
and the instruments (peak, FLOPs, CPU steal, memory), `report.py` the tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnist_tf.benchmark import compare
from mnist_tf.benchmark.inference import inference_part, serve_part
from mnist_tf.benchmark.measurements import Settings, StealMeter, machine, measure_peak
from mnist_tf.benchmark.report import tables
from mnist_tf.benchmark.training import accuracy_run, accuracy_summaries, throughput_rows
from mnist_tf.config import preset
from mnist_tf.config.choices import BENCHMARK_PARTS
from mnist_tf.core.errors import UserError
from mnist_tf.core.rundir import RunDir

__all__ = ["Settings", "StealMeter", "measure", "run_benchmark", "tables"]


def run_benchmark(
    out: Path,
    source: Any,
    parts: Sequence[str] = BENCHMARK_PARTS,
    settings: Settings | None = None,
    model: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measures `parts` and writes OUT/benchmark.json and OUT/benchmark.md after every
    measurement (a stopped benchmark keeps what it measured), then OUT/time_to_accuracy.png
    when the accuracy part ran; returns the result.

    `model` (a run dir or .keras file) is what the inference and serve parts time;
    without it they time a model the accuracy part trained. Refuses an OUT that
    holds an earlier benchmark unless `overwrite`. `settings`: Settings() when not given.
    """
    from mnist_tf.core.files import write_bytes, write_json
    from mnist_tf.evaluation import plots
    from mnist_tf.inference.loading import resolve_model_path

    settings = settings or Settings()
    keras_path = resolve_model_path(model) if model else None
    if keras_path is not None and keras_path.suffix != ".keras":
        raise UserError(f"{model} is not a Keras model: pass a run dir or a .keras file to --model")
    out = Path(out)
    if (out / "benchmark.json").exists() and not overwrite:
        raise UserError(f"{out} holds an earlier benchmark: pass --overwrite to replace it, or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out} ({e.strerror}): pass a writable --out") from None

    def save(result: dict[str, Any]) -> None:
        write_json(out / "benchmark.json", result)
        write_bytes(out / "benchmark.md", (tables(result) + "\n").encode())

    result = measure(parts, settings, source, out, progress, save, keras_path)
    if "accuracy" in result:
        plots.time_to_accuracy(result["accuracy"], out / "time_to_accuracy.png")
    return result


def measure(
    parts: Sequence[str],
    settings: Settings,
    source: Any,
    work_dir: Path,
    progress: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] = lambda result: None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Runs the chosen `parts` in WORK_DIR and returns everything measured (the JSON).

    `save` receives the result so far after every measurement. The inference and
    serve parts time `model` (a `.keras` file), else a model trained by the accuracy part.
    """
    from mnist_tf.training.setup import set_threads

    if "compare" in parts and not set(compare.PRESETS) & set(settings.presets):
        raise UserError(
            f"--part compare compares the {' and '.join(compare.PRESETS)} presets: choose one with --preset"
        )
    threads = set_threads(settings.threads, settings.inter_op)
    result: dict[str, Any] = {"machine": machine(), "threads": threads, "settings": dataclasses.asdict(settings)}
    if "peak" in parts or "throughput" in parts:
        progress("peak: timing large matmuls (float32, bfloat16)")
        result["peak_gflops"] = measure_peak()
    if "throughput" in parts:
        result["throughput"] = []
        for row in throughput_rows(settings, result["peak_gflops"], progress):
            result["throughput"].append(row)
            save(result)
    if "accuracy" in parts:
        result["accuracy"] = {}
        for name, summary in accuracy_summaries(settings, source, work_dir, progress):
            result["accuracy"][name] = summary
            save(result)
    if "inference" in parts or "serve" in parts:
        model = model or _trained_model(result, work_dir, source, settings, progress)
    if "inference" in parts:
        result["inference"] = inference_part(model, source, work_dir, settings, progress)
    if "serve" in parts:
        result["serve"] = serve_part(model, source, work_dir, settings, progress)
    if "compare" in parts:
        for compared in compare.compare_part(settings, source, work_dir, threads["intra_op"], progress):
            result["compare"] = compared
            save(result)
    save(result)
    return result


def _trained_model(
    result: dict[str, Any], work_dir: Path, source: Any, settings: Settings, progress: Callable[[str], None]
) -> Path:
    """The first model of the accuracy part (`default` first), else a new `fast` run."""
    accuracy = result.get("accuracy", {})
    for name in sorted(accuracy, key=lambda n: n != "default"):
        for run in accuracy[name].get("runs", []):
            if "error" not in run:
                return RunDir(run["run_dir"]).model
    progress("inference: training the fast preset for a model to time")
    run = accuracy_run(preset("fast"), work_dir / "runs" / "fast-inference", source, settings.threads)
    if "error" in run:
        raise RuntimeError(f"training the model to time failed: {run['error']}")
    return RunDir(run["run_dir"]).model
