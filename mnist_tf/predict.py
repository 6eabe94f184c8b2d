"""Load a trained model from any format mnist-tf writes and classify images.

Every loader returns a `ProbaFn`: uint8 images [N,28,28,1] -> probabilities
[N,10], so evaluation and prediction do not care which format they run.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.errors import UserError
from mnist_tf.evaluate import ProbaFn

MODEL_HELP = "a run dir, a .keras file, a SavedModel version folder or a .tflite file"
SIGNATURE = "serving_default"
INPUT_NAME = "image"
PROBABILITIES = "probabilities"
# Larger images are refused from their header, before any pixel is decoded.
MAX_PIXELS = 50_000_000
IMAGE_SIZE = 28
_SHRINK = f"the limit is {MAX_PIXELS // 1_000_000} megapixels; crop or shrink it around the digit"


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
        numbered = sorted(int(p.name) for p in path.iterdir() if re.fullmatch(r"\d+", p.name))
        if numbered:
            raise UserError(
                f"{path} holds SavedModel versions {numbered}: pass one version folder, e.g. {path / str(numbered[-1])}"
            )
        raise UserError(f"{path} is a folder with neither model.keras nor saved_model.pb: pass {MODEL_HELP}")
    return path


def load_keras(path: Path):
    import keras

    import mnist_tf.model  # noqa: F401  (registers the custom BatchNormalization layer)

    try:
        return keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a bad archive.
        raise UserError(
            f"{path} is not a readable Keras model ({type(e).__name__}): pass a model.keras written by mnist-tf train"
        ) from None


def load_saved_model(path: Path) -> ProbaFn:
    """The `serving_default` signature of a SavedModel, as a `ProbaFn`."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # TF raises several types for a broken SavedModel.
        raise UserError(
            f"{path} is not a readable SavedModel ({type(e).__name__}): "
            "pass a version folder written by mnist-tf export"
        ) from None
    signature = loaded.signatures.get(SIGNATURE)
    if signature is None or INPUT_NAME not in signature.structured_input_signature[1]:
        raise UserError(
            f"{path} has no {SIGNATURE} signature with an {INPUT_NAME!r} input: export it with mnist-tf export"
        )

    def proba_fn(images: np.ndarray) -> np.ndarray:
        # `loaded` stays referenced here: the signature needs its variables alive.
        return loaded.signatures[SIGNATURE](**{INPUT_NAME: tf.constant(np.asarray(images, np.uint8))})[
            PROBABILITIES
        ].numpy()

    return proba_fn


class TFLiteRunner:
    """Runs the `serving_default` signature of a TFLite model on uint8 image batches.

    The input tensor is resized only when the batch size changes, so repeated
    calls with one batch size cost one `invoke` each.
    """

    def __init__(self, model_content: bytes, source: str = "the model"):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_content=model_content)
            runner = self.interpreter.get_signature_runner(SIGNATURE)
            self.input = runner.get_input_details()[INPUT_NAME]["index"]
            self.output = runner.get_output_details()[PROBABILITIES]["index"]
        except (ValueError, KeyError, RuntimeError) as e:
            raise UserError(
                f"{source} is not a TFLite model with a {SIGNATURE} signature mapping {INPUT_NAME!r} to "
                f"{PROBABILITIES!r} ({type(e).__name__}): pass a .tflite written by mnist-tf export"
            ) from None
        self.batch_size: int | None = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.uint8)
        if len(images) != self.batch_size:
            self.interpreter.resize_tensor_input(self.input, list(images.shape))
            self.interpreter.allocate_tensors()
            self.batch_size = len(images)
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def load_proba_fn(path: str | Path) -> ProbaFn:
    """Returns a function from uint8 images [N,28,28,1] to probabilities [N,10]."""
    import tensorflow as tf

    path = resolve_model_path(path)
    if path.suffix == ".keras":
        from mnist_tf.model import float32_copy

        # Inference is float32 everywhere, as in the exports; mixed precision only speeds up training.
        model = float32_copy(load_keras(path))
        return lambda images: tf.nn.softmax(model(np.asarray(images, np.uint8), training=False)).numpy()
    if path.is_dir():
        return load_saved_model(path)
    if path.suffix == ".tflite":
        return TFLiteRunner(path.read_bytes(), source=str(path))
    raise UserError(f"{path} is not a model format mnist-tf reads: pass {MODEL_HELP}")


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """A greyscale image [H,W] uint8 as an MNIST input [28,28,1] uint8.

    Dark-on-light images (mean above mid-grey) are inverted to MNIST's light
    digit on black; non-square images are padded with black to a square, so
    the digit keeps its shape; then the image is resized to 28x28.
    """
    from PIL import Image

    gray = np.asarray(gray, np.uint8)
    if gray.mean() > 127:
        gray = 255 - gray
    h, w = gray.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = gray
    if side != IMAGE_SIZE:
        square = np.asarray(Image.fromarray(square).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))
    return square[:, :, None]


def grey_pixels(image: Any) -> np.ndarray:
    """A Pillow image's pixels as grey uint8 [H,W], transparent pixels as white paper.

    16-bit images are scaled down (Pillow's own conversion would clip them to
    255); 32-bit integer and float images, whose range the mode does not say,
    are stretched from their darkest pixel to black and their brightest to white.
    """
    from PIL import Image

    if image.mode.startswith("I;16"):
        return np.round(np.asarray(image, np.float64) / 257).astype(np.uint8)
    if image.mode in ("I", "F"):
        pixels = np.asarray(image, np.float64)
        finite = np.isfinite(pixels)
        low, high = (pixels[finite].min(), pixels[finite].max()) if finite.any() else (0.0, 0.0)
        scaled = (np.where(finite, pixels, low) - low) * (255 / (high - low) if high > low else 0.0)
        return np.round(scaled).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def load_image(path: str | Path) -> np.ndarray:
    """Decodes an image file (PNG, JPEG, ...) into an MNIST input [28,28,1] uint8.

    Transparent pixels count as white paper; an animated image (GIF, APNG, WebP)
    gives its first frame. Raises `UserError`, with a one-line message meant to
    follow the file name, for a missing, empty, unreadable or non-image file, and
    for one over `MAX_PIXELS` pixels, refused from its header undecoded. Pillow's
    warnings (corrupt metadata, decompression bombs) are silenced.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise UserError("empty file: pass a PNG or JPEG of a digit")
        with warnings.catch_warnings():
            # Pillow warns about corrupt metadata, and about decompression bombs from 89 megapixels
            # (our own limit, lower, refuses those): the user gets the digit or one error line instead.
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise UserError(f"image too large ({width}x{height} pixels): {_SHRINK}")
                image = ImageOps.exif_transpose(image)  # An animated image stays on its first frame.
                return to_mnist(grey_pixels(image))
    except FileNotFoundError:
        raise UserError("no such file: check the path") from None
    except IsADirectoryError:
        raise UserError("is a folder, not an image: pass image files") from None
    except UnidentifiedImageError:
        raise UserError("not an image Pillow can read: pass a PNG or JPEG of a digit") from None
    except Image.DecompressionBombError:  # Pillow's own check in open(), far above our limit.
        raise UserError(f"image too large: {_SHRINK}") from None
    except (OSError, ValueError, SyntaxError) as e:  # Truncated or corrupt data (Pillow raises all three).
        raise UserError(
            f"cannot decode the image ({type(e).__name__}: {' '.join(str(e).split())[:120]}): "
            "the file may be truncated or corrupt"
        ) from None


@dataclasses.dataclass
class Prediction:
    """The class of one image file, or why it could not be classified."""

    file: str
    digit: int | None = None
    probability: float | None = None
    probabilities: list[float] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.file}: error: {self.error}"
        return f"{self.file}: {self.digit} ({self.probability:.1%})"


def predict_files(proba_fn: ProbaFn, paths: Sequence[str | Path], batch_size: int = 256) -> list[Prediction]:
    """Classifies each image file; a file that cannot be read gets an `error` instead."""
    results = [Prediction(file=str(p)) for p in paths]
    decoded = []
    for result in results:
        try:
            decoded.append((result, load_image(result.file)))
        except UserError as e:
            result.error = str(e)
    for start in range(0, len(decoded), batch_size):
        chunk = decoded[start : start + batch_size]
        probabilities = np.asarray(proba_fn(np.stack([image for _, image in chunk])), np.float64)
        for (result, _), p in zip(chunk, probabilities):
            result.digit = int(p.argmax())
            result.probability = float(p.max())
            result.probabilities = [round(float(v), 6) for v in p]
    return results
