"""The benchmark's inference parts: every deployable format timed in-process, and `mnist-tf serve` under load."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.benchmark.measurements import Settings


def inference_speeds(
    keras_path: Path, work_dir: Path, images: np.ndarray, settings: Settings, labels: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Batch-1 latency and batch-256 throughput of every deployable format, and
    its accuracy on (`images`, `labels`) when labels are given."""
    import tensorflow as tf

    from mnist_tf.evaluation import metrics
    from mnist_tf.export.saved_model import export_saved_model
    from mnist_tf.export.tflite import export_tflite
    from mnist_tf.inference.loading import (
        TFLiteRunner,
        calibrated_softmax,
        load_keras,
        load_proba_fn,
        temperature_of,
    )
    from mnist_tf.inference.timing import seconds_per_call, single_image_ms
    from mnist_tf.modeling.network import float32_copy

    model = float32_copy(load_keras(keras_path))  # Served in float32, as every export is.
    temperature = temperature_of(keras_path)
    # The calibrated probabilities, as the exports return them.
    probabilities = tf.function(lambda x: calibrated_softmax(model(x, training=False), temperature))
    version_dir = export_saved_model(keras_path, work_dir, images[:8])
    runners: dict[str, Callable[[np.ndarray], Any]] = {
        "keras (tf.function)": lambda x: probabilities(tf.constant(x)).numpy(),
        "savedmodel": load_proba_fn(version_dir),
    }
    tflite = export_tflite(version_dir, work_dir / "tflite", images[:500])
    for kind, path in tflite.items():
        runners[f"tflite {kind}"] = TFLiteRunner(path.read_bytes())
    big = [images[i : i + 256] for i in range(0, 256 * 4, 256)]
    rows = []
    for name, fn in runners.items():
        latency_ms = single_image_ms(fn, images[: settings.latency_images], settings.repeats)
        batch = seconds_per_call(fn, big, settings.repeats)
        size = tflite[name.split()[-1]].stat().st_size if name.startswith("tflite") else None
        accuracy = (
            None if labels is None else round(metrics.evaluate_proba_fn(fn, images, labels, batch_size=256).accuracy, 5)
        )
        rows.append(
            {
                "format": name,
                "latency_ms_batch1": round(latency_ms, 3),
                "images_per_second_batch256": round(256 / batch, 1),
                "size_bytes": size,
                "test_accuracy": accuracy,
            }
        )
    return rows


def inference_part(
    keras_path: Path, source: Any, work_dir: Path, settings: Settings, progress: Callable
) -> dict[str, Any]:
    """The inference part: `keras_path` exported to every format under WORK_DIR (then removed), each timed
    (`inference_speeds`) and scored on the test split."""
    from mnist_tf.data import pipeline

    images, labels = pipeline.arrays("test", source)
    progress(f"inference: exporting and timing {keras_path}")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        return {"model": str(keras_path), "rows": inference_speeds(keras_path, Path(tmp), images, settings, labels)}


def serve_part(keras_path: Path, source: Any, work_dir: Path, settings: Settings, progress: Callable) -> dict[str, Any]:
    """The serve part: `keras_path` exported, served, and loaded with a real test digit as PNG."""
    from mnist_tf.benchmark import serve_load
    from mnist_tf.data import pipeline
    from mnist_tf.export.saved_model import encode_png, export_saved_model

    images, _ = pipeline.arrays("test[:3]", source)
    progress(f"serve: exporting {keras_path} and serving it")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        version = export_saved_model(keras_path, Path(tmp), images)
        return serve_load.benchmark(version, encode_png(images[0]), settings.serve_seconds, progress=progress)
