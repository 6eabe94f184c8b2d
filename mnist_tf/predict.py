"""Load a trained model from any format mnist-tf writes and classify images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_tf.errors import UserError
from mnist_tf.evaluate import ProbaFn

MODEL_HELP = "a run dir, a .keras file, a SavedModel version folder or a .tflite file"


def resolve_model_path(path: str | Path) -> Path:
    """Maps a run dir to its model.keras; checks that the path exists."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model {path} does not exist: pass {MODEL_HELP}")
    if path.is_dir():
        if (path / "model.keras").is_file():
            return path / "model.keras"
        if (path / "saved_model.pb").is_file():
            return path
        raise UserError(f"{path} is a folder with neither model.keras nor saved_model.pb: pass {MODEL_HELP}")
    return path


def load_keras(path: Path):
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a bad archive.
        raise UserError(
            f"{path} is not a readable Keras model ({type(e).__name__}): pass a model.keras written by mnist-tf train"
        ) from None


def load_proba_fn(path: str | Path) -> ProbaFn:
    """Returns a function from uint8 images [N,28,28,1] to probabilities [N,10]."""
    import tensorflow as tf

    path = resolve_model_path(path)
    if path.suffix == ".keras":
        model = load_keras(path)
        return lambda images: tf.nn.softmax(model(np.asarray(images, np.uint8), training=False)).numpy()
    raise UserError(f"{path} is not a model format mnist-tf reads: pass {MODEL_HELP}")
