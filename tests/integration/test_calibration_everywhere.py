"""Calibrated probabilities: the trained run's own calibration, and one temperature applied by every path.

The session's trained model is given a deliberately unusual temperature (T = 0.25, far sharper than any
fit) in a run dir of its own; the Keras model, the SavedModel's two signatures, the float32 TFLite model,
the REST server and `mnist-tf predict` must all give softmax(logits / 0.25).
"""

from __future__ import annotations

import base64
import json
import shutil
import types

import httpx
import numpy as np
import pytest
from helpers import png_bytes

from mnist_tf.core.types import SURE
from mnist_tf.serve.process import ServerProcess

TEMPERATURE = 0.25


@pytest.mark.slow
def test_a_run_trained_on_every_image_is_calibrated_on_its_last_ones_and_says_so(trained_run, real_source):
    from mnist_tf.data import pipeline
    from mnist_tf.evaluation import calibration, metrics
    from mnist_tf.inference.loading import load_logits_fn

    fitted = json.loads((trained_run / "calibration.json").read_text())
    recorded = json.loads((trained_run / "metrics.json").read_text())
    # The `fast` preset trains on all 60,000 training images: none is held out.
    assert fitted["fitted_on"] == "mnist train[55000:]" and fitted["held_out"] is False and fitted["examples"] == 5000
    assert fitted["nll_after"] <= fitted["nll_before"] and 0.1 < fitted["temperature"] < 10
    assert recorded["calibration"]["temperature"] == fitted["temperature"]
    # metrics.json's test scores are those of the calibrated probabilities; the ECE before is the plain softmax's.
    images, labels = pipeline.arrays("test", real_source)
    logits = np.asarray(load_logits_fn(trained_run)(images))
    plain = metrics.expected_calibration_error(calibration.softmax(logits), labels)
    after = metrics.evaluate_probabilities(calibration.softmax(logits, fitted["temperature"]), labels)
    assert recorded["calibration"]["test_ece_before"] == pytest.approx(plain, abs=1e-4)
    assert recorded["calibration"]["test_ece_after"] == pytest.approx(after.calibration_error(), abs=1e-4)
    assert recorded["test"]["expected_calibration_error"] == recorded["calibration"]["test_ece_after"]
    assert recorded["test_loss"] == pytest.approx(after.loss, abs=1e-4)


@pytest.fixture(scope="module")
def unusual(trained_run, real_source, tmp_path_factory):
    """The trained model in a run dir whose calibration.json says T = 0.25, exported and served."""
    from mnist_tf.data import pipeline
    from mnist_tf.export.saved_model import export_saved_model
    from mnist_tf.export.tflite import export_tflite

    tmp = tmp_path_factory.mktemp("unusual")
    run = tmp / "run"
    run.mkdir()
    for name in ("model.keras", "run.json", "config.json"):
        shutil.copyfile(trained_run / name, run / name)
    fitted = json.loads((trained_run / "calibration.json").read_text())
    (run / "calibration.json").write_text(json.dumps({**fitted, "temperature": TEMPERATURE}))
    images, labels = pipeline.arrays("test[:300]", real_source)
    saved = export_saved_model(run / "model.keras", tmp / "export", images[:2])
    tflite = export_tflite(saved, tmp / "export" / "tflite", images[:10], kinds=["float32"])["float32"]
    server = ServerProcess(saved.parent, "--no-grpc")
    yield types.SimpleNamespace(run=run, saved=saved, tflite=tflite, server=server, images=images, labels=labels)
    server.stop()


@pytest.fixture(scope="module")
def expected(unusual):
    """softmax(logits / T) of the Keras model's logits, and the plain softmax."""
    import tensorflow as tf

    from mnist_tf.inference.loading import load_logits_fn

    logits = load_logits_fn(unusual.run)(unusual.images).numpy()
    return tf.nn.softmax(logits / TEMPERATURE).numpy(), tf.nn.softmax(logits).numpy()


@pytest.mark.slow
def test_every_format_knows_its_temperature(unusual, trained_run):
    from mnist_tf.inference.loading import temperature_of

    assert temperature_of(unusual.run) == temperature_of(unusual.run / "model.keras") == TEMPERATURE
    assert temperature_of(unusual.saved) == temperature_of(unusual.tflite) == TEMPERATURE
    assert temperature_of(trained_run) == json.loads((trained_run / "calibration.json").read_text())["temperature"]


@pytest.mark.slow
def test_keras_saved_model_tflite_and_server_give_the_same_calibrated_probabilities(unusual, expected):
    import tensorflow as tf

    from mnist_tf.inference.loading import TFLiteRunner, load_proba_fn

    calibrated, plain = expected
    assert np.abs(calibrated - plain).max() > 0.05  # T = 0.25 shows in these images' probabilities
    np.testing.assert_array_equal(calibrated.argmax(1), plain.argmax(1))  # T never changes the answer
    np.testing.assert_allclose(load_proba_fn(unusual.run)(unusual.images), calibrated, atol=1e-5)
    np.testing.assert_allclose(load_proba_fn(unusual.saved)(unusual.images), calibrated, atol=1e-5)
    outputs = tf.saved_model.load(str(unusual.saved)).signatures["serving_default"](image=tf.constant(unusual.images))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), calibrated, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(outputs["logits"]).numpy(), plain, atol=1e-5)  # logits unscaled
    np.testing.assert_array_equal(outputs["class_id"].numpy(), plain.argmax(1))
    np.testing.assert_allclose(TFLiteRunner(unusual.tflite.read_bytes())(unusual.images), calibrated, atol=1e-4)

    some = unusual.images[:16]
    response = httpx.post(
        f"{unusual.server.url}/v1/models/mnist:predict", json={"instances": some.tolist()}, timeout=60
    )
    assert response.status_code == 200, response.text
    served = np.array([row["probabilities"] for row in response.json()["predictions"]])
    np.testing.assert_allclose(served, calibrated[:16], atol=1e-5)


@pytest.mark.slow
def test_serving_bytes_on_the_server_and_in_process_equals_keras_on_what_it_saw(unusual):
    import tensorflow as tf

    from mnist_tf.inference.loading import load_proba_fn

    pictures = [png_bytes(255 - image) for image in unusual.images[:8]]  # dark ink on paper, as people draw
    signature = tf.saved_model.load(str(unusual.saved)).signatures["serving_bytes"]
    outputs = signature(image_bytes=tf.constant(pictures))
    assert not outputs["blank"].numpy().any()
    keras = load_proba_fn(unusual.run)(outputs["image"].numpy())  # the 28x28 the signature made of each picture
    np.testing.assert_allclose(outputs["probabilities"].numpy(), keras, atol=1e-5)
    body = {
        "signature_name": "serving_bytes",
        "instances": [{"b64": base64.b64encode(p).decode()} for p in pictures],
    }
    response = httpx.post(f"{unusual.server.url}/v1/models/mnist:predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    np.testing.assert_allclose([row["probabilities"] for row in rows], keras, atol=1e-5)
    assert set(rows[0]) == set(outputs)  # the answer holds the SavedModel's outputs, nothing more


@pytest.mark.slow
def test_predict_gives_the_calibrated_probability_with_a_model_or_the_server(unusual, tmp_path):
    import tensorflow as tf
    from click.testing import CliRunner

    from mnist_tf.cli import main

    files = []
    for n, image in enumerate(unusual.images[:6]):
        files.append(tmp_path / f"digit{n}.png")
        files[-1].write_bytes(png_bytes(image))
    answers = {}
    for where in (["--model", str(unusual.run)], ["--model", str(unusual.tflite)], ["--server", unusual.server.url]):
        result = CliRunner().invoke(main, ["predict", "--json", *where, *map(str, files)])
        assert result.exit_code == 0, result.output
        answers[where[1]] = json.loads(result.stdout)
    keras, tflite, served = answers.values()
    # The two local models see the same 28x28 (predict's own preprocessing) and agree to float32's rounding.
    np.testing.assert_allclose([r["probability"] for r in tflite], [r["probability"] for r in keras], atol=1e-4)
    # The server answers what the SavedModel's serving_bytes gives the same files.
    signature = tf.saved_model.load(str(unusual.saved)).signatures["serving_bytes"]
    expected = signature(image_bytes=tf.constant([f.read_bytes() for f in files]))["probabilities"].numpy()
    np.testing.assert_allclose([r["probability"] for r in served], expected.max(axis=1), atol=1e-5)
    assert [r["digit"] for r in keras] == [r["digit"] for r in tflite] == [r["digit"] for r in served]
    assert all(r["sure"] == (r["probability"] >= SURE) for rows in answers.values() for r in rows)


@pytest.mark.slow
def test_keras_saved_model_and_tflite_decline_the_same_pictures(trained_run, real_source, tmp_path):
    from mnist_tf.data import pipeline
    from mnist_tf.evaluation.calibration import evidence
    from mnist_tf.export.saved_model import export_saved_model
    from mnist_tf.export.tflite import export_tflite
    from mnist_tf.inference.loading import load_classify_fn, load_logits_fn

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "run.json", "config.json"):
        shutil.copyfile(trained_run / name, run / name)
    fitted = json.loads((trained_run / "calibration.json").read_text())
    images, _ = pipeline.arrays("test[:300]", real_source)
    strength = evidence(np.asarray(load_logits_fn(trained_run)(images)), fitted["temperature"])
    # A threshold that declines a fifth to a quarter of these digits, in the widest gap there, far from any
    # picture's evidence: float32 (TFLite) and float64 round differently, not that differently.
    ordered = np.sort(strength)
    i = 60 + int(np.argmax(np.diff(ordered[60:76])))
    threshold = float((ordered[i] + ordered[i + 1]) / 2)
    (run / "calibration.json").write_text(json.dumps({**fitted, "decline_evidence_below": threshold}))
    expected = strength < threshold
    saved = export_saved_model(run / "model.keras", tmp_path / "export", images[:2])
    tflite = export_tflite(saved, tmp_path / "export" / "tflite", images[:10], kinds=["float32"])["float32"]
    for model in (run, saved, tflite):
        probabilities, declined = load_classify_fn(model)(images)
        assert probabilities.shape == (300, 10)
        np.testing.assert_array_equal(declined, expected, err_msg=str(model))
