"""`train_and_evaluate(cfg, run_dir)`: fit, checkpoint, resume, evaluate on test.

A run dir holds everything of one run:

    config.json         the Config, written first
    run.json            where the data came from; each start's runtime settings (`runinfo`)
    .lock               held by the process training in it (`runlock`)
    model.keras         the model after the last finished epoch (atomic writes)
    backup/             the resume state while a run is unfinished (`resume`)
    history.csv         one row per epoch
    logs/               TensorBoard
    learning_curves.png
    metrics.json        written last: its presence marks the run finished

With `strategy="multi-worker"` only the chief writes the run dir; every other
worker writes the same files to its own `distribute.worker_dir` and removes it
when the run ends (docs/distributed.md, "Who writes what").
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnist_tf import data, distribute, evaluate, plots, precision, resume, runinfo, runlock
from mnist_tf.callbacks import HistoryLogger, LastGoodCheckpoint, StopOnSignal
from mnist_tf.config import Config
from mnist_tf.errors import UserError
from mnist_tf.io import disk_errors, remove_temporaries, write_json
from mnist_tf.losses import make_loss
from mnist_tf.model import build_model
from mnist_tf.models import load_proba_fn
from mnist_tf.optimizer import make_optimizer


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def set_threads(threads: int | None = None) -> dict[str, int]:
    """Pins TensorFlow's thread pools; call before any TensorFlow op runs.

    intra-op = `threads` (default: every core), so one op, e.g. a convolution,
    uses all of them; inter-op = 1, because this network is a chain of layers
    with little to run side by side, and a second pool would oversubscribe a
    small CPU. tf.data keeps its own pool, one thread per core, for the input
    pipeline. Returns what was set.
    """
    threads = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started in this process (a notebook, a test): keep its pools.
        pass
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1,
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count() or 1,
        "tf_data": os.cpu_count() or 1,
    }


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit(cfg: Config, replicas: int = 1) -> bool:
    """XLA on GPU; off on CPU, where it measured slower (docs/performance.md, 'Why --jit is off on CPU').

    Also off, unless forced, with several replicas: Keras' own "auto" turns XLA off under
    tf.distribute, where it is less tested; `--jit on` still forces it.
    """
    return gpu_available() and replicas == 1 if cfg.jit is None else cfg.jit


def compile_model(model: keras.Model, cfg: Config, steps_per_epoch: int, replicas: int = 1) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=make_loss(cfg),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=resolve_jit(cfg, replicas),
        steps_per_execution=cfg.steps_per_execution,
    )
    return model


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv as columns; empty when there is none.

    Keras' CSVLogger writes `val_*` columns of "NA" when there is no
    validation data (`--validation-examples 0`); such columns are left out.
    """
    if not Path(path).is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [k for k in (rows[0] if rows else {}) if k != "epoch" and any(r[k] != "NA" for r in rows)]
    return {k: [float(r[k]) if r[k] != "NA" else math.nan for r in rows] for k in columns}


def check_run_dir(run_dir: Path, cfg: Config, overwrite: bool) -> None:
    """Makes `run_dir` ready; call it holding the run dir's lock (`runlock.hold`).

    Refuses a finished run (unless `overwrite`), an unfinished run with a
    different config (`resume.check_same_run`; runtime fields may differ), and
    a folder that cannot be written, before any training.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run dir {run_dir} is a file: pass a folder path to --run-dir")
    is_run = (run_dir / "config.json").is_file()
    if run_dir.is_dir() and any(p.name != runlock.LOCK_NAME for p in run_dir.iterdir()) and not is_run:
        raise UserError(f"{run_dir} is not empty and holds no mnist-tf run: choose a new or empty --run-dir")
    if (run_dir / "metrics.json").exists() and not overwrite:
        raise UserError(f"{run_dir} holds a finished run: pass --overwrite to replace it, or choose another --run-dir")
    if is_run and overwrite:  # Everything but the lock this process holds.
        for path in run_dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != runlock.LOCK_NAME:
                path.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to run dir {run_dir} ({e.strerror}): choose a writable --run-dir") from None
    saved = run_dir / "config.json"
    changed = resume.check_same_run(run_dir, Config.load(saved), cfg) if saved.exists() else []
    if changed:
        print(f"Resuming with other runtime settings ({', '.join(changed)})", file=sys.stderr)
    for folder in (run_dir, run_dir / "backup"):  # Left by a killed run; no other process writes here.
        remove_temporaries(folder)


def train_and_evaluate(
    cfg: Config,
    run_dir: Path,
    source: data.Source,
    overwrite: bool = False,
    strategy: str = "default",
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any] | None:
    """Trains `cfg` in `run_dir` (resuming an interrupted run), evaluates the last
    checkpoint on the test split and returns the metrics written to metrics.json.

    The run dir is locked for the whole call: a second call on it refuses (`runlock`).

    `strategy` names a `distribute.STRATEGIES` entry. It is made here, after the
    run-dir checks and before any other TensorFlow op, as multi-worker training
    requires. A non-chief worker trains its share and returns None.
    `extra_callbacks` join fit's own (the benchmark uses one to time accuracy).
    """
    role = distribute.role(strategy)
    chief_dir = Path(run_dir)
    run_dir = chief_dir if role.is_chief else distribute.worker_dir(chief_dir, role)
    with runlock.hold(run_dir):
        return _train_and_evaluate(cfg, run_dir, chief_dir, role, source, overwrite, strategy, extra_callbacks)


def _train_and_evaluate(
    cfg: Config,
    run_dir: Path,
    chief_dir: Path,
    role: distribute.Role,
    source: data.Source,
    overwrite: bool,
    strategy: str,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> dict[str, Any] | None:
    """The steps of `train_and_evaluate`, run holding the run dir's lock."""
    check_run_dir(run_dir, cfg, overwrite)
    cfg.save(run_dir / "config.json")
    dist = distribute.make_strategy(strategy)
    runinfo.record_start(run_dir, source, cfg, distribute.describe(dist))
    run_cfg, precision_decision = _set_up(cfg)
    start = time.perf_counter()
    datasets = data.make_datasets(run_cfg, source)
    data_seconds = time.perf_counter() - start
    model = _build(run_cfg, dist, datasets.train_examples)
    fitted = _fit(model, run_cfg, datasets, run_dir, extra_callbacks)
    if not role.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)  # The chief holds the run; this was scratch.
        print(f"{role.name} finished; the chief writes the run to {chief_dir}", file=sys.stderr)
        return None

    history = read_history(run_dir / "history.csv")
    plots.learning_curves(history, run_dir / "learning_curves.png")
    images, labels = data.dataset_arrays(datasets.test)
    result = evaluate.evaluate(load_proba_fn(run_dir / "model.keras"), images, labels)
    metrics = {
        **_scores_and_times(result, history, fitted, datasets, data_seconds),
        **_environment(run_cfg, dist, role),
        "mixed_precision": precision_decision,
        "config": cfg.to_dict(),
        "test": result.to_dict(),
    }
    write_json(run_dir / "metrics.json", metrics, "the run's metrics")
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # Finished: nothing to resume.
    return metrics


def _set_up(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """Decides the precision, then seeds TensorFlow; returns the config the run computes with
    (`cfg` with `auto` precision resolved) and how the precision was chosen.

    `auto` is measured (or read from the cache) here: after the strategy is made, before the seed.
    """
    mixed_precision, decision = precision.resolve(cfg, gpu_available())
    print(precision.describe(decision), file=sys.stderr)
    run_cfg = cfg.replace(mixed_precision=mixed_precision)
    keras.utils.set_random_seed(run_cfg.seed)
    if run_cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    return run_cfg, decision


def _build(cfg: Config, dist: tf.distribute.Strategy, train_examples: int) -> keras.Model:
    """The compiled model; its variables (model, optimizer, metrics) are made once per replica of `dist`."""
    steps_per_epoch = math.ceil(train_examples / cfg.batch_size)
    with dist.scope():
        model = compile_model(build_model(cfg), cfg, steps_per_epoch, dist.num_replicas_in_sync)
        return distribute.fit_compatible(model, dist)


@dataclasses.dataclass
class _Fitted:
    """What one call's `fit` did."""

    losses: list[float]  # one per epoch trained in this call
    seconds: float
    resumed_after_epoch: int | None  # None when the run started afresh


def _callbacks(
    run_dir: Path, state: resume.ResumeState, resuming: bool, extra: Sequence[keras.callbacks.Callback]
) -> list[keras.callbacks.Callback]:
    """`fit`'s callbacks, in order.

    The history row first, then the state: a stop between the two leaves a row that the next
    run drops (trim_history) and trains again, never a resumed epoch without its row.
    """
    return [
        keras.callbacks.TerminateOnNaN(),
        HistoryLogger(str(run_dir / "history.csv"), append=True),
        state,  # restores before LastGoodCheckpoint saves the restored model
        LastGoodCheckpoint(run_dir / "model.keras", save_at_start=resuming),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        *extra,
        StopOnSignal(),  # last: an epoch that ends as a dropped Ctrl-C is found keeps its row and checkpoint
    ]


def _fit(
    model: keras.Model,
    cfg: Config,
    datasets: data.Datasets,
    run_dir: Path,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> _Fitted:
    """Trains the epochs of `cfg` an interrupted run has not finished; refuses a loss that became NaN or inf."""
    state = resume.ResumeState(run_dir / "backup")
    epochs_before, resuming = state.epoch, state.path is not None
    callbacks = _callbacks(run_dir, state, resuming, extra_callbacks)
    resume.trim_history(run_dir / "history.csv", epochs_before)
    if resuming:
        print(f"Resuming the interrupted run in {run_dir} after epoch {epochs_before}", file=sys.stderr)

    start = time.perf_counter()
    with disk_errors(run_dir / "logs", "the TensorBoard logs"):  # The other writes name their own files.
        fit = model.fit(
            datasets.train,
            validation_data=datasets.validation,
            epochs=cfg.epochs,
            callbacks=callbacks,
            shuffle=False,  # The tf.data pipeline already shuffles, seeded.
            verbose=1 if sys.stdout.isatty() else 2,
        )
    seconds = time.perf_counter() - start
    losses = fit.history.get("loss", [])
    if any(not np.isfinite(v) for v in losses):
        raise TrainingDiverged(
            f"training stopped: the loss became {losses[-1]} in epoch {epochs_before + len(losses)}; "
            f"lower --learning-rate (was {cfg.learning_rate}); the last good checkpoint is kept in {run_dir / 'model.keras'}"
        )
    return _Fitted(losses, seconds, epochs_before if resuming else None)


def _scores_and_times(
    result: evaluate.Evaluation,
    history: dict[str, list[float]],
    fitted: _Fitted,
    datasets: data.Datasets,
    data_seconds: float,
) -> dict[str, Any]:
    """metrics.json's measurements: test and validation scores, epochs, times and data sizes."""
    validation = history.get("val_accuracy")
    return {
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "final_val_accuracy": validation[-1] if validation else None,
        "best_val_accuracy": max(validation) if validation else None,
        "epochs": len(history.get("loss", [])),
        "resumed_after_epoch": fitted.resumed_after_epoch,
        "train_seconds": round(fitted.seconds, 3),
        "data_seconds": round(data_seconds, 3),
        "train_images_per_second": round(len(fitted.losses) * datasets.train_examples / fitted.seconds, 1),
        "train_examples": datasets.train_examples,
        "validation_examples": datasets.validation_examples,
    }


def _environment(cfg: Config, dist: tf.distribute.Strategy, role: distribute.Role) -> dict[str, Any]:
    """metrics.json's account of where the run computed: XLA, device, threads, strategy, versions."""
    return {
        "jit_compile": resolve_jit(cfg, dist.num_replicas_in_sync),
        "device": "GPU" if gpu_available() else "CPU",
        "threads": {  # 0 is TensorFlow's "one per core"
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        },
        **distribute.describe(dist),
        "workers": role.num_workers,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
