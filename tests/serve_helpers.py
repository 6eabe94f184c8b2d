"""Helpers for the server and browser tests: PNG bytes and a fresh base folder of versions."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of a grey uint8 image [H,W] or [H,W,1]."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8).reshape(image.shape[:2])).save(buffer, "PNG")
    return buffer.getvalue()


def model_base(version_dir: Path, tmp: Path) -> Path:
    """A fresh base folder holding a copy of `version_dir` as version 1."""
    base = tmp / "saved_model" / "mnist"
    shutil.copytree(version_dir, base / "1")
    return base
