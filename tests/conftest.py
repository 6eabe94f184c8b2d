"""Shared fixtures: mock MNIST for fast tests, the real archives for slow ones.

The real archives are looked up in `../shared/datasets/mnist` beside the
repository (or `$MNIST_TF_TEST_ARCHIVES`); tests that need them are skipped,
saying so, where that folder is absent. TFDS prepares them once into
`.cache/tfds` (or `$MNIST_TF_TEST_DATA_DIR`), which later sessions reuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = Path(os.environ.get("MNIST_TF_TEST_ARCHIVES", REPO.parent / "shared" / "datasets" / "mnist"))
TEST_DATA_DIR = Path(os.environ.get("MNIST_TF_TEST_DATA_DIR", REPO / ".cache" / "tfds"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `--mixed-precision auto` caches its measurement here, not in the user's home.
os.environ.setdefault("MNIST_TF_CACHE_DIR", str(REPO / ".cache" / "mnist-tf"))


def archives_present() -> bool:
    from mnist_tf.data import ARCHIVES as NAMES

    return all((ARCHIVES / name).is_file() for name in NAMES)


@pytest.fixture(scope="session")
def real_source():
    """A `Source` for the real MNIST archives, prepared once per machine."""
    if not archives_present():
        pytest.skip(f"real MNIST archives not found in {ARCHIVES} (set MNIST_TF_TEST_ARCHIVES to their folder)")
    from mnist_tf.data import Source

    return Source(data_dir=TEST_DATA_DIR, manual_dir=ARCHIVES)


@pytest.fixture
def mock_mnist(monkeypatch):
    """Random MNIST-shaped data from `tfds.testing.mock_data`, through the real `tfds.load` path.

    Mock data ignores split slicing: every split has `num_examples` examples.
    """
    import tensorflow_datasets as tfds

    from mnist_tf import data

    # The offline check would refuse: mock data needs no download.
    monkeypatch.setattr(data, "download_host_reachable", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=48):
        yield data.Source(data_dir=None, manual_dir=None)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, real_source):
    """The `fast` preset trained on real MNIST (about 1.5 minutes on 2 cores): a finished run dir."""
    from mnist_tf import config
    from mnist_tf.train import train_and_evaluate

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train_and_evaluate(config.FAST, run_dir, real_source)
    return run_dir


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory):
    """An untrained `fast` model saved as .keras: real TF for shape and error tests, in a second."""
    from mnist_tf import config
    from mnist_tf.model import build_model

    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    build_model(config.preset("fast")).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_keras, tmp_path_factory):
    """`tiny_keras` exported by `saved_model.export_saved_model`: the SavedModel version folder."""
    import numpy as np

    from mnist_tf.saved_model import export_saved_model

    return export_saved_model(tiny_keras, tmp_path_factory.mktemp("tiny_export"), np.zeros((1, 28, 28, 1), np.uint8))
