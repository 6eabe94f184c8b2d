"""The training loss: cross-entropy of the logits, label-smoothed as the config says."""

from __future__ import annotations

from typing import Any

import keras

from mnist_tf.config import Config

# The weight of a non-digit's loss against a digit's (Hendrycks et al., 2019, "Deep Anomaly Detection with
# Outlier Exposure", used 0.5).
NON_DIGIT_WEIGHT = 1.0


@keras.saving.register_keras_serializable(package="mnist_tf")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels whose one-hot targets are smoothed: the true
    class gets 1 - `smoothing` and every class `smoothing` / 10 on top (label smoothing, Szegedy et
    al. 2016), so the network is not pushed towards ever larger logits on images it already reads.

    Keras' `SparseCategoricalCrossentropy` has no smoothing; this is its `from_logits=True` loss
    when `smoothing` is 0. A label of -1 marks a non-digit: its target is even over the classes.
    """

    def __init__(self, smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        log_p = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1, 1))
        true_class = -keras.ops.take_along_axis(log_p, keras.ops.maximum(labels, 0), axis=-1)[:, 0]
        even = -keras.ops.mean(log_p, axis=-1)  # cross-entropy against the even target
        digit = (1 - self.smoothing) * true_class + self.smoothing * even
        # A non-digit (label -1, `data.non_digits`): the even target, weighted as in outlier exposure.
        return keras.ops.where(labels[:, 0] < 0, NON_DIGIT_WEIGHT * even, digit)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smoothing": self.smoothing}


def plain_loss() -> keras.losses.Loss:
    """Cross-entropy of logits against integer labels, unsmoothed."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@keras.saving.register_keras_serializable(package="mnist_tf")
class DigitAccuracy(keras.metrics.Mean):
    """The share of digits whose top logit is their label; non-digits (label -1) are left out."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        right = keras.ops.cast(keras.ops.cast(keras.ops.argmax(y_pred, axis=-1), "int32") == labels, "float32")
        return super().update_state(right, sample_weight=keras.ops.cast(labels >= 0, "float32"))


def make_loss(cfg: Config) -> keras.losses.Loss:
    """The training loss: cross-entropy of the logits, label-smoothed by `cfg.label_smoothing`."""
    if cfg.label_smoothing or cfg.non_digits:
        return SmoothedSparseCrossentropy(cfg.label_smoothing, name="smoothed_crossentropy")
    return plain_loss()
