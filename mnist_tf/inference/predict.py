"""Classify image files with any model `mnist_tf.inference.loading` loads, or on a server.

`predict` is the job of `mnist-tf predict`; `show` draws what the model saw.

Each file goes through `mnist_tf.imaging.decode.load_image`, the same preprocessing the
SavedModel's `serving_bytes` signature runs, so a photo, a scan or a canvas
drawing reaches the model in MNIST's form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mnist_tf.core.errors import UserError
from mnist_tf.core.types import DECLINED, ClassifyFn, Prediction
from mnist_tf.imaging.decode import decode_file, load_image


def predict_files(
    classify_fn: ClassifyFn,
    paths: Sequence[str | Path],
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> list[Prediction]:
    """Classifies each image file; a file that cannot be read, or holds no digit, gets an `error` instead, as
    does one the model declines (not a digit, `core.types.DECLINE_BELOW`). With `class_names`, each prediction
    carries its class's name."""
    results = [Prediction(file=str(p)) for p in paths]
    decoded = []
    for result in results:
        try:
            result.image = load_image(result.file)
            decoded.append(result)
        except UserError as e:
            result.error = str(e)
    for start in range(0, len(decoded), batch_size):
        chunk = decoded[start : start + batch_size]
        probabilities, declines = classify_fn(np.stack([r.image for r in chunk]))
        for result, p, declined in zip(chunk, np.asarray(probabilities, np.float64), declines):
            if declined:
                result.error = DECLINED
                continue
            result.digit = int(p.argmax())
            if class_names is not None and result.digit < len(class_names):
                result.class_name = class_names[result.digit]
            result.probability = float(p.max())
            result.probabilities = [round(float(v), 6) for v in p]
    return results


def predict(
    paths: Sequence[str | Path], model: str | Path | None = None, server: str | None = None
) -> list[Prediction]:
    """Classifies image files with `model` (any format `models` loads) or on `server`, a URL
    speaking TF Serving's REST (http(s)://) or gRPC (grpc://) API; pass exactly one. See `predict_files`
    for unreadable files."""
    if (model is None) == (server is None):
        raise ValueError("pass exactly one of model and server")
    if server is not None:
        from mnist_tf.inference.client import predict_files_on_server

        return predict_files_on_server(server, paths)
    return predictor(model)(paths)


def predictor(model: str | Path) -> Callable[[Sequence[str | Path]], list[Prediction]]:
    """`model` (any format `models` loads) loaded once, with its class names: files -> predictions as
    `predict_files` gives them, for classifying many batches of files with one model."""
    from mnist_tf.inference.loading import class_names_of, load_classify_fn

    classify_fn, names = load_classify_fn(model), class_names_of(model)
    return lambda paths: predict_files(classify_fn, paths, class_names=names)


def thumbnail(path: str | Path, side: int = 256) -> np.ndarray | None:
    """A file's picture shrunk to at most `side` pixels, as float [H,W,C] in [0,1]; None if unreadable."""
    try:
        pixels = decode_file(path)
    except UserError:
        return None
    step = max(1, int(np.ceil(max(pixels.shape[:2]) / side)))
    return pixels[::step, ::step]


def show(results: Sequence[Prediction], path: Path) -> Path:
    """Draws each picture beside the 28x28 the model received and its answer, as a PNG.

    Raises `UserError` when `path` cannot be written.
    """
    from mnist_tf.evaluation import plots

    rows = [
        (
            "/".join(Path(r.file).parts[-2:]),  # the file and its folder
            thumbnail(r.file),
            r.image,
            f"{r.class_name or r.digit} ({r.probability:.0%}{'' if r.sure else ', not sure'})"
            if r.error is None
            else r.error.split(" (")[0].split(":")[0],
        )
        for r in results
    ]
    try:
        return plots.what_the_model_saw(rows, path)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror}): pass a writable path to --show") from None
