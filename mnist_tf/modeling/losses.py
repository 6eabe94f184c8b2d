"""The training loss: cross-entropy of the logits, label-smoothed as the config says."""

from __future__ import annotations

from typing import Any

import keras

from mnist_tf.config import Config


@keras.saving.register_keras_serializable(package="mnist_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels whose one-hot targets are smoothed: the true
    class gets 1 - `smoothing` and every class `smoothing` / 10 on top (label smoothing, Szegedy et
    al. 2016), so the network is not pushed towards ever larger logits on images it already reads.

    Keras' `SparseCategoricalCrossentropy` has no smoothing; this is its `from_logits=True` loss
    when `smoothing` is 0.
    """

    def __init__(self, smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_p = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1, 1))
        true_class = -keras.ops.take_along_axis(log_p, labels, axis=-1)[:, 0]
        return (1 - self.smoothing) * true_class - self.smoothing * keras.ops.mean(log_p, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smoothing": self.smoothing}


def plain_loss() -> keras.losses.Loss:
    """Cross-entropy of logits against integer labels, unsmoothed."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_loss(cfg: Config) -> keras.losses.Loss:
    """The training loss: cross-entropy of the logits, label-smoothed by `cfg.label_smoothing`."""
    if cfg.label_smoothing:
        return SmoothedSparseCrossentropy(cfg.label_smoothing, name="smoothed_crossentropy")
    return plain_loss()
