"""`mnist_tf.imaging.ops`: the graph-only image operations against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_tf.imaging import ops


def sliding(x: np.ndarray, length: int, axis: int, combine, fill: float) -> np.ndarray:
    """Each pixel combined over the `length` pixels centred on it along `axis`, one window at a time."""
    before = max(length, 1) // 2
    padded = np.moveaxis(x, axis, 0)
    out = np.empty_like(padded)
    for i in range(padded.shape[0]):
        lo, hi = i - before, i - before + max(length, 1)
        rows = [padded[j] if 0 <= j < padded.shape[0] else np.full_like(padded[0], fill) for j in range(lo, hi)]
        out[i] = combine.reduce(np.stack(rows), axis=0)
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (13, 17), (40, 33)])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 5, 8, 11, 16, 31, 64, 100])
def test_window_is_the_sliding_minimum_and_maximum(shape, length):
    import tensorflow as tf

    x = np.random.default_rng(length * 100 + shape[0]).random(shape).astype(np.float32)
    for axis in (0, 1):
        for combine, np_combine, fill in ((tf.maximum, np.maximum, -1e9), (tf.minimum, np.minimum, 1e9)):
            got = ops.window(tf.constant(x), length, axis, combine, fill).numpy()
            np.testing.assert_array_equal(got, sliding(x, length, axis, np_combine, fill))


def test_opening_removes_what_the_rectangle_does_not_fit_in():
    import tensorflow as tf

    x = np.zeros((30, 30), np.float32)
    x[5:20, 5:20] = 1.0  # a 15x15 block: a 9x9 square fits in it
    x[25, 2:28] = 1.0  # a line one pixel high: it does not
    opened = ops.opening(tf.constant(x), 9, 9).numpy()
    np.testing.assert_array_equal(opened[5:20, 5:20], 1.0)
    assert opened[25].max() == 0.0
