"""Shared fixtures: mock MNIST for fast tests, real MNIST for slow ones.

Real MNIST comes from the four archives in `../shared/datasets/mnist` beside the
repository (or `$MNIST_TF_TEST_ARCHIVES`) where they are, else from TFDS's own
download where its host answers (`choose_real_source`); tests that need it are
skipped, saying why, where neither works and it was never prepared. TFDS
prepares it once into `.cache/tfds` (or `$MNIST_TF_TEST_DATA_DIR`), which later
test runs reuse.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = Path(os.environ.get("MNIST_TF_TEST_ARCHIVES", REPO.parent / "shared" / "datasets" / "mnist"))
TEST_DATA_DIR = Path(os.environ.get("MNIST_TF_TEST_DATA_DIR", REPO / ".cache" / "tfds"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `--mixed-precision auto` caches its measurement here, not in the user's home.
os.environ.setdefault("MNIST_TF_CACHE_DIR", str(REPO / ".cache" / "mnist-tf"))
# The runtime settings probe (training.tuning) times every new network in child processes; tests train many
# small networks, so they keep the defaults, except the tests of the probe itself.
os.environ.setdefault("MNIST_TF_TUNE", "off")


def pytest_collection_modifyitems(items):
    """Files with `long` tests first, then files with `slow` ones, then the rest, each group in its usual
    order: `make test`'s workers take whole files in this order, so no long file starts last and runs alone."""
    rank = {}
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        group = 0 if "long" in marks else 1 if "slow" in marks else 2
        rank[item.path] = min(rank.get(item.path, 2), group)
    items.sort(key=lambda item: rank[item.path])  # stable: within a group, collection order


def archives_present() -> bool:
    from mnist_tf.data.sources import ARCHIVES as NAMES

    return all((ARCHIVES / name).is_file() for name in NAMES)


def choose_real_source(archives: Path = ARCHIVES, data_dir: Path = TEST_DATA_DIR):
    """Where real-data tests read MNIST: `(Source, None)`, or `(None, why they are skipped)`.

    The archives where all four are present; else TFDS's download, where its host
    answers or where an earlier download already prepared MNIST in `data_dir`.
    """
    import tensorflow_datasets as tfds

    from mnist_tf.data import sources

    if all((archives / name).is_file() for name in sources.ARCHIVES):
        return sources.Source(data_dir=data_dir, manual_dir=archives), None
    if tfds.builder("mnist", data_dir=data_dir).is_prepared() or sources.download_host_reachable():
        return sources.Source(data_dir=data_dir, manual_dir=None), None
    return None, (
        f"real MNIST: no archives in {archives} (set MNIST_TF_TEST_ARCHIVES to their folder) "
        f"and no internet to download them ({sources.DOWNLOAD_HOST} is unreachable)"
    )


@contextlib.contextmanager
def one_at_a_time(lock_file: Path):
    """Holds an exclusive lock on `lock_file` (created if missing): test processes running side by side
    (`make test` runs pytest-xdist workers) take turns."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder `build(folder)` fills once per test session: the first worker to ask builds it while the
    others wait, then all of them use it (with one process, the session's own temporary folder)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the session's workers
    folder, done = root / name, root / f"{name}.built"
    with one_at_a_time(root / f"{name}.lock"):
        if not done.exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def real_source():
    """A `Source` for real MNIST, prepared once per machine (from the archives, or downloaded)."""
    source, why_not = choose_real_source()
    if source is None:
        pytest.skip(why_not)
    from mnist_tf.data.sources import load_split

    with one_at_a_time(TEST_DATA_DIR.parent / "tfds.lock"):
        load_split("test", source)  # Prepares every split now, so CLI subprocesses find it prepared.
    return source


def real_data_args() -> list[str]:
    """The CLI's data options for `real_source`'s MNIST (request the fixture first: it prepares it)."""
    return ["--data-dir", str(TEST_DATA_DIR), *(["--manual-dir", str(ARCHIVES)] if archives_present() else [])]


@pytest.fixture
def mock_mnist(monkeypatch):
    """Random MNIST-shaped data from `tfds.testing.mock_data`, through the real `tfds.load` path.

    Mock data ignores split slicing: every split has `num_examples` examples.
    """
    import tensorflow_datasets as tfds

    from mnist_tf.data import sources

    # The offline check would refuse: mock data needs no download.
    monkeypatch.setattr(sources, "download_host_reachable", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=48):
        yield sources.Source(data_dir=None, manual_dir=None)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, real_source):
    """The `fast` preset trained on real MNIST (about 1.5 minutes on 2 cores): a finished run dir."""
    from mnist_tf import config
    from mnist_tf.jobs.train import train_and_evaluate

    folder = built_once(tmp_path_factory, "trained", lambda f: train_and_evaluate(config.FAST, f / "run", real_source))
    return folder / "run"


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, real_source):
    """A quick model: the default preset's recipe (non-digits included) for 2 epochs of 20,000 training
    images, trained by the CLI (about a minute on 2 cores): (run dir, the CLI's data options)."""
    from helpers import run

    data = real_data_args()

    def build(folder: Path) -> None:
        result = run("train", "--epochs", "2", "--train-examples", "20000", "--run-dir", folder / "run", *data)
        assert result.exit_code == 0, result.output[-2000:]

    return built_once(tmp_path_factory, "quick", build) / "run", data


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory):
    """An untrained `fast` model saved as .keras: real TF for shape and error tests, in a second."""
    from mnist_tf import config
    from mnist_tf.modeling.network import build_model

    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    build_model(config.preset("fast")).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_saved_model(tiny_keras, tmp_path_factory):
    """`tiny_keras` exported by `saved_model.export_saved_model`: the SavedModel version folder."""
    import numpy as np

    from mnist_tf.export.saved_model import export_saved_model

    return export_saved_model(tiny_keras, tmp_path_factory.mktemp("tiny_export"), np.zeros((1, 28, 28, 1), np.uint8))
