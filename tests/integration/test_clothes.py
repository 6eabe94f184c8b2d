"""Fashion-MNIST from Debian's archives: a model of data a mirror leaves in its class reads every picture and
its mirror image, in the run's model, the SavedModel and `predict` alike, when it was trained with mirror images."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import png_bytes, run

from mnist_tf.data import pipeline, sources

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_clothes_model_reads_each_picture_and_its_mirror_image_in_every_path(tmp_path):
    data = ["--dataset", "fashion_mnist", "--manual-dir", DEBIAN_FASHION, "--data-dir", tmp_path / "tfds"]
    run_dir, out = tmp_path / "run", tmp_path / "export"
    recipe = ["--preset", "fast", "--augment", "--epochs", "2", "--batch-size", "128", "--train-examples", "6000"]
    trained = run("train", *data, *recipe, "--run-dir", run_dir)
    assert trained.exit_code == 0, trained.output
    assert json.loads((run_dir / "metrics.json").read_text())["test_accuracy"] >= 0.6

    source = sources.Source(data_dir=tmp_path / "tfds", manual_dir=DEBIAN_FASHION, dataset="fashion_mnist")
    images, _ = pipeline.arrays("test", source)
    images, mirrored = images[:64], images[:64, :, ::-1]
    assert not np.array_equal(images, mirrored)
    model = keras.models.load_model(run_dir / "model.keras")
    assert "mirror" in [layer.name for layer in model.layers]
    np.testing.assert_allclose(model(images), model(mirrored), rtol=1e-4, atol=1e-4)

    exported = run("export", "--model", run_dir, "--out", out)
    assert exported.exit_code == 0, exported.output
    serving = tf.saved_model.load(str(out / "saved_model" / "mnist" / "1")).signatures["serving_default"]
    ours, theirs = serving(image=tf.constant(images)), serving(image=tf.constant(mirrored))
    np.testing.assert_allclose(ours["probabilities"], theirs["probabilities"], rtol=1e-4, atol=1e-5)
    assert [name.decode() for name in ours["class_name"].numpy()[:3]] != ["", "", ""]

    # predict puts a picture in MNIST's form first (found, cropped, centred by its mass), which a mirror
    # changes by a pixel here and there: its answer is the model's reading of that, by class name.
    picture = tmp_path / "item.png"
    picture.write_bytes(png_bytes(images[0]))
    predicted = run("predict", "--model", run_dir, "--json", picture)
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.output[predicted.output.index("[") :])[0]
    assert answer["class_name"] in sources.class_names(source) and len(answer["probabilities"]) == 10


@pytest.mark.slow
def test_a_digit_model_reads_each_picture_once(trained_run):
    model = keras.models.load_model(trained_run / "model.keras")
    assert "mirror" not in [layer.name for layer in model.layers]  # a mirrored 2 is no digit
