"""Training-time augmentation: pens thicker and thinner, some blur, then small turns, shifts and zooms in one resampling."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class RandomStrokeWidth(keras.layers.Layer):
    """Redraws each image's strokes with another pen: thicker (grey dilation) or thinner (erosion).

    People write with fine pens and thick markers; MNIST's strokes vary less. Per
    image: 10% dilated by 5x5 and 25% by 3x3 (markers), 10% by 2x2, 10% eroded by
    2x2 (a fine pen), the rest unchanged. Images are float [N,28,28,1].
    """

    # (upper bound of the uniform draw, pooling window, dilate?) in order.
    PENS = ((0.10, 5, True), (0.35, 3, True), (0.45, 2, True), (0.55, 2, False))

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        draw = keras.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=self.seed_generator)
        out, low = images, 0.0
        for high, window, dilate in self.PENS:
            redrawn = tf.nn.max_pool2d(images if dilate else -images, window, 1, "SAME")
            out = tf.where((draw >= low) & (draw < high), redrawn if dilate else -redrawn, out)
            low = high
        return out


class RandomBlur(keras.layers.Layer):
    """Blurs a share of the images as a camera out of focus does, then stretches each back to its old peak.

    Photos of digits come out blurred and MNIST's scans hardly ever do; a model that has seen no blur
    reads a blurred digit right but is less sure of it, and then declines it as "not a digit". Per image:
    `share / 2` blurred by a Gaussian of sigma 0.8 pixels, `share / 2` by sigma 1.4, the rest unchanged.
    Images are float [N,28,28,1].
    """

    SIGMAS = (0.8, 1.4)

    def __init__(self, share: float = 0.15, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.share = share
        self.seed_generator = keras.random.SeedGenerator(seed)
        x = np.arange(-3, 4, dtype=np.float32)
        self.kernels = []
        for sigma in self.SIGMAS:
            g = np.exp(-(x**2) / (2 * sigma**2))
            self.kernels.append(np.outer(g, g)[:, :, None, None] / g.sum() ** 2)

    def call(self, images, training=True):
        if not training or not self.share:
            return images
        draw = keras.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=self.seed_generator)
        peak = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        out, step = images, self.share / len(self.kernels)
        for i, kernel in enumerate(self.kernels):
            blurred = tf.nn.conv2d(images, tf.constant(kernel, images.dtype), 1, "SAME")
            blurred *= peak / tf.maximum(tf.reduce_max(blurred, axis=[1, 2, 3], keepdims=True), 1e-3)
            out = tf.where((draw >= i * step) & (draw < (i + 1) * step), blurred, out)
        return out


class RandomAffine(keras.layers.Layer):
    """Small random rotations (±`degrees`), zooms (±`zoom`) and shifts (±`shift` of the side), as one
    bilinear resampling per image.

    Keras' RandomRotation, RandomZoom and RandomTranslation draw the same ranges but
    resample the image once each, so every training digit came out blurred by three
    interpolations while test digits are sharp; one transform blurs once, and costs
    a third of the resampling. Images are float [N,H,W,1]; space left uncovered is 0.
    """

    def __init__(self, degrees: float = 10.0, zoom: float = 0.1, shift: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.degrees, self.zoom, self.shift = degrees, zoom, shift
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        draw = keras.random.uniform([tf.shape(images)[0], 4], -1.0, 1.0, seed=self.seed_generator)
        angle = draw[:, 0] * (self.degrees * np.pi / 180)
        scale = 1.0 + self.zoom * draw[:, 1]  # > 1 reads a larger area: zooms out.
        dx, dy = self.shift * width * draw[:, 2], self.shift * height * draw[:, 3]
        # Each output pixel (x, y) reads the input at A (x - c, y - c) + c + (dx, dy), A = scale * rotation.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        a0, a1 = scale * tf.cos(angle), -scale * tf.sin(angle)
        b0, b1 = scale * tf.sin(angle), scale * tf.cos(angle)
        a2, b2 = cx - a0 * cx - a1 * cy + dx, cy - b0 * cx - b1 * cy + dy
        zero = tf.zeros_like(angle)
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=transforms,
            output_shape=[height, width],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )


def augmenter(seed: int, mirror: bool = False, blur: float = 0.0, affine: bool = True) -> keras.Sequential | None:
    """A `blur` share out of focus (see `RandomBlur`), a left-right mirror for half the images (`mirror`, for
    data a mirror does not change, such as clothes), then small random rotations (±10°), shifts (±10%) and zooms
    (±10%) in one resampling (`affine`, for data whose pictures vary so; see `RandomAffine`). None when none of
    them is asked for. The pens (`RandomStrokeWidth`) come before these, for digits only
    (`data.pipeline.train_pipeline`)."""
    layers: list[keras.layers.Layer] = []
    if blur:
        layers.append(RandomBlur(blur, seed=seed + 7))
    if mirror:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 5))
    if affine:
        layers.append(RandomAffine(seed=seed))
    return keras.Sequential(layers, name="augment") if layers else None
