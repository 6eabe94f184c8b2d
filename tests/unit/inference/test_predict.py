"""Predict: image decoding, every model format through `load_proba_fn`, and the CLI.

The fast tests use synthetic images; the slow ones write real test digits as
PNG files and classify them with the trained model in each exported format.
"""

from __future__ import annotations

import io
import re
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import REPO, big_black_png
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from mnist_tf.core.errors import UserError
from mnist_tf.imaging.decode import MAX_PIXELS, load_image
from mnist_tf.imaging.mnist_form import NO_DIGIT, to_mnist
from mnist_tf.inference.predict import predict_files


def stroke_image(size: int = 28, ink: int = 255, paper: int = 0) -> np.ndarray:
    """A vertical bar, like a `1`, in a square grey image."""
    image = np.full((size, size), paper, np.uint8)
    image[size // 4 : -size // 4, size // 2 - size // 14 : size // 2 + size // 14] = ink
    return image


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width` x `height` but that holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_to_mnist_reads_dark_ink_on_paper_as_mnist_light_on_black():
    light_on_dark = stroke_image()
    image, blank = to_mnist(255 - light_on_dark)
    assert not blank and image.shape == (28, 28, 1) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, to_mnist(light_on_dark)[0])
    assert image[14, 14, 0] == 255 and image[0, 0, 0] == 0  # the stroke is light, the paper black


def test_to_mnist_fits_the_digit_to_20_pixels_and_centres_it_by_its_mass():
    canvas = np.full((600, 900), 250, np.uint8)  # white paper, the digit small and far off-centre
    canvas[40:140, 700:720] = 10  # a bar, like a 1, 100 pixels tall
    image = to_mnist(canvas)[0][..., 0]
    rows, cols = np.nonzero(image > 0)
    assert rows.max() - rows.min() + 1 == 20  # the box's longer side fills 20 pixels, as in MNIST
    assert 3 <= cols.max() - cols.min() + 1 <= 6  # the aspect ratio is kept
    mass = image.astype(float) / image.sum()
    centre = ((mass.sum(1) * np.arange(28)).sum(), (mass.sum(0) * np.arange(28)).sum())
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5


def test_load_image_reads_rgb_jpeg_and_transparent_png(tmp_path):
    digit = stroke_image(size=56, ink=0, paper=255)  # Dark ink on white paper.
    Image.fromarray(digit).convert("RGB").save(tmp_path / "digit.jpg", quality=95)
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = 255 - digit  # Black ink, transparent elsewhere.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "digit.png")
    expected = to_mnist(digit)[0][..., 0].astype(int)
    for name in ("digit.jpg", "digit.png"):
        image = load_image(tmp_path / name)
        assert image.shape == (28, 28, 1) and image.dtype == np.uint8
        assert np.abs(image[..., 0].astype(int) - expected).max() <= 40, name
        assert (image[..., 0] > 127).sum() == pytest.approx((expected > 127).sum(), abs=6), name


def test_load_image_refuses_a_huge_image_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    png_header_only(path, 8000, 7000)
    assert 8000 * 7000 > MAX_PIXELS
    # Decoding would fail differently ("cannot decode"): the refusal comes from the header.
    with pytest.raises(UserError, match=r"image too large \(8000x7000 pixels\).*50 megapixels"):
        load_image(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.png", b"these are not pixels", "not an image"),
        ("missing.png", None, "no such file"),
        ("truncated.png", "truncated", "cannot decode"),
    ],
)
def test_load_image_reports_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_image(path)


def test_predict_files_classifies_the_readable_files_and_reports_the_others(tmp_path):
    Image.fromarray(stroke_image()).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_text("no image here")
    Image.fromarray(255 - stroke_image()).save(tmp_path / "c.png")
    Image.fromarray(np.full((40, 60), 200, np.uint8)).save(tmp_path / "d.png")  # grey paper, no digit

    def brightest_column_fn(images):
        # A stand-in model: "digit" = the column of the brightest pixel, mod 10.
        column = images[..., 0].max(axis=1).argmax(axis=1) % 10
        return np.eye(10)[column], np.zeros(len(images), bool)

    names = ("a.png", "b.png", "c.png", "d.png")
    results = predict_files(brightest_column_fn, [tmp_path / n for n in names])
    assert [r.file for r in results] == [str(tmp_path / n) for n in names]
    column = int(to_mnist(stroke_image())[0][..., 0].max(axis=0).argmax()) % 10
    assert [r.digit for r in results] == [column, None, column, None]
    assert results[1].error.startswith("not an image") and results[0].error is None
    assert results[3].error == NO_DIGIT
    assert str(results[0]) == f"{tmp_path / 'a.png'}: {column} (100.0%)"
    assert str(results[1]).startswith(f"{tmp_path / 'b.png'}: error: not an image")
    np.testing.assert_array_equal(results[0].image, to_mnist(stroke_image())[0])
    assert "image" not in results[0].to_dict() and results[3].image is None


def test_show_refuses_a_path_it_cannot_write_in_one_user_error(tmp_path):
    from mnist_tf.core.types import Prediction
    from mnist_tf.inference.predict import show

    Image.fromarray(stroke_image()).save(tmp_path / "a.png")
    results = [Prediction(file=str(tmp_path / "a.png"), digit=1, probability=0.9, image=to_mnist(stroke_image())[0])]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=f"cannot write {blocker / 'seen.png'} .*: pass a writable path to --show"):
        show(results, blocker / "seen.png")
    assert show(results, tmp_path / "seen.png") == tmp_path / "seen.png"


def test_predict_cli_refuses_an_unreadable_model_in_one_line(tmp_path):
    from mnist_tf.cli import main

    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    png = tmp_path / "digit.png"
    Image.fromarray(stroke_image()).save(png)
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "broken.tflite"), str(png)])
    assert result.exit_code == 2
    assert "is not a TFLite model" in result.output and "Traceback" not in result.output


def save_animated_gif(path: Path, *frames: np.ndarray) -> None:
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)


def test_load_image_scales_16_bit_images_instead_of_clipping_them(tmp_path):
    digit = stroke_image(size=56, ink=0, paper=255)
    digit[digit == 255] = 230  # not only the extremes
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "digit16.png")  # 0..65535
    assert Image.open(tmp_path / "digit16.png").mode == "I;16"
    # Pillow's own conversion clips to 255: every paper pixel would become the same as ink.
    np.testing.assert_array_equal(load_image(tmp_path / "digit16.png"), to_mnist(digit.astype(np.uint16) * 257)[0])
    # 16-bit PGM opens as 32-bit "I", and float TIFF as "F": stretched from darkest to brightest.
    (tmp_path / "digit.pgm").write_bytes(b"P5\n56 56\n65535\n" + (digit.astype(">u2") * 257).tobytes())
    Image.fromarray(digit.astype(np.float32) / 255).save(tmp_path / "digit.tif")
    stretched = digit / digit.max()  # 230 becomes 1.0; ink is already 0
    for name in ("digit.pgm", "digit.tif"):
        assert Image.open(tmp_path / name).mode in ("I", "F")
        np.testing.assert_array_equal(load_image(tmp_path / name), to_mnist(stretched)[0], err_msg=name)


def test_load_image_takes_the_first_frame_of_an_animated_gif(tmp_path):
    digit = stroke_image(size=56)
    save_animated_gif(tmp_path / "anim.gif", digit, np.rot90(digit), np.zeros_like(digit))
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    np.testing.assert_array_equal(load_image(tmp_path / "anim.gif"), to_mnist(digit)[0])


@pytest.mark.parametrize(
    "pixels",
    [[[200]], [[0]], np.full((50, 70), 255), np.full((50, 70), 0)],
    ids=["dot", "black dot", "all ink", "all paper"],
)
def test_load_image_says_no_digit_for_a_picture_without_one(tmp_path, pixels):
    Image.fromarray(np.asarray(pixels, np.uint8)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match=f"^{re.escape(NO_DIGIT)}$"):
        load_image(tmp_path / "plain.png")


def test_load_image_refuses_a_decodable_10000_by_10000_image_without_decoding_it(tmp_path):
    path = tmp_path / "huge.png"
    big_black_png(path, 10000, 10000)
    assert path.stat().st_size < 1_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak to the user.
        with pytest.raises(UserError, match=r"image too large \(10000x10000 pixels\).*crop or shrink"):
            load_image(path)


def test_load_image_refuses_an_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match="^empty file: pass a PNG or JPEG of a digit$"):
        load_image(tmp_path / "empty.png")


def odd_image(path: Path, kind: str) -> None:
    digit = stroke_image(size=56, ink=0, paper=255)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "1x1":
        Image.fromarray(np.array([[0]], np.uint8)).save(path)
    elif kind == "16-bit":
        Image.fromarray(digit.astype(np.uint16) * 257).save(path)
    elif kind == "animated":
        save_animated_gif(path, digit, 255 - digit)
    elif kind == "10000x10000":
        big_black_png(path, 10000, 10000)
    elif kind == "rgba":
        rgba = np.zeros((56, 56, 4), np.uint8)
        rgba[..., 3] = 255 - digit
        Image.fromarray(rgba, "RGBA").save(path)
    elif kind == "not-an-image":
        path.write_text("a shopping list, not a digit")
    elif kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:300])


ODD_IMAGES = [
    ("empty", ".png", "empty file: pass a PNG or JPEG of a digit"),
    ("1x1", ".png", NO_DIGIT),
    ("16-bit", ".png", None),
    ("animated", ".gif", None),
    ("10000x10000", ".png", "image too large (10000x10000 pixels): the limit is 50 megapixels; crop or shrink"),
    ("rgba", ".png", None),
    ("not-an-image", ".png", "not an image Pillow can read: pass a PNG or JPEG of a digit"),
    ("truncated", ".png", "cannot decode the image (OSError"),
]


@pytest.mark.parametrize(("kind", "suffix", "error"), ODD_IMAGES, ids=[kind for kind, _, _ in ODD_IMAGES])
def test_predict_cli_on_odd_images_predicts_or_fails_in_one_line(tiny_keras, tmp_path, kind, suffix, error):
    from mnist_tf.cli import main

    path = tmp_path / f"{kind}{suffix}"
    odd_image(path, kind)
    result = CliRunner().invoke(main, ["predict", "--model", str(tiny_keras), str(path)])
    assert "Traceback" not in result.output and "Warning" not in result.output, result.output
    if error is None:
        assert result.exit_code == 0, result.output
        assert re.fullmatch(rf"{re.escape(str(path))}: \d \(\d+\.\d%(, not sure)?\)\n", result.stdout), result.stdout
        assert result.stderr == ""
    else:
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr == f"{path}: error: " + result.stderr.split(": error: ", 1)[1]
        assert result.stderr.count("\n") == 1 and error in result.stderr, result.stderr


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\0", b"P5\n4 4\n255\n", b"RIFF\0\0\0\0WEBP"]


@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=300))
@settings(max_examples=150, deadline=2000)
def test_fuzz_load_image_on_random_bytes(prefix, body):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.img"
        path.write_bytes(prefix + body)
        assert_mnist_image_or_user_error(path)


# Pillow modes that numpy arrays map to: L, LA, RGB, RGBA, I;16, I, F and 1.
PIXELS = st.one_of(
    arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([2, 3, 4]))),
    *(arrays(dtype, array_shapes(min_dims=2, max_dims=2, max_side=40)) for dtype in (np.uint8, np.uint16, np.int32)),
    arrays(np.float32, array_shapes(min_dims=2, max_dims=2, max_side=40), elements=st.floats(width=32)),
    arrays(np.bool_, array_shapes(min_dims=2, max_dims=2, max_side=40)),
)


@given(
    pixels=PIXELS,
    fmt=st.sampled_from(["PNG", "TIFF", "GIF", "BMP", "JPEG", "WEBP", "PPM"]),
    cut=st.none() | st.integers(0, 400),
)
@settings(max_examples=150, deadline=2000)
def test_fuzz_load_image_on_random_arrays_in_every_format(pixels, fmt, cut):
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buffer, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):  # a mode this format cannot store
        reject()
    data = buffer.getvalue() if cut is None else buffer.getvalue()[:cut]  # also truncated files
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz.{fmt.lower()}"
        path.write_bytes(data)
        image = assert_mnist_image_or_user_error(path)
    if cut is None and fmt in ("PNG", "TIFF") and pixels.ndim == 2 and pixels.dtype == np.uint8:
        expected, blank = to_mnist(pixels)
        assert (image is None) == blank, "a whole lossless grey image must decode, unless it holds no digit"
        if image is not None:
            np.testing.assert_array_equal(image, expected)


def assert_mnist_image_or_user_error(path: Path) -> np.ndarray | None:
    """The only two outcomes allowed: an MNIST input, or a one-line `UserError`; no warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            image = load_image(path)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return None
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8
    return image


def test_a_prediction_names_its_class_from_any_answer(tmp_path):
    from mnist_tf.core.types import Prediction
    from mnist_tf.inference.client import row_prediction

    row = {"probabilities": [0.1, 0.9], "class_id": 1, "class_name": b"Sneaker"}  # gRPC: bytes
    named = row_prediction("shoe.png", row)
    assert (named.digit, named.class_name, str(named)) == (1, "Sneaker", "shoe.png: Sneaker (90.0%)")
    assert named.to_dict()["class_name"] == "Sneaker"
    assert row_prediction("x.png", {**row, "class_name": "Sneaker"}).class_name == "Sneaker"  # REST: a string
    assert row_prediction("x.png", {"probabilities": [0.1, 0.9]}).class_name is None  # an older export
    digit = Prediction("7.png", 7, 0.99, class_name="7")
    assert str(digit) == "7.png: 7 (99.0%)"  # MNIST prints as it always did
    from helpers import digit_image, png_bytes

    (tmp_path / "one.png").write_bytes(png_bytes(digit_image()))
    files = predict_files(
        lambda images: (np.array([[0.2, 0.7, 0.1]] * len(images)), np.zeros(len(images), bool)),
        [tmp_path / "one.png"],
        class_names="abc",
    )
    expected = (1, "b", f"{tmp_path / 'one.png'}: b (70.0%, not sure)")
    assert (files[0].digit, files[0].class_name, str(files[0])) == expected


def test_an_answer_below_the_sure_probability_is_flagged_not_sure_in_text_and_json():
    from mnist_tf.core.types import SURE, Prediction

    below, at = Prediction("a.png", 9, SURE - 0.001), Prediction("b.png", 4, SURE)
    assert str(below) == f"a.png: 9 ({SURE - 0.001:.1%}, not sure)" and below.to_dict()["sure"] is False
    assert str(at) == f"b.png: 4 ({SURE:.1%})" and at.to_dict()["sure"] is True
    failed = Prediction("c.png", error="no digit found")
    assert "sure" not in failed.to_dict() and "sure" not in str(failed)


def test_the_page_and_the_help_flag_not_sure_below_the_same_probability_as_predict():
    from mnist_tf.cli import main
    from mnist_tf.core.types import DECLINE_BELOW, SURE

    script = (REPO / "mnist_tf" / "serve" / "static" / "app.js").read_text()
    assert re.search(r"^const SURE = ([0-9.]+);", script, re.MULTILINE).group(1) == repr(SURE)
    help_text = " ".join(CliRunner().invoke(main, ["predict", "--help"]).output.split())
    assert f"Below {SURE:.0%} the line says" in help_text
    assert f"below {DECLINE_BELOW}, and the line says" in help_text


def test_predict_files_answers_not_a_digit_for_a_picture_the_model_declines(tmp_path):
    from mnist_tf.core.types import DECLINED
    from mnist_tf.inference.client import row_prediction

    Image.fromarray(stroke_image()).save(tmp_path / "a.png")

    def unsure_fn(declined):
        return lambda images: (np.tile([0.6] + [0.4 / 9] * 9, (len(images), 1)), np.full(len(images), declined))

    (kept,) = predict_files(unsure_fn(False), [tmp_path / "a.png"])
    (declined,) = predict_files(unsure_fn(True), [tmp_path / "a.png"])
    assert kept.digit == 0 and kept.error is None
    assert declined.digit is None and declined.error == DECLINED and declined.image is not None
    assert str(declined).endswith("error: " + DECLINED)
    # A server's answer says the same through its not_a_digit output.
    row = {"probabilities": [0.6] + [0.4 / 9] * 9, "class_id": -1, "not_a_digit": True, "blank": False}
    assert row_prediction("a.png", row).error == DECLINED
    assert row_prediction("a.png", {**row, "class_id": 0, "not_a_digit": False}).digit == 0
