"""`mnist_tf.imaging.mnist_form.to_mnist`: one preprocessing for predict and the SavedModel, fuzzed both ways."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from helpers import drawn_digits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw, ImageFilter

from mnist_tf.data import person_made
from mnist_tf.imaging.decode import MAX_PIXELS, load_image
from mnist_tf.imaging.mnist_form import to_mnist


@pytest.fixture(scope="module")
def serving_bytes(tiny_saved_model):
    loaded = tf.saved_model.load(str(tiny_saved_model))
    signature = loaded.signatures["serving_bytes"]

    def call(*encoded: bytes) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in signature(image_bytes=tf.constant(list(encoded))).items()}

    call.loaded = loaded  # keeps the variables alive
    return call


@pytest.mark.slow  # exports and converts a model, then writes every person-made set: about 45 s
def test_predict_and_serving_bytes_give_the_model_the_same_28x28(serving_bytes, tmp_path):
    digits = drawn_digits()
    files = person_made.write_sets(np.stack(digits), np.array([0, 1, 7]), tmp_path, kinds=person_made.DIGIT_SETS)
    for entries in files.values():
        for path, _ in entries:
            out = serving_bytes(path.read_bytes())
            seen = load_image(path)
            assert not out["blank"][0], path
            if path.suffix == ".png":  # Pillow and TensorFlow decode PNG to the same pixels.
                np.testing.assert_array_equal(out["image"][0], seen, err_msg=str(path))
            else:  # JPEG decoders may round a few pixels differently, which can move the centre of mass by a pixel.
                a, b = out["image"][0].astype(int), seen.astype(int)
                shifted = [np.roll(a, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
                if path.parent.name in ("ruled", "squared", "blur"):
                    # Ruled and grid lines and blurred edges sit near the thresholds, so the two decoders' few
                    # levels can move the digit's box by a pixel: the same strokes, drawn a little larger or smaller.
                    ink = [((x > 100) & (b > 100)).sum() / max(((x > 100) | (b > 100)).sum(), 1) for x in shifted]
                    assert max(ink) >= 0.5, path
                else:
                    assert min(np.abs(x - b).mean() for x in shifted) < 2, path


def test_person_made_pictures_become_the_digit_they_were_made_from():
    for digit in drawn_digits():
        # The shadow set's photo is turned back from its page's tilt, but its digit is written at up to 5 degrees
        # on the page, and by a pen other than MNIST's: it does not cover the upright digit as closely.
        for kind in (k for k in person_made.DIGIT_SETS if k != "shadow"):
            data, _ = person_made.render(digit, kind, np.random.RandomState(1))
            seen, blank = to_mnist(np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"), np.uint8))
            overlap = ((seen[..., 0] > 100) & (to_mnist(digit)[0][..., 0] > 100)).sum()
            assert not blank and overlap >= 0.5 * (to_mnist(digit)[0] > 100).sum(), kind


def _columns_spread(image: np.ndarray) -> int:
    """How many columns of the 28x28 hold ink: a vertical bar holds 2 or 3, a tilted one more."""
    return int((image[..., 0] > 64).any(axis=0).sum())


@pytest.mark.parametrize("angle", [-18, -12, 12, 18])
def test_a_page_photographed_at_a_tilt_is_turned_back_upright(angle):
    page = np.full((480, 640), 230, np.uint8)
    page[140:340, 312:328] = 30  # a 1, upright on the page
    photo = np.asarray(Image.fromarray(page).rotate(angle, Image.Resampling.BICUBIC, fillcolor=90))  # table at corners
    seen, blank = to_mnist(photo)
    assert not blank and _columns_spread(seen) <= 3
    # The same bar tilted on a page that is not (no table at the corners to tell the page's tilt) stays tilted.
    tilted = np.asarray(Image.fromarray(page).rotate(angle, Image.Resampling.BICUBIC, fillcolor=230))
    assert _columns_spread(to_mnist(tilted)[0]) >= 5


def test_a_stroke_along_a_grid_line_is_kept_and_far_specks_are_dropped():
    def photographed(page: np.ndarray) -> np.ndarray:  # a little blur and sensor noise, as a phone adds
        page = np.asarray(Image.fromarray(page).filter(ImageFilter.GaussianBlur(0.7)), np.float32)
        return np.clip(page + np.random.RandomState(0).normal(0, 3, page.shape), 0, 255).astype(np.uint8)

    page = np.full((400, 500), 235, np.uint8)
    page[::25, :] = page[:, ::25] = 170  # squared paper: grey lines 25 px apart
    page[150:154, 200:262] = 30  # a 7's bar, drawn along the line at row 150 with a pen as thin as a line
    for row in range(154, 232):  # and its stem, down to the left
        column = 261 - (row - 154) // 3
        page[row, column - 3 : column + 1] = 30
    seen, blank = to_mnist(photographed(page))
    assert not blank and (seen[:10, :, 0] > 100).sum(axis=1).max() >= 10  # the bar, across the top
    page[40:52, 420:432] = 30  # a blot far from the digit
    # The same digit in the same place: only the ink's strength, measured with the blot, moves a few levels.
    assert np.abs(to_mnist(photographed(page))[0].astype(int) - seen).max() <= 8


@pytest.mark.parametrize("angle", [-1.4, 1.4])
def test_a_grid_photographed_at_a_slight_tilt_is_taken_away_whole(angle):
    # Squared paper turned by 1.4 degrees: over a 500 px wide photo each line drifts 12 px across, several cells
    # of the coarse grid the lines are found on. Left partly in place, a line's rest joins the digit's box.
    grid = np.full((700, 900), 240, np.uint8)
    grid[::22, :] = grid[:, ::22] = 150  # grey lines 22 px apart
    page = np.asarray(Image.fromarray(grid).rotate(angle, Image.Resampling.BICUBIC, fillcolor=240))[200:520, 200:700]
    plain = np.full_like(page, 240)
    digit = np.asarray(Image.fromarray(drawn_digits()[2]).resize((150, 150), Image.Resampling.BICUBIC), np.float32)
    ink = np.zeros(page.shape, np.float32)
    ink[80:230, 170:320] = digit / 255  # a 7, drawn with a marker, in the middle of the page
    on = [(paper * (1 - ink) + 20 * ink).astype(np.uint8) for paper in (page, plain)]
    (seen, blank), (alone, _) = to_mnist(on[0]), to_mnist(on[1])
    inked, digit = seen[..., 0] > 100, alone[..., 0] > 100
    # The digit, whole and as large as on plain paper: no rest of a line widened its box.
    assert not blank and (inked & digit).sum() >= 0.8 * digit.sum() and inked.sum() <= 1.25 * digit.sum()


def test_a_stroke_in_a_shadow_comes_out_as_strong_as_one_in_the_light():
    page = Image.new("L", (400, 400), 235)
    draw = ImageDraw.Draw(page)
    draw.line([(150, 110), (250, 110)], fill=40, width=9)  # a 7's bar, half in the shadow
    draw.line([(250, 110), (180, 300)], fill=40, width=9)  # and its stem
    light = np.ones((400, 400), np.float32)
    light[:, :200] = 0.45  # the page's left half gets less than half the light
    photo = Image.fromarray((np.asarray(page, np.float32) * light).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(0.7)
    )
    seen, blank = to_mnist(np.asarray(photo))
    shaded, lit = seen[:, :14, 0].astype(float), seen[:, 14:, 0].astype(float)
    # Ink reflects the same share of whatever light it gets: in the 28x28 both halves are equally strong.
    assert not blank and shaded[shaded > 30].mean() >= 0.8 * lit[lit > 30].mean()


def test_no_faint_rest_of_a_grid_stays_beside_a_digit_on_squared_paper():
    # What a grid's lines leave where they are taken is faint; beside a small digit written with a thin pen it
    # is scaled up with the digit and would read as strokes. Only the strokes' own soft edges may stay: no ink
    # more than two pixels from the digit's strong strokes (30 pictures of the person-made squared kind).
    for seed in range(10):
        for digit in drawn_digits():
            data, _ = person_made.render(digit, "squared", np.random.RandomState(seed))
            seen, blank = to_mnist(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.uint8))
            strong = seen[..., 0] > 100
            near = np.zeros_like(strong)
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    near |= np.roll(strong, (dy, dx), axis=(0, 1))
            assert not blank and ((seen[..., 0] > 10) & ~near).sum() <= 3, (seed, digit.sum())


def test_serving_bytes_answers_a_picture_without_a_digit_with_class_minus_one(serving_bytes):
    def png(pixels) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

    digit = png(255 - drawn_digits()[1])
    out = serving_bytes(png([[0]]), png(np.full((60, 40), 255)), digit, png(np.full((3, 3, 4), 0)))
    assert out["blank"].tolist() == [True, True, False, True]
    assert out["class_id"].tolist()[:2] == [-1, -1] and out["class_id"][2] >= 0
    np.testing.assert_allclose(out["probabilities"][0], 0.1)
    assert (out["image"][0] == 0).all() and np.isfinite(out["logits"]).all()


def test_serving_bytes_takes_a_huge_picture_up_to_the_limit_and_refuses_past_it(serving_bytes, tmp_path):
    from helpers import big_black_png

    assert 7000 * 7000 <= MAX_PIXELS < 7100 * 7100
    for side in (7000, 7100):
        big_black_png(tmp_path / f"{side}.png", side, side)
    assert serving_bytes((tmp_path / "7000.png").read_bytes())["blank"].tolist() == [True]
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        serving_bytes((tmp_path / "7100.png").read_bytes())


def assert_mnist_input(image: np.ndarray, blank: bool) -> None:
    assert image.shape == (28, 28, 1) and image.dtype == np.uint8
    if blank:
        assert (image == 0).all()
    else:
        assert image.max() > 0


PICTURES = st.one_of(
    arrays(np.uint8, st.tuples(st.integers(1, 120), st.integers(1, 120), st.sampled_from([1, 2, 3, 4]))),
    arrays(np.uint16, st.tuples(st.integers(1, 60), st.integers(1, 60), st.sampled_from([1, 3]))),
    arrays(np.float32, st.tuples(st.integers(1, 60), st.integers(1, 60)), elements=st.floats(width=32)),
    st.builds(
        lambda v, h, w: np.full((h, w), v, np.uint8), st.integers(0, 255), st.integers(1, 300), st.integers(1, 300)
    ),
)


@given(pixels=PICTURES)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_to_mnist_on_arrays_of_every_size_and_kind(pixels):
    assert_mnist_input(*to_mnist(pixels))


@given(
    pixels=arrays(np.uint8, st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from([1, 3, 4]))),
    fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]),
    cut=st.none() | st.integers(0, 300),
    noise=st.binary(max_size=64),
)
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
def test_fuzz_serving_bytes_on_pictures_and_random_bytes(serving_bytes, pixels, fmt, cut, noise):
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    image.save(buffer, fmt)
    data = buffer.getvalue() if cut is None else buffer.getvalue()[:cut] + noise
    try:
        out = serving_bytes(data)
    except tf.errors.InvalidArgumentError as e:  # Bytes TensorFlow cannot decode: a clear error, nothing worse.
        assert e.message
        return
    assert_mnist_input(out["image"][0], bool(out["blank"][0]))
    assert np.isfinite(out["probabilities"]).all() and out["probabilities"].sum() == pytest.approx(1, abs=1e-4)
    assert -1 <= out["class_id"][0] <= 9 and (out["class_id"][0] == -1) == out["blank"][0]


@pytest.fixture(scope="module")
def tflite_dir(tiny_saved_model, tmp_path_factory):
    """The tiny model's int8 classifier and the preprocessing, as `mnist-tf export --tflite` writes them."""
    from mnist_tf.jobs import export

    out = tmp_path_factory.mktemp("tflite")
    calibration = np.stack([to_mnist(d)[0] for d in drawn_digits()])
    export.export_tflite(tiny_saved_model, out, calibration, kinds=("int8",))
    return out


@pytest.mark.slow  # exports and converts a model, then writes every person-made set: about 45 s
def test_preprocessing_as_tflite_gives_the_28x28_that_to_mnist_gives(tflite_dir, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    preprocess = Interpreter(model_path=str(tflite_dir / "mnist_preprocess.tflite")).get_signature_runner("preprocess")
    files = person_made.write_sets(np.stack(drawn_digits()), np.array([0, 1, 7]), tmp_path)
    differences = []
    for entries in files.values():
        for path, _ in entries:
            pixels = np.asarray(Image.open(path).convert("RGBA"), np.float32) / 255
            out = preprocess(pixels=pixels)
            expected, blank = to_mnist(pixels)
            assert bool(out["blank"]) == blank and out["image"].shape == (28, 28, 1)
            differences.append(np.abs(out["image"].astype(int) - expected.astype(int)).max())
    # The same ops run by another runtime: a pixel may round one step apart, rarely a threshold flips.
    assert np.mean(np.array(differences) <= 2) >= 0.9, differences
    assert bool(preprocess(pixels=np.ones((30, 40, 3), np.float32))["blank"])


@pytest.mark.slow  # converts the TFLite models, as the comparison above does
def test_litert_reference_client_classifies_like_mnist_tf_predict(tflite_dir, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    from mnist_tf.inference.loading import TFLiteRunner

    files = person_made.write_sets(np.stack(drawn_digits()), np.array([0, 1, 7]), tmp_path, kinds=("canvas",))
    path = files["canvas"][1][0]
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "litert_client.py"), str(tflite_dir), str(path), str(blank)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # one picture had no digit
    lines = result.stdout.splitlines()
    probabilities = TFLiteRunner((tflite_dir / "mnist_int8.tflite").read_bytes())(load_image(path)[None])[0]
    assert lines == [f"{path}: {probabilities.argmax()} ({probabilities.max():.1%})", f"{blank}: error: no digit found"]
