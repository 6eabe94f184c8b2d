"""Export: the SavedModel for TF Serving and the TFLite variants, compared with Keras.

The slow tests share one `export_model` of the session's trained model, with
every TFLite kind converted and verified once on the 10,000 test images.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_tf.core.errors import UserError
from mnist_tf.export import tflite
from mnist_tf.jobs import export


def test_convert_tflite_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown TFLite kind 'int4'"):
        tflite.convert_tflite(tmp_path, "int4")
    with pytest.raises(ValueError, match="representative images"):
        tflite.convert_tflite(tmp_path, "int8")


def test_accuracy_gate_names_only_the_failing_variant():
    rows = [
        {"variant": "float32", "accuracy": 0.99, "accuracy_drop_points": 0.0, "passed": True},
        {"variant": "int8", "accuracy": 0.975, "accuracy_drop_points": 1.5, "passed": False},
    ]
    report = {"keras_accuracy": 0.99, "max_accuracy_drop_points": 0.5, "variants": rows}
    with pytest.raises(tflite.AccuracyDropError, match=r"variant int8 fell more than 0.5 points") as info:
        tflite.check_accuracy_gate(report)
    assert "float32" not in str(info.value)
    tflite.check_accuracy_gate({**report, "variants": rows[:1]})


def test_export_refuses_a_model_that_is_not_keras(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"")
    with pytest.raises(UserError, match="export needs a run dir"):
        export.resolve_keras_path(tmp_path / "model.tflite")
    with pytest.raises(UserError, match="does not exist"):
        export.resolve_keras_path(tmp_path / "missing")


@pytest.fixture(scope="module")
def tiny_signatures(tiny_saved_model):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(tiny_saved_model))
    return loaded, loaded.signatures["serving_default"], loaded.signatures["serving_bytes"]


def encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("dtype", "shape", "expected"),
    [
        ("float32", [2, 28, 28, 1], "expected to be a uint8 tensor but is a float tensor"),
        ("int32", [2, 28, 28, 1], "expected to be a uint8 tensor but is a int32 tensor"),
        # This shape used to abort the whole process in oneDNN's convolution.
        (
            "uint8",
            [2, 28, 28],
            r"Shape of tensor image \[2,28,28\] is not compatible with expected shape \[\?,28,28,1\]",
        ),
        ("uint8", [2, 32, 32, 1], r"image \[2,32,32,1\] is not compatible with expected shape \[\?,28,28,1\]"),
        ("uint8", [28, 28, 1], r"image \[28,28,1\] is not compatible with expected shape \[\?,28,28,1\]"),
    ],
    ids=["float32", "int32", "no-channel", "32x32", "no-batch"],
)
def test_serving_default_refuses_wrong_dtypes_and_shapes_naming_the_expected_one(
    tiny_signatures, dtype, shape, expected
):
    import tensorflow as tf

    _, pixels, _ = tiny_signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        pixels(image=tf.zeros(shape, dtype))
    out = pixels(image=tf.zeros([2, 28, 28, 1], tf.uint8))  # still serving after the refusals
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([b"these are not pixels"], "Unknown image file format. One of JPEG, .*PNG, GIF, BMP"),
        ([b""], "Input is empty"),
        ([b"\x89PNG\r\n\x1a\n" + b"\0" * 40], "Invalid PNG"),
        (b"a scalar", r"image_bytes \[\] is not compatible with expected shape \[\?\]"),
        ([[b"a matrix"]], r"image_bytes \[1,1\] is not compatible with expected shape \[\?\]"),
    ],
    ids=["not-an-image", "empty", "broken-png", "scalar", "matrix"],
)
def test_serving_bytes_refuses_undecodable_input_with_a_clear_error(tiny_signatures, value, expected):
    import tensorflow as tf

    _, _, by_bytes = tiny_signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        by_bytes(image_bytes=tf.constant(value))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a string tensor but is a uint8"):
        by_bytes(image_bytes=tf.zeros([1, 28, 28, 1], tf.uint8))


def test_serving_bytes_refuses_a_huge_image_before_converting_it(tiny_signatures):
    import tensorflow as tf
    from PIL import Image

    _, _, by_bytes = tiny_signatures
    # 8000x7000 black pixels: 56 megapixels in a few kilobytes of PNG.
    encoded = encode(np.zeros((7000, 8000), np.uint8), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large: the limit is 50,000,000 pixels"):
        by_bytes(image_bytes=tf.constant([encoded]))
    assert Image.open(io.BytesIO(encoded)).size == (8000, 7000)


def test_serving_bytes_reads_every_documented_format_like_the_pixel_signature(tiny_signatures):
    import tensorflow as tf
    from helpers import drawn_digits
    from PIL import Image

    from mnist_tf.imaging.mnist_form import to_mnist

    _, pixels, by_bytes = tiny_signatures
    digit = drawn_digits()[2]  # a 7
    # TF decodes GIF, BMP and WebP only to colour: these failed with channels=1.
    lossless = [encode(digit, f) for f in ("PNG", "GIF", "BMP")] + [encode(digit, "WEBP", lossless=True)]
    lossless.append(tf.io.encode_png(digit[..., None].astype(np.uint16) * 257).numpy())  # 16-bit PNG
    rgb = np.repeat(digit[..., None], 3, axis=-1)
    lossless.append(encode(np.dstack([rgb, np.full((28, 28), 255, np.uint8)]), "PNG"))  # RGBA, opaque
    frames = io.BytesIO()
    Image.fromarray(digit).save(frames, format="GIF", save_all=True, append_images=[Image.fromarray(255 - digit)])
    lossless.append(frames.getvalue())  # animated: the first frame counts
    # Each picture reaches the model as the preprocessing makes it; the pixel signature on that agrees.
    seen = np.repeat(to_mnist(digit)[0][None], len(lossless), axis=0)
    expected = pixels(image=tf.constant(seen))
    out = by_bytes(image_bytes=tf.constant(lossless))
    np.testing.assert_array_equal(out["image"].numpy(), seen)
    np.testing.assert_allclose(out["logits"].numpy(), expected["logits"].numpy(), atol=1e-4)
    jpeg = by_bytes(image_bytes=tf.constant([encode(digit, "JPEG", quality=100)]))
    np.testing.assert_allclose(jpeg["probabilities"].numpy(), expected["probabilities"].numpy()[:1], atol=0.05)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"BM", b"RIFF\0\0\0\0WEBPVP8 "]


@given(
    data=st.one_of(
        st.tuples(st.sampled_from(MAGIC), st.binary(max_size=200)).map(b"".join),
        st.tuples(
            st.sampled_from([np.uint8, np.uint16]),
            st.integers(1, 40),
            st.integers(1, 40),
            st.sampled_from([1, 2, 3, 4]),
            st.integers(0, 2**32 - 1),
        ).map(lambda t: random_png(*t)),
    ),
    cut=st.one_of(st.none(), st.integers(0, 300)),
)
@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_serving_bytes_gives_probabilities_or_an_invalid_argument_error(tiny_signatures, data, cut):
    import tensorflow as tf

    _, _, by_bytes = tiny_signatures
    data = data if cut is None else data[:cut]  # also truncated images
    try:
        out = by_bytes(image_bytes=tf.constant([data]))
    except tf.errors.InvalidArgumentError as e:
        assert str(e).strip(), "an error without a message"
        return
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (1, 10) and np.isfinite(probabilities).all()
    blank = out["blank"].numpy()[0]
    assert abs(probabilities.sum() - 1) < 1e-5
    assert out["class_id"].numpy()[0] == (-1 if blank else probabilities.argmax())


def random_png(dtype, height: int, width: int, channels: int, seed: int) -> bytes:
    import tensorflow as tf

    high = np.iinfo(dtype).max
    pixels = np.random.default_rng(seed).integers(0, high, (height, width, channels), dtype, endpoint=True)
    return tf.io.encode_png(pixels).numpy()


def test_a_tflite_model_carries_its_class_names_in_its_metadata(tiny_saved_model, tmp_path):
    from mnist_tf.export.tflite import convert_tflite, with_class_names
    from mnist_tf.inference.loading import TFLiteRunner, class_names_of

    names = [f"class {c}" for c in range(10)]
    path = tmp_path / "named.tflite"
    converted = convert_tflite(tiny_saved_model, "float32")  # once: a conversion takes seconds
    path.write_bytes(with_class_names(converted, names))
    assert class_names_of(path) == tuple(names)  # from the file alone: no labels.txt beside it
    probabilities = TFLiteRunner(path.read_bytes())(np.zeros((2, 28, 28, 1), np.uint8))
    assert probabilities.shape == (2, 10)  # still a model LiteRT runs
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(converted)
    assert class_names_of(plain) is None


def test_a_model_without_calibration_json_gives_the_plain_softmax_in_every_format(tiny_keras, tiny_saved_model):
    import tensorflow as tf

    from mnist_tf.inference.loading import load_logits_fn, load_proba_fn, temperature_of

    images = np.stack([np.full((28, 28, 1), v, np.uint8) for v in (0, 90, 255)])
    assert temperature_of(tiny_keras) == 1.0 and temperature_of(tiny_saved_model) == 1.0
    plain = tf.nn.softmax(load_logits_fn(tiny_keras)(images)).numpy()
    np.testing.assert_allclose(load_proba_fn(tiny_keras)(images), plain, atol=1e-6)
    outputs = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(outputs["logits"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), plain, atol=1e-5)


def test_a_calibrated_keras_model_and_its_saved_model_divide_the_logits_by_the_temperature(tiny_keras, tmp_path):
    import json
    import shutil

    import tensorflow as tf

    from mnist_tf.export.saved_model import export_saved_model
    from mnist_tf.inference.loading import load_logits_fn, load_proba_fn, temperature_of

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tiny_keras, run / "model.keras")
    (run / "calibration.json").write_text(json.dumps({"temperature": 0.25, "held_out": True, "later_field": 1}))
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), np.uint8)
    logits = load_logits_fn(run)(images).numpy()
    expected = tf.nn.softmax(logits / 0.25).numpy()
    assert np.abs(expected - tf.nn.softmax(logits).numpy()).max() > 1e-3  # the temperature shows
    np.testing.assert_allclose(load_proba_fn(run)(images), expected, atol=1e-6)
    version = export_saved_model(run / "model.keras", tmp_path / "out", images[:1])
    assert json.loads((version / "assets.extra" / "calibration.json").read_text())["later_field"] == 1
    (run / "calibration.json").unlink()  # the SavedModel holds the temperature in its graph, not the file
    assert temperature_of(version) == 0.25 and temperature_of(run) == 1.0
    outputs = tf.saved_model.load(str(version)).signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(outputs["logits"].numpy(), logits, atol=1e-5)  # the logits are not scaled
    np.testing.assert_array_equal(outputs["class_id"].numpy(), logits.argmax(1))


def test_a_model_that_declines_says_not_a_digit_below_its_threshold_in_every_path(tiny_keras, tmp_path):
    import json
    import shutil

    import tensorflow as tf
    from helpers import digit_image, drawn_digits

    from mnist_tf.evaluation.calibration import evidence
    from mnist_tf.export.saved_model import encode_png, export_saved_model
    from mnist_tf.imaging.decode import load_image
    from mnist_tf.inference.loading import decline_below_of, load_logits_fn, load_proba_fn
    from mnist_tf.inference.predict import predict

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tiny_keras, run / "model.keras")
    pictures = [digit[..., None] for digit in drawn_digits()] + [digit_image(seed) for seed in range(3)]
    pngs = [encode_png(picture) for picture in pictures]
    files = []
    for i, png in enumerate(pngs):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(png)
    images = np.stack([load_image(file) for file in files])  # what predict gives the model
    logits_fn = load_logits_fn(run)
    top = load_proba_fn(run)(images).max(axis=1)  # plain softmax: no calibration yet
    strength = evidence(logits_fn(images))
    threshold = float(np.median(strength))  # half the pictures fall below it
    below = strength < threshold
    assert below.any() and not below.all()
    (run / "calibration.json").write_text(json.dumps({"temperature": 1.0, "decline_evidence_below": threshold}))
    assert decline_below_of(run) == threshold
    version = export_saved_model(run / "model.keras", tmp_path / "out", images[:1])
    assert decline_below_of(version) == threshold
    signatures = tf.saved_model.load(str(version)).signatures
    out = signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_array_equal(out["not_a_digit"].numpy(), below)
    expected_ids = np.where(below, -1, out["probabilities"].numpy().argmax(1))
    np.testing.assert_array_equal(out["class_id"].numpy(), expected_ids)
    assert all((name == b"") == declined for name, declined in zip(out["class_name"].numpy(), below))
    np.testing.assert_allclose(out["probabilities"].numpy().max(1), top, atol=1e-5)  # left as they are
    # serving_bytes reads the same pictures as PNGs: what it saw is the image, so it declines the same ones.
    by_bytes = signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    assert not by_bytes["blank"].numpy().any()
    seen_weak = evidence(logits_fn(by_bytes["image"].numpy())) < threshold
    np.testing.assert_array_equal(by_bytes["not_a_digit"].numpy(), seen_weak)
    assert seen_weak.any() and not seen_weak.all(), "the test would not show serving_bytes declining and not"
    # predict, on the run and on the SavedModel, answers "not a digit" for the declined files.
    for model in (run, version):
        results = predict(files, model=model)
        declined = [r.error is not None and r.error.startswith("not a digit") for r in results]
        assert declined == list(below), model


def test_a_model_without_a_decline_threshold_never_declines(tiny_saved_model):
    import tensorflow as tf

    from mnist_tf.inference.loading import decline_below_of

    assert decline_below_of(tiny_saved_model) is None
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), np.uint8)
    out = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"](image=tf.constant(images))
    assert not out["not_a_digit"].numpy().any() and (out["class_id"].numpy() >= 0).all()
