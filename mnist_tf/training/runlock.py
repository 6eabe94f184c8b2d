"""One training per run dir.

`hold(run_dir)` takes an exclusive `flock` on run_dir/.lock for as long as the
block runs and writes the holder's PID into it. A second training on the same
run dir refuses at once, naming that PID. The kernel drops the lock when its
process ends in any way, a SIGKILL included, so a lock left by a killed run is
simply taken by the next one. `holder(run_dir)` tells whether a run is training.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from mnist_tf.core.errors import UserError
from mnist_tf.core.rundir import RunDir


def _read_pid(fd: int) -> str:
    for _ in range(20):  # The holder writes its PID just after taking the lock.
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return f"PID {text}"
        time.sleep(0.05)
    return "an unknown process"


def _try_lock(fd: int, kind: int) -> bool:
    # An `holder` check holds a shared lock for microseconds: retry a little before refusing.
    for attempt in range(5):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.05 * attempt)
    return False


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Holds run_dir's lock for the block; refuses with `UserError` while another process holds it.

    Where the run dir cannot be made or written, the block runs unlocked: the
    run-dir checks inside it refuse such a folder with their own message.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(RunDir(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            raise UserError(
                f"{run_dir} is in use by another training ({_read_pid(fd)}): wait for it to finish or stop it, "
                "or choose another --run-dir"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # Releases the lock.


def holder(run_dir: Path) -> str | None:
    """'PID n' of the training that holds `run_dir` now, or None when none does."""
    try:
        fd = os.open(RunDir(run_dir).lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)
