"""Any picture of a digit -> MNIST's form, in TensorFlow ops.

MNIST's digits are not raw pictures: each is a light digit on black, its
bounding box scaled to fit 20x20 (aspect ratio kept) and placed in 28x28 by
its centre of mass (LeCun et al.). People hand a model something else: dark
ink on white paper, a small digit off-centre on a large canvas, a photo of a
page with grey paper and uneven light, a thick marker, a transparent canvas.
`to_mnist` makes all of these look like MNIST, so the model reads them:

    1. grey: colour by ITU-R 601 luma; transparent pixels become paper of the
       colour that contrasts with the ink (a canvas may draw black or white);
    2. shrink: the longer side to at most WORK_SIDE pixels (halved by averaging, then bilinear);
    3. polarity: ink is the rarer extreme (fewer pixels lie near the darkest
       strokes than near the brightest paper on paper): light paper is inverted;
    4. lighting: a grey opening by a square two fifths of the shorter side (the light,
       with a shadow's edge, which an opening keeps whole) is subtracted and what is
       left divided by the paper's brightness (a stroke in the shade as strong as one
       in the light), then a smooth quadratic surface fitted to the background pixels
       is subtracted (shadows, uneven light, grey paper);
    5. lines: thin straight lines that run across the picture (ruled and squared
       paper, a margin) are found by shape and taken away where they are thin,
       no more than their own strength (a darker stroke along a line stays);
    6. ink: an Otsu threshold (no lower than the noise allows) marks the ink;
       where lines were taken, only what reaches half the strongest stroke is ink,
       so what they left stays out; strokes keep their anti-aliased edges (a soft
       ramp below the threshold; beside lines, only within two pixels of the ink);
    7. specks and frames: solid bands along the picture's edges (a table or the
       dark border of a photographed page), solid regions holding a corner (the
       table around a tilted page), regions lying along an edge, and ink regions
       lighter than a tenth of the heaviest (half, on the edge) are dropped, and so
       are regions far from the heaviest (more than half its size away);
    8. tilt: a page photographed at a tilt, the table showing at three or four of
       the picture's corners, is turned back upright by the angle the table's
       corner triangles give;
    9. fit: the ink's bounding box is scaled so its longer side is 20 pixels and
       placed in 28x28 with its centre of mass at MNIST's.

A picture with no ink (blank, uniform, or too little contrast) gives an all-black
image and `blank` True: `mnist-tf predict` reports it as an error line, and the
SavedModel's `serving_bytes` signature answers class -1 with even probabilities.

One function serves every path: `mnist-tf predict` calls it eagerly on what
Pillow decodes (`mnist_tf.imaging.decode.load_image`), the SavedModel calls it inside its
graph on what TensorFlow decodes, so TF Serving clients get the same 28x28 input.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from mnist_tf.imaging.ops import (
    as_image,
    dilate,
    histogram,
    opening,
    otsu,
    percentiles,
    plane,
    regions,
    resize,
    shrink_to,
    smooth,
    solve,
    window,
)

IMAGE_SIZE = 28
BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 field.
# MNIST's mean centre of mass (row, column), in pixel-index coordinates, over the 60,000 training digits.
CENTRE = (14.0, 14.0)
WORK_SIDE = 512  # The picture is analysed at most this large: enough for a 20x20 digit, cheap to serve.
GRID_SIDE = 48  # Connected regions are found on a grid at most this large.
MIN_CONTRAST = 0.15  # Ink must stand this far above the paper (0..1 scale), else the picture is blank.
MIN_REGION = 0.1  # Ink regions below this fraction of the largest are specks.
NEAR_MASS = 0.5  # Ink regions farther than this share of the heaviest's longer side from it are specks.
EDGE_REGION = 0.5  # Ink regions that touch the picture's edge are specks below this fraction of the largest.
SHADING = 0.4  # Bright structures wider than this share of the shorter side are light and shade, not ink.
SHADE_FLOOR = 0.35  # Ink in the shade is strengthened by at most 1 / SHADE_FLOOR.
LINE_GRID = 128  # Ruled and grid lines are found on a grid at most this large.
LINE_SPAN = 0.85  # A straight run of ink this share of the picture's width (height) long is a ruled line.
TILT_RANGE = (0.05, 0.6)  # A page's tilt is turned back when its tangent lies in this range (3 to 31 degrees).
TILT_AGREE = 0.06  # The table's corners must agree on the tangent this closely (about 3.5 degrees).
LINE_CUT = 0.5  # Where lines were taken, ink is what reaches this share of the strongest stroke.
LINE_MARGIN = 1.2  # A line takes away at most this many times its own strength: a darker stroke along it stays.
NO_DIGIT = "no digit found (blank, or too little contrast): pass a picture of one digit"


def _tf():
    import tensorflow as tf

    return tf


# Everything below is written in ops that TFLite has built in (mnist_tf.imaging.ops), so the same function
# also converts to a LiteRT model for clients without TensorFlow.


def _grey(pixels):
    """Float [H,W,C] in [0,1], C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) -> grey [H,W]."""
    tf = _tf()
    channels = tf.shape(pixels)[2]
    colour = tf.gather(pixels, tf.where(channels >= 3, tf.range(3), tf.zeros([3], tf.int32)), axis=2)
    grey = tf.reduce_sum(colour * tf.constant([0.299, 0.587, 0.114]), axis=2)  # ITU-R 601 luma
    alpha = tf.where(channels % 2 == 0, tf.gather(pixels, channels - 1, axis=2), tf.ones_like(grey))
    # Paper behind transparent pixels: white under dark ink, black under light ink.
    ink_luma = tf.reduce_sum(alpha * grey) / tf.maximum(tf.reduce_sum(alpha), 1e-6)
    paper = tf.where(ink_luma < 0.5, 1.0, 0.0)
    return alpha * grey + (1.0 - alpha) * paper


def _shrink(grey):
    """[H,W] -> [1,h,w,1] with the longer side at most WORK_SIDE (never enlarged)."""
    tf = _tf()
    size = tf.shape(grey)
    scale = tf.minimum(1.0, WORK_SIDE / tf.cast(tf.reduce_max(size), tf.float32))
    target = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32))
    return resize(as_image(grey), target)


def _flatten_lighting(ink):
    """Subtracts a quadratic surface fitted to the background (pixels below Otsu's cut)."""
    tf = _tf()
    size = tf.shape(ink)
    h, w = size[0], size[1]
    ys = (tf.cast(tf.range(h), tf.float32) * 2.0 / tf.cast(tf.maximum(h - 1, 1), tf.float32) - 1.0)[:, None]
    xs = (tf.cast(tf.range(w), tf.float32) * 2.0 / tf.cast(tf.maximum(w - 1, 1), tf.float32) - 1.0)[None, :]
    ys, xs = ys * tf.ones_like(ink), xs * tf.ones_like(ink)
    basis = tf.stack([tf.ones_like(ink), ys, xs, ys * xs, ys * ys, xs * xs], axis=2)
    # The fit reads every 4th pixel of every 4th row: the surface is smooth, the picture need not be.
    sample = tf.reshape(ink[::4, ::4], [-1])
    sample_basis = tf.reshape(basis[::4, ::4], [-1, 6])
    weights = tf.cast(sample < otsu(histogram(sample)), tf.float32)  # The paper's pixels.
    # Least squares on the paper's pixels: (A^T W A + l I) c = A^T W b, a 6x6 system.
    weighted = sample_basis * weights[:, None]
    normal = tf.matmul(weighted, sample_basis, transpose_a=True) + 1e-3 * tf.eye(6)
    coefficients = solve(normal, tf.matmul(weighted, sample[:, None], transpose_a=True))
    background = tf.reshape(tf.matmul(tf.reshape(basis, [-1, 6]), coefficients), size)
    # Too few paper pixels to fit a surface: the picture is mostly ink; take the median as the paper.
    enough = tf.reduce_sum(weights) >= 24
    background = tf.cond(
        enough,
        lambda: background,
        lambda: percentiles(histogram(tf.reshape(ink, [-1])), [0.5])[0] * tf.ones_like(ink),
    )
    return tf.nn.relu(ink - background)


def _oriented(grey):
    """Grey [h,w] -> the ink light on black: ink is the rarer extreme, so light paper is inverted."""
    tf = _tf()
    smoothed = smooth(as_image(grey))  # Extremes of strokes, not of single-pixel noise.
    low, high = tf.reduce_min(smoothed), tf.reduce_max(smoothed)
    # Ink is the rarer extreme: fewer pixels lie near the darkest strokes than near the brightest paper (two
    # shades of paper under a shadow, or a table at the corners, leave the lit paper the brightest).
    near_low = tf.reduce_mean(tf.cast(smoothed <= low + 0.25 * (high - low), tf.float32))
    near_high = tf.reduce_mean(tf.cast(smoothed >= high - 0.25 * (high - low), tf.float32))
    return tf.where(near_low < near_high, 1.0 - grey, grey)  # Light paper: dark ink becomes light.


def _without_shading(ink):
    """Removes light and shade: the grey opening by a square SHADING of the shorter side (what is left of the
    picture when every stroke narrower than that is taken away) is the light, and is subtracted. A shadow's
    straight edge is a step, which an opening keeps whole, so it leaves no ink behind (a white top-hat). What
    is left is divided by the paper's brightness there: ink reflects a share of the light it gets."""
    tf = _tf()
    side = tf.cast(tf.cast(tf.reduce_min(tf.shape(ink)), tf.float32) * SHADING, tf.int32)
    light = opening(ink, side, side)
    # Over the paper's brightness (1 - light: the ink is inverted), a stroke in the shade is as strong as one
    # in the light; the floor keeps noise in a deep shadow from being strengthened without bound.
    return tf.nn.relu(ink - light) / tf.maximum(1.0 - light, SHADE_FLOOR)


def _without_lines(ink, faint):
    """`ink` [h,w] without the thin straight lines that run across the picture: ruled paper, a grid, a margin,
    and whether any were found.

    Found by shape, not colour: on a coarse grid of the `faint` ink (which forgives a slight tilt and bridges a
    faint stretch), runs at least LINE_SPAN of the width (height) long mark where lines are; there, what is thin
    across the line (a grey opening across it) and straight along it is taken away, so a stroke that crosses a
    line keeps the crossing.
    """
    tf = _tf()
    grid = plane(shrink_to(as_image(tf.cast(faint, tf.float32)), LINE_GRID, tf.nn.max_pool2d))
    found = tf.constant(False)
    for along in (1, 0):  # horizontal lines run along axis 1 (columns), vertical along axis 0
        across = 1 - along
        thick = window(grid, 5, across, tf.maximum, 0.0)  # a line tilted by two cells or so still fits
        # Gaps of a few cells (a faint stretch of line, a JPEG block) are bridged: a closing along the line.
        thick = window(window(thick, 5, along, tf.maximum, 0.0), 5, along, tf.minimum, 1.0)
        span = tf.cast(LINE_SPAN * tf.cast(tf.shape(grid)[along], tf.float32), tf.int32)
        # A run of `span` cells needs as many in its row (column): most pictures have no such row, and then
        # neither lines nor the search for them (the cells are 0 or 1, so the sum is exact).
        near = tf.cond(
            tf.reduce_max(tf.reduce_sum(thick, axis=along)) >= tf.cast(span, tf.float32),
            lambda thick=thick, span=span, along=along: _near_lines(grid, thick, span, along),
            lambda: tf.zeros_like(grid),
        )
        # The work at full size is done only where lines were found.
        here = tf.reduce_max(near) > 0
        ink = tf.cond(
            here,
            lambda ink=ink, near=near, along=along: _lines_taken(ink, near, along),
            lambda ink=ink: ink,
        )
        found = found | here
    return ink, found


def _near_lines(grid, thick, span, along):
    """The cells of `grid` on or beside a run of at least `span` cells of `thick` along axis `along`."""
    tf = _tf()
    long = window(window(thick, span, along, tf.minimum, 0.0), span, along, tf.maximum, 0.0)
    return window(long * grid, 3, 1 - along, tf.maximum, 0.0)


def _lines_taken(ink, near, along):
    """`ink` [h,w] without the lines along axis `along` where `near` (on the coarse grid) marks them."""
    tf = _tf()
    across = 1 - along
    size = tf.shape(ink)
    thickest = tf.maximum(5, tf.reduce_min(size) // 64) + 1  # a ruled line is thinner than this many pixels
    near = plane(tf.image.resize(as_image(near), size, method="nearest"))
    thin = ink - window(window(ink, thickest, across, tf.minimum, 1e9), thickest, across, tf.maximum, -1e9)
    # Of what is thin across, the part that also runs straight along for a sixteenth of the picture: a
    # line, not the flat top of a thin 0.
    run = tf.maximum(size[along] // 16, 3)
    # Gaps as wide as a line (where another line crosses it) are bridged first, then taken back.
    bridged = window(window(thin, thickest + 2, along, tf.maximum, -1e9), thickest + 2, along, tf.minimum, 1e9)
    line = tf.minimum(thin, window(window(bridged, run, along, tf.minimum, 1e9), run, along, tf.maximum, -1e9))
    # A line is as strong as its own ink, no stronger: where a pen's darker stroke runs along it, what the stroke
    # adds beyond the line's strength (the 90th percentile of what was taken where lines are) stays.
    taken = tf.reshape(tf.where(near > 0, line, 0.0), [-1])
    share = tf.reduce_mean(tf.cast(taken > 0.02, tf.float32))
    strength = percentiles(histogram(taken), [1.0 - 0.1 * share])[0]
    return ink - near * tf.minimum(line, LINE_MARGIN * strength + 1.0 / 64)


def _cut(ink):
    """The threshold that marks the ink of `ink` [h,w], whether it stands out from the paper at all, and the
    strongest stroke (the brightest 3x3 mean): Otsu's cut, but above the paper's noise (a few robust spreads)
    and below most of the ink."""
    tf = _tf()
    hist = histogram(tf.reshape(ink, [-1]))  # One pass over the pixels serves the percentiles and Otsu's cut.
    median, spread = percentiles(hist, [0.5, 0.75])
    peak = tf.reduce_max(smooth(as_image(ink)))
    noise = median + 6.0 * (spread - median)
    return tf.minimum(tf.maximum(otsu(hist), noise), 0.6 * peak), peak - median >= MIN_CONTRAST, peak


def _edge_bands(mask):
    """The solid bands of ink along the picture's four edges (a table beside a photographed page,
    a scanner's dark border): the runs of rows and columns, from each edge inwards, that are at least
    80% ink, widened by two pixels for their blurred inner edge. A picture that is all ink has none."""
    tf = _tf()
    covered_rows = tf.reduce_mean(tf.cast(mask, tf.float32), axis=1) >= 0.8
    covered_cols = tf.reduce_mean(tf.cast(mask, tf.float32), axis=0) >= 0.8

    def band(covered):
        n = tf.size(covered)
        gaps = tf.cast(tf.logical_not(covered), tf.int32)
        any_gap = tf.reduce_max(gaps) > 0
        first = tf.where(any_gap, tf.cast(tf.argmax(gaps), tf.int32), 0)
        last = tf.where(any_gap, tf.cast(tf.argmax(tf.reverse(gaps, [0])), tf.int32), 0)
        index = tf.range(n)
        # Widen a band that exists by two pixels; a band absent stays absent.
        return ((index < first + 2) & (first > 0)) | ((index >= n - last - 2) & (last > 0))

    return band(covered_rows)[:, None] | band(covered_cols)[None, :]


def _keep_mask(mask, mass):
    """Of the ink cells in `mask` [h,w], those in regions worth keeping (no specks, no edge bands, no table at a
    corner); `mass` [h,w] is the share of each cell's pixels that are ink, so a speck that touches a cell does not
    weigh as much as a stroke that fills it."""
    tf = _tf()
    labels = regions(mask)
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]
    count = h * w + 1
    flat = tf.reshape(labels, [-1])
    rows = tf.reshape(tf.range(h)[:, None] * tf.ones([1, w], tf.int32), [-1])
    cols = tf.reshape(tf.ones([h, 1], tf.int32) * tf.range(w)[None, :], [-1])
    size = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, count)
    on_edge = tf.cast((rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1), tf.int32)
    edge_cells = tf.math.unsorted_segment_sum(on_edge, flat, count)
    height = tf.math.unsorted_segment_max(rows, flat, count) - tf.math.unsorted_segment_min(rows, flat, count) + 1
    width = tf.math.unsorted_segment_max(cols, flat, count) - tf.math.unsorted_segment_min(cols, flat, count) + 1
    solid = tf.cast(size, tf.float32) >= 0.5 * tf.cast(tf.maximum(height * width, 1), tf.float32)
    # A band along the edge: solid, and lying along at least half of the shorter side.
    band = solid & (tf.cast(edge_cells, tf.float32) >= 0.5 * tf.cast(tf.minimum(h, w), tf.float32))
    # The table at a corner of a tilted photo, or what is left of it or of a shadow along an edge: a region that
    # holds a corner of the picture, or lies mostly along its edge.
    corners = tf.stack([labels[0, 0], labels[0, w - 1], labels[h - 1, 0], labels[h - 1, w - 1]])
    cornered = tf.reduce_max(tf.one_hot(corners, count, dtype=tf.int32), axis=0) > 0
    solid_ish = tf.cast(size, tf.float32) >= 0.4 * tf.cast(tf.maximum(height * width, 1), tf.float32)
    cornered = cornered & solid_ish
    density = tf.math.unsorted_segment_sum(tf.reshape(mass, [-1]), flat, count) / tf.cast(
        tf.maximum(size, 1), tf.float32
    )
    along_edge = (tf.cast(edge_cells, tf.float32) >= 0.15 * tf.cast(tf.minimum(h, w), tf.float32)) & (
        4 * edge_cells >= size
    )
    dropped = band | cornered | along_edge | (tf.range(count) == 0)
    weight = tf.where(dropped, 0.0, density * tf.cast(size, tf.float32))
    # A speck on the picture's edge (what is left of a table, a shadow, a page's border) must weigh half as much
    # as the heaviest region to count; elsewhere, a tenth.
    share = tf.where(edge_cells > 0, EDGE_REGION, MIN_REGION)
    wanted = (weight > 0) & (weight >= share * tf.reduce_max(weight))
    # A digit's parts lie close together: a region that keeps its distance from the heaviest (what is left of a
    # ruled or grid line across the page, a speck of the table) by more than NEAR_MASS of that region's longer
    # side is not part of it.
    top, bottom = tf.math.unsorted_segment_min(rows, flat, count), tf.math.unsorted_segment_max(rows, flat, count)
    left, right = tf.math.unsorted_segment_min(cols, flat, count), tf.math.unsorted_segment_max(cols, flat, count)
    main = tf.argmax(weight, output_type=tf.int32)
    margin = tf.cast(tf.math.ceil(NEAR_MASS * tf.cast(tf.maximum(height[main], width[main]), tf.float32)), tf.int32)
    near = (
        (bottom >= top[main] - margin)
        & (top <= bottom[main] + margin)
        & (right >= left[main] - margin)
        & (left <= right[main] + margin)
    )
    return tf.gather(wanted & near, labels)


def _page_tilt(mask):
    """The tilt of a photographed page whose corners show the table, from the table's triangles: (cos, sin) of the
    angle that turns the page back upright, and whether the page is tilted at all.

    At each corner of the picture the table is a right triangle whose hypotenuse is the page's edge; its legs
    along the picture's two edges give the tilt's tangent (the shorter over the longer) and, by which is the
    longer, its direction. The page counts as tilted when at least three corners hold such a triangle, they agree
    on the direction and on the tangent (within TILT_AGREE), and the tilt is between TILT_RANGE's bounds.
    """
    tf = _tf()
    h, w = tf.shape(mask)[0], tf.shape(mask)[1]

    def run(line):  # how many pixels from the start of `line` on are ink, without a gap
        gaps = tf.cast(tf.logical_not(line), tf.int32)
        return tf.where(tf.reduce_max(gaps) > 0, tf.cast(tf.argmax(gaps), tf.int32), tf.size(line))

    top, bottom, left, right = mask[0, :], mask[h - 1, :], mask[:, 0], mask[:, w - 1]
    # (along the row from the corner, along the column from the corner, the direction a longer row leg means)
    corners = [
        (run(top), run(left), 1.0),
        (run(tf.reverse(top, [0])), run(right), -1.0),
        (run(bottom), run(tf.reverse(left, [0])), -1.0),
        (run(tf.reverse(bottom, [0])), run(tf.reverse(right, [0])), 1.0),
    ]
    tangents, valid = [], []
    for across, down, direction in corners:
        across, down = tf.cast(across, tf.float32), tf.cast(down, tf.float32)
        longer, shorter = tf.maximum(across, down), tf.minimum(across, down)
        tangent = shorter / tf.maximum(longer, 1.0)
        sign = tf.where(across > down, direction, -direction)
        tangents.append(sign * tangent)
        valid.append(
            (shorter >= 3.0)
            & (longer < 0.9 * tf.cast(tf.minimum(h, w), tf.float32))
            & (tangent >= TILT_RANGE[0])
            & (tangent <= TILT_RANGE[1])
        )
    tangents, valid = tf.stack(tangents), tf.cast(tf.stack(valid), tf.float32)
    count = tf.reduce_sum(valid)
    mean = tf.reduce_sum(tangents * valid) / tf.maximum(count, 1.0)
    spread = tf.reduce_max(tf.abs(tangents - mean) * valid)
    tilted = (count >= 3.0) & (spread <= TILT_AGREE)
    cos = 1.0 / tf.sqrt(1.0 + mean * mean)
    return cos, mean * cos, tilted


def _turned(ink, cos, sin):
    """`ink` [h,w] turned about its centre by the angle of (`cos`, `sin`), bilinear; what comes from outside is 0.
    A gather of computed positions: TFLite has no built-in affine transform."""
    tf = _tf()
    size = tf.shape(ink)
    h, w = size[0], size[1]
    cy, cx = (tf.cast(h, tf.float32) - 1.0) / 2.0, (tf.cast(w, tf.float32) - 1.0) / 2.0
    dy = tf.cast(tf.range(h), tf.float32)[:, None] - cy
    dx = tf.cast(tf.range(w), tf.float32)[None, :] - cx
    y = cy + cos * dy - sin * dx
    x = cx + sin * dy + cos * dx
    y0, x0 = tf.floor(y), tf.floor(x)
    fy, fx = y - y0, x - x0
    flat = tf.reshape(ink, [-1])
    turned = tf.zeros_like(ink)
    for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = tf.cast(y0, tf.int32) + oy, tf.cast(x0, tf.int32) + ox
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        index = tf.clip_by_value(yi, 0, h - 1) * w + tf.clip_by_value(xi, 0, w - 1)
        turned += tf.where(inside, tf.gather(flat, index) * weight, 0.0)
    return turned


def _working(pixels):
    """Steps 1-3: the picture's pixels -> grey [h,w] at working size, the ink light on black."""
    tf = _tf()
    finite = tf.abs(pixels) < float("inf")  # NaN and infinities count as black.
    pixels = tf.where(finite, tf.clip_by_value(pixels, 0.0, 1.0), 0.0)
    return _oriented(plane(_shrink(_grey(pixels))))


def _lit(ink):
    """Step 4: light and shade taken away."""
    return _flatten_lighting(_without_shading(ink))


def _unlined(ink):
    """Step 5: (the ink without ruled and grid lines, whether any were taken, and the ink's cut, presence, peak)."""
    tf = _tf()
    cut, has_ink, peak = _cut(ink)
    ink, lines = _without_lines(ink, ink > 0.5 * cut)
    # Without lines the ink is unchanged, and so is its cut. With them, what the lines left is faint beside the
    # pen, and would join the digit and widen its box: ink is what reaches LINE_CUT of the strongest stroke
    # (the strokes' soft edges still ramp down from the cut, below).
    cut, has_ink, peak = tf.cond(lines, lambda: _cut(ink), lambda: (cut, has_ink, peak))
    return ink, lines, cut, has_ink, peak


def _ink(ink, lines, cut, has_ink, peak):
    """Steps 6-8: the strokes, light on black, in [0,1] at working size [h,w], and whether there are any."""
    tf = _tf()
    mask = ink > tf.where(lines, tf.maximum(cut, LINE_CUT * peak), cut)
    edges = _edge_bands(mask)
    mask = mask & tf.logical_not(edges)
    # Regions on a coarse grid: a cell holds ink if any pixel in it does (strokes stay connected).
    grid = plane(shrink_to(as_image(tf.cast(mask, tf.float32)), GRID_SIDE, tf.nn.max_pool2d)) > 0
    mass = plane(shrink_to(as_image(tf.cast(mask, tf.float32)), GRID_SIDE, tf.nn.avg_pool2d))
    keep = as_image(tf.cast(_keep_mask(grid, mass), tf.float32))
    keep = dilate(keep)  # One cell of margin for soft edges.
    keep = plane(tf.image.resize(keep, tf.shape(ink), method="nearest"))
    # The ink's full strength: the 90th percentile of the pixels above the cut (the others count as 0,
    # below every one of them, so it is the percentile 1 - 10% of their share of all pixels).
    share = tf.reduce_mean(tf.cast(mask, tf.float32))
    full = percentiles(histogram(tf.reshape(tf.where(mask, ink, 0.0), [-1])), [1.0 - 0.1 * share])[0]
    soft = tf.clip_by_value((ink - 0.5 * cut) / tf.maximum(full - 0.5 * cut, 1e-3), 0.0, 1.0)
    soft = soft * keep * (1.0 - tf.cast(edges, tf.float32))
    # Where lines were taken, what they left beside the digit is faint ink too: only the strokes' own soft edges
    # (two pixels around what is ink) stay.
    soft = tf.cond(lines, lambda: soft * plane(dilate(dilate(as_image(tf.cast(mask, tf.float32))))), lambda: soft)
    # A page photographed at a tilt (the table at its corners) is turned back: its digit was written upright on it.
    # (A corner's triangle is ink at the corner itself: with fewer than three such corners, nothing to measure.)
    corners = tf.stack([mask[0, 0], mask[0, -1], mask[-1, 0], mask[-1, -1]])
    cos, sin, tilted = tf.cond(
        tf.reduce_sum(tf.cast(corners, tf.int32)) >= 3,
        lambda: _page_tilt(mask),
        lambda: (tf.constant(1.0), tf.constant(0.0), tf.constant(False)),
    )
    soft = tf.cond(tilted, lambda: _turned(soft, cos, sin), lambda: soft)
    return soft, has_ink & (tf.reduce_max(soft) > 0.0)


def _fit(ink):
    """[h,w] ink in [0,1] -> [28,28] float: bounding box to 20x20, centre of mass to MNIST's."""
    tf = _tf()
    present = tf.cast(ink > 0.05, tf.int32)
    rows, cols = tf.reduce_max(present, axis=1), tf.reduce_max(present, axis=0)
    top, left = tf.cast(tf.argmax(rows), tf.int32), tf.cast(tf.argmax(cols), tf.int32)
    bottom = tf.size(rows) - tf.cast(tf.argmax(tf.reverse(rows, [0])), tf.int32)
    right = tf.size(cols) - tf.cast(tf.argmax(tf.reverse(cols, [0])), tf.int32)
    height, width = bottom - top, right - left
    crop = tf.slice(ink, tf.stack([top, left]), tf.stack([height, width]))
    scale = BOX / tf.cast(tf.maximum(height, width), tf.float32)
    size = tf.maximum(1, tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32))
    digit = tf.clip_by_value(plane(resize(as_image(crop), size)), 0.0, 1.0)
    mass = tf.maximum(tf.reduce_sum(digit), 1e-6)
    row_centre = tf.reduce_sum(digit * tf.cast(tf.range(size[0]), tf.float32)[:, None]) / mass
    col_centre = tf.reduce_sum(digit * tf.cast(tf.range(size[1]), tf.float32)[None, :]) / mass
    y = tf.clip_by_value(tf.cast(tf.round(CENTRE[0] - row_centre), tf.int32), 0, IMAGE_SIZE - size[0])
    x = tf.clip_by_value(tf.cast(tf.round(CENTRE[1] - col_centre), tf.int32), 0, IMAGE_SIZE - size[1])
    return tf.pad(digit, tf.stack([tf.stack([y, IMAGE_SIZE - size[0] - y]), tf.stack([x, IMAGE_SIZE - size[1] - x])]))


def to_mnist_tensor(pixels):
    """The graph form of `to_mnist`: float32 [H,W,C] in [0,1] -> (uint8 [28,28,1], bool blank).

    C is 1 (grey), 2 (grey and alpha), 3 (RGB) or 4 (RGBA); H and W at least 1.
    """
    return _through(pixels, STEPS)


def _through(pixels, steps):
    """What `steps` (pairs of name and step, from STEPS) make of float32 pixels [H,W,C], one after another."""
    tf = _tf()
    state = tf.convert_to_tensor(pixels, tf.float32)
    for _, step in steps:
        state = step(state)
    return state


def _placed(ink, has_ink):
    """Step 9: (uint8 [28,28,1] in MNIST's form, blank)."""
    tf = _tf()
    image = tf.cond(has_ink, lambda: _fit(ink), lambda: tf.zeros([IMAGE_SIZE, IMAGE_SIZE]))
    image = tf.reshape(image, [IMAGE_SIZE, IMAGE_SIZE, 1])
    return tf.cast(tf.round(image * 255.0), tf.uint8), tf.logical_not(has_ink)


# The preprocessing as the steps of the module's docstring, each taking what the one before gives.
STEPS = (
    ("grey, shrink, polarity", _working),
    ("light and shade", _lit),
    ("ruled and grid lines", _unlined),
    ("ink, specks, tilt", lambda state: _ink(*state)),
    ("fit to 28x28", lambda state: _placed(*state)),
)


def stage_functions():
    """For costing the preprocessing stage by stage: (name, a `tf.function` of float32 pixels [H,W,C] that runs
    every step up to and including that one) for each of STEPS; a stage's cost is its time less the one before."""
    tf = _tf()

    def up_to(count):
        return tf.function(
            lambda pixels: _through(pixels, STEPS[:count]),
            input_signature=[tf.TensorSpec([None, None, None], tf.float32)],
        )

    return [(name, up_to(i + 1)) for i, (name, _) in enumerate(STEPS)]


@functools.cache
def to_mnist_function():
    """`to_mnist_tensor` as one `tf.function` for pictures of any size, traced once per process.

    The preprocessing is a large graph: the SavedModel's `serving_bytes`, the TFLite preprocessing model and
    `to_mnist` all call this one function, so that building it once serves all three.
    """
    tf = _tf()
    return tf.function(to_mnist_tensor, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])


# Integer pixels scale to [0, 1] by these factors, as tf.image.convert_image_dtype scales them in the
# SavedModel (a multiplication, not a division: the last bit of a float can differ between the two).
UNIT8, UNIT16 = np.float32(1 / 255), np.float32(1 / 65535)


def to_mnist(pixels: Any) -> tuple[np.ndarray, bool]:
    """Any picture's pixels -> (MNIST input uint8 [28,28,1], blank).

    `pixels` is [H,W] or [H,W,C] (C = 1, 2, 3 or 4: grey, grey+alpha, RGB, RGBA),
    uint8, uint16 or float in [0,1]. Runs the same TensorFlow function the
    SavedModel runs, compiled once for every size.
    """
    tf = _tf()
    array = np.asarray(pixels)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or 0 in array.shape:
        raise ValueError(f"expected pixels [H,W] or [H,W,C] with C in 1..4, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) * UNIT8
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) * UNIT16
    image, blank = to_mnist_function()(tf.constant(array, tf.float32))
    return image.numpy(), bool(blank.numpy())
