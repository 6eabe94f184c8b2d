"""Where the data come from: TensorFlow Datasets, online or from archives in a manual dir, or a folder
of IDX archives.

`--dataset` names a TFDS data set in MNIST's format (`choices.DATASETS`: `mnist`, the default,
`fashion_mnist`, `kmnist`, `emnist/digits`, `emnist/mnist`) or a folder holding the four IDX archives
(`idx.FILES`) of a user's own data. A TFDS data set is downloaded by TFDS where there is internet,
or prepared from its original archives in a *manual dir* (`--manual-dir` or `$MNIST_TF_MANUAL_DIR`)
where there is not. Archives that a distribution recompressed (other gzip bytes, so other SHA-256
sums than TFDS registered) are read directly instead, once their decompressed content is checked
(`idx.CONTENT_SHA256`). A folder is read directly and checked (`idx.read_folder`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import socket
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from mnist_tf.config import Config
from mnist_tf.config.choices import DATASETS, DEFAULT_DATASET
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import DiskFull, disk_full_reason
from mnist_tf.data import idx

MANUAL_DIR_ENV = "MNIST_TF_MANUAL_DIR"
ARCHIVES = idx.FILES
TRAIN_SIZE = 60000
# TFDS's training split sizes (tensorflow_datasets/image_classification/mnist.py).
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "kmnist": 60000, "emnist/digits": 240000, "emnist/mnist": 60000}
# Where TFDS downloads each data set's archives from (the same file).
DOWNLOAD_HOST = "storage.googleapis.com"
DOWNLOAD_HOSTS = {
    "mnist": DOWNLOAD_HOST,
    "fashion_mnist": "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    "kmnist": "codh.rois.ac.jp",
    "emnist/digits": "biometrics.nist.gov",
    "emnist/mnist": "biometrics.nist.gov",
}
# What a manual dir holds for each: MNIST's four archive names, or EMNIST's one zip of every EMNIST set.
MANUAL_FILES = {name: ARCHIVES for name in DATASETS} | {"emnist/digits": ("gzip.zip",), "emnist/mnist": ("gzip.zip",)}


@dataclasses.dataclass(frozen=True)
class Source:
    """Where the data come from: the data set (a TFDS name, or a folder of IDX archives as an absolute
    path), TFDS's data dir and, offline, the archives' folder."""

    data_dir: Path | None = None
    manual_dir: Path | None = None
    dataset: str = DEFAULT_DATASET

    @classmethod
    def from_options(
        cls, data_dir: str | Path | None, manual_dir: str | Path | None, dataset: str | Path | None = None
    ) -> Source:
        """Resolves CLI options; `$MNIST_TF_MANUAL_DIR` stands in for a missing `manual_dir`."""
        manual = manual_dir or os.environ.get(MANUAL_DIR_ENV) or None
        return cls(
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            manual_dir=Path(manual).expanduser() if manual else None,
            dataset=resolve_dataset(dataset),
        )

    @property
    def folder(self) -> Path | None:
        """The folder of IDX archives `dataset` names; None for a TFDS data set."""
        return None if self.dataset in DATASETS else Path(self.dataset)

    @property
    def name(self) -> str:
        """The data set as people name it: a TFDS name, or the folder's path."""
        return self.dataset


def resolve_dataset(dataset: str | Path | None) -> str:
    """A TFDS name as it is, a folder as its absolute path; anything else is refused in one line."""
    if dataset is None or str(dataset) in DATASETS:
        return str(dataset or DEFAULT_DATASET)
    folder = Path(dataset).expanduser()
    if folder.is_dir():
        return str(folder.absolute())
    raise UserError(
        f"unknown data set {dataset}: pass one of {', '.join(DATASETS)}, or a folder holding {', '.join(ARCHIVES)}"
    )


def _offline_message(dataset: str = DEFAULT_DATASET) -> str:
    host = DOWNLOAD_HOSTS.get(dataset, DOWNLOAD_HOST)
    return (
        f"cannot download {dataset} ({host} is unreachable) and no archives were given: "
        f"put {', '.join(MANUAL_FILES.get(dataset, ARCHIVES))} in a folder and pass --manual-dir DIR "
        f"(or set {MANUAL_DIR_ENV})"
    )


def _check_manual_dir(manual_dir: Path, dataset: str = DEFAULT_DATASET) -> None:
    files = MANUAL_FILES.get(dataset, ARCHIVES)
    if not manual_dir.is_dir():
        raise UserError(f"manual dir {manual_dir} is not a folder: pass the folder that holds {', '.join(files)}")
    missing = [name for name in files if not (manual_dir / name).is_file()]
    if missing:
        raise UserError(
            f"manual dir {manual_dir} lacks {', '.join(missing)}: copy {dataset}'s original archives there "
            f"(the names must match)"
        )


def download_host_reachable(timeout: float = 3.0) -> bool:
    """True when TFDS's download host for MNIST answers; checked before TFDS's own retries,
    which take minutes to give up on a machine with no internet."""
    return host_reachable(DOWNLOAD_HOST, timeout)


def host_reachable(host: str, timeout: float = 3.0) -> bool:
    """True when `host` answers on port 443."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tfds_accepts(source: Source) -> bool:
    """Whether every archive in the manual dir is byte for byte the one TFDS registered for the data set."""
    infos = tfds.builder(source.dataset, data_dir=source.data_dir).url_infos or {}
    registered = {info.filename: info.checksum for info in infos.values() if info.filename}
    files = MANUAL_FILES[source.dataset]
    return all(registered.get(name) == _sha256(source.manual_dir / name) for name in files)


@functools.cache
def read_directly(source: Source) -> idx.Folder | None:
    """The data set read from its IDX archives without TFDS, checked; None when TFDS reads it.

    That is a folder of a user's own data, or a manual dir of recompressed archives of a TFDS data set
    whose decompressed content is known (`idx.CONTENT_SHA256`). A manual dir that TFDS would refuse, and
    whose content cannot be checked here, is refused in one line.
    """
    if source.folder is not None:
        return idx.read_folder(source.folder)
    if source.manual_dir is None or tfds.builder(source.dataset, data_dir=source.data_dir).is_prepared():
        return None
    _check_manual_dir(source.manual_dir, source.dataset)
    if _tfds_accepts(source):
        return None
    if source.dataset not in idx.CONTENT_SHA256:
        raise UserError(
            f"the archives in {source.manual_dir} fail TFDS's checksum for {source.dataset} (corrupt, truncated or "
            "recompressed): put the original archives there"
        )
    idx.check_content(source.manual_dir, source.dataset)
    return idx.read_folder(source.manual_dir)


_SLICE = re.compile(r"(train|test)(?:\[(\d*):(\d*)\])?")


def _slice(folder: idx.Folder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A TFDS split string ("test", "train[:500]", "train[55000:]") of a folder's arrays."""
    match = _SLICE.fullmatch(split)
    if match is None:
        raise ValueError(f"unsupported split {split!r} for a folder of IDX archives")
    images, labels = folder.splits[match.group(1)]
    part = slice(int(match.group(2)) if match.group(2) else None, int(match.group(3)) if match.group(3) else None)
    return images[part], labels[part]


def class_names(source: Source) -> tuple[str, ...]:
    """The data set's class names, label 0 first: TFDS's ClassLabel names, or a folder's labels.txt (else 0..N-1)."""
    if source.folder is not None:
        return read_directly(source).class_names
    return tuple(tfds.builder(source.dataset, data_dir=source.data_dir).info.features["label"].names)


def train_size(source: Source) -> int:
    """Examples in the data set's training split."""
    folder = read_directly(source)
    return len(folder.splits["train"][1]) if folder is not None else TRAIN_SIZES[source.dataset]


# Data drawn with a pen, whose training images are also redrawn with thicker and thinner pens; data that a
# left-right mirror leaves in its class, whose training images are also mirrored; and data whose pictures are
# all centred, upright and of one size (Fashion-MNIST's product photos, each fitted to the same box), which get
# no turns, shifts or zooms: those show the network pictures the data never holds, and cost the `default`
# network two points of test accuracy there (docs/performance.md#fashion-mnist). A folder is none of these:
# nothing is known of what it holds, so it gets only small turns, shifts and zooms.
PEN_DRAWN = ("mnist", "kmnist", "emnist/digits", "emnist/mnist")
MIRROR_INVARIANT = ("fashion_mnist",)
CENTRED = ("fashion_mnist",)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which of `data.augment`'s augmentations suit a data set."""

    pens: bool = True
    mirror: bool = False
    affine: bool = True  # small turns, shifts and zooms


def augmentation(source: Source) -> Augmentation:
    """The augmentations that suit the data set (`PEN_DRAWN`, `MIRROR_INVARIANT`, `CENTRED`)."""
    return Augmentation(
        pens=source.dataset in PEN_DRAWN,
        mirror=source.dataset in MIRROR_INVARIANT,
        affine=source.dataset not in CENTRED,
    )


def reads_mirrored(cfg: Config, source: Source) -> bool:
    """Whether a run of `cfg` on `source` saves a model that reads each picture and its mirror image and
    averages the two (`modeling.network.mirror_averaged`): a run trained with mirror images (augmentation on,
    and the mirror among the augmentations that suit the data set). A network trained without them
    reads mirror images badly: all of Fashion-MNIST's shoes point left, and averaging in the mirror reading cost
    `fast` (no augmentation) 5-8 points there (docs/performance.md#fashion-mnist)."""
    return cfg.augment and augmentation(source).mirror


# Data sets of handwritten digits 0-9: the non-digits a run may train with (`Config.non_digits`) are declined
# as "not a digit" only where the classes are digits.
DIGITS = ("mnist", "emnist/digits", "emnist/mnist")


def trains_with_non_digits(cfg: Config, source: Source) -> bool:
    """Whether a run of `cfg` on `source` mixes non-digits into its training, and so declines what looks like
    none of its classes: `cfg.non_digits` set, and the data set's classes are digits (`DIGITS`)."""
    return bool(cfg.non_digits) and source.dataset in DIGITS


def is_emnist(source: Source) -> bool:
    return source.dataset.startswith("emnist/")


def load_split(split: str, source: Source) -> tf.data.Dataset:
    """Returns a split of the data set as `(image uint8 [28,28,1], label int64)` pairs.

    A TFDS data set is prepared first if needed, from `source.manual_dir` when given,
    else by download. EMNIST's images, stored transposed, are put upright.
    Raises `UserError` when none of this can work.
    """
    folder = read_directly(source)
    if folder is not None:
        return tf.data.Dataset.from_tensor_slices(_slice(folder, split))
    ds = _load_tfds(split, source)
    if is_emnist(source):
        ds = ds.map(lambda image, label: (tf.transpose(image, [1, 0, 2]), label))
    return ds


def _load_tfds(split: str, source: Source) -> tf.data.Dataset:
    name = source.dataset
    builder = tfds.builder(name, data_dir=source.data_dir)
    if not builder.is_prepared():
        if source.manual_dir is not None:
            _check_manual_dir(source.manual_dir, name)
        elif not (download_host_reachable() if name == "mnist" else host_reachable(DOWNLOAD_HOSTS[name])):
            raise UserError(_offline_message(name))
    download_config = tfds.download.DownloadConfig(manual_dir=source.manual_dir)
    try:
        return tfds.load(
            name,
            split=split,
            data_dir=source.data_dir,
            as_supervised=True,
            download_and_prepare_kwargs={"download_config": download_config},
        )
    except NonMatchingChecksumError as e:
        raise UserError(
            f"a {name} archive failed TFDS's checksum check (corrupt or truncated): replace the archives in "
            f"{source.manual_dir or 'the download folder'} with fresh copies ({type(e).__name__})"
        ) from None
    except Exception as e:  # TFDS writes through TensorFlow, whose errors are not OSErrors.
        reason = disk_full_reason(e)
        if reason is not None:
            where = source.data_dir or Path(tfds.core.constants.DATA_DIR).expanduser()
            raise DiskFull(
                f"could not prepare {name} in {where} ({reason}): free some disk space or pass another --data-dir, "
                "then run the same command again"
            ) from None
        if isinstance(e, OSError):  # requests' ConnectionError is an OSError too.
            raise UserError(
                f"could not prepare {name} ({e.__class__.__name__}: {str(e)[:200]}); {_offline_message(name)}"
            ) from None
        raise


def split_names(cfg: Config, train_size: int = TRAIN_SIZE) -> tuple[str, str]:
    """TFDS split strings for training and validation, both slices of `train`.

    The last `validation_examples` of the training split (of `train_size` examples) are held out; the
    test split is kept for final evaluation only.
    """
    if cfg.validation_examples >= train_size:
        raise UserError(
            f"--validation-examples {cfg.validation_examples} leaves nothing to train on: the training split has "
            f"{train_size} examples; hold out fewer"
        )
    first_held_out = train_size - cfg.validation_examples
    train_end = min(cfg.train_examples, first_held_out) if cfg.train_examples is not None else first_held_out
    return f"train[:{train_end}]", f"train[{first_held_out}:]"


# Images the temperature (`evaluation.calibration`) is fitted on, when the run has no validation split.
CALIBRATION_IMAGES = 5000


def calibration_split(cfg: Config, train_size: int = TRAIN_SIZE) -> tuple[str, bool]:
    """The TFDS split string of the images the temperature is fitted on, and whether training never saw them.

    The validation slice when the run holds one out; else up to `CALIBRATION_IMAGES` of the training
    images the run did not use (it trained on the first `train_examples`); else the last
    `CALIBRATION_IMAGES` training images, which the model was trained on (then False).
    """
    if cfg.validation_examples:
        return split_names(cfg, train_size)[1], True
    last = max(train_size - CALIBRATION_IMAGES, 0)
    used = min(cfg.train_examples or train_size, train_size)  # the first `used` images were trained on
    if used < train_size:
        return f"train[{max(used, last)}:]", True
    return f"train[{last}:]", False
