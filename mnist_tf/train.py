"""`train_and_evaluate(cfg, run_dir)`: fit, checkpoint, resume, evaluate on test.

A run dir holds everything of one run:

    config.json         the Config, written first
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
import math
import os
import shutil
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnist_tf import data, distribute, evaluate, plots, precision, resume, runlock
from mnist_tf.config import Config
from mnist_tf.errors import UserError
from mnist_tf.io import atomic_path, disk_errors, remove_temporaries, write_json
from mnist_tf.model import build_model, standard_copy
from mnist_tf.models import load_proba_fn


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


class LastGoodCheckpoint(keras.callbacks.Callback):
    """Saves the model after every epoch whose loss is finite, by write-then-rename.

    The presets' schedules decay the learning rate to (nearly) zero, so the
    last epoch's weights are the trained model. Choosing an epoch by
    validation accuracy instead chooses by noise: one of 5,000 validation
    images is 0.02 points, and in three seeds of the default preset that
    choice cost 0.01-0.05 points of test accuracy (docs/performance.md).
    Keras' ModelCheckpoint writes in place, so a kill mid-save would leave a
    truncated `model.keras`; here a reader sees the old file or the new one.
    """

    def __init__(self, path: Path, save_at_start: bool = False):
        super().__init__()
        self.path = Path(path)
        self.save_at_start = save_at_start

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A resumed run starts from its resume state, which a stop between the two writes can leave
        # newer than model.keras: save it, so model.keras is the state's epoch even if no epoch is left.
        if self.save_at_start:
            self.save()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # A diverged model can still score: never let it replace a good checkpoint.
        if np.isfinite((logs or {}).get("loss", math.nan)):
            self.save()

    def save(self) -> None:
        with atomic_path(self.path, "the model") as tmp:
            standard_copy(self.model).save(tmp)


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger, whose failure on a full disk names history.csv."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with disk_errors(Path(self.filename), "the training history"):
            super().on_epoch_end(epoch, logs)


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


def make_schedule(cfg: Config, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate as a function of the step, over the whole run."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return cfg.learning_rate
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    # onecycle: linear warm-up over the first 20% of steps, then cosine decay to zero.
    warmup = max(1, total // 5)
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 25,
        decay_steps=max(1, total - warmup),
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(cfg: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer, driven by `make_schedule`."""
    lr = make_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    if cfg.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_model(model: keras.Model, cfg: Config, steps_per_epoch: int, replicas: int = 1) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
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
    different config, and a folder that cannot be written, before any training.
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
    if saved.exists():
        previous = Config.load(saved)
        if previous != cfg:
            changed = sorted(k for k, v in cfg.to_dict().items() if previous.to_dict().get(k) != v)
            raise UserError(
                f"{run_dir} holds an unfinished run with a different config ({', '.join(changed)}): "
                "re-run with the same options to resume, pass --overwrite to start over, or choose another --run-dir"
            )
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
    """Trains `cfg` in `run_dir` (resuming an interrupted run), evaluates the best
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
    check_run_dir(run_dir, cfg, overwrite)
    cfg.save(run_dir / "config.json")
    dist = distribute.make_strategy(strategy)
    # `auto` precision is measured (or read from the cache) here: after the strategy, before the seed.
    mixed_precision, precision_decision = precision.resolve(cfg, gpu_available())
    print(precision.describe(precision_decision), file=sys.stderr)
    identity, cfg = cfg, cfg.replace(mixed_precision=mixed_precision)

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()

    start = time.perf_counter()
    datasets = data.make_datasets(cfg, source)
    data_seconds = time.perf_counter() - start
    steps_per_epoch = math.ceil(datasets.train_examples / cfg.batch_size)
    with dist.scope():  # Variables (model, optimizer, metrics) are made once per replica.
        model = compile_model(build_model(cfg), cfg, steps_per_epoch, dist.num_replicas_in_sync)
        model = distribute.fit_compatible(model, dist)

    history_path = run_dir / "history.csv"
    state = resume.ResumeState(run_dir / "backup")
    epochs_before = state.epoch
    resuming = state.path is not None
    # The history row first, then the state: a stop between the two leaves a row that the next
    # run drops (trim_history) and trains again, never a resumed epoch without its row.
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        HistoryLogger(str(history_path), append=True),
        state,  # restores before LastGoodCheckpoint saves the restored model
        LastGoodCheckpoint(run_dir / "model.keras", save_at_start=resuming),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        *extra_callbacks,
    ]
    resume.trim_history(history_path, epochs_before)
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
    train_seconds = time.perf_counter() - start

    losses = fit.history.get("loss", [])
    if any(not np.isfinite(v) for v in losses):
        raise TrainingDiverged(
            f"training stopped: the loss became {losses[-1]} in epoch {epochs_before + len(losses)}; "
            f"lower --learning-rate (was {cfg.learning_rate}); the last good checkpoint is kept in {run_dir / 'model.keras'}"
        )

    if not role.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)  # The chief holds the run; this was scratch.
        print(f"{role.name} finished; the chief writes the run to {chief_dir}", file=sys.stderr)
        return None

    history = read_history(history_path)
    plots.learning_curves(history, run_dir / "learning_curves.png")

    images, labels = data.dataset_arrays(datasets.test)
    result = evaluate.evaluate(load_proba_fn(run_dir / "model.keras"), images, labels)

    epochs_this_run = len(losses)
    metrics = {
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "final_val_accuracy": history["val_accuracy"][-1] if "val_accuracy" in history else None,
        "best_val_accuracy": max(history["val_accuracy"]) if "val_accuracy" in history else None,
        "epochs": len(history.get("loss", [])),
        "resumed_after_epoch": epochs_before if resuming else None,
        "train_seconds": round(train_seconds, 3),
        "data_seconds": round(data_seconds, 3),
        "train_images_per_second": round(epochs_this_run * datasets.train_examples / train_seconds, 1),
        "train_examples": datasets.train_examples,
        "validation_examples": datasets.validation_examples,
        "jit_compile": resolve_jit(cfg, dist.num_replicas_in_sync),
        "device": "GPU" if gpu_available() else "CPU",
        "threads": {  # 0 is TensorFlow's "one per core"
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        },
        **distribute.describe(dist),
        "workers": role.num_workers,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "mixed_precision": precision_decision,
        "config": identity.to_dict(),
        "test": result.to_dict(),
    }
    write_json(run_dir / "metrics.json", metrics, "the run's metrics")
    shutil.rmtree(run_dir / "backup", ignore_errors=True)  # Finished: nothing to resume.
    return metrics
