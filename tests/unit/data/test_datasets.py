"""--dataset: TFDS names, folders of IDX archives (checked), recompressed archives in a manual dir."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ARCHIVES, archives_present
from helpers import assert_one_line_error, run, sha256

from mnist_tf import config
from mnist_tf.core.errors import UserError
from mnist_tf.data import idx, pipeline, sources

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's package dataset-fashion-mnist


def tiny_splits(train=30, test=10, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 28, 28), np.uint8), np.arange(n) % classes)
        for split, n in (("train", train), ("test", test))
    }


def test_a_folder_reads_both_splits_and_its_class_names(tmp_path):
    idx.write_folder(tmp_path / "set", tiny_splits(), ["cat", "dog", "fish"])
    source = sources.Source.from_options(None, None, tmp_path / "set")
    assert source.dataset == str((tmp_path / "set").absolute()) and source.folder == tmp_path / "set"
    assert sources.class_names(source) == ("cat", "dog", "fish")
    assert sources.train_size(source) == 30
    images, labels = pipeline.arrays("train[:20]", source)
    assert images.shape == (20, 28, 28, 1) and images.dtype == np.uint8 and list(labels[:4]) == [0, 1, 2, 0]
    assert pipeline.arrays("test", source)[0].shape == (10, 28, 28, 1)
    assert sources.split_names(config.FAST.replace(validation_examples=5), 30) == ("train[:25]", "train[25:]")


def test_a_folder_without_labels_txt_names_its_classes_by_number(tmp_path):
    idx.write_folder(tmp_path, tiny_splits(classes=4))
    assert sources.class_names(sources.Source(dataset=str(tmp_path))) == ("0", "1", "2", "3")


def _corrupt(folder: Path, name: str, data: bytes, compress: bool = True) -> None:
    (folder / name).write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda f: (f / "t10k-labels-idx1-ubyte.gz").unlink(), ["lacks t10k-labels-idx1-ubyte.gz"]),
        (lambda f: _corrupt(f, "train-images-idx3-ubyte.gz", b"\0\0\x08\x01" + bytes(20)), ["magic number", "2051"]),
        (
            lambda f: _corrupt(
                f, "train-labels-idx1-ubyte.gz", (f / "train-labels-idx1-ubyte.gz").read_bytes()[:30], False
            ),
            ["not a whole gzip archive", "truncated"],
        ),
        (
            lambda f: _corrupt(
                f, "t10k-images-idx3-ubyte.gz", gzip.decompress((f / "t10k-images-idx3-ubyte.gz").read_bytes())[:-5]
            ),
            ["says it holds 10 images", "truncated"],
        ),
        (
            lambda f: _corrupt(f, "t10k-labels-idx1-ubyte.gz", b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes(3)),
            ["holds 10 images but t10k-labels-idx1-ubyte.gz 3 labels"],
        ),
        (lambda f: (f / "labels.txt").write_text("cat\ndog\n"), ["has label 2", "labels.txt names 2 classes"]),
        (lambda f: (f / "labels.txt").write_text("cat\n\nfish\n"), ["empty line"]),
    ],
    ids=["missing", "magic", "truncated-gzip", "short-pixels", "count-mismatch", "label-range", "empty-name"],
)
def test_a_bad_folder_is_refused_in_one_line_naming_the_problem(tmp_path, damage, words):
    folder = idx.write_folder(tmp_path / "set", tiny_splits(), ["cat", "dog", "fish"])
    damage(folder)
    with pytest.raises(UserError) as e:
        sources.read_directly(sources.Source(dataset=str(folder)))
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_the_cli_refuses_an_unknown_data_set_in_one_line(tmp_path):
    result = run("train", "--dataset", tmp_path / "nowhere", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, "unknown data set", "fashion_mnist", "train-images-idx3-ubyte.gz")


def test_each_tfds_name_gives_its_class_names_without_preparing():
    assert sources.class_names(sources.Source()) == tuple("0123456789")
    assert sources.class_names(sources.Source(dataset="fashion_mnist"))[-1] == "Ankle boot"
    assert sources.class_names(sources.Source(dataset="kmnist"))[:2] == ("o", "ki")
    assert len(sources.class_names(sources.Source(dataset="emnist/digits"))) == 10
    assert sources.augmentation(sources.Source(dataset="fashion_mnist")) == sources.Augmentation(
        pens=False, mirror=True, affine=False
    )
    assert sources.augmentation(sources.Source()) == sources.Augmentation(pens=True, mirror=False, affine=True)
    assert sources.augmentation(sources.Source(dataset="/data/my-idx")) == sources.Augmentation(
        pens=False, mirror=False, affine=True
    )


def test_only_a_model_trained_with_mirror_images_reads_pictures_mirrored_too():
    clothes, digits = sources.Source(dataset="fashion_mnist"), sources.Source()
    assert sources.reads_mirrored(config.DEFAULT, clothes)
    assert not sources.reads_mirrored(config.DEFAULT.replace(augment=False), clothes)
    assert not sources.reads_mirrored(config.FAST, clothes)  # no augmentation: it never saw a shoe point right
    assert not sources.reads_mirrored(config.DEFAULT, digits)
    assert not sources.reads_mirrored(config.DEFAULT, sources.Source(dataset="/data/my-idx"))


def test_emnist_images_are_put_upright(mock_mnist, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(sources, "host_reachable", lambda host, timeout=3.0: True)  # mock data: no download
    emnist = sources.Source(dataset="emnist/mnist")
    raw = next(iter(tfds.load("emnist/mnist", split="test", as_supervised=True)))[0].numpy()
    upright = next(iter(sources.load_split("test", emnist)))[0].numpy()
    assert np.array_equal(upright, raw.transpose(1, 0, 2))


def _recompress(src: Path, dst: Path) -> Path:
    """The four archives with other gzip bytes and the same content, as a distribution's package ships them."""
    dst.mkdir()
    for name in idx.FILES:
        (dst / name).write_bytes(gzip.compress(gzip.decompress((src / name).read_bytes()), compresslevel=1, mtime=0))
    return dst


@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_recompressed_archives_are_accepted_by_their_content_and_a_wrong_one_refused(tmp_path):
    manual = _recompress(ARCHIVES, tmp_path / "archives")
    assert sha256(manual / idx.FILES[3]) != sha256(ARCHIVES / idx.FILES[3])
    source = sources.Source(data_dir=tmp_path / "tfds", manual_dir=manual)
    images, labels = pipeline.arrays("test", source)
    assert images.shape == (10000, 28, 28, 1) and list(labels[:5]) == [7, 2, 1, 0, 4]  # MNIST's first test digits
    labels_file = manual / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels_file.read_bytes()))
    content[8] = (content[8] + 1) % 10  # one label changed: a whole, well-formed archive with other content
    labels_file.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(UserError, match="is not mnist's t10k-labels-idx1-ubyte.gz: its content differs") as e:
        sources.load_split("test", sources.Source(data_dir=tmp_path / "tfds2", manual_dir=manual))
    assert "\n" not in str(e.value)


def test_recompressed_archives_of_a_set_whose_content_is_unknown_are_refused(tmp_path):
    idx.write_folder(tmp_path / "archives", tiny_splits())
    source = sources.Source(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "archives", dataset="kmnist")
    with pytest.raises(UserError, match="fail TFDS's checksum for kmnist"):
        sources.load_split("test", source)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_archives_are_read_offline(tmp_path):
    source = sources.Source(data_dir=tmp_path / "tfds", manual_dir=DEBIAN_FASHION, dataset="fashion_mnist")
    images, labels = pipeline.arrays("test", source)
    assert images.shape == (10000, 28, 28, 1) and set(labels.tolist()) == set(range(10))
    assert sources.class_names(source)[9] == "Ankle boot"
    shutil.rmtree(tmp_path / "tfds", ignore_errors=True)
