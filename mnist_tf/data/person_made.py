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
from PIL import Image, ImageFilter

SETS = ("mnist", "paper", "photo", "thin", "thick", "colour", "canvas")


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
    raise ValueError(f"unknown person-made set {kind!r}; expected one of {', '.join(SETS)}")


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
    """Renders every digit of `images` [N,28,28(,1)] in each set under OUT/<set>/ and writes OUT/labels.csv."""
    out = Path(out)
    files: dict[str, list[tuple[Path, int]]] = {}
    rows = []
    for kind in kinds:
        (out / kind).mkdir(parents=True, exist_ok=True)
        files[kind] = []
        for i, (digit, label) in enumerate(zip(np.asarray(images, np.uint8).reshape(-1, 28, 28), labels)):
            data, suffix = render(digit, kind, _seed(seed, kind, i))
            path = out / kind / f"{i:04d}_{int(label)}{suffix}"
            path.write_bytes(data)
            files[kind].append((path, int(label)))
            rows.append((f"{kind}/{path.name}", int(label)))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])
    return files
