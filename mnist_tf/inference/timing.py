"""How a model's inference is timed, in one place: the TFLite report, the benchmark and the notebooks use it.

One warm-up call first (graph tracing, tensor allocation), then every call
timed; with several repeats the median repeat counts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def seconds_per_call(fn: Callable[[np.ndarray], Any], batches: Sequence[np.ndarray], repeats: int = 1) -> float:
    """Median over `repeats` of the mean seconds per call of `fn` on `batches`, after one warm-up call."""
    fn(batches[0])
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        per_call.append((time.perf_counter() - start) / len(batches))
    return float(statistics.median(per_call))


def single_image_ms(fn: Callable[[np.ndarray], Any], images: np.ndarray, repeats: int = 1) -> float:
    """Batch-1 latency: milliseconds per call of `fn` on one image of `images` at a time."""
    return 1000 * seconds_per_call(fn, [images[i : i + 1] for i in range(len(images))], repeats)
