"""`train_and_evaluate(cfg, run_dir, source)`: the whole job of `mnist-tf train`.

Trains in the run dir (`training.fit`, resuming an interrupted run), fits the
temperature that calibrates its probabilities on held-out images and writes
calibration.json (`evaluation.calibration`), evaluates the last checkpoint on the
test split with it and writes metrics.json, which marks the run finished. The run
dir's layout is `core.rundir`'s.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from mnist_tf.config import Config
from mnist_tf.core.files import write_json
from mnist_tf.core.rundir import RunDir
from mnist_tf.core.types import DECLINE_BELOW, LogitsFn
from mnist_tf.data import pipeline, sources
from mnist_tf.evaluation import calibration, metrics, plots
from mnist_tf.inference.loading import load_logits_fn
from mnist_tf.training import distribute, fit, runlock


def train_and_evaluate(
    cfg: Config,
    run_dir: Path,
    source: sources.Source,
    overwrite: bool = False,
    strategy: str = "default",
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    tuning: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Trains `cfg` in `run_dir` (resuming an interrupted run), calibrates and evaluates the
    last checkpoint on the test split and returns the metrics written to metrics.json.

    The run dir is locked for the whole call: a second call on it refuses (`runlock`).

    `strategy` names a `distribute.STRATEGIES` entry. It is made here, after the
    run-dir checks and before any other TensorFlow op, as multi-worker training
    requires. A non-chief worker trains its share and returns None.
    `extra_callbacks` join fit's own (the benchmark uses one to time accuracy).
    `tuning` is how the runtime settings were chosen (`training.tuning.resolve`), for metrics.json.
    """
    role = distribute.role(strategy)
    chief_dir = Path(run_dir)
    run_dir = chief_dir if role.is_chief else distribute.worker_dir(chief_dir, role)
    with runlock.hold(run_dir):
        trained = fit.train(cfg, RunDir(run_dir), role, source, overwrite, strategy, extra_callbacks)
        if not role.is_chief:
            shutil.rmtree(run_dir, ignore_errors=True)  # The chief holds the run; this was scratch.
            print(f"{role.name} finished; the chief writes the run to {chief_dir}", file=sys.stderr)
            return None
        return _evaluate_and_record(cfg, RunDir(run_dir), role, trained, tuning, source)


def _evaluate_and_record(
    cfg: Config,
    run: RunDir,
    role: distribute.Role,
    trained: fit.Trained,
    tuning: dict[str, Any] | None,
    source: sources.Source,
) -> dict[str, Any]:
    """Calibrates the trained model.keras (calibration.json), evaluates it on the test split and writes
    metrics.json, which marks the run finished."""
    history = fit.read_history(run.history)
    plots.learning_curves(history, run.learning_curves)
    logits_fn = load_logits_fn(run.model)
    fitted = _calibrate(logits_fn, cfg, run, source)
    images, labels = pipeline.dataset_arrays(trained.datasets.test)
    logits = metrics.in_batches(logits_fn, images)
    result = metrics.evaluate_probabilities(calibration.softmax(logits, fitted.temperature), labels)
    recorded = {
        **_scores_and_times(result, history, trained),
        "calibration": {
            "temperature": fitted.temperature,
            "fitted_on": fitted.fitted_on,
            "held_out": fitted.held_out,
            "examples": fitted.examples,
            "test_ece_before": metrics.expected_calibration_error(calibration.softmax(logits), labels),
            "test_ece_after": result.calibration_error(),
        },
        **fit.environment(trained.cfg, trained.strategy, role),
        "mixed_precision": trained.precision,
        "settings": tuning,
        "time_budget": trained.plan.to_dict() if trained.plan else None,
        "config": cfg.to_dict(),
        "test": result.to_dict(),
    }
    write_json(run.metrics, recorded, "the run's metrics")
    shutil.rmtree(run.backup, ignore_errors=True)  # Finished: nothing to resume.
    return recorded


def _calibrate(logits_fn: LogitsFn, cfg: Config, run: RunDir, source: sources.Source) -> calibration.Calibration:
    """Fits the temperature on held-out images (`sources.calibration_split`) and writes calibration.json,
    before metrics.json, so a finished run always has it."""
    split, held_out = sources.calibration_split(cfg, sources.train_size(source))
    images, labels = pipeline.arrays(split, source)
    # A model trained with non-digits declines what looks like none (`core.types.DECLINE_BELOW`).
    declines = sources.trains_with_non_digits(cfg, source)
    fitted = calibration.calibrate(
        metrics.in_batches(logits_fn, images),
        labels,
        f"{source.name} {split}",
        held_out,
        DECLINE_BELOW if declines else None,
    )
    calibration.write(run.calibration, fitted)
    return fitted


def _scores_and_times(
    result: metrics.Evaluation, history: dict[str, list[float]], trained: fit.Trained
) -> dict[str, Any]:
    """metrics.json's measurements: test and validation scores, epochs, times and data sizes."""
    fitted, datasets = trained.fitted, trained.datasets
    validation = history.get("val_accuracy")
    return {
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "final_val_accuracy": validation[-1] if validation else None,
        "best_val_accuracy": max(validation) if validation else None,
        "epochs": len(history.get("loss", [])),
        "resumed_after_epoch": fitted.resumed_after_epoch,
        "train_seconds": round(fitted.seconds, 3),
        "data_seconds": round(trained.data_seconds, 3),
        "train_images_per_second": round(len(fitted.losses) * datasets.train_examples / fitted.seconds, 1),
        "train_examples": datasets.train_examples,
        "validation_examples": datasets.validation_examples,
    }
