"""Predict: image decoding, every model format through `load_proba_fn`, and the CLI.

The fast tests use synthetic images; the slow ones write real test digits as
PNG files and classify them with the trained model in each exported format.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import real_data_args
from PIL import Image


@pytest.fixture(scope="module")
def formats(trained_run, real_source, tmp_path_factory):
    """The trained model as run dir, .keras, SavedModel and float32 .tflite, plus
    PNGs of test digits that the Keras model classifies confidently."""
    from mnist_tf.core.files import write_bytes
    from mnist_tf.data import pipeline
    from mnist_tf.export.saved_model import export_saved_model
    from mnist_tf.export.tflite import convert_tflite
    from mnist_tf.inference.loading import load_proba_fn

    images, labels = pipeline.arrays("test[:500]", real_source)
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
    saved = export_saved_model(trained_run / "model.keras", out, images[:2])
    tflite = out / "mnist_float32.tflite"
    write_bytes(tflite, convert_tflite(saved, "float32"))
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


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_evaluate_cli_accepts_saved_model_and_tflite(formats, kind, trained_run, real_source, tmp_path):
    from mnist_tf.cli import main

    args = ["evaluate", "--model", str(formats.models[kind]), "--out", str(tmp_path)]
    args += real_data_args()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    keras_accuracy = json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]
    assert metrics["examples"] == 10000
    assert metrics["accuracy"] == pytest.approx(keras_accuracy, abs=1e-3)
    assert (tmp_path / "confusion_matrix.png").is_file()
