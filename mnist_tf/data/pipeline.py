"""`tf.data` pipelines for training and evaluation, served from memory.

Images stay uint8 all the way into the model (scaling is the model's first
layer), so training, evaluation and every exported model take raw pixels.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from mnist_tf.config import Config
from mnist_tf.data.augment import RandomStrokeWidth, augmenter
from mnist_tf.data.non_digits import non_digit_images
from mnist_tf.data.sources import (
    Augmentation,
    Source,
    augmentation,
    class_names,
    load_split,
    split_names,
    train_size,
    trains_with_non_digits,
)

EVAL_BATCH_SIZE = 1000
# The most examples a split read in memory may have when its size is not known beforehand.
IN_MEMORY_MAX = 10_000_000
# Batches prefetched ahead of the training step. Fixed, because tf.data's autotuning is off (`finish`).
PREFETCH_BATCHES = 2


def augment_calls(cfg: Config) -> int:
    """Batches augmented side by side: `cfg.augment_calls` (measured per CPU by `training.tuning`), else
    half the cores, at least one; one for a `deterministic` run, so the seeded random stream is drawn in a
    fixed order."""
    if cfg.deterministic:
        return 1
    return cfg.augment_calls or max(1, (os.cpu_count() or 1) // 2)


def finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Prefetches `PREFETCH_BATCHES` and sets the options every pipeline here runs with.

    - tf.data's autotuning is off. With it on, the first batch of some epochs
      waited seconds with the CPU idle, one epoch in two or three, which made whole
      epochs up to twice as slow at random (docs/performance.md#steady-epochs).
      Parallelism is set by hand instead (`augment_calls`, `PREFETCH_BATCHES`).
    - A multi-worker strategy splits the data by element (DATA): the splits are
      served from memory (`in_memory`), so there are no files for FILE sharding
      to hand out (AUTO would try, warn, and fall back to DATA). Every worker
      holds the whole, small, split in the same seeded order and keeps its own
      share of each global batch. Other strategies ignore the option.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def train_pipeline(
    ds: tf.data.Dataset, cfg: Config, augmentation: Augmentation | None = None, epoch_examples: int | None = None
) -> tf.data.Dataset:
    """Shuffles (seeded, fresh order each epoch), batches, optionally augments, prefetches.

    `augmentation` says which augmentations suit the data (`sources.augmentation`; default: MNIST's).
    With `epoch_examples` (fewer than `ds` holds), each epoch is that many, drawn afresh from `ds`.

    `ds` should be in memory (`in_memory`), so no epoch waits on reading files.
    Batches are global batches of `cfg.batch_size`: a strategy splits each one over its replicas.
    """
    size = int(ds.cardinality())
    ds = ds.shuffle(max(size, 1), seed=cfg.seed, reshuffle_each_iteration=True)
    if epoch_examples is not None and epoch_examples < size:
        ds = ds.take(epoch_examples)  # another draw each epoch: the shuffle's order changes
    ds = ds.batch(cfg.batch_size)
    kind = augmentation or Augmentation()
    # Another pen for digits only: a non-digit (label -1) keeps the strokes it was drawn with. Models trained so
    # decline 2-3 points more of the held-out pictures without a digit
    # (docs/person-made.md, "What the training non-digits changed").
    pens = RandomStrokeWidth(seed=cfg.seed + 3) if cfg.augment and kind.pens else None
    layers = (
        augmenter(cfg.seed, mirror=kind.mirror, blur=cfg.blur if kind.pens else 0.0, affine=kind.affine)
        if cfg.augment
        else None
    )
    if pens is not None or layers is not None:

        def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            moved = tf.cast(images, tf.float32)
            if pens is not None:
                digit = tf.reshape(labels >= 0, [-1, 1, 1, 1])
                moved = tf.where(digit, pens(moved, training=True), moved)
            if layers is not None:
                moved = layers(moved, training=True)
            return tf.cast(tf.clip_by_value(tf.round(moved), 0, 255), tf.uint8), labels

        ds = ds.map(augment, num_parallel_calls=augment_calls(cfg))
    return finish(ds)


def eval_pipeline(ds: tf.data.Dataset, batch_size: int = EVAL_BATCH_SIZE) -> tf.data.Dataset:
    """Batches and prefetches, in a fixed order."""
    return finish(ds.batch(batch_size))


def in_memory(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Reads a whole split into two tensors and serves it from there.

    All of MNIST is 55 MB as uint8 (EMNIST's digits 220 MB), so this is the cheapest cache: files are
    read and decoded once, before training, and the first epoch runs as fast
    as the others (a `.cache()` would fill during epoch 1, inside `fit`'s time).
    """
    size = int(ds.cardinality())
    images, labels = ds.batch(size if size > 0 else IN_MEMORY_MAX).get_single_element()
    return tf.data.Dataset.from_tensor_slices((images, labels))


@dataclasses.dataclass
class Datasets:
    """The three pipelines of a training run, with their sizes."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    train_examples: int
    validation_examples: int
    class_names: tuple[str, ...] = tuple(str(c) for c in range(10))  # label 0 first; the model's output size


def with_non_digits(train: tf.data.Dataset, cfg: Config) -> tf.data.Dataset:
    """`train` and `cfg.non_digits` non-digits per image (`data.non_digits`, drawn from the run's seed),
    labelled -1; the shuffle mixes them in."""
    count = round(int(train.cardinality()) * cfg.non_digits)
    images = non_digit_images(count, seed=cfg.seed)
    extra = tf.data.Dataset.from_tensor_slices((images, np.full([count], -1, np.int64)))
    return train.concatenate(extra)


def make_datasets(cfg: Config, source: Source) -> Datasets:
    """Builds training, validation and test pipelines for `cfg`."""
    train_split, val_split = split_names(cfg, train_size(source))
    train = in_memory(load_split(train_split, source))
    examples = int(train.cardinality())
    if trains_with_non_digits(cfg, source):
        train = with_non_digits(train, cfg)
    validation = in_memory(load_split(val_split, source)) if cfg.validation_examples else None
    return Datasets(
        train=train_pipeline(train, cfg, augmentation(source), epoch_examples=examples),
        validation=eval_pipeline(validation) if validation is not None else None,
        test=eval_pipeline(in_memory(load_split("test", source))),
        train_examples=examples,  # an epoch's images, non-digits among them
        validation_examples=int(validation.cardinality()) if validation is not None else 0,
        class_names=class_names(source),
    )


def dataset_arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a batched `(image, label)` dataset, as numpy arrays."""
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def arrays(split: str, source: Source) -> tuple[np.ndarray, np.ndarray]:
    """A split (any TFDS split string, e.g. "test" or "train[:500]") as numpy images [N,28,28,1] and labels [N]."""
    return dataset_arrays(eval_pipeline(load_split(split, source)))
