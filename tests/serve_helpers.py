"""A real `mnist-tf serve` process on a free loopback port, for the server and browser tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a grey uint8 image [H,W] or [H,W,1]."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2])).save(buffer, "PNG")
    return buffer.getvalue()


def model_base(version_dir: Path, tmp: Path) -> Path:
    """A fresh base folder holding a copy of `version_dir` as version 1."""
    base = tmp / "saved_model" / "mnist"
    shutil.copytree(version_dir, base / "1")
    return base


class ServerProcess:
    """`mnist-tf serve` in a child process; `url` once it prints its address."""

    def __init__(self, base: Path, *options: str, timeout: float = 120):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self.stderr_path = base.parent / f"serve-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mnist_tf", "serve", "--model", str(base), "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, cwd=REPO,
        )
        self.stdout = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"serve exited with {self.process.wait()}: {self.log()[-3000:]}")
            self.stdout.append(line)
            found = re.search(r"at (http://\S+?)/v1/models/mnist", line)
            if found:
                self.url = found.group(1)
                return
        self.stop()
        raise RuntimeError(f"serve did not start within {timeout} s: {self.log()[-3000:]}")

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stdout += self.process.stdout.readlines()
        self.process.stdout.close()
        self._stderr.close()
        return self.process.returncode
