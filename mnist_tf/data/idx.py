"""A folder of four IDX archives, MNIST's own format, read and checked without TensorFlow.

    train-images-idx3-ubyte.gz   magic 2051, count N, 28, 28, then N*28*28 uint8 pixels
    train-labels-idx1-ubyte.gz   magic 2049, count N, then N uint8 labels
    t10k-images-idx3-ubyte.gz    the same for the test split
    t10k-labels-idx1-ubyte.gz
    labels.txt                   optional: one class name a line, label 0 first

Every check fails with one line naming the file, what is wrong and what to do. Archives may be
compressed by anything that writes gzip: what is checked is their decompressed content.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnist_tf.core.errors import UserError

ARCHIVES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FILES = tuple(name for pair in ARCHIVES.values() for name in pair)
LABELS_FILE = "labels.txt"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
SIDE = 28
MAX_CLASSES = 256  # labels are one byte each

# SHA-256 of each archive's *decompressed* bytes, for the TFDS data sets whose archives are read here when
# they are not byte for byte the ones TFDS registered (a distribution's package recompresses them: other
# gzip headers, the same content). Measured on the originals for mnist and on Debian's
# dataset-fashion-mnist package for fashion_mnist, whose gzip streams differ from the originals only in
# the header's file name, so the deflate data and its CRC-32 are the original's.
CONTENT_SHA256: Mapping[str, Mapping[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}


@dataclasses.dataclass(frozen=True)
class Folder:
    """A checked folder of IDX archives: both splits in memory and the class names."""

    path: Path
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]]  # split -> (images uint8 [N,28,28,1], labels int64 [N])
    class_names: tuple[str, ...]


def decompress(path: Path) -> bytes:
    """An archive's decompressed bytes; a truncated or non-gzip file is refused in one line."""
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(
            f"{path} is not a whole gzip archive ({type(e).__name__}: {str(e)[:80]}): it is truncated or "
            "corrupt; replace it with a fresh copy"
        ) from None


def _header(path: Path, data: bytes, magic: int, dims: int) -> tuple[int, ...]:
    size = 4 + 4 * dims
    if len(data) < size or int.from_bytes(data[:4], "big") != magic:
        kind = "images (idx3)" if magic == IMAGES_MAGIC else "labels (idx1)"
        raise UserError(
            f"{path} is not an IDX file of {kind}: its magic number is not {magic}; "
            f"the folder needs {', '.join(FILES)} in MNIST's format"
        )
    return tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))


def parse_images(path: Path, data: bytes) -> np.ndarray:
    count, rows, cols = _header(path, data, IMAGES_MAGIC, 3)
    if (rows, cols) != (SIDE, SIDE):
        raise UserError(f"{path} holds {rows}x{cols} images: mnist-tf trains on 28x28 images; resize them first")
    if len(data) - 16 != count * SIDE * SIDE:
        raise UserError(
            f"{path} says it holds {count} images but has {len(data) - 16} bytes of pixels, not "
            f"{count * SIDE * SIDE}: it is truncated or was written wrong; write it again"
        )
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, SIDE, SIDE, 1)


def parse_labels(path: Path, data: bytes) -> np.ndarray:
    (count,) = _header(path, data, LABELS_MAGIC, 1)
    if len(data) - 8 != count:
        raise UserError(
            f"{path} says it holds {count} labels but has {len(data) - 8}: it is truncated or was written wrong; "
            "write it again"
        )
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def check_content(folder: Path, dataset: str) -> None:
    """Checks that each archive's decompressed content is `dataset`'s, as `CONTENT_SHA256` knows it."""
    for name, expected in CONTENT_SHA256[dataset].items():
        if hashlib.sha256(decompress(folder / name)).hexdigest() != expected:
            raise UserError(
                f"{folder / name} is not {dataset}'s {name}: its content differs from the published archive "
                "(another data set's file, or damaged); replace it with the original"
            )


def read_labels_file(path: Path) -> tuple[str, ...] | None:
    """The class names of labels.txt, one a line (blank lines at the end ignored); None without the file."""
    if not path.is_file():
        return None
    try:
        names = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}): write it as UTF-8 text, one class name a line")
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise UserError(f"{path} has an empty line: write one class name a line, label 0 first")
    if len(set(names)) != len(names):
        raise UserError(f"{path} names a class twice: every line must name another class")
    if len(names) > MAX_CLASSES:
        raise UserError(f"{path} names {len(names)} classes: at most {MAX_CLASSES} are supported")
    return tuple(names)


def read_folder(folder: Path) -> Folder:
    """Reads and checks the four archives (and labels.txt) of `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"data set folder {folder} does not exist: pass a folder holding {', '.join(FILES)}")
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"data set folder {folder} lacks {', '.join(missing)}: put the four IDX archives there, "
            "named as MNIST's are"
        )
    splits = {}
    for split, (images_file, labels_file) in ARCHIVES.items():
        images = parse_images(folder / images_file, decompress(folder / images_file))
        labels = parse_labels(folder / labels_file, decompress(folder / labels_file))
        if len(images) != len(labels):
            raise UserError(
                f"{folder / images_file} holds {len(images)} images but {labels_file} {len(labels)} labels: "
                "the two must match one for one"
            )
        if not len(images):
            raise UserError(f"{folder / images_file} holds no images: the {split} split needs at least one")
        splits[split] = (images, labels)
    names = read_labels_file(folder / LABELS_FILE)
    highest = max(int(labels.max()) for _, labels in splits.values())
    if names is None:
        names = tuple(str(c) for c in range(highest + 1))
    elif highest >= len(names):
        raise UserError(
            f"{folder} has label {highest} but {LABELS_FILE} names {len(names)} classes (labels 0-{len(names) - 1}): "
            f"add the missing names to {LABELS_FILE}"
        )
    if len(names) < 2:
        raise UserError(f"{folder}'s labels are all 0: a classifier needs at least two classes")
    return Folder(folder, splits, names)


def write_folder(folder: Path, splits: Mapping[str, tuple[np.ndarray, np.ndarray]], names=None) -> Path:
    """Writes `splits` ("train" and "test": images uint8 [N,28,28(,1)], labels [N]) as the four archives,
    and `names` as labels.txt when given. For tests and for people making their own data sets."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images_file, labels_file) in ARCHIVES.items():
        images, labels = splits[split]
        images = np.asarray(images, np.uint8).reshape(len(images), SIDE, SIDE)
        header = b"".join(int(v).to_bytes(4, "big") for v in (IMAGES_MAGIC, len(images), SIDE, SIDE))
        (folder / images_file).write_bytes(gzip.compress(header + images.tobytes()))
        header = b"".join(int(v).to_bytes(4, "big") for v in (LABELS_MAGIC, len(labels)))
        (folder / labels_file).write_bytes(gzip.compress(header + np.asarray(labels, np.uint8).tobytes()))
    if names is not None:
        (folder / LABELS_FILE).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return folder
