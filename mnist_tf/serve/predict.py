"""One predict request, whichever API brought it: the checks both APIs make, then the batched model call.

REST (app.py) reads JSON, gRPC (grpc_api.py) reads TensorProtos; from there on a request is
checked, refused and answered the same way, with the same status codes and messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mnist_tf.serve.holder import ModelHolder, Servable
from mnist_tf.serve.limits import Limits, check_image_pixels, check_instances, instance_count

# Requests and answers larger than this are converted on a worker thread, not on the event loop.
OFF_LOOP_BYTES = 64 * 1024
OFF_LOOP_VALUES = 20_000


def check_request(
    servable: Servable,
    signature: str,
    limits: Limits,
    dtypes: Mapping[str, str],
    shapes: Mapping[str, Sequence[int]],
) -> None:
    """Refuses what a request asks before its values are read: too many instances, then inputs the
    signature does not take (names, dtypes, shapes)."""
    check_instances(shapes, limits.max_instances)
    servable.check_inputs(signature, dtypes, shapes)


async def predict(
    holder: ModelHolder, servable: Servable, signature: str, tensors: dict[str, np.ndarray], limits: Limits
) -> dict[str, np.ndarray]:
    """The signature's outputs for checked inputs, batched with other requests; encoded images over the
    pixel limit are refused first."""
    check_image_pixels(tensors, limits.max_image_pixels)
    holder.metrics.examples(servable.name, instance_count({n: a.shape for n, a in tensors.items()}))
    return await holder.run(servable, signature, tensors)
