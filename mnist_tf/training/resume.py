"""The resume state of an unfinished run, written whole or not at all.

    backup/epoch-<N>.keras   the model and its optimizer after epoch N

Each epoch's state is written to a temporary name and renamed (`io.atomic_path`),
so the epoch number and the weights change together and a kill or a full disk
mid-write leaves the previous state. It is kept until the run's metrics.json is
written, so a run stopped after training resumes at its evaluation.
Runs of earlier versions kept Keras' `BackupAndRestore` files (latest.weights.h5
and training_metadata.json): they resume too.

A run resumes only with the config it started with (`check_same_run`), but for
the runtime fields (`config.RUNTIME`: XLA, steps per execution, deterministic
ops), which change how fast it trains, not what.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import keras
import numpy as np

from mnist_tf.config import RUNTIME, Config
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import atomic_path, write_bytes

STATE_NAME = re.compile(r"epoch-(\d+)\.keras")
LEGACY_WEIGHTS = "latest.weights.h5"
LEGACY_METADATA = "training_metadata.json"


def unreadable(path: Path) -> UserError:
    return UserError(
        f"the resume state {path} cannot be read (an interrupted run left it half-written): "
        "pass --overwrite to start the run over, or choose another --run-dir"
    )


def check_same_run(run_dir: Path, previous: Config, cfg: Config) -> list[str]:
    """Refuses to resume `run_dir`, started with `previous`, with a `cfg` of other identity.

    Returns the runtime fields that differ, as "jit: null -> true", for a note.
    """
    before, after = previous.to_dict(), cfg.to_dict()
    changed = sorted(k for k in after if before.get(k) != after[k])
    different = [k for k in changed if k not in RUNTIME]
    if different:
        raise UserError(
            f"{run_dir} holds an unfinished run with a different config ({', '.join(different)}): "
            "re-run with the same options to resume, pass --overwrite to start over, or choose another --run-dir"
        )
    return [f"{k}: {json.dumps(before[k])} -> {json.dumps(after[k])}" for k in changed]


def latest_state(backup_dir: Path) -> tuple[Path, int] | None:
    """The newest resume state in `backup_dir` and the number of epochs it holds; None when there is none."""
    backup_dir = Path(backup_dir)
    states = [(int(m.group(1)), p) for p in backup_dir.glob("epoch-*.keras") if (m := STATE_NAME.fullmatch(p.name))]
    if states:
        epoch, path = max(states)
        return path, epoch
    legacy = backup_dir / LEGACY_WEIGHTS
    if not legacy.is_file():
        return None
    try:
        return legacy, int(json.loads((backup_dir / LEGACY_METADATA).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        raise unreadable(backup_dir / LEGACY_METADATA) from None


class ResumeState(keras.callbacks.Callback):
    """Restores the newest state at the start of `fit`; saves one after each epoch with a finite loss.

    `epoch` is the number of finished epochs the restored state holds (0: a fresh start).
    """

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        found = latest_state(self.backup_dir)
        self.path, self.epoch = found if found else (None, 0)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.path is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)  # so its state has somewhere to go
        try:
            self.model.load_weights(self.path)
        except Exception:  # noqa: BLE001  (h5py, zipfile and Keras each fail their own way on a cut file)
            raise unreadable(self.path) from None
        self.model._initial_epoch = self.epoch  # As Keras' own BackupAndRestore resumes.

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not np.isfinite((logs or {}).get("loss", math.nan)):
            return  # A diverged epoch is never a state to resume from.
        path = self.backup_dir / f"epoch-{epoch + 1}.keras"
        with atomic_path(path, "the resume state") as tmp:
            self.model.save(tmp)
        for old in [*self.backup_dir.glob("epoch-*.keras"), self.backup_dir / LEGACY_WEIGHTS]:
            if old != path:
                old.unlink(missing_ok=True)
        (self.backup_dir / LEGACY_METADATA).unlink(missing_ok=True)


def trim_history(path: Path, epochs: int) -> None:
    """Keeps the header and the first `epochs` whole rows of history.csv, so it matches the resume state.

    Rows of epochs the state does not hold (the run stopped after logging them),
    and a row cut short by a kill or a full disk, are dropped; with no epoch, the file goes.
    """
    path = Path(path)
    if not path.is_file():
        return
    if epochs == 0:
        path.unlink()
        return
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    header = next(csv.reader([lines[0]])) if lines else []
    rows = [line for line in lines[1:] if line.endswith("\n") and len(next(csv.reader([line]))) == len(header)]
    kept = "".join(lines[:1] + rows[:epochs])
    if kept != text:
        write_bytes(path, kept.encode(), "the training history")
