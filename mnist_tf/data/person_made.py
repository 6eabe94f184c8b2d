"""Person-made digits: MNIST test digits re-made the ways people make pictures.

A model that scores 99.6% on MNIST's test split can still misread what people
draw or photograph, because MNIST's digits come pre-processed (light on black,
fitted to 20x20, centred). These sets keep MNIST's test digits and labels but
render each one as a real image file, the way a person would hand it over:

    mnist    the MNIST digit itself, enlarged to 56x56 (the control)
    paper    dark ink on white paper, small and off-centre on a large canvas
    photo    a photographed page: grey paper, uneven light, a slight tilt, blur,
             sensor noise, JPEG, a frame wider than tall, sometimes a dark table edge
    thin     a thin pen, dark on white
    thick    a thick marker (strokes about twice MNIST's width), dark on white
    colour   coloured ink on coloured paper, RGB
    canvas   a transparent PNG as a web canvas exports it: black strokes, alpha
    ruled    a ballpoint digit on ruled notebook paper (blue lines, a red margin), a phone JPEG
    squared  a digit on squared paper (grid lines grey, black, blue or pencil)
    shadow   a phone photo tilted 8-20 degrees, a shadow across part of the page, the table at the corners
    pencil   pencil: low contrast, grainy
    blur     out of focus
    tiny     a 12-16 px digit inside a 48x48 picture
    nodigit  no digit at all: a letter, a star, a smiley, a scribble or a crossed-out patch (label -1;
             the right answer is to decline it)

Every picture is made from its digit and a seed, so the sets are the same on
every machine. `jobs.person_made` scores a model on them through `mnist-tf
predict`'s path and, for a SavedModel, through its `serving_bytes` signature.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DIGIT_SETS = (
    "mnist",
    "paper",
    "photo",
    "thin",
    "thick",
    "colour",
    "canvas",
    "ruled",
    "squared",
    "shadow",
    "pencil",
    "blur",
    "tiny",
)
NOT_A_DIGIT = "nodigit"  # pictures that hold no digit, labelled -1: the right answer declines them
SETS = (*DIGIT_SETS, NOT_A_DIGIT)
NO_LABEL = -1
# Letters that no one would take for a digit (no O, l, S, Z, B, G, b, g, q), for the pictures without one.
LETTERS = "AMeKWHRNmwkEFXhnruvY"


def _ink(digit: np.ndarray, height: int, rng: np.random.RandomState, angle: float = 0.0) -> np.ndarray:
    """The digit's ink as float [h,w] in [0,1], the 28x28 field scaled to `height` pixels, tilted by `angle`."""
    image = Image.fromarray(np.asarray(digit, np.uint8))
    if angle:
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    return np.asarray(image.resize((height, height), Image.Resampling.BICUBIC), np.float32) / 255


def _pen(ink: np.ndarray, width: float) -> np.ndarray:
    """Re-draws `ink` with a pen `width` times as wide as MNIST's (whose strokes are about 2.5 of the 28
    pixels): the cut through the smooth strokes, thinned to their cores or thickened with a max filter,
    then anti-aliased."""
    size = ink.shape[0]
    mask = Image.fromarray(((ink > 0.5) * 255).astype(np.uint8))
    radius = round(abs(width - 1.0) * 1.25 * size / 28)
    if radius and width > 1:
        mask = mask.filter(ImageFilter.MaxFilter(2 * radius + 1))
    elif radius:
        core = Image.fromarray(((ink > 0.85) * 255).astype(np.uint8))  # The strokes' cores: a thin line.
        mask = core.filter(ImageFilter.MaxFilter(3)) if size >= 112 else core
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(max(0.6, size / 200))), np.float32) / 255


def _place(ink: np.ndarray, canvas: tuple[int, int], rng: np.random.RandomState, centred: bool = False):
    """`ink` pasted into an empty [H,W] canvas at a random place (near the middle when `centred`)."""
    height, width = canvas
    out = np.zeros(canvas, np.float32)
    h, w = ink.shape
    if centred:
        top = (height - h) // 2 + rng.randint(-height // 12, height // 12 + 1)
        left = (width - w) // 2 + rng.randint(-width // 12, width // 12 + 1)
        top, left = int(np.clip(top, 0, height - h)), int(np.clip(left, 0, width - w))
    else:
        top, left = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
    out[top : top + h, left : left + w] = ink
    return out


def _encode(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(buffer, fmt, **options)
    return buffer.getvalue()


def _on_paper(ink: np.ndarray, paper: Any, colour: Any) -> np.ndarray:
    paper, colour = np.asarray(paper, np.float32), np.asarray(colour, np.float32)
    if paper.ndim == 0:
        return paper * (1 - ink) + colour * ink
    return paper * (1 - ink[..., None]) + colour * ink[..., None]


def render(digit: np.ndarray, kind: str, rng: np.random.RandomState) -> tuple[bytes, str]:
    """One MNIST digit [28,28] uint8 as a person-made picture of `kind`: (file bytes, suffix)."""
    if kind == "mnist":
        return _encode(np.asarray(Image.fromarray(digit).resize((56, 56), Image.Resampling.BICUBIC)), "PNG"), ".png"
    if kind == "paper":
        canvas = (rng.randint(500, 900), rng.randint(500, 900))
        ink = _place(_ink(digit, rng.randint(50, 140), rng), canvas, rng)
        return _encode(_on_paper(ink, rng.uniform(235, 255), rng.uniform(0, 60)), "PNG"), ".png"
    if kind == "photo":
        return _photo(digit, rng), ".jpg"
    if kind in ("thin", "thick"):
        size = rng.randint(180, 320)
        ink = _pen(_ink(digit, size, rng), 0.4 if kind == "thin" else rng.uniform(1.8, 2.6))
        ink = _place(ink, (int(size * 1.3), int(size * 1.3)), rng, centred=True)
        return _encode(_on_paper(ink, 255, rng.uniform(0, 50)), "PNG"), ".png"
    if kind == "colour":
        size = rng.randint(120, 260)
        ink = _place(_ink(digit, size, rng), (int(size * 1.6), int(size * 1.9)), rng, centred=True)
        paper = [(250, 243, 190), (225, 238, 250), (255, 255, 255), (235, 250, 225)][rng.randint(4)]
        pen = [(25, 45, 170), (180, 25, 35), (20, 120, 40), (90, 30, 130)][rng.randint(4)]
        return _encode(_on_paper(ink, paper, pen), "PNG"), ".png"
    if kind == "canvas":
        ink = _pen(_ink(digit, rng.randint(200, 260), rng), rng.uniform(1.0, 1.6))
        alpha = _place(ink, (280, 280), rng, centred=True) * 255
        rgba = np.zeros((280, 280, 4), np.float32)
        rgba[..., 3] = alpha
        return _encode(rgba, "PNG"), ".png"
    if kind in ("ruled", "squared"):
        return _lined_paper(digit, kind, rng), ".jpg"
    if kind == "shadow":
        return _shadow(digit, rng), ".jpg"
    if kind == "pencil":
        size = rng.randint(120, 240)
        ink = _pen(_ink(digit, size, rng, angle=rng.uniform(-5, 5)), rng.uniform(0.6, 1.0))
        ink = _place(ink, (int(size * rng.uniform(1.3, 1.6)), int(size * rng.uniform(1.3, 1.8))), rng, centred=True)
        grain = np.asarray(
            Image.fromarray((rng.uniform(0, 255, ink.shape)).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
        )
        ink = ink * np.clip(0.35 + grain / 255 * 1.1, 0, 1)  # graphite leaves grains, not a solid line
        paper = rng.uniform(215, 248)
        page = _on_paper(ink, paper, paper - rng.uniform(55, 100)) + rng.normal(0, rng.uniform(2, 5), ink.shape)
        return _encode(page, "PNG"), ".png"
    if kind == "blur":
        size = rng.randint(100, 220)
        ink = _place(_ink(digit, size, rng), (int(size * 1.4), int(size * 1.6)), rng, centred=True)
        page = _on_paper(ink, rng.uniform(200, 250), rng.uniform(10, 60))
        radius = size * rng.uniform(0.025, 0.05)
        page = np.asarray(Image.fromarray(page.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)), np.float32)
        page = page + rng.normal(0, rng.uniform(1, 4), page.shape)
        return _encode(page, "JPEG", quality=int(rng.randint(70, 95))), ".jpg"
    if kind == "tiny":
        ink = _place(_ink(digit, round(rng.uniform(12, 16) * 28 / 20), rng), (48, 48), rng)
        return _encode(_on_paper(ink, rng.uniform(225, 255), rng.uniform(0, 60)), "PNG"), ".png"
    if kind == NOT_A_DIGIT:
        return _not_a_digit(rng)
    raise ValueError(f"unknown person-made set {kind!r}; expected one of {', '.join(SETS)}")


def _phone(page: np.ndarray, rng: np.random.RandomState, blur: float = 0.8) -> bytes:
    """An RGB page [H,W,3] as a phone takes it: uneven light, blur, sensor noise, JPEG."""
    height, width = page.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / height - 0.5, xs / width - 0.5
    light = 1 + rng.uniform(-0.2, 0.2) * xs + rng.uniform(-0.2, 0.2) * ys - rng.uniform(0, 0.3) * (xs**2 + ys**2)
    page = np.clip(page * light[..., None], 0, 255).astype(np.uint8)
    page = np.asarray(Image.fromarray(page).filter(ImageFilter.GaussianBlur(blur)), np.float32)
    page = page + rng.normal(0, rng.uniform(2, 6), page.shape[:2])[..., None]
    return _encode(page, "JPEG", quality=int(rng.randint(60, 90)))


def _lines(shape: tuple[int, int], spacing: float, offset: float, slope: float, width: float) -> np.ndarray:
    """Anti-aliased straight lines [H,W] in [0,1], `spacing` pixels apart, across the rows (slope: rows per column)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    phase = np.mod(ys - offset - xs * slope, spacing)
    distance = np.minimum(phase, spacing - phase)
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def _lined_paper(digit: np.ndarray, kind: str, rng: np.random.RandomState) -> bytes:
    height, width = rng.randint(300, 440), rng.randint(360, 560)
    slope = np.tan(np.radians(rng.uniform(-1.5, 1.5)))
    paper = np.array([rng.uniform(232, 250), rng.uniform(232, 250), rng.uniform(220, 245)], np.float32)
    page = np.ones((height, width, 3), np.float32) * paper
    if kind == "ruled":
        spacing = rng.uniform(26, 40)
        size = int(spacing * rng.uniform(1.6, 3.6))
        lines = [
            (
                _lines((height, width), spacing, rng.uniform(0, spacing), slope, rng.uniform(1, 2.2)),
                (rng.uniform(100, 160), rng.uniform(150, 190), rng.uniform(215, 240)),
            )
        ]
        margin = _lines((width, height), 10_000, rng.uniform(0.06, 0.18) * width, -slope, rng.uniform(1, 2.2)).T
        lines.append((margin, (rng.uniform(200, 235), rng.uniform(70, 120), rng.uniform(80, 130))))
        pen = [(25, 35, 120), (30, 30, 45)][rng.randint(2)]
        pen_width = rng.uniform(0.5, 0.9)  # a ballpoint
    else:
        spacing = rng.uniform(16, 32)
        size = int(spacing * rng.uniform(3, 7))
        colour = [(165, 165, 165), (45, 45, 45), (105, 145, 210), (140, 140, 135)][rng.randint(4)]
        grid_width = rng.uniform(0.8, 1.8)
        both = np.maximum(
            _lines((height, width), spacing, rng.uniform(0, spacing), slope, grid_width),
            _lines((width, height), spacing, rng.uniform(0, spacing), -slope, grid_width).T,
        )
        lines = [(both, colour)]
        pen = [(25, 35, 120), (30, 30, 45), (20, 20, 20)][rng.randint(3)]
        pen_width = rng.uniform(0.6, 1.2)
    for mask, colour in lines:
        page = _on_paper(mask * rng.uniform(0.7, 1.0), page, colour)
    ink = _pen(_ink(digit, size, rng, angle=rng.uniform(-5, 5)), pen_width)
    ink = _place(ink, (height, width), rng, centred=True)
    return _phone(_on_paper(ink, page, pen), rng, blur=rng.uniform(0.4, 0.9))


def _shadow(digit: np.ndarray, rng: np.random.RandomState) -> bytes:
    height, width = 480, 640
    ink = _place(_ink(digit, rng.randint(140, 240), rng, angle=rng.uniform(-5, 5)), (height, width), rng, centred=True)
    page = _on_paper(ink, rng.uniform(205, 245), rng.uniform(15, 60))
    # The phone held at a tilt: the page turns, the table shows at the corners.
    angle = rng.uniform(8, 20) * (1 if rng.uniform() < 0.5 else -1)
    turned = np.asarray(Image.fromarray(page.astype(np.uint8)).rotate(angle, Image.Resampling.BICUBIC, fillcolor=0))
    covered = np.asarray(
        Image.fromarray(np.full((height, width), 255, np.uint8)).rotate(angle, Image.Resampling.BICUBIC)
    )
    covered = covered.astype(np.float32) / 255
    grain = np.asarray(
        Image.fromarray(rng.uniform(0, 255, (height, width)).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    )
    wood = np.array([rng.uniform(70, 140), rng.uniform(45, 95), rng.uniform(25, 60)], np.float32)
    table = wood * (0.8 + 0.4 * grain[..., None] / 255)
    scene = turned[..., None] * covered[..., None] + table * (1 - covered[..., None])
    # A shadow across part of the page: a half-plane with a soft edge, covering 20-60% of the frame.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    along = (xs - width / 2) * np.cos(theta) + (ys - height / 2) * np.sin(theta)
    edge = np.quantile(along, rng.uniform(0.4, 0.8))
    softness = rng.uniform(2, 10)
    shade = 1 / (1 + np.exp(-(along - edge) / softness))
    scene = scene * (1 - rng.uniform(0.35, 0.6) * shade)[..., None]
    return _phone(scene, rng, blur=rng.uniform(0.6, 1.2))


def _not_a_digit(rng: np.random.RandomState) -> tuple[bytes, str]:
    """A picture that holds no digit: a letter, a star, a smiley, a scribble or a crossed-out patch, in pen on paper."""
    side = rng.randint(160, 320)
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    width = max(2, int(side * rng.uniform(0.02, 0.05)))
    c, r = side / 2, side * rng.uniform(0.25, 0.38)
    kind = rng.randint(5)
    if kind == 0:  # a letter, in Pillow's own font (the same on every machine)
        font = ImageFont.load_default(size=int(side * rng.uniform(0.45, 0.65)))
        letter = LETTERS[rng.randint(len(LETTERS))]
        draw.text((c, c), letter, fill=255, font=font, anchor="mm", stroke_width=int(width * 0.4), stroke_fill=255)
    elif kind == 1:  # a star
        turn = rng.uniform(0, 2 * np.pi)
        points = [
            (
                c + (r if k % 2 == 0 else r * 0.45) * np.cos(turn + k * np.pi / 5),
                c + (r if k % 2 == 0 else r * 0.45) * np.sin(turn + k * np.pi / 5),
            )
            for k in range(11)
        ]
        draw.line(points, fill=255, width=width, joint="curve")
    elif kind == 2:  # a smiley
        draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=width)
        for dx in (-0.35, 0.35):
            e = r * 0.09
            draw.ellipse((c + dx * r - e, c - 0.3 * r - e, c + dx * r + e, c - 0.3 * r + e), fill=255)
        draw.arc((c - 0.55 * r, c - 0.45 * r, c + 0.55 * r, c + 0.55 * r), 20, 160, fill=255, width=width)
    elif kind == 3:  # a scribble: a wandering line that loops back on itself
        points, angle, x, y = [], rng.uniform(0, 2 * np.pi), c, c
        for _ in range(rng.randint(25, 60)):
            angle += rng.normal(0, 0.9)
            x = float(np.clip(x + np.cos(angle) * r * 0.3, side * 0.15, side * 0.85))
            y = float(np.clip(y + np.sin(angle) * r * 0.3, side * 0.15, side * 0.85))
            points.append((x, y))
        draw.line(points, fill=255, width=width, joint="curve")
    else:  # a crossed-out patch: hatching over a block, then a cross
        box = (c - r, c - r * rng.uniform(0.4, 0.8), c + r, c + r * rng.uniform(0.4, 0.8))
        for _ in range(rng.randint(8, 16)):
            draw.line(
                [(rng.uniform(box[0], box[2]), box[1]), (rng.uniform(box[0], box[2]), box[3])], fill=255, width=width
            )
        draw.line([(box[0], box[1]), (box[2], box[3])], fill=255, width=width)
        draw.line([(box[0], box[3]), (box[2], box[1])], fill=255, width=width)
    ink = np.asarray(image.rotate(rng.uniform(-15, 15), Image.Resampling.BICUBIC), np.float32) / 255
    ink = (
        np.asarray(Image.fromarray((ink * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
        / 255
    )
    page = _on_paper(ink, rng.uniform(215, 255), rng.uniform(0, 70))
    if rng.uniform() < 0.5:
        return _encode(page, "PNG"), ".png"
    return _encode(page + rng.normal(0, 3, page.shape), "JPEG", quality=int(rng.randint(65, 92))), ".jpg"


def _photo(digit: np.ndarray, rng: np.random.RandomState) -> bytes:
    height, width = 480, 640
    ink = _place(_ink(digit, rng.randint(140, 260), rng, angle=rng.uniform(-6, 6)), (height, width), rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / height - 0.5, xs / width - 0.5
    light = 1 + rng.uniform(-0.3, 0.3) * xs + rng.uniform(-0.3, 0.3) * ys - rng.uniform(0, 0.4) * (xs**2 + ys**2)
    page = _on_paper(ink, rng.uniform(150, 215), rng.uniform(20, 70)) * light
    if rng.uniform() < 0.3:  # The table beside the page.
        band = rng.randint(15, 50)
        edge = [np.s_[:band, :], np.s_[-band:, :], np.s_[:, :band], np.s_[:, -band:]][rng.randint(4)]
        page[edge] = rng.uniform(15, 45)
    page = np.asarray(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0)))
    page = page + rng.normal(0, rng.uniform(3, 8), page.shape)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 0.97)], np.float32)
    return _encode(page[..., None] * tint, "JPEG", quality=int(rng.randint(55, 86)))


def _seed(seed: int, kind: str, index: int) -> np.random.RandomState:
    return np.random.RandomState((seed * 1_000_003 + zlib.crc32(kind.encode()) + index * 7919) % 2**32)


def write_sets(
    images: np.ndarray, labels: np.ndarray, out: Path, kinds: Sequence[str] = SETS, seed: int = 0
) -> dict[str, list[tuple[Path, int]]]:
    """Renders every digit of `images` [N,28,28(,1)] in each set under OUT/<set>/ and writes OUT/labels.csv.

    The set without digits (`NOT_A_DIGIT`) holds as many pictures, labelled -1 (`NO_LABEL`)."""
    out = Path(out)
    files: dict[str, list[tuple[Path, int]]] = {}
    rows = []
    for kind in kinds:
        (out / kind).mkdir(parents=True, exist_ok=True)
        files[kind] = []
        for i, (digit, label) in enumerate(zip(np.asarray(images, np.uint8).reshape(-1, 28, 28), labels)):
            data, suffix = render(digit, kind, _seed(seed, kind, i))
            label = NO_LABEL if kind == NOT_A_DIGIT else int(label)
            path = out / kind / f"{i:04d}_{'none' if label == NO_LABEL else label}{suffix}"
            path.write_bytes(data)
            files[kind].append((path, int(label)))
            rows.append((f"{kind}/{path.name}", int(label)))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])
    return files
