"""Picture files and bytes -> pixels for `mnist_tf.imaging.mnist_form`: Pillow for files, TensorFlow in the SavedModel.

Both refuse pictures over MAX_PIXELS before decoding them whole, and both give
float32 [H,W,C] in [0,1], C = 1, 2, 3 or 4, which `images.to_mnist` (eager) and
`images.to_mnist_tensor` (in a graph) turn into MNIST's form.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mnist_tf.core.errors import UserError
from mnist_tf.imaging.mnist_form import NO_DIGIT, UNIT8, UNIT16, to_mnist

# Larger images are refused from their header, before any pixel is decoded.
MAX_PIXELS = 50_000_000
_SHRINK = f"the limit is {MAX_PIXELS // 1_000_000} megapixels; crop or shrink it around the digit"


def pillow_pixels(image: Any) -> np.ndarray:
    """A Pillow image's pixels as float32 [H,W,C] in [0,1], C = 1, 2, 3 or 4.

    16-bit images keep their precision; 32-bit integer and float images, whose
    range the mode does not say, are stretched from their darkest pixel to 0 and
    their brightest to 1. Palette and other modes become RGB or RGBA.
    """
    if image.mode.startswith("I;16"):
        return np.asarray(image, np.float32)[..., None] * UNIT16
    if image.mode in ("I", "F"):
        pixels = np.asarray(image, np.float64)
        finite = np.isfinite(pixels)
        low, high = (pixels[finite].min(), pixels[finite].max()) if finite.any() else (0.0, 0.0)
        scaled = (np.where(finite, pixels, low) - low) * (1 / (high - low) if high > low else 0.0)
        return scaled.astype(np.float32)[..., None]
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        transparent = image.mode in ("PA", "La") or "transparency" in image.info
        image = image.convert("RGBA" if transparent else ("L" if image.mode == "1" else "RGB"))
    pixels = np.asarray(image, np.float32) * UNIT8
    return pixels if pixels.ndim == 3 else pixels[..., None]


def decode_file(path: str | Path) -> np.ndarray:
    """Decodes an image file (PNG, JPEG, ...) into `pillow_pixels`.

    An animated image (GIF, APNG, WebP) gives its first frame; EXIF rotation is
    applied. Raises `UserError`, with a one-line message meant to follow the file
    name, for a missing, empty, unreadable or non-image file, and for one over
    `MAX_PIXELS` pixels, refused from its header undecoded. Pillow's warnings
    (corrupt metadata, decompression bombs) are silenced.
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
                return pillow_pixels(image)
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


def load_image(path: str | Path) -> np.ndarray:
    """An image file as the MNIST input the model sees, uint8 [28,28,1].

    Raises `UserError` (see `decode_file`), and for a picture with no digit in it.
    """
    image, blank = to_mnist(decode_file(path))
    if blank:
        raise UserError(NO_DIGIT)
    return image


def decode_bytes_tensor(encoded):
    """The SavedModel's decoder: encoded PNG/JPEG/GIF/BMP/WebP -> float32 [H,W,C] in [0,1].

    GIFs give their first frame. Undecodable bytes fail here, as an
    InvalidArgumentError naming the formats TF reads; pictures over MAX_PIXELS
    fail before the float copy (16 bytes per pixel at most).
    """
    import tensorflow as tf

    pixels = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    count = tf.shape(pixels)[0] * tf.shape(pixels)[1]
    too_large = tf.debugging.assert_less_equal(
        count, MAX_PIXELS, message=f"image too large: the limit is {MAX_PIXELS:,} pixels; crop or shrink it"
    )
    with tf.control_dependencies([too_large]):
        return tf.image.convert_image_dtype(pixels, tf.float32)
