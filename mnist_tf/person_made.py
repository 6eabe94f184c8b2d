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
every machine. `score` reads them through `mnist-tf predict`'s path and,
for a SavedModel, through its `serving_bytes` signature.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from mnist_tf.errors import UserError
from mnist_tf.names import BYTES_INPUT_NAME, BYTES_SIGNATURE, CLASS_ID

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


def score(
    files: dict[str, list[tuple[Path, int]]],
    predict_fn: Callable[[list[Path]], np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Accuracy of `predict_fn` (files -> predicted classes, -1 for none) on each set."""
    results = {}
    for kind, entries in files.items():
        predicted = np.asarray(predict_fn([path for path, _ in entries]))
        labels = np.array([label for _, label in entries])
        results[kind] = {
            "accuracy": float((predicted == labels).mean()),
            "examples": len(labels),
            "no_digit": int((predicted < 0).sum()),
        }
    return results


def serving_bytes_fn(saved_model: Path) -> Callable[[list[Path]], np.ndarray]:
    """Files -> classes through a SavedModel's `serving_bytes` signature, as TF Serving runs it (-1: no digit)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    if BYTES_SIGNATURE not in loaded.signatures:
        raise UserError(
            f"{saved_model} has no {BYTES_SIGNATURE} signature: export the model again with mnist-tf export"
        )

    def classify(paths: list[Path], batch: int = 64) -> np.ndarray:
        signature = loaded.signatures[BYTES_SIGNATURE]
        out = []
        for start in range(0, len(paths), batch):
            encoded = tf.constant([Path(p).read_bytes() for p in paths[start : start + batch]])
            out.append(signature(**{BYTES_INPUT_NAME: encoded})[CLASS_ID].numpy())
        return np.concatenate(out) if out else np.zeros([0], np.int64)

    return classify


def predict_fn(model_path: Path) -> Callable[[list[Path]], np.ndarray]:
    """Files -> classes through `mnist-tf predict`'s path (-1: no digit or unreadable)."""
    from mnist_tf.models import load_proba_fn
    from mnist_tf.predict import predict_files

    proba_fn = load_proba_fn(model_path)
    return lambda paths: np.array([-1 if r.digit is None else r.digit for r in predict_files(proba_fn, paths)])


def evaluate(
    model_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    kinds: Sequence[str] = SETS,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Writes the sets for `images` under OUT/sets and scores `model_path` on them, both ways.

    `model_path` is a resolved model (see `models.resolve_model_path`). A .keras
    model is exported to a temporary SavedModel for the `serving_bytes` score; a
    .tflite model has no such signature and gets the `predict` score only.
    """
    import tempfile

    from mnist_tf.saved_model import serving_archive

    progress(f"rendering {len(labels)} test digits in {len(kinds)} person-made sets into {out / 'sets'}")
    files = write_sets(images, labels, Path(out) / "sets", kinds)
    progress("scoring mnist-tf predict's path")
    report: dict[str, Any] = {
        "model": str(model_path),
        "sets": {kind: str(Path(out) / "sets" / kind) for kind in kinds},
        "predict": score(files, predict_fn(model_path)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if model_path.suffix == ".keras":
            from mnist_tf.model import float32_copy
            from mnist_tf.models import load_keras

            saved: Path | None = Path(tmp) / "saved_model"
            serving_archive(float32_copy(load_keras(model_path))).write_out(str(saved), verbose=False)
        else:
            saved = model_path if model_path.is_dir() else None
        if saved is not None:
            progress(f"scoring the SavedModel's {BYTES_SIGNATURE} signature")
            report[BYTES_SIGNATURE] = score(files, serving_bytes_fn(saved))
    return report


def table(report: dict[str, Any]) -> str:
    """The report as plain text: one row per set, accuracy by each path."""
    paths = [p for p in ("predict", BYTES_SIGNATURE) if p in report]
    lines = [f"{'set':<8}" + "".join(f" {p:>14}" for p in paths) + f" {'images':>7}"]
    for kind in report["predict"]:
        cells = "".join(f" {report[p][kind]['accuracy']:>14.1%}" for p in paths)
        lines.append(f"{kind:<8}{cells} {report['predict'][kind]['examples']:>7}")
    return "\n".join(lines)
