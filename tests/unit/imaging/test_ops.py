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
    # A length known when the graph is built (short ones are shifted copies) and one known only when it runs.
    for given in (length, tf.constant(length)):
        for axis in (0, 1):
            for combine, np_combine, fill in ((tf.maximum, np.maximum, -1e9), (tf.minimum, np.minimum, 1e9)):
                got = ops.window(tf.constant(x), given, axis, combine, fill).numpy()
                np.testing.assert_array_equal(got, sliding(x, length, axis, np_combine, fill))


def test_opening_removes_what_the_rectangle_does_not_fit_in():
    import tensorflow as tf

    x = np.zeros((30, 30), np.float32)
    x[5:20, 5:20] = 1.0  # a 15x15 block: a 9x9 square fits in it
    x[25, 2:28] = 1.0  # a line one pixel high: it does not
    opened = ops.opening(tf.constant(x), 9, 9).numpy()
    np.testing.assert_array_equal(opened[5:20, 5:20], 1.0)
    assert opened[25].max() == 0.0


def connected(mask: np.ndarray) -> np.ndarray:
    """Each ink cell labelled with the largest cell number (1 + row * w + col) of its 8-connected region."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        region, todo = [start], [start]
        labels[start] = -1
        while todo:
            y, x = todo.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = -1
                        region.append((ny, nx))
                        todo.append((ny, nx))
        largest = max(1 + y * w + x for y, x in region)
        for cell in region:
            labels[cell] = largest
    return labels


@pytest.mark.parametrize("shape", [(1, 1), (1, 12), (9, 1), (20, 20), (48, 31)])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.7])
def test_regions_labels_each_8_connected_region_with_its_largest_cell_number(shape, density):
    import tensorflow as tf

    mask = np.random.default_rng(int(density * 100) + shape[0]).random(shape) < density
    np.testing.assert_array_equal(ops.regions(tf.constant(mask)).numpy(), connected(mask))
