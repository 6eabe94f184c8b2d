"""Pictures that hold no digit, in MNIST's form, for training a model to say so.

A classifier trained on digits alone answers a digit for anything: a letter, a star, a smiley. Shown
some non-digits during training with an even target over the ten classes ("outlier exposure", Hendrycks
et al., 2019, `modeling.losses`), its top probability on pictures that hold no digit falls, so a
threshold on it (`core.types.DECLINE_BELOW`) can decline them.

The pictures are drawn here, pen strokes (or a typeface) on a square canvas, then put in MNIST's form (light on black,
fitted to 20x20, centred by mass in 28x28), as `mnist_form` puts a photo:

    letters    hand-drawn capitals and small letters that no one would take for a digit, each stroke
               jittered, slanted and tilted
    typeface   such letters in a typeface, thin to bold
    shapes     stars, crosses, arrows, hearts, triangles, squares, ticks, hashes
    faces      rings with eyes and a mouth (or a mouth alone), with a cross or a dot inside: a ring alone is a 0
    scribbles  long wandering lines, zig-zags, spirals
    patches    hatching, cross-hatching and crossed-out blocks, filled blots

They are made from a seed, so a run's non-digits are the same on every machine. The person-made set of
non-digits (`data.person_made`), on which the decline is measured, is drawn by other code: other letters
of the typeface, and its stars, smileys, scribbles and patches photographed on paper.
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("letters", "shapes", "faces", "scribbles", "patches", "typeface")
# Letters in a typeface (Pillow's own, the same on every machine) that no one would take for a digit: other
# letters than the person-made set's (`data.person_made.LETTERS`), none like a digit (no O, I, l, S, Z, b, g, q).
TYPEFACE_LETTERS = "CDLPTUVYacdfptxy"
CANVAS = 112
# Letters as pen strokes in a unit box (x right, y down): polylines of points.
_LETTERS: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.75, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.75, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.55)], [(0.3, 0.4), (1, 1)]],
    "M": [[(0, 1), (0.05, 0), (0.5, 0.7), (0.95, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "R": [[(0, 1), (0, 0), (0.8, 0.05), (0.9, 0.25), (0.8, 0.45), (0, 0.5)], [(0.4, 0.5), (1, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "P": [[(0, 1), (0, 0), (0.8, 0.05), (0.95, 0.25), (0.8, 0.45), (0, 0.5)]],
    "D": [[(0, 0), (0, 1), (0.6, 0.95), (0.95, 0.5), (0.6, 0.05), (0, 0)]],
    "h": [[(0, 0), (0, 1)], [(0, 0.55), (0.4, 0.4), (0.9, 0.5), (1, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.9, 0.4), (0, 0.75)], [(0.35, 0.65), (1, 1)]],
    "m": [
        [(0, 1), (0, 0.4)],
        [(0, 0.5), (0.25, 0.4), (0.5, 0.55), (0.5, 1)],
        [(0.5, 0.55), (0.75, 0.4), (1, 0.55), (1, 1)],
    ],
    "n": [[(0, 1), (0, 0.4)], [(0, 0.55), (0.45, 0.4), (0.9, 0.55), (1, 1)]],
    "r": [[(0, 1), (0, 0.4)], [(0, 0.6), (0.4, 0.42), (0.9, 0.45)]],
    "u": [[(0, 0.4), (0.05, 0.9), (0.5, 1), (0.95, 0.85), (1, 0.4)], [(1, 0.4), (1, 1)]],
    "w": [[(0, 0.4), (0.25, 1), (0.5, 0.6), (0.75, 1), (1, 0.4)]],
    "x": [[(0, 0.4), (1, 1)], [(1, 0.4), (0, 1)]],
    "y": [[(0, 0.4), (0.5, 0.8)], [(1, 0.4), (0.3, 1.2)]],
    "e": [[(0.05, 0.7), (0.95, 0.7), (0.85, 0.45), (0.5, 0.38), (0.1, 0.5), (0.05, 0.75), (0.3, 0.98), (0.9, 0.95)]],
    "a": [[(0.9, 0.45), (0.5, 0.38), (0.1, 0.55), (0.1, 0.85), (0.5, 1), (0.9, 0.8)], [(0.9, 0.4), (0.9, 1)]],
    "f": [[(0.9, 0.05), (0.5, 0), (0.35, 0.2), (0.35, 1)], [(0.05, 0.45), (0.75, 0.45)]],
    "t": [[(0.45, 0), (0.45, 0.9), (0.7, 1), (0.95, 0.9)], [(0.1, 0.35), (0.85, 0.35)]],
    "v": [[(0, 0.4), (0.5, 1), (1, 0.4)]],
}


def _jitter(points: list[tuple[float, float]], rng: np.random.RandomState, amount: float) -> list[tuple[float, float]]:
    return [(x + rng.normal(0, amount), y + rng.normal(0, amount)) for x, y in points]


def _to_canvas(
    strokes: list[list[tuple[float, float]]], rng: np.random.RandomState, round_: bool = False
) -> list[list[tuple[float, float]]]:
    """Unit-box strokes on the canvas: scaled, slanted, tilted and moved a little, at random; taller than
    wide as handwriting is, or about as wide as tall (`round_`, a face)."""
    width, height = rng.uniform(0.45, 0.75) * CANVAS, rng.uniform(0.55, 0.8) * CANVAS
    if round_:
        height = min(0.85 * CANVAS, width * rng.uniform(0.8, 1.2))
    slant, turn = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)
    cos, sin = np.cos(turn), np.sin(turn)
    out = []
    for stroke in strokes:
        moved = []
        for x, y in stroke:
            u, v = (x - 0.5 + slant * (0.5 - y)) * width, (y - 0.5) * height
            moved.append((CANVAS / 2 + cos * u - sin * v, CANVAS / 2 + sin * u + cos * v))
        out.append(moved)
    return out


def _smooth(points: list[tuple[float, float]], steps: int = 4) -> list[tuple[float, float]]:
    """A polyline through `points` with its corners rounded (Chaikin's corner cutting)."""
    for _ in range(steps):
        if len(points) < 3:
            return points
        cut = [points[0]]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            cut += [(0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1), (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1)]
        points = [*cut, points[-1]]
    return points


def _circle(cx: float, cy: float, rx: float, ry: float, start: float = 0, end: float = 2 * np.pi, n: int = 40):
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in np.linspace(start, end, n)]


def _letter(rng: np.random.RandomState) -> list[list[tuple[float, float]]]:
    name = sorted(_LETTERS)[rng.randint(len(_LETTERS))]
    strokes = [_jitter(s, rng, 0.035) for s in _LETTERS[name]]
    return _to_canvas([_smooth(s, 1) if rng.uniform() < 0.5 else s for s in strokes], rng)


def _shape(rng: np.random.RandomState) -> list[list[tuple[float, float]]]:
    kind = rng.randint(8)
    if kind == 0:  # a star of 5 to 8 points
        points = int(rng.randint(5, 9))
        inner = rng.uniform(0.3, 0.5)
        turn = rng.uniform(0, np.pi)
        star = [
            (
                0.5 + (0.5 if k % 2 == 0 else 0.5 * inner) * np.cos(turn + k * np.pi / points),
                0.5 + (0.5 if k % 2 == 0 else 0.5 * inner) * np.sin(turn + k * np.pi / points),
            )
            for k in range(2 * points + 1)
        ]
        strokes = [star]
    elif kind == 1:  # a cross or a plus
        if rng.uniform() < 0.5:
            strokes = [[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]]
        else:
            strokes = [[(0, 0), (1, 1)], [(1, 0), (0, 1)]]
        if rng.uniform() < 0.2:  # a bar over it
            strokes.append([(0.2, 0.2), (0.8, 0.2)])
    elif kind == 2:  # an arrow
        strokes = [[(0, 0.5), (1, 0.5)], [(0.65, 0.2), (1, 0.5), (0.65, 0.8)]]
    elif kind == 3:  # a heart
        strokes = [_smooth([(0.5, 1), (0.05, 0.45), (0.15, 0.05), (0.5, 0.3), (0.85, 0.05), (0.95, 0.45), (0.5, 1)], 3)]
    elif kind == 4:  # a triangle
        strokes = [[(0.5, 0), (1, 1), (0, 1), (0.5, 0)]]
    elif kind == 5:  # a square or a diamond
        box = [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]
        strokes = [box if rng.uniform() < 0.5 else [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5), (0.5, 0)]]
    elif kind == 6:  # a tick
        strokes = [[(0, 0.55), (0.35, 1), (1, 0)]]
    else:  # a hash
        strokes = [[(0.35, 0), (0.25, 1)], [(0.75, 0), (0.65, 1)], [(0, 0.35), (1, 0.35)], [(0, 0.7), (1, 0.7)]]
    return _to_canvas([_jitter(s, rng, 0.02) for s in strokes], rng)


def _face(rng: np.random.RandomState) -> list[list[tuple[float, float]]]:
    ring = _jitter(_circle(0.5, 0.5, 0.5, rng.uniform(0.42, 0.55), n=48), rng, 0.01)
    kind = rng.randint(4)
    if kind <= 1:  # a smiley (or a frown): eyes as dots or rings, and a mouth
        size, height, apart = rng.uniform(0.02, 0.09), rng.uniform(0.28, 0.42), rng.uniform(0.13, 0.22)
        eyes = [_circle(0.5 + side * apart, height, size, size, n=10) for side in (-1, 1)]
        wide = rng.uniform(0.18, 0.32)
        if kind == 0:
            mouth = _circle(
                0.5,
                rng.uniform(0.45, 0.6),
                wide,
                wide * 0.8,
                rng.uniform(0.05, 0.3) * np.pi,
                rng.uniform(0.7, 0.95) * np.pi,
                16,
            )
        else:
            mouth = _circle(0.5, 0.85, wide, 0.15, 1.2 * np.pi, 1.8 * np.pi, 16)
        # Small eyes may be lost when a photo is put in MNIST's form: then a ring with a curve inside.
        strokes = [ring, *eyes, mouth] if rng.uniform() < 0.6 else [ring, mouth]
    elif kind == 2:  # a ring with a cross inside
        strokes = [ring, [(0.5, 0.05), (0.5, 0.95)], [(0.05, 0.5), (0.95, 0.5)]]
    else:  # a ring with a dot, or a second ring, inside
        inner = rng.uniform(0.06, 0.2)
        strokes = [ring, _circle(0.5, 0.5, inner, inner, n=20)]
    return _to_canvas(strokes, rng, round_=True)


def _scribble(rng: np.random.RandomState) -> list[list[tuple[float, float]]]:
    kind = rng.randint(3)
    if kind == 0:  # a wandering line that crosses itself
        points, angle, x, y = [], rng.uniform(0, 2 * np.pi), 0.5, 0.5
        for _ in range(rng.randint(40, 100)):
            angle += rng.normal(0, 0.8)
            x = float(np.clip(x + np.cos(angle) * 0.12, 0, 1))
            y = float(np.clip(y + np.sin(angle) * 0.12, 0, 1))
            points.append((x, y))
        strokes = [_smooth(points, 2)]
    elif kind == 1:  # a zig-zag
        n = int(rng.randint(4, 9))
        strokes = [[(k / n, float(k % 2) + rng.normal(0, 0.05)) for k in range(n + 1)]]
    else:  # a spiral
        turns = rng.uniform(2, 4)
        a = np.linspace(0, turns * 2 * np.pi, 120)
        r = 0.5 * a / a[-1]
        strokes = [list(zip(0.5 + r * np.cos(a), 0.5 + r * np.sin(a)))]
    return _to_canvas(strokes, rng)


def _patch(rng: np.random.RandomState) -> list[list[tuple[float, float]]]:
    kind = rng.randint(3)
    strokes = []
    lines = int(rng.randint(6, 14))
    for k in range(lines):  # hatching
        t = (k + 0.5) / lines
        strokes.append([(t - 0.2, 0), (t + 0.2, 1)])
    if kind == 1:  # cross-hatched
        strokes += [[(0, t), (1, t + rng.normal(0, 0.05))] for t in np.linspace(0.1, 0.9, lines)]
    elif kind == 2:  # crossed out
        strokes += [[(0, 0), (1, 1)], [(1, 0), (0, 1)]]
    return _to_canvas([_jitter(s, rng, 0.02) for s in strokes], rng)


_DRAW = {"letters": _letter, "shapes": _shape, "faces": _face, "scribbles": _scribble, "patches": _patch}


def _typeface(image: Image.Image, rng: np.random.RandomState) -> Image.Image:
    """A letter in Pillow's typeface, as thin or bold as a pen, turned a little."""
    pen = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.randint(50, 90)))
    letter = TYPEFACE_LETTERS[rng.randint(len(TYPEFACE_LETTERS))]
    half = CANVAS / 2
    pen.text(
        (half, half), letter, fill=255, font=font, anchor="mm", stroke_width=int(rng.randint(0, 5)), stroke_fill=255
    )
    return image.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)


def draw(kind: str, rng: np.random.RandomState) -> np.ndarray:
    """One non-digit of `kind`, as ink float [CANVAS, CANVAS] in [0, 1] (1: ink)."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    if kind == "typeface":
        return np.asarray(_typeface(image, rng).filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255
    pen = ImageDraw.Draw(image)
    # A fine pen (1-3 pixels of the canvas, under one of 28x28) for 30% of pictures and half the faces: a thin
    # ring with dots inside is otherwise read as a 0.
    if rng.uniform() < (0.5 if kind == "faces" else 0.3):
        width = int(rng.randint(1, 4))
    else:
        width = int(rng.randint(2, 7)) if kind == "faces" else int(rng.randint(2, 13))
    for stroke in _DRAW[kind](rng):
        pen.line(stroke, fill=255, width=width, joint="curve")
        for x, y in (stroke[0], stroke[-1]):  # round pen ends
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    if kind == "patches" and rng.uniform() < 0.25:  # a blot: a filled block
        pen.rectangle((30, 40, 30 + rng.randint(20, 55), 40 + rng.randint(15, 40)), fill=255)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255


def mnist_form(ink: np.ndarray) -> np.ndarray:
    """`ink` as MNIST holds a digit: its bounding box fitted to 20x20 (aspect kept), centred by mass in
    28x28, its brightest pixel 255, uint8 [28, 28]."""
    rows, cols = np.nonzero(ink > 0.05)
    if not len(rows):
        return np.zeros((28, 28), np.uint8)
    box = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(box.shape)
    size = (max(1, round(box.shape[1] * scale)), max(1, round(box.shape[0] * scale)))
    small = np.asarray(Image.fromarray((box * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), np.float32)
    small = np.clip(small, 0, 255)
    total = small.sum()
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(np.clip(round(13.5 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(13.5 - cx), 0, 28 - small.shape[1]))
    out = np.zeros((28, 28), np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return np.round(out * (255 / max(out.max(), 1.0))).astype(np.uint8)  # a fine line as bright as a bold one


def non_digit_images(count: int, seed: int) -> np.ndarray:
    """`count` non-digits in MNIST's form, the kinds in turn, uint8 [count, 28, 28, 1]; the same for a seed."""
    rng = np.random.RandomState(seed)
    order = (*KINDS, "faces")  # faces twice: a ring with marks inside is the nearest thing to a 0
    images = [mnist_form(draw(order[i % len(order)], rng)) for i in range(count)]
    return np.stack(images)[..., None] if images else np.zeros((0, 28, 28, 1), np.uint8)
