"""A user's own data set, a folder of IDX archives with labels.txt, from training to answers by class name."""

import json

import httpx
import numpy as np
import pytest
from helpers import png_bytes, run
from PIL import Image, ImageDraw

from mnist_tf.data import idx
from mnist_tf.serve.process import ServerProcess

NAMES = ["bar", "dash", "ring"]


def shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Light shapes on black, centred as MNIST's digits are: a vertical bar, a horizontal dash, a ring."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(NAMES)
    images = np.zeros((n, 28, 28), np.uint8)
    for image, label in zip(images, labels):
        picture = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(picture)
        a, b, w = int(rng.integers(4, 7)), int(rng.integers(21, 24)), int(rng.integers(2, 5))
        if label == 0:
            draw.line((14, a, 14, b), fill=255, width=w)
        elif label == 1:
            draw.line((a, 14, b, 14), fill=255, width=w)
        else:
            draw.ellipse((a, a, b, b), outline=255, width=w)
        image[:] = np.asarray(picture)
    return images, labels


def picture(label: int) -> bytes:
    """A photo-like picture of one shape: dark ink on light paper, 120x120."""
    image = Image.new("L", (120, 120), 235)
    draw = ImageDraw.Draw(image)
    if label == 0:
        draw.line((60, 20, 60, 100), fill=20, width=12)
    elif label == 1:
        draw.line((20, 60, 100, 60), fill=20, width=12)
    else:
        draw.ellipse((20, 20, 100, 100), outline=20, width=12)
    return png_bytes(np.asarray(image))


@pytest.mark.slow
def test_a_folder_with_its_own_class_names_trains_evaluates_exports_serves_and_predicts_by_name(tmp_path):
    folder = idx.write_folder(tmp_path / "shapes", {"train": shapes(300, 1), "test": shapes(60, 2)}, NAMES)
    run_dir, out = tmp_path / "run", tmp_path / "export"
    args = ["--preset", "fast", "--epochs", "4", "--batch-size", "16", "--no-augment", "--run-dir", run_dir]
    trained = run("train", "--dataset", folder, *args)
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["examples"] == 60 and len(metrics["test"]["per_class"]) == 3
    assert metrics["test_accuracy"] >= 0.9
    data = json.loads((run_dir / "run.json").read_text())["data"]
    assert (data["dataset"], data["class_names"]) == (str(folder.absolute()), NAMES)

    evaluated = run("evaluate", "--model", run_dir)  # follows the run's data set
    assert evaluated.exit_code == 0, evaluated.output
    assert f"was trained on {folder.absolute()}" in evaluated.output and "on 60 images" in evaluated.output
    assert "ring" in evaluated.output  # the per-class table names the classes

    exported = run("export", "--model", run_dir, "--out", out)
    assert exported.exit_code == 0, exported.output
    version = out / "saved_model" / "mnist" / "1"
    assert (version / "assets.extra" / "labels.txt").read_text() == "bar\ndash\nring\n"

    files = []
    for label in range(3):
        files.append(tmp_path / f"{NAMES[label]}.png")
        files[-1].write_bytes(picture(label))
    for model in (run_dir, version):
        predicted = run("predict", "--model", model, "--json", *files)
        assert predicted.exit_code == 0, predicted.output
        answers = json.loads(predicted.output[predicted.output.index("[") :])
        assert [a["class_name"] for a in answers] == NAMES, answers
        assert [a["digit"] for a in answers] == [0, 1, 2]

    server = ServerProcess(out / "saved_model" / "mnist", "--no-grpc", "--poll-seconds", "0")
    try:
        import base64

        body = {
            "signature_name": "serving_bytes",
            "instances": [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files],
        }
        answer = httpx.post(f"{server.url}/v1/models/mnist:predict", json=body, timeout=60).json()
        assert "predictions" in answer, answer
        assert [row["class_name"] for row in answer["predictions"]] == NAMES
        on_server = run("predict", "--server", server.url, files[2])
        assert on_server.exit_code == 0 and f"{files[2]}: ring (" in on_server.output
    finally:
        server.stop()
