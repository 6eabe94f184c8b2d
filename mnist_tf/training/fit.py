"""Training in a run dir: check it, set up, fit with checkpoints, resume after a stop.

`train` does everything up to a trained model.keras; `jobs.train` evaluates it
and writes metrics.json. The layout of the run dir is `core.rundir`'s. With
`strategy="multi-worker"` only the chief writes the run dir; every other worker
writes the same files to its own `distribute.worker_dir` and removes it when the
run ends (docs/distributed.md, "Who writes what").
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

from mnist_tf.config import Config
from mnist_tf.config.presets import expected_accuracy
from mnist_tf.core import machine, rundir
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import disk_errors, remove_temporaries
from mnist_tf.core.rundir import RunDir
from mnist_tf.data import pipeline, sources
from mnist_tf.modeling.network import build_model
from mnist_tf.training import budget, distribute, precision, resume, runinfo
from mnist_tf.training.callbacks import HistoryLogger, LastGoodCheckpoint, StopOnSignal
from mnist_tf.training.setup import compile_model, gpu_available, resolve_jit


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


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
    run = RunDir(run_dir)
    run_dir = run.path
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run dir {run_dir} is a file: pass a folder path to --run-dir")
    is_run = run.is_run()
    if run_dir.is_dir() and any(p.name != rundir.LOCK for p in run_dir.iterdir()) and not is_run:
        raise UserError(f"{run_dir} is not empty and holds no mnist-tf run: choose a new or empty --run-dir")
    if run.is_finished() and not overwrite:
        raise UserError(f"{run_dir} holds a finished run: pass --overwrite to replace it, or choose another --run-dir")
    if is_run and overwrite:  # Everything but the lock this process holds.
        for path in run_dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != rundir.LOCK:
                path.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to run dir {run_dir} ({e.strerror}): choose a writable --run-dir") from None
    saved = run.config
    changed = resume.check_same_run(run_dir, Config.load(saved), cfg) if saved.exists() else []
    if changed:
        print(f"Resuming with other runtime settings ({', '.join(changed)})", file=sys.stderr)
    for folder in (run_dir, run.backup):  # Left by a killed run; no other process writes here.
        remove_temporaries(folder)


@dataclasses.dataclass
class Trained:
    """What `train` did, for the metrics `jobs.train` writes."""

    cfg: Config  # the config computed with: `auto` precision resolved
    precision: dict[str, Any]  # how the precision was chosen
    strategy: tf.distribute.Strategy
    datasets: pipeline.Datasets
    data_seconds: float
    fitted: Fitted
    plan: budget.Plan | None  # with a time budget: the epochs planned


def train(
    cfg: Config,
    run: RunDir,
    role: distribute.Role,
    source: sources.Source,
    overwrite: bool,
    strategy: str,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> Trained:
    """Trains `cfg` in `run` (resuming an interrupted run); call it holding the run dir's lock.

    `strategy` is made here, after the run-dir checks and before any other
    TensorFlow op, as multi-worker training requires.
    """
    check_run_dir(run.path, cfg, overwrite)
    cfg.save(run.config)
    dist = distribute.make_strategy(strategy)
    runinfo.record_start(run.path, source, cfg, distribute.describe(dist))
    run_cfg, precision_decision = _set_up(cfg)
    start = time.perf_counter()
    datasets = pipeline.make_datasets(run_cfg, source)
    data_seconds = time.perf_counter() - start
    plan, guard = None, []
    if run_cfg.time_budget is not None:
        plan = _plan(run_cfg, run, datasets, dist, on_mnist=source.dataset == sources.DEFAULT_DATASET)
        run_cfg = run_cfg.replace(epochs=plan.epochs)
        found = resume.latest_state(run.backup)
        guard = [budget.BudgetGuard(plan.seconds_left(epochs_done=found[1] if found else 0))]
    model = _build(run_cfg, dist, datasets.train_examples, len(datasets.class_names))
    fitted = _fit(model, run_cfg, datasets, run, [*guard, *extra_callbacks], sources.reads_mirrored(run_cfg, source))
    return Trained(run_cfg, precision_decision, dist, datasets, data_seconds, fitted, plan)


def _plan(
    cfg: Config, run: RunDir, datasets: pipeline.Datasets, dist: tf.distribute.Strategy, on_mnist: bool = True
) -> budget.Plan:
    """The run's time plan (`budget`), printed with the accuracy to expect (measured on MNIST only);
    TensorFlow is seeded again after the timed steps, so the run's model starts as it would without a budget."""
    plan, new = budget.planned(cfg, run, datasets, dist)
    line = plan.describe(expected_accuracy(cfg) if on_mnist else None)
    print(line if new else f"{line} (kept from the start of this run)", file=sys.stderr)
    keras.utils.set_random_seed(cfg.seed)
    return plan


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


def _build(cfg: Config, dist: tf.distribute.Strategy, train_examples: int, num_classes: int) -> keras.Model:
    """The compiled model, with `num_classes` outputs; its variables (model, optimizer, metrics) are made once per replica of `dist`."""
    steps_per_epoch = math.ceil(train_examples / cfg.batch_size)
    with dist.scope():
        model = compile_model(build_model(cfg, num_classes), cfg, steps_per_epoch, dist.num_replicas_in_sync)
        return distribute.fit_compatible(model, dist)


@dataclasses.dataclass
class Fitted:
    """What one call's `fit` did."""

    losses: list[float]  # one per epoch trained in this call
    seconds: float
    resumed_after_epoch: int | None  # None when the run started afresh


def _callbacks(
    run: RunDir,
    state: resume.ResumeState,
    resuming: bool,
    extra: Sequence[keras.callbacks.Callback],
    mirrored: bool = False,
) -> list[keras.callbacks.Callback]:
    """`fit`'s callbacks, in order.

    The history row first, then the state: a stop between the two leaves a row that the next
    run drops (trim_history) and trains again, never a resumed epoch without its row.
    """
    return [
        keras.callbacks.TerminateOnNaN(),
        HistoryLogger(str(run.history), append=True),
        state,  # restores before LastGoodCheckpoint saves the restored model
        LastGoodCheckpoint(run.model, save_at_start=resuming, mirrored=mirrored),
        keras.callbacks.TensorBoard(str(run.logs), profile_batch=0),
        *extra,
        StopOnSignal(),  # last: an epoch that ends as a dropped Ctrl-C is found keeps its row and checkpoint
    ]


def _fit(
    model: keras.Model,
    cfg: Config,
    datasets: pipeline.Datasets,
    run: RunDir,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    mirrored: bool = False,
) -> Fitted:
    """Trains the epochs of `cfg` an interrupted run has not finished; refuses a loss that became NaN or inf.
    With `mirrored` the saved model averages each image's reading with its mirror image's (`LastGoodCheckpoint`)."""
    state = resume.ResumeState(run.backup)
    epochs_before, resuming = state.epoch, state.path is not None
    callbacks = _callbacks(run, state, resuming, extra_callbacks, mirrored)
    resume.trim_history(run.history, epochs_before)
    if resuming:
        print(f"Resuming the interrupted run in {run.path} after epoch {epochs_before}", file=sys.stderr)

    start = time.perf_counter()
    with disk_errors(run.logs, "the TensorBoard logs"):  # The other writes name their own files.
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
            f"lower --learning-rate (was {cfg.learning_rate}); the last good checkpoint is kept in {run.model}"
        )
    return Fitted(losses, seconds, epochs_before if resuming else None)


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process (TF_ENABLE_ONEDNN_OPTS); None if it cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def environment(cfg: Config, dist: tf.distribute.Strategy, role: distribute.Role) -> dict[str, Any]:
    """metrics.json's account of where the run computed: XLA, device, threads, strategy, versions."""
    return {
        "jit_compile": resolve_jit(cfg, dist.num_replicas_in_sync),
        "device": "GPU" if gpu_available() else "CPU",
        "onednn": onednn_enabled(),
        "machine": machine.describe(),
        "threads": {  # 0 is TensorFlow's "one per core"
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count(),
        },
        **distribute.describe(dist),
        "workers": role.num_workers,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
