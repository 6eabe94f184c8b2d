"""What one request may ask of the server, and the checks that refuse more (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence

import numpy as np

from mnist_tf.serve.status import RequestError, over_limit


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-request limits; each has a `mnist-tf serve` option of the same name."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_instances: int = 256
    max_image_pixels: int = 16_000_000


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""

    def too_large(size: str) -> RequestError:
        return over_limit(
            f"request body too large: {size} bytes, the limit is {limit:,} (--max-body-bytes); "
            "send fewer or smaller images per request",
            http_status=413,
        )

    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise too_large(f"{int(content_length):,}")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large(f"over {limit:,}")
    return bytes(body)


def instance_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """How many instances a request holds: the first dimension of its inputs (1 for scalars)."""
    return max((shape[0] for shape in shapes.values() if len(shape)), default=1)


def check_instances(shapes: Mapping[str, Sequence[int]], limit: int) -> None:
    """Refuses a request with more than `limit` instances."""
    count = instance_count(shapes)
    if count > limit:
        raise over_limit(
            f"too many instances: {count:,} in one request, the limit is {limit:,} (--max-instances); "
            "split it into several requests"
        )


def check_image_pixels(tensors: dict[str, np.ndarray], limit: int) -> None:
    """Refuses encoded images over `limit` pixels, read from their headers before anything decodes them.

    String values that are no image Pillow knows are left to the model, which names the problem.
    """
    from PIL import Image, UnidentifiedImageError

    for array in tensors.values():
        if array.dtype != object:
            continue
        for i, value in enumerate(array.reshape(-1)):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with Image.open(io.BytesIO(value)) as image:
                        width, height = image.size
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                continue
            if width * height > limit:
                raise over_limit(
                    f"image too large: {width}x{height} pixels in item {i}, the limit is {limit:,} pixels "
                    "(--max-image-pixels); crop or shrink it around the digit"
                )
