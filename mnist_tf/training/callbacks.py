"""What `fit` does after each epoch besides training: the checkpoint and the history, written safely."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from mnist_tf.core.files import atomic_path, disk_errors
from mnist_tf.modeling.network import mirror_averaged, standard_copy
from mnist_tf.training import signals


class LastGoodCheckpoint(keras.callbacks.Callback):
    """Saves the model after every epoch whose loss is finite, by write-then-rename.

    The presets' schedules decay the learning rate to (nearly) zero, so the
    last epoch's weights are the trained model. Choosing an epoch by
    validation accuracy instead chooses by noise: one of 5,000 validation
    images is 0.02 points, and in three seeds of the default preset that
    choice cost 0.01-0.05 points of test accuracy (docs/performance.md).
    Keras' ModelCheckpoint writes in place, so a kill mid-save would leave a
    truncated `model.keras`; here a reader sees the old file or the new one.

    With `mirrored`, the saved model reads each image and its mirror image and averages the two
    logits (`mirror_averaged`); the network trains alone.
    """

    def __init__(self, path: Path, save_at_start: bool = False, mirrored: bool = False):
        super().__init__()
        self.path = Path(path)
        self.save_at_start = save_at_start
        self.mirrored = mirrored

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
            model = standard_copy(self.model)
            (mirror_averaged(model) if self.mirrored else model).save(tmp)


class HistoryLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger, whose failure on a full disk names history.csv."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with disk_errors(Path(self.filename), "the training history"):
            super().on_epoch_end(epoch, logs)


class StopOnSignal(keras.callbacks.Callback):
    """Stops training after the step in which a Ctrl-C or SIGTERM arrived, if its
    KeyboardInterrupt was caught and dropped on the way (`signals.raise_pending`)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        signals.raise_pending()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        signals.raise_pending()
