"""Helpers the tests share: running the CLI in-process or as a child, pictures, checks of one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import real_data_args
from PIL import Image, ImageDraw

from mnist_tf.cli import main
from mnist_tf.core.files import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a grey uint8 image [H,W] or [H,W,1]."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2])).save(buffer, "PNG")
    return buffer.getvalue()


def digit_image(seed: int = 0) -> np.ndarray:
    """A uint8 [28,28,1] stroke-like image: a bar and a random blob, white on black."""
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    image[rng.integers(4, 20), rng.integers(4, 20)] = 200
    return image[..., None]


def model_base(version_dir: Path, tmp: Path) -> Path:
    """A fresh base folder holding a copy of `version_dir` as version 1."""
    base = tmp / "saved_model" / "mnist"
    shutil.copytree(version_dir, base / "1")
    return base


def stop_during(server, send):
    """SIGTERM to a `ServerProcess` 0.2 s after `send()` starts on another thread: the server's exit status
    and what `send()` returned (the request in flight as the server stopped)."""
    import threading
    import time

    answer = {}
    sender = threading.Thread(target=lambda: answer.update(result=send()))
    sender.start()
    time.sleep(0.2)
    code = server.stop(signal.SIGTERM)
    sender.join()
    return code, answer.get("result")


def tf_config(workers, task_type="worker", index=0, **cluster):
    return json.dumps({"cluster": {"worker": workers, **cluster}, "task": {"type": task_type, "index": index}})


def cli(*args):
    return [sys.executable, "-m", "mnist_tf", *map(str, args)]


def real_args(run_dir, *extra):
    return [
        "train",
        "--preset",
        "fast",
        "--run-dir",
        run_dir,
        *real_data_args(),
        "--validation-examples",
        "1000",
        *extra,
    ]


def is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 100


# 2 x 63 steps: about 96% test accuracy, in seconds.
SHORT = ("--train-examples", "2000", "--epochs", "2", "--batch-size", "32")


def file_size_limit(limit):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG, as they fail with ENOSPC on a full disk.

    SIGXFSZ is ignored, or the kernel would kill the child at the first such write."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def run_child(args, fault=None, limit=None):
    """Runs the CLI in a child process, with a fault at a write (`MNIST_TF_FAULT`) or a file-size limit."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    preexec = file_size_limit(limit) if limit else None
    return subprocess.run(
        cli(*args), capture_output=True, text=True, env=env, preexec_fn=preexec, cwd=REPO, timeout=600, check=False
    )


def error_line(result):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def killed(result):
    return result.returncode == -signal.SIGKILL


def big_black_png(path: Path, width: int, height: int) -> None:
    """A valid, fully decodable PNG of `width` x `height` black pixels, compressed row by row
    (10000x10000 takes 100 KB on disk and never exists as an array here)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def drawn_digits() -> list[np.ndarray]:
    """A 0, a 1 and a 7 drawn with a pen into 28x28, light on black, MNIST's way."""
    digits = []
    for strokes in (
        [("ellipse", (8, 5, 20, 23))],
        [("line", (14, 4, 13, 24))],
        [("line", (7, 6, 21, 6)), ("line", (21, 6, 12, 24))],
    ):
        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        for kind, box in strokes:
            getattr(draw, kind)(box, fill=255, width=3) if kind == "line" else draw.ellipse(box, outline=255, width=3)
        digits.append(np.asarray(image))
    return digits


QUICK = ["--preset", "fast", "--epochs", "2", "--batch-size", "16"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1, result.output
    for word in words:
        assert word in error_lines[0], result.output
