"""Predict: image decoding, every model format through `load_proba_fn`, and the CLI.

The fast tests use synthetic images; the slow ones write real test digits as
PNG files and classify them with the trained model in each exported format.
"""

from __future__ import annotations

import json
import struct
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_tf.errors import UserError
from mnist_tf.predict import MAX_PIXELS, load_image, predict_files, to_mnist


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


def test_to_mnist_inverts_dark_digits_on_light_paper():
    light_on_dark = stroke_image()
    dark_on_light = 255 - light_on_dark
    np.testing.assert_array_equal(to_mnist(dark_on_light)[..., 0], light_on_dark)
    np.testing.assert_array_equal(to_mnist(light_on_dark)[..., 0], light_on_dark)


def test_to_mnist_pads_to_a_square_and_resizes_to_28():
    tall = np.zeros((112, 56), np.uint8)
    tall[:, 20:36] = 255  # A bar down the middle.
    result = to_mnist(tall)[..., 0]
    assert result.shape == (28, 28)
    # Padded to 112x112 then shrunk 4x: the bar (16 wide) becomes 4 wide, centred, full height.
    assert (result[:, 12:16] > 200).all()
    assert (result[:, :9] == 0).all() and (result[:, 19:] == 0).all()


def test_load_image_reads_rgb_jpeg_and_transparent_png(tmp_path):
    digit = stroke_image(size=56, ink=0, paper=255)  # Dark ink on white paper.
    Image.fromarray(digit).convert("RGB").save(tmp_path / "digit.jpg", quality=95)
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = 255 - digit  # Black ink, transparent elsewhere.
    Image.fromarray(rgba, "RGBA").save(tmp_path / "digit.png")
    expected = to_mnist(digit)[..., 0].astype(int)
    for name in ("digit.jpg", "digit.png"):
        image = load_image(tmp_path / name)
        assert image.shape == (28, 28, 1) and image.dtype == np.uint8
        assert np.abs(image[..., 0].astype(int) - expected).max() <= 12, name


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

    def brightest_column_fn(images):
        # A stand-in model: "digit" = the column of the brightest pixel, mod 10.
        column = images[..., 0].max(axis=1).argmax(axis=1) % 10
        return np.eye(10)[column]

    results = predict_files(brightest_column_fn, [tmp_path / n for n in ("a.png", "b.png", "c.png")])
    assert [r.file for r in results] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert [r.digit for r in results] == [12 % 10, None, 12 % 10]
    assert results[1].error.startswith("not an image") and results[0].error is None
    assert str(results[0]) == f"{tmp_path / 'a.png'}: 2 (100.0%)"
    assert str(results[1]).startswith(f"{tmp_path / 'b.png'}: error: not an image")


# Slow tests: the session's trained model in every format, on real test digits.


@pytest.fixture(scope="module")
def formats(trained_run, real_source, tmp_path_factory):
    """The trained model as run dir, .keras, SavedModel and float32 .tflite, plus
    PNGs of test digits that the Keras model classifies confidently."""
    from mnist_tf import data, evaluate, export
    from mnist_tf.io import write_bytes
    from mnist_tf.predict import load_proba_fn

    images, labels = evaluate.dataset_arrays(data.eval_pipeline(data.load_split("test[:500]", real_source)))
    probabilities = load_proba_fn(trained_run)(images)
    # The session's model trains for one short epoch; keep digits it is sure of.
    sure = np.flatnonzero((probabilities.argmax(1) == labels) & (probabilities.max(1) > 0.9))[:8]
    assert len(sure) == 8
    out = tmp_path_factory.mktemp("predict")
    files = []
    for n, i in enumerate(sure):
        # Half as MNIST has them, half dark-on-light as scanned or drawn digits are.
        pixels = images[i, :, :, 0] if n % 2 else 255 - images[i, :, :, 0]
        files.append(out / f"digit{n}_{labels[i]}.png")
        Image.fromarray(pixels).save(files[-1])
    saved = export.export_saved_model(trained_run / "model.keras", out, images[:2])
    tflite = out / "mnist_float32.tflite"
    write_bytes(tflite, export.convert_tflite(saved, "float32"))
    models = {"run dir": trained_run, "keras": trained_run / "model.keras", "saved_model": saved, "tflite": tflite}
    return types.SimpleNamespace(models=models, files=files, labels=[int(labels[i]) for i in sure])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["run dir", "keras", "saved_model", "tflite"])
def test_predict_cli_gives_the_right_digits_for_every_format(formats, kind):
    from mnist_tf.cli import main

    args = ["predict", "--json", "--model", str(formats.models[kind]), *map(str, formats.files)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(f) for f in formats.files]
    assert [r["digit"] for r in rows] == formats.labels
    assert all(r["probability"] > 0.8 and abs(sum(r["probabilities"]) - 1) < 1e-3 for r in rows)


@pytest.mark.slow
def test_predict_cli_reports_a_non_image_and_still_classifies_the_rest(formats, tmp_path):
    from mnist_tf.cli import main

    junk = tmp_path / "notes.txt"
    junk.write_text("not a digit")
    good = formats.files[0]
    result = CliRunner().invoke(main, ["predict", "--model", str(formats.models["saved_model"]), str(junk), str(good)])
    assert result.exit_code == 1
    assert f"{junk}: error: not an image" in result.stderr
    assert result.stdout.splitlines() == [result.stdout.splitlines()[0]]
    assert result.stdout.startswith(f"{good}: {formats.labels[0]} (")


def test_predict_cli_refuses_an_unreadable_model_in_one_line(tmp_path):
    from mnist_tf.cli import main

    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    png = tmp_path / "digit.png"
    Image.fromarray(stroke_image()).save(png)
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "broken.tflite"), str(png)])
    assert result.exit_code == 2
    assert "is not a TFLite model" in result.output and "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_evaluate_cli_accepts_saved_model_and_tflite(formats, kind, trained_run, real_source, tmp_path):
    from mnist_tf.cli import main

    args = ["evaluate", "--model", str(formats.models[kind]), "--out", str(tmp_path)]
    args += ["--data-dir", str(real_source.data_dir), "--manual-dir", str(real_source.manual_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    keras_accuracy = json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]
    assert metrics["examples"] == 10000
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-3)
    assert (tmp_path / "confusion_matrix.png").is_file()
