"""The CNN, built from small functional-API blocks.

`build_model(cfg)` stacks stages of Conv-BN-ReLU blocks, each stage ending
in a 2x2 max pool, then Dense-BN-ReLU blocks and the logits. The `seed`
preset is the classic MNIST convnet, kept as a baseline:

    image uint8 [28,28,1] -> Rescaling(1/255)
    -> Conv(32)-BN-ReLU -> Conv(64)-BN-ReLU -> MaxPool 2x2      (28x28 -> 14x14)
    -> Flatten (14*14*64 = 12,544) -> Dense(128)-BN-ReLU -> Dropout
    -> Dense(10) = raw logits

The `default` preset has two blocks per stage and two stages,
Conv32-Conv32, pool, Conv64-Conv64, pool (7*7*64 = 3,136 features), Dense(256).
The `fast` preset's first convolution (16 filters) has stride 2 (28x28 -> 14x14),
then Conv32, pool, Conv48, pool (3*3*48 = 432 features), Dense(128).

The logits carry no BatchNorm or ReLU: a ReLU would clip every negative
score to zero and BatchNorm would renormalise the scores the loss compares.
The loss applies softmax itself (`from_logits=True`), which is numerically
safer than a softmax layer followed by a log.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from mnist_tf.config import Config
from mnist_tf.core.contract import IMAGE_SHAPE, INPUT_NAME, LOGITS, NUM_CLASSES
from mnist_tf.modeling.losses import SmoothedSparseCrossentropy, plain_loss

# Keras mixed-precision policies by Config.mixed_precision: layers compute in
# the low-precision type and keep float32 weights.
# `auto` is decided by measurement when training starts (precision.resolve); a model built
# from an `auto` config outside training computes in float32.
POLICIES = {"off": "float32", "auto": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


@keras.saving.register_keras_serializable(package="mnist_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization whose training step runs TensorFlow's fused kernel.

    Keras 3 computes batch statistics with separate mean/variance ops (in
    float32, even under a bfloat16 policy); their gradients cost about half of
    every training step of this network on a CPU. `FusedBatchNormV3` does the
    same maths in one kernel and keeps bfloat16 activations in bfloat16.
    Inference is Keras' own code, so saved and exported models are plain
    BatchNormalization graphs. Channels-last inputs of rank 2 or 4 only.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm or len(inputs.shape) not in (2, 4):
            return super().call(inputs, training=training, mask=mask)
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x,
            scale=tf.cast(self.gamma, "float32") if self.scale else tf.ones([x.shape[-1]]),
            offset=tf.cast(self.beta, "float32") if self.center else tf.zeros([x.shape[-1]]),
            epsilon=self.epsilon,
            is_training=True,
        )
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        y = y if len(inputs.shape) == 4 else tf.reshape(y, tf.shape(inputs))
        return tf.cast(y, self.compute_dtype)


def conv_bn_relu(
    x,
    filters: int,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    bn_momentum: float = 0.9,
    name: str | None = None,
    dtype=None,
):
    """3x3 'same' convolution, BatchNorm, ReLU.

    The convolution has no bias: BatchNorm's learned offset replaces it.
    """
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        dtype=dtype,
        name=f"{name}_conv" if name else None,
    )(x)
    x = FusedBatchNormalization(momentum=bn_momentum, dtype=dtype, name=f"{name}_bn" if name else None)(x)
    return layers.ReLU(dtype=dtype, name=f"{name}_relu" if name else None)(x)


def pool(x, name: str | None = None, dtype=None):
    """2x2 max pooling: halves height and width."""
    return layers.MaxPooling2D(2, dtype=dtype, name=name)(x)


def dense_bn_relu(x, units: int, *, bn_momentum: float = 0.9, name: str | None = None, dtype=None):
    """Dense layer (no bias, BatchNorm supplies it), BatchNorm, ReLU."""
    x = layers.Dense(units, use_bias=False, dtype=dtype, name=f"{name}_dense" if name else None)(x)
    x = FusedBatchNormalization(momentum=bn_momentum, dtype=dtype, name=f"{name}_bn" if name else None)(x)
    return layers.ReLU(dtype=dtype, name=f"{name}_relu" if name else None)(x)


def build_model(cfg: Config, num_classes: int = NUM_CLASSES) -> keras.Model:
    """Builds the uncompiled CNN described by `cfg`; it maps uint8 images to `num_classes` logits.

    Under mixed precision every layer but the last computes in float16 or
    bfloat16; the logits layer computes in float32, so the softmax and the loss
    stay float32.
    """
    dtype = POLICIES[cfg.mixed_precision]
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255, dtype=dtype, name="rescale")(inputs)
    for s, stage in enumerate(cfg.stages, start=1):
        for b, filters in enumerate(stage, start=1):
            strides = cfg.first_stride if (s, b) == (1, 1) else 1
            x = conv_bn_relu(
                x, filters, strides=strides, bn_momentum=cfg.bn_momentum, dtype=dtype, name=f"stage{s}_block{b}"
            )
        x = pool(x, dtype=dtype, name=f"stage{s}_pool")
    x = layers.Flatten(dtype=dtype, name="flatten")(x)
    for d, units in enumerate(cfg.dense_units, start=1):
        x = dense_bn_relu(x, units, bn_momentum=cfg.bn_momentum, dtype=dtype, name=f"fc{d}")
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, seed=cfg.seed, dtype=dtype, name=f"fc{d}_dropout")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name=LOGITS)(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def _copy(model: keras.Model, **overrides) -> keras.Model:
    """The same network and weights, every layer rebuilt from its config with `overrides`; fused
    BatchNorm layers become Keras' own (they compute the same thing at inference). A compiled
    model's copy is compiled alike, with Keras' own loss and accuracy."""

    def clone(layer):
        cls = layers.BatchNormalization if isinstance(layer, FusedBatchNormalization) else layer.__class__
        return cls.from_config({**layer.get_config(), **overrides})

    copy = keras.models.clone_model(model, clone_function=clone)
    if copy.compiled and isinstance(copy.loss, SmoothedSparseCrossentropy):
        # Label smoothing and non-digits are ways of training, like the fused BatchNorm: the copy
        # carries Keras' own cross-entropy and accuracy, so its file needs no mnist_tf class to open.
        compiled = copy.get_compile_config()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        plain = {"loss": plain_loss(), "metrics": [accuracy]}
        copy.compile_from_config({**compiled, **{k: keras.saving.serialize_keras_object(v) for k, v in plain.items()}})
    copy.set_weights(model.get_weights())
    return copy


def standard_copy(model: keras.Model) -> keras.Model:
    """The model as standard Keras layers only, so its `.keras` file opens with plain
    `keras.models.load_model`, no mnist_tf import needed. The fused BatchNorm is a
    training-time speed-up; saved models do not need it."""
    return _copy(model)


def mirror_averaged(model: keras.Model) -> keras.Model:
    """The same network reading each image and its left-right mirror image, its logits the mean of the two.

    For data a mirror leaves in its class (clothes, `data.sources.MIRROR_INVARIANT`): on Fashion-MNIST the
    two readings together are 0.2-0.5 points more accurate than one (docs/performance.md#fashion-mnist), for
    twice the inference work. Training is untouched: the run saves this model, the network trains alone.

    `model` is a chain of layers from `build_model`; both readings share its layers and weights. The mirror
    is a fixed Dense layer on the image's rows (a reversed identity matrix: exact), so the result is standard
    Keras layers only and opens with plain `keras.models.load_model`.
    """
    chain = model.layers[1:]  # after the input: Rescaling first
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    width = IMAGE_SHAPE[1]
    dtype = chain[0].dtype_policy
    seen = chain[0](inputs)
    # Dense multiplies the last axis: put the width last, reverse it, put the channels back.
    mirror = layers.Permute((1, 3, 2), dtype=dtype, name="mirror_width_last")(seen)
    flip = layers.Dense(width, use_bias=False, trainable=False, dtype=dtype, name="mirror")
    mirror = layers.Permute((1, 3, 2), dtype=dtype, name="mirror_channels_last")(flip(mirror))
    flip.set_weights([np.eye(width, dtype="float32")[::-1]])
    for layer in chain[1:]:
        seen, mirror = layer(seen), layer(mirror)
    outputs = layers.Average(dtype="float32", name=f"{LOGITS}_mirror_averaged")([seen, mirror])
    return keras.Model(inputs, outputs, name=f"{model.name}_mirror_averaged")


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network and weights with every layer computing in float32, in standard layers.

    Mixed precision is a training speed-up; exported graphs stay float32 so
    that TF Serving and the TFLite converter see ordinary ops (quantisation is
    the converter's job).
    """
    return _copy(model, dtype="float32")
