"""MNIST from TensorFlow Datasets as `tf.data` pipelines.

Images stay uint8 all the way into the model (scaling is the model's first
layer), so training, evaluation and every exported model take raw pixels.

Data comes from `tfds.load("mnist")`: downloaded by TFDS where there is
internet, or prepared from the four original archives in a *manual dir*
(`--manual-dir` or `$MNIST_TF_MANUAL_DIR`) where there is not.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from mnist_tf.config import Config
from mnist_tf.errors import UserError
from mnist_tf.io import DiskFull, disk_full_reason

MANUAL_DIR_ENV = "MNIST_TF_MANUAL_DIR"
ARCHIVES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
TRAIN_SIZE = 60000
# Where TFDS downloads the MNIST archives from (tensorflow_datasets/image_classification/mnist.py).
DOWNLOAD_HOST = "storage.googleapis.com"
EVAL_BATCH_SIZE = 1000


@dataclasses.dataclass(frozen=True)
class Source:
    """Where MNIST comes from: TFDS's data dir and, offline, the archives' folder."""

    data_dir: Path | None = None
    manual_dir: Path | None = None

    @classmethod
    def from_options(cls, data_dir: str | Path | None, manual_dir: str | Path | None) -> Source:
        """Resolves CLI options; `$MNIST_TF_MANUAL_DIR` stands in for a missing `manual_dir`."""
        manual = manual_dir or os.environ.get(MANUAL_DIR_ENV) or None
        return cls(
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            manual_dir=Path(manual).expanduser() if manual else None,
        )


def _offline_message() -> str:
    return (
        f"cannot download MNIST ({DOWNLOAD_HOST} is unreachable) and no archives were given: "
        f"put {', '.join(ARCHIVES)} in a folder and pass --manual-dir DIR (or set {MANUAL_DIR_ENV})"
    )


def _check_manual_dir(manual_dir: Path) -> None:
    if not manual_dir.is_dir():
        raise UserError(f"manual dir {manual_dir} is not a folder: pass the folder that holds {', '.join(ARCHIVES)}")
    missing = [name for name in ARCHIVES if not (manual_dir / name).is_file()]
    if missing:
        raise UserError(
            f"manual dir {manual_dir} lacks {', '.join(missing)}: copy the original MNIST archives there "
            f"(the names must match)"
        )


def download_host_reachable(timeout: float = 3.0) -> bool:
    """True when TFDS's download host answers; checked before TFDS's own retries,
    which take minutes to give up on a machine with no internet."""
    try:
        with socket.create_connection((DOWNLOAD_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_split(split: str, source: Source) -> tf.data.Dataset:
    """Returns a TFDS MNIST split as `(image uint8 [28,28,1], label int64)` pairs.

    Prepares the dataset first if needed, from `source.manual_dir` when given,
    else by download. Raises `UserError` when neither can work.
    """
    builder = tfds.builder("mnist", data_dir=source.data_dir)
    if not builder.is_prepared():
        if source.manual_dir is not None:
            _check_manual_dir(source.manual_dir)
        elif not download_host_reachable():
            raise UserError(_offline_message())
    download_config = tfds.download.DownloadConfig(manual_dir=source.manual_dir)
    try:
        return tfds.load(
            "mnist",
            split=split,
            data_dir=source.data_dir,
            as_supervised=True,
            download_and_prepare_kwargs={"download_config": download_config},
        )
    except NonMatchingChecksumError as e:
        raise UserError(
            f"an MNIST archive failed TFDS's checksum check (corrupt or truncated): replace the archives in "
            f"{source.manual_dir or 'the download folder'} with fresh copies ({type(e).__name__})"
        ) from None
    except Exception as e:  # TFDS writes through TensorFlow, whose errors are not OSErrors.
        reason = disk_full_reason(e)
        if reason is not None:
            where = source.data_dir or Path(tfds.core.constants.DATA_DIR).expanduser()
            raise DiskFull(
                f"could not prepare MNIST in {where} ({reason}): free some disk space or pass another --data-dir, "
                "then run the same command again"
            ) from None
        if isinstance(e, OSError):  # requests' ConnectionError is an OSError too.
            raise UserError(
                f"could not prepare MNIST ({e.__class__.__name__}: {str(e)[:200]}); {_offline_message()}"
            ) from None
        raise


def split_names(cfg: Config) -> tuple[str, str]:
    """TFDS split strings for training and validation, both slices of `train`.

    The last `validation_examples` of the training split are held out; the
    test split is kept for final evaluation only.
    """
    first_held_out = TRAIN_SIZE - cfg.validation_examples
    train_end = cfg.train_examples if cfg.train_examples is not None else first_held_out
    return f"train[:{train_end}]", f"train[{first_held_out}:]"


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


def augmenter(seed: int) -> keras.Sequential:
    """Pen width (see `RandomStrokeWidth`), then small random rotations (±10°), shifts (±10%) and zooms
    (±10%) in one resampling (see `RandomAffine`)."""
    return keras.Sequential([RandomStrokeWidth(seed=seed + 3), RandomAffine(seed=seed)], name="augment")


# Batches prefetched ahead of the training step. Fixed, because tf.data's autotuning is off (`finish`).
PREFETCH_BATCHES = 2


def augment_calls(cfg: Config) -> int:
    """Batches augmented side by side: half the cores, at least one; one for a `deterministic` run,
    so the seeded random stream is drawn in a fixed order."""
    return 1 if cfg.deterministic else max(1, (os.cpu_count() or 1) // 2)


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


def train_pipeline(ds: tf.data.Dataset, cfg: Config) -> tf.data.Dataset:
    """Shuffles (seeded, fresh order each epoch), batches, optionally augments, prefetches.

    `ds` should be in memory (`in_memory`), so no epoch waits on reading files.
    Batches are global batches of `cfg.batch_size`: a strategy splits each one over its replicas.
    """
    size = int(ds.cardinality())
    ds = ds.shuffle(max(size, 1), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size)
    if cfg.augment:
        layers = augmenter(cfg.seed)

        def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            moved = layers(tf.cast(images, tf.float32), training=True)
            return tf.cast(tf.clip_by_value(tf.round(moved), 0, 255), tf.uint8), labels

        ds = ds.map(augment, num_parallel_calls=augment_calls(cfg))
    return finish(ds)


def eval_pipeline(ds: tf.data.Dataset, batch_size: int = EVAL_BATCH_SIZE) -> tf.data.Dataset:
    """Batches and prefetches, in a fixed order."""
    return finish(ds.batch(batch_size))


def in_memory(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Reads a whole split into two tensors and serves it from there.

    All of MNIST is 55 MB as uint8, so this is the cheapest cache: files are
    read and decoded once, before training, and the first epoch runs as fast
    as the others (a `.cache()` would fill during epoch 1, inside `fit`'s time).
    """
    images, labels = ds.batch(TRAIN_SIZE).get_single_element()
    return tf.data.Dataset.from_tensor_slices((images, labels))


@dataclasses.dataclass
class Datasets:
    """The three pipelines of a training run, with their sizes."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    train_examples: int
    validation_examples: int


def make_datasets(cfg: Config, source: Source) -> Datasets:
    """Builds training, validation and test pipelines for `cfg`."""
    train_split, val_split = split_names(cfg)
    train = in_memory(load_split(train_split, source))
    validation = in_memory(load_split(val_split, source)) if cfg.validation_examples else None
    return Datasets(
        train=train_pipeline(train, cfg),
        validation=eval_pipeline(validation) if validation is not None else None,
        test=eval_pipeline(in_memory(load_split("test", source))),
        train_examples=int(train.cardinality()),
        validation_examples=int(validation.cardinality()) if validation is not None else 0,
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
