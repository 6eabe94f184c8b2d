"""Small image operations in TensorFlow, written in ops that TFLite has built in.

No resize_area, histogram, lstsq or connected-components kernels: histograms
are segment sums, the least-squares solve is unrolled Gauss-Jordan, 3x3
neighbourhoods are shifted copies, so every graph built from these converts to
a LiteRT model for clients without TensorFlow. `mnist_tf.imaging.mnist_form` builds the
MNIST-form preprocessing from them.
"""

from __future__ import annotations


def _tf():
    import tensorflow as tf

    return tf


SHORT_WINDOW = 8  # Windows up to this long, of a length known when the graph is built, are shifted copies.
BINS = 1024  # Percentiles and Otsu's threshold read a histogram of this many bins over [0, 1]: O(pixels), no sort.


def as_image(x):
    """[h,w] -> [1,h,w,1], the layout pooling and resizing take."""
    tf = _tf()
    return tf.expand_dims(tf.expand_dims(x, 0), -1)


def plane(image):
    """[1,h,w,1] -> [h,w]."""
    tf = _tf()
    return tf.squeeze(image, [0, 3])


def histogram(values):
    tf = _tf()
    bins = tf.clip_by_value(tf.cast(tf.floor(values * BINS), tf.int32), 0, BINS - 1)
    return tf.math.unsorted_segment_sum(tf.ones_like(values), bins, BINS)


def percentiles(hist, qs):
    """The values (to 1/BINS) below which fractions `qs` of the values counted in `hist` lie."""
    tf = _tf()
    cumulative = tf.cumsum(hist)
    total = cumulative[-1]
    return [tf.cast(tf.argmax(tf.cast(cumulative >= q * total, tf.int32)), tf.float32) / BINS for q in qs]


def otsu(hist):
    """Otsu's threshold of the values counted in `hist`: the cut that best separates two classes."""
    tf = _tf()
    centres = (tf.range(BINS, dtype=tf.float32) + 0.5) / BINS
    weight = tf.cumsum(hist)
    mass = tf.cumsum(hist * centres)
    total, total_mass = weight[-1], mass[-1]
    mean_low = mass / tf.maximum(weight, 1.0)
    mean_high = (total_mass - mass) / tf.maximum(total - weight, 1.0)
    between = weight * (total - weight) * tf.square(mean_low - mean_high)
    return tf.cast(tf.argmax(between) + 1, tf.float32) / BINS


def shrink_to(image, side, pool):
    """[1,h,w,1] halved by `pool` (avg or max, 2x2) until its longer side is at most `side`."""
    tf = _tf()

    def longer(x):
        return tf.reduce_max(tf.shape(x)[1:3])

    return tf.while_loop(
        lambda x: longer(x) > side,
        lambda x: (pool(x, 2, 2, "SAME"),),
        (image,),
        shape_invariants=(tf.TensorShape([1, None, None, 1]),),
    )[0]


def resize(image, size):
    """[1,h,w,1] -> [1,*size,1]: halved by averaging while more than twice too large, then bilinear."""
    tf = _tf()
    larger = tf.cast(tf.reduce_max(size), tf.int32) * 2
    return tf.image.resize(shrink_to(image, larger, tf.nn.avg_pool2d), size, method="bilinear")


def solve(a, b):
    """x with a x = b for a symmetric positive definite [n,n] `a` (Gauss-Jordan, unrolled; n is small)."""
    tf = _tf()
    n = a.shape[0]
    m = tf.concat([a, b], axis=1)
    for i in range(n):
        row = m[i : i + 1] / m[i, i]
        unit = tf.one_hot([i], n)[0][:, None]
        m = m - m[:, i : i + 1] * row + unit * row
    return m[:, n:]


def neighbourhood(image, combine):
    """[1,h,w,1] -> each pixel's 3x3 neighbourhood combined by `combine` (tf.maximum, tf.add), the picture
    padded with zeros. A 3x3 pool computes the same, but costs 10-40 times as much on small pictures (its
    kernels are set up anew on every call); shifted copies and elementwise ops cost microseconds."""
    tf = _tf()

    def along(x, axis):
        padding = [[0, 0], [0, 0], [0, 0], [0, 0]]
        padding[axis] = [1, 1]
        padded = tf.pad(x, padding)
        size = tf.shape(x)
        before, here, after = (tf.slice(padded, tf.one_hot(axis, 4, k, 0), size) for k in (0, 1, 2))
        return combine(combine(before, here), after)

    return along(along(image, 1), 2)


def dilate(image):
    """[1,h,w,1] of values >= 0 -> the largest value in each pixel's 3x3 neighbourhood."""
    return neighbourhood(image, _tf().maximum)


def smooth(image):
    """[1,h,w,1] -> the mean of each pixel's 3x3 neighbourhood (the pixels inside the picture)."""
    tf = _tf()
    size = tf.shape(image)

    def count(n):  # Pixels of a 3-wide window inside a line of n: 2 at the ends (1 if n is 1), else 3.
        index = tf.range(n)
        return 3.0 - tf.cast(index == 0, tf.float32) - tf.cast(index == n - 1, tf.float32)

    counts = count(size[1])[:, None] * count(size[2])[None, :]
    return neighbourhood(image, tf.add) / as_image(counts)


def regions(mask):
    """Labels the 8-connected regions of a boolean [h,w] mask (0 = no ink) with their largest cell number.

    Every ink cell starts as its own number (1..h*w); each step, a cell takes the largest label among its
    3x3 neighbours, then the label of the cell its label names (that cell is in the same region and its
    label is at least as large), so labels travel along chains: a long stroke takes a few turns, not one
    per cell. The loop stops when a turn changes nothing.
    """
    tf = _tf()
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    numbers = tf.reshape(tf.range(1, h * w + 1), [h, w])
    keep = tf.reshape(tf.cast(mask, tf.int32), [-1])

    def label_of(labels, cells):  # labels: [h*w] for cells 1..h*w; cell 0 (none) has label 0.
        return tf.gather(tf.concat([[0], labels], 0), cells)

    def turn(labels, _):
        grown = labels
        for _ in range(2):  # The largest label around each cell (outside the picture: 0), on ink only.
            grown = tf.reshape(plane(dilate(as_image(tf.reshape(grown, [h, w])))), [-1]) * keep
        for _ in range(2):
            grown = label_of(grown, grown)
        return grown, tf.reduce_any(tf.not_equal(grown, labels))

    labels, _ = tf.while_loop(
        lambda labels, changed: changed,
        turn,
        (keep * tf.reshape(numbers, [-1]), tf.constant(True)),
        maximum_iterations=h * w + 1,  # A region's longest path has at most h*w cells.
    )
    return tf.reshape(labels, [h, w])


def shift(x, k, axis, fill):
    """[h,w] -> y with y[i] = x[i + k] along `axis` (k a signed int tensor), `fill` where i + k is outside."""
    tf = _tf()
    n = tf.shape(x)[axis]
    k = tf.clip_by_value(k, -n, n)
    before, after = tf.maximum(-k, 0), tf.maximum(k, 0)
    paddings = tf.one_hot(axis, 2, on_value=1, off_value=0, dtype=tf.int32)[:, None] * tf.stack([before, after])
    padded = tf.pad(x, paddings, constant_values=fill)
    return tf.slice(padded, tf.one_hot(axis, 2, on_value=after, off_value=0, dtype=tf.int32), tf.shape(x))


def window(x, length, axis, combine, fill):
    """[h,w] -> each pixel combined (tf.maximum, tf.minimum) over the `length` pixels centred on it along `axis`.

    Any length in log2(length) doublings, with no kernel of its own: `power` combines runs of `step` pixels,
    doubled (two runs side by side) while twice the run still fits in the window; then the window is the union
    of two runs of `step` pixels, one at its start and one at its end, which overlap (min and max do not mind).
    A window of 300 pixels costs 8 steps of sliced copies, not 300, and the graph holds the step once.
    Pixels outside the picture are `fill`.
    """
    tf = _tf()
    if isinstance(length, int) and length <= SHORT_WINDOW:
        return _short_window(x, max(length, 1), axis, combine, fill)
    length = tf.maximum(tf.cast(length, tf.int32), 1)
    n = tf.shape(x)[axis]
    before = length // 2  # The window of pixel i is [i - before, i - before + length).
    along = tf.one_hot(axis, 2, on_value=1, off_value=0, dtype=tf.int32)
    padded = tf.pad(x, along[:, None] * tf.stack([before, length]), constant_values=fill)

    def part(values, start, size):  # values[start : start + size] along `axis`
        return tf.slice(values, along * start, tf.where(along == 1, size, tf.shape(values)))

    def double(power, step):  # power[j] combines padded[j : j + step]
        rest = tf.shape(power)[axis] - step
        return combine(part(power, 0, rest), part(power, step, rest)), step * 2

    power, step = tf.while_loop(
        lambda power, step: step * 2 <= length,
        double,
        (padded, tf.constant(1)),
        shape_invariants=(tf.TensorShape([None, None]), tf.TensorShape([])),
    )
    return combine(part(power, 0, n), part(power, length - step, n))


def _short_window(x, length, axis, combine, fill):
    """`window` for a length known when the graph is built: the `length` shifted copies combined, no loop."""
    tf = _tf()
    before = length // 2
    padding = [[0, 0], [0, 0]]
    padding[axis] = [before, length - 1 - before]
    padded = tf.pad(x, padding, constant_values=fill)
    size = tf.shape(x)
    result = None
    for k in range(length):
        part = tf.slice(padded, [k, 0] if axis == 0 else [0, k], size)
        result = part if result is None else combine(result, part)
    return result


def opening(x, rows, cols):
    """[h,w] grey opening by a rows x cols rectangle: bright structures the rectangle does not fit in are removed
    (a minimum filter, then a maximum filter over the same window; pixels outside the picture are ignored)."""
    tf = _tf()
    rows, cols = rows // 2 * 2 + 1, cols // 2 * 2 + 1  # odd: the window is its own reflection
    low = window(window(x, rows, 0, tf.minimum, 1e9), cols, 1, tf.minimum, 1e9)
    return window(window(low, rows, 0, tf.maximum, -1e9), cols, 1, tf.maximum, -1e9)
