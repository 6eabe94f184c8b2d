"""Where MNIST comes from: TensorFlow Datasets, online or from the archives in a manual dir.

Data comes from `tfds.load("mnist")`: downloaded by TFDS where there is
internet, or prepared from the four original archives in a *manual dir*
(`--manual-dir` or `$MNIST_TF_MANUAL_DIR`) where there is not.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from mnist_tf.config import Config
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import DiskFull, disk_full_reason

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
