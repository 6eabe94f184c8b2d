"""Export: the SavedModel for TF Serving and the TFLite variants, compared with Keras.

The slow tests share one `export_model` of the session's trained model, with
every TFLite kind converted and verified once on the 10,000 test images.
"""

from __future__ import annotations

import hashlib
import io
import json
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import real_data_args
from helpers import is_png

from mnist_tf.config.choices import TFLITE_KINDS
from mnist_tf.core.errors import UserError
from mnist_tf.export import saved_model, tflite
from mnist_tf.jobs import export

CALIBRATION_EXAMPLES = 200


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def test_arrays(real_source):
    from mnist_tf.data import pipeline

    return pipeline.arrays("test", real_source)


@pytest.fixture(scope="module")
def reference(trained_run, test_arrays):
    """The Keras model's evaluation on the whole test split."""
    from mnist_tf.evaluation import metrics
    from mnist_tf.inference.loading import load_proba_fn

    return metrics.evaluate_proba_fn(load_proba_fn(trained_run), *test_arrays)


@pytest.fixture(scope="module")
def exported(trained_run, real_source, tmp_path_factory):
    """One export of every format, with the TFLite report."""
    out = tmp_path_factory.mktemp("export")
    result = export.export_model(
        trained_run,
        out,
        real_source,
        tflite_kinds=TFLITE_KINDS,
        calibration_examples=CALIBRATION_EXAMPLES,
        latency_images=20,
    )
    return types.SimpleNamespace(out=out, saved=result.saved_model, models=result.tflite, report=result.report)


@pytest.fixture(scope="module")
def loaded(exported):
    import tensorflow as tf

    return tf.saved_model.load(str(exported.saved))


@pytest.mark.slow
def test_saved_model_layout(exported, trained_run):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    assert exported.saved == exported.out / "saved_model" / "mnist" / "1"
    extra = exported.saved / "assets.extra"
    assert (extra / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    for name in ("config.json", "metrics.json", "calibration.json"):
        assert json.loads((extra / name).read_text()) == json.loads((trained_run / name).read_text())
    config = text_format.Parse(
        (exported.out / "saved_model" / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("mnist", "/models/mnist", "tensorflow")
    # Nothing but the version folder: no temporary folder left behind.
    assert [p.name for p in (exported.out / "saved_model" / "mnist").iterdir()] == ["1"]


@pytest.mark.slow
def test_signatures_have_the_documented_names_dtypes_and_shapes(loaded):
    import tensorflow as tf

    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    expected_inputs = {
        "serving_default": {"image": ([None, 28, 28, 1], tf.uint8)},
        "serving_bytes": {"image_bytes": ([None], tf.string)},
    }
    for name, inputs in expected_inputs.items():
        signature = loaded.signatures[name]
        args, kwargs = signature.structured_input_signature
        assert args == ()
        assert {k: (v.shape.as_list(), v.dtype) for k, v in kwargs.items()} == inputs
        outputs = {k: (v.shape.as_list(), v.dtype) for k, v in signature.structured_outputs.items()}
        expected = {
            "probabilities": ([None, 10], tf.float32),
            "class_id": ([None], tf.int64),
            "class_name": ([None], tf.string),
            "logits": ([None, 10], tf.float32),
            "not_a_digit": ([None], tf.bool),
        }
        if name == "serving_bytes":  # also what the model saw, and whether a digit was found
            expected.update({"image": ([None, 28, 28, 1], tf.uint8), "blank": ([None], tf.bool)})
        assert outputs == expected


@pytest.mark.slow
def test_serving_default_matches_keras_probabilities(loaded, test_arrays, reference, trained_run):
    import tensorflow as tf

    from mnist_tf.inference.loading import temperature_of

    images = test_arrays[0][:1000]
    out = loaded.signatures["serving_default"](image=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), reference.probabilities[:1000], atol=1e-5)
    np.testing.assert_array_equal(out["class_id"].numpy(), reference.predictions[:1000])
    # The probabilities are calibrated with the run's temperature; the logits are the network's own.
    calibrated = tf.nn.softmax(out["logits"] / temperature_of(trained_run)).numpy()
    np.testing.assert_allclose(calibrated, out["probabilities"].numpy(), atol=1e-6)


@pytest.mark.slow
def test_bytes_signature_gives_the_classes_of_the_pixel_signature(loaded, test_arrays):
    import tensorflow as tf
    from PIL import Image

    images = test_arrays[0][:64]

    def png(array: np.ndarray, mode: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array.squeeze(-1)).convert(mode).save(buffer, format="PNG")
        return buffer.getvalue()

    # Grey PNGs, and RGB and RGBA ones that channels=1 must turn back to grey.
    encoded = [png(image, "L") for image in images[:48]]
    encoded += [png(image, "RGB") for image in images[48:56]] + [png(image, "RGBA") for image in images[56:]]
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    # The bytes are put in MNIST's form first, by the function predict runs too.
    from mnist_tf.imaging.mnist_form import to_mnist

    prepared = np.stack([to_mnist(image)[0] for image in images])
    seen = by_bytes["image"].numpy()
    np.testing.assert_array_equal(seen[:48], prepared[:48])  # grey PNGs: the very same pixels
    assert np.abs(seen[48:].astype(int) - prepared[48:].astype(int)).max() <= 1  # colour: luma rounding
    assert not by_bytes["blank"].numpy().any()
    by_pixels = loaded.signatures["serving_default"](image=tf.constant(seen))
    np.testing.assert_array_equal(by_bytes["class_id"].numpy(), by_pixels["class_id"].numpy())
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(), by_pixels["probabilities"].numpy(), atol=1e-5)
    # MNIST's own digits, prepared again, still read as the raw ones do.
    raw = loaded.signatures["serving_default"](image=tf.constant(images))["class_id"].numpy()
    assert (by_bytes["class_id"].numpy() == raw).mean() >= 0.95


@pytest.mark.slow
def test_warmup_requests_parse_and_run_through_their_signatures(exported, loaded, test_arrays, reference):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = exported.saved / "assets.extra" / "tf_serving_warmup_requests"
    seen = set()
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.name == "mnist"
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        np.testing.assert_array_equal(out["class_id"].numpy(), reference.predictions[:3])
        seen.add(request.model_spec.signature_name)
    assert seen == {"serving_default", "serving_bytes"}


@pytest.mark.slow
def test_every_tflite_kind_converts_runs_and_agrees_with_keras(exported, reference):
    from ai_edge_litert.interpreter import Interpreter

    rows = {r["variant"]: r for r in exported.report["variants"]}
    assert list(rows) == list(TFLITE_KINDS)
    for kind, row in rows.items():
        path = exported.out / "tflite" / f"mnist_{kind}.tflite"
        assert row["size_bytes"] == path.stat().st_size > 0
        assert row["latency_ms"] > 0
        assert abs(row["accuracy"] - reference.accuracy) < 0.02, kind
    assert rows["float32"]["agreement"] >= 0.999
    assert rows["int8"]["agreement"] >= 0.99
    assert rows["dynamic_range"]["size_bytes"] < rows["float32"]["size_bytes"] / 3
    assert rows["float16"]["size_bytes"] < rows["float32"]["size_bytes"] * 0.6

    int8 = Interpreter(model_path=str(exported.models["int8"]))
    assert int8.get_input_details()[0]["dtype"] == np.uint8
    assert any(t["dtype"] == np.int8 for t in int8.get_tensor_details()), "int8 variant holds no int8 tensors"

    report = json.loads((exported.out / "tflite" / "report.json").read_text())
    assert report["keras_accuracy"] == pytest.approx(reference.accuracy)
    assert report["test_examples"] == 10000
    assert report["saved_model"] == str(exported.saved)
    assert [r["variant"] for r in report["variants"]] == list(TFLITE_KINDS)
    assert is_png(exported.out / "tflite" / "report.png")


@pytest.mark.slow
def test_accuracy_gate_trips_when_the_threshold_is_forced(exported, test_arrays, reference):
    from mnist_tf.evaluation.metrics import evaluate_probabilities

    images, labels = test_arrays[0][:2000], test_arrays[1][:2000]
    subset = evaluate_probabilities(reference.probabilities[:2000], labels)
    # -1 demands a point more than Keras, which an equally good variant cannot give.
    report = tflite.verify_tflite(
        {"int8": exported.models["int8"]}, images, labels, subset, max_accuracy_drop=-1, latency_images=2
    )
    assert report["variants"][0]["passed"] is False
    with pytest.raises(tflite.AccuracyDropError, match="variant int8 fell"):
        tflite.check_accuracy_gate(report)


@pytest.mark.slow
def test_export_cli_fails_naming_the_variant_that_loses_accuracy(trained_run, real_source, tmp_path, monkeypatch):
    from mnist_tf.cli import main

    class Shifted(tflite.TFLiteRunner):
        """Predicts the next digit: a variant that lost its accuracy."""

        def __call__(self, images):
            return np.roll(super().__call__(images), 1, axis=1)

    monkeypatch.setattr(tflite, "TFLiteRunner", Shifted)
    out = tmp_path / "out"
    args = ["export", "--model", str(trained_run), "--out", str(out), "--tflite-kind", "float32"]
    result = CliRunner().invoke(main, args + real_data_args())
    assert result.exit_code == 2, result.output
    assert "variant float32 fell more than 0.5 points" in result.output
    assert "Traceback" not in result.output
    report = json.loads((out / "tflite" / "report.json").read_text())
    assert [(r["variant"], r["passed"]) for r in report["variants"]] == [("float32", False)]
    assert report["saved_model"] == str(out / "saved_model" / "mnist" / "1")
    assert (out / "saved_model" / "mnist" / "1" / "saved_model.pb").is_file()
    assert (out / "tflite" / "mnist_float32.tflite").is_file()


@pytest.mark.slow
def test_versions_are_never_overwritten(trained_run, real_source, tmp_path):
    from mnist_tf.cli import main

    keras_path = trained_run / "model.keras"
    warmup = np.zeros((1, 28, 28, 1), np.uint8)
    assert saved_model.export_saved_model(keras_path, tmp_path, warmup).name == "1"
    assert saved_model.export_saved_model(keras_path, tmp_path, warmup).name == "2"
    base = tmp_path / "saved_model" / "mnist"
    before = tree_digest(base)

    with pytest.raises(UserError, match="version 1 already exists.*write version 3"):
        saved_model.export_saved_model(keras_path, tmp_path, warmup, version=1)
    args = ["export", "--model", str(trained_run), "--out", str(tmp_path), "--version", "2"]
    result = CliRunner().invoke(main, args + real_data_args())
    assert result.exit_code == 2 and "version 2 already exists" in result.output, result.output
    assert tree_digest(base) == before

    assert saved_model.export_saved_model(keras_path, tmp_path, warmup, version=7).name == "7"
    assert saved_model.versions(base) == [1, 2, 7]
    assert saved_model.choose_version(tmp_path) == 8


@pytest.mark.slow
def test_a_failed_export_leaves_no_version_folder(trained_run, tmp_path, monkeypatch):
    keras_path = trained_run / "model.keras"
    warmup = np.zeros((1, 28, 28, 1), np.uint8)
    saved_model.export_saved_model(keras_path, tmp_path, warmup)
    base = tmp_path / "saved_model" / "mnist"
    before = tree_digest(base)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(saved_model, "write_warmup", fail)
    with pytest.raises(OSError, match="disk full"):
        saved_model.export_saved_model(keras_path, tmp_path, warmup)
    assert sorted(p.name for p in base.iterdir()) == ["1"]
    assert tree_digest(base) == before
