"""The CNN, built from small functional-API blocks.

The default network is the classic MNIST convnet the seed sketch meant:

    image uint8 [28,28,1] -> Rescaling(1/255)
    -> Conv(32)-BN-ReLU -> Conv(64)-BN-ReLU -> MaxPool 2x2      (28x28 -> 14x14)
    -> Flatten (14*14*64 = 12,544) -> Dense(128)-BN-ReLU -> Dropout
    -> Dense(10) = raw logits

The logits carry no BatchNorm or ReLU: a ReLU would clip every negative
score to zero and BatchNorm would renormalise the scores the loss compares.
The loss applies softmax itself (`from_logits=True`), which is numerically
safer than a softmax layer followed by a log.
"""

from __future__ import annotations

import keras
from keras import layers

from mnist_tf.config import Config

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)


def conv_bn_relu(x, filters: int, *, kernel_size: int = 3, bn_momentum: float = 0.9, name: str | None = None):
    """3x3 'same' convolution, BatchNorm, ReLU.

    The convolution has no bias: BatchNorm's learned offset replaces it.
    """
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv" if name else None)(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn" if name else None)(x)
    return layers.ReLU(name=f"{name}_relu" if name else None)(x)


def pool(x, name: str | None = None):
    """2x2 max pooling: halves height and width."""
    return layers.MaxPooling2D(2, name=name)(x)


def dense_bn_relu(x, units: int, *, bn_momentum: float = 0.9, name: str | None = None):
    """Dense layer (no bias, BatchNorm supplies it), BatchNorm, ReLU."""
    x = layers.Dense(units, use_bias=False, name=f"{name}_dense" if name else None)(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn" if name else None)(x)
    return layers.ReLU(name=f"{name}_relu" if name else None)(x)


def build_model(cfg: Config) -> keras.Model:
    """Builds the uncompiled CNN described by `cfg`; it maps uint8 images to logits."""
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for s, stage in enumerate(cfg.stages, start=1):
        for b, filters in enumerate(stage, start=1):
            x = conv_bn_relu(x, filters, bn_momentum=cfg.bn_momentum, name=f"stage{s}_block{b}")
        x = pool(x, name=f"stage{s}_pool")
    x = layers.Flatten(name="flatten")(x)
    for d, units in enumerate(cfg.dense_units, start=1):
        x = dense_bn_relu(x, units, bn_momentum=cfg.bn_momentum, name=f"fc{d}")
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, seed=cfg.seed, name=f"fc{d}_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
