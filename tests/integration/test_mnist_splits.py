import gzip

import numpy as np
import pytest

from mnist_tf import config
from mnist_tf.data import pipeline

# Digits 0-9 in MNIST's 10,000 test images.
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
def test_real_splits_have_the_documented_sizes(real_source):
    ds = pipeline.make_datasets(config.SEED, real_source)
    assert (ds.train_examples, ds.validation_examples) == (55000, 5000)
    everything = pipeline.make_datasets(config.DEFAULT, real_source)  # the default holds nothing out
    assert (everything.train_examples, everything.validation_examples) == (60000, 0) and everything.validation is None
    images, labels = pipeline.dataset_arrays(ds.test)
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28, 1) and images.max() == 255
    # TFDS reorders examples when it prepares them; the label counts must match the test set's.
    assert np.array_equal(np.bincount(labels, minlength=10), TEST_LABEL_COUNTS)
    if real_source.manual_dir is not None:
        with gzip.open(real_source.manual_dir / "t10k-labels-idx1-ubyte.gz") as f:
            archive_labels = np.frombuffer(f.read()[8:], np.uint8)
        assert np.array_equal(np.bincount(archive_labels, minlength=10), TEST_LABEL_COUNTS)
