"""Small file helpers: every artefact is written whole or not at all.

A write that fails because the disk is full (or a file-size limit is reached)
becomes one `DiskFull` error naming the file, and leaves no partial file.

`MNIST_TF_FAULT=<path-end>:kill` (or `:term`) is a test hook: the process
SIGKILLs (or SIGTERMs) itself in the middle of the atomic write of the first
path that ends with `<path-end>`, the temporary file half written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_tf.core.errors import UserError

FAULT_ENV = "MNIST_TF_FAULT"
DISK_FULL_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large",
    errno.EDQUOT: "disk quota exceeded",
}
# TensorFlow's and h5py's errors carry the system's message in their text only.
_DISK_FULL_TEXT = re.compile(
    r"no space left on device|file too large|disk quota exceeded|errno = (28|27|122)\b", re.IGNORECASE
)


class DiskFull(UserError):
    """A write failed for lack of space (ENOSPC, EFBIG or EDQUOT)."""


def disk_full_reason(error: BaseException | None) -> str | None:
    """The disk-full reason behind `error` or any exception it wraps, else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in DISK_FULL_ERRNOS:
            return DISK_FULL_ERRNOS[error.errno]
        match = _DISK_FULL_TEXT.search(str(error))
        if match:
            text = match.group(0).lower()
            return text if not text.startswith("errno") else DISK_FULL_ERRNOS[int(match.group(1))]
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def disk_errors(path: Path, what: str) -> Iterator[None]:
    """Turns a disk-full failure inside the block into `DiskFull` naming `what` and `path`."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        reason = disk_full_reason(e)
        if reason is None:
            raise
        raise DiskFull(
            f"could not write {what} {path} ({reason}): free some disk space, then run the same command again"
        ) from None


def fault_point(path: Path, tmp: Path) -> None:
    """The `MNIST_TF_FAULT` test hook (see the module doc); does nothing when it is unset."""
    spec = os.environ.get(FAULT_ENV, "")
    end, _, action = spec.rpartition(":")
    if not end or not str(path).endswith(end) or action not in ("kill", "term"):
        return
    if tmp.is_file():
        os.truncate(tmp, tmp.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGTERM)


def remove_temporaries(folder: Path) -> None:
    """Deletes the hidden temporary files `atomic_path` leaves when its process is killed.

    Only safe where no other process writes `folder` (a run dir under its lock)."""
    for tmp in Path(folder).glob(".*.tmp*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, what: str = "file") -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    A reader sees either the old file or the new one, never a partial write.
    The temporary name keeps `path`'s suffix because some writers (Keras) check it.
    A full disk raises `DiskFull` naming `what` and `path`.
    """
    path = Path(path)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    tmp_path = None
    try:
        with disk_errors(path, what):
            path.parent.mkdir(parents=True, exist_ok=True)
            stem = path.name[: -len(suffix) or None]
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; artefacts are meant to be shared.
            yield tmp_path
            fault_point(path, tmp_path)
            os.replace(tmp_path, path)
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def write_json(path: Path, data: Any, what: str = "file") -> None:
    """Writes `data` as indented JSON, atomically."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_bytes(path: Path, data: bytes, what: str = "file") -> None:
    """Writes `data` atomically."""
    with atomic_path(path, what) as tmp:
        tmp.write_bytes(data)
