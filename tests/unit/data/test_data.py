import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import ARCHIVES, archives_present

from mnist_tf import config
from mnist_tf.core.errors import UserError
from mnist_tf.data import augment, pipeline, sources


def test_split_names_hold_out_the_end_of_train():
    assert sources.split_names(config.SEED) == ("train[:55000]", "train[55000:]")
    assert sources.split_names(config.SEED.replace(train_examples=100)) == ("train[:100]", "train[55000:]")
    assert sources.split_names(config.DEFAULT) == ("train[:60000]", "train[60000:]")  # all 60,000, none held out


def _labels(ds):
    return np.concatenate([y for _, y in ds.as_numpy_iterator()])


def test_train_pipeline_batches_uint8_images(mock_mnist):
    cfg = config.DEFAULT.replace(batch_size=16)
    ds = pipeline.train_pipeline(sources.load_split("train", mock_mnist), cfg)
    images, labels = next(iter(ds))
    assert images.dtype == tf.uint8 and images.shape == (16, 28, 28, 1)
    assert labels.dtype == tf.int64 and labels.shape == (16,)


def test_shuffle_is_seeded_and_fresh_each_epoch(mock_mnist):
    raw = sources.load_split("train", mock_mnist)
    cfg = config.DEFAULT.replace(batch_size=8)
    ds = pipeline.train_pipeline(raw, cfg)
    first, second = _labels(ds), _labels(ds)
    again = _labels(pipeline.train_pipeline(raw, cfg))
    other_seed = _labels(pipeline.train_pipeline(raw, cfg.replace(seed=7)))
    assert sorted(first) == sorted(_labels(raw.batch(8)))  # a permutation: nothing lost or repeated
    assert np.array_equal(first, again)  # same seed, same order
    assert not np.array_equal(first, second)  # each epoch reshuffles
    assert not np.array_equal(first, other_seed)


def test_augmentation_moves_pixels_but_keeps_dtype_labels_and_ink(mock_mnist):
    raw = sources.load_split("train", mock_mnist).map(
        lambda x, y: (
            tf.zeros_like(x) + tf.pad(tf.fill([8, 8, 1], tf.constant(255, tf.uint8)), [[10, 10], [10, 10], [0, 0]]),
            y,
        )
    )
    cfg = config.DEFAULT.replace(batch_size=48, augment=True, deterministic=True)
    plain_images, plain_labels = next(iter(pipeline.train_pipeline(raw, cfg.replace(augment=False))))
    moved_images, moved_labels = next(iter(pipeline.train_pipeline(raw, cfg)))
    assert moved_images.dtype == tf.uint8 and moved_images.shape == plain_images.shape
    assert np.array_equal(plain_labels, moved_labels)
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(plain_images.numpy(), moved_images.numpy())])
    assert changed > 0.5
    # Small transforms keep most of the 8x8 square's ink in the frame; the widest pen makes it 12x12, zoomed 10%.
    ink = moved_images.numpy().astype(float).sum(axis=(1, 2, 3)) / (64 * 255)
    assert np.all(ink > 0.5) and np.all(ink < (12 * 12 / 64) * 1.1**2 + 0.1)


def test_centred_pictures_are_only_mirrored_not_turned_shifted_or_zoomed(mock_mnist):
    raw = sources.load_split("train", mock_mnist).map(  # an L of ink off the centre: a mirror moves it
        lambda x, y: (tf.pad(tf.fill([9, 4, 1], tf.constant(255, tf.uint8)), [[5, 14], [3, 21], [0, 0]]), y)
    )
    cfg = config.DEFAULT.replace(batch_size=64, augment=True, deterministic=True)
    clothes = sources.augmentation(sources.Source(dataset="fashion_mnist"))
    plain = next(iter(pipeline.train_pipeline(raw, cfg.replace(augment=False), clothes)))[0].numpy()
    moved = next(iter(pipeline.train_pipeline(raw, cfg, clothes)))[0].numpy()
    mirrored = np.array([np.array_equal(m, p[:, ::-1]) for m, p in zip(moved, plain)])
    unchanged = np.array([np.array_equal(m, p) for m, p in zip(moved, plain)])
    assert np.all(mirrored | unchanged)  # no turn, shift or zoom: every pixel where it was, or mirrored
    assert 0.2 < mirrored.mean() < 0.8
    digits = next(iter(pipeline.train_pipeline(raw, cfg)))[0].numpy()  # digits are turned, shifted and zoomed
    moved_digits = [not np.array_equal(d, p) and not np.array_equal(d, p[:, ::-1]) for d, p in zip(digits, plain)]
    assert np.mean(moved_digits) > 0.5


def test_only_digits_are_redrawn_with_another_pen_non_digits_keep_their_strokes():
    square = np.pad(np.full([8, 8, 1], 255, np.uint8), [[10, 10], [10, 10], [0, 0]])
    labels = np.array([3, -1] * 32, np.int64)  # digits and non-digits (label -1), alternating
    raw = tf.data.Dataset.from_tensor_slices((np.repeat(square[None], 64, axis=0), labels))
    pens_only = sources.Augmentation(pens=True, affine=False)  # no blur, turn, shift or zoom: only pens
    cfg = config.DEFAULT.replace(batch_size=64, augment=True, blur=0.0, deterministic=True)
    images, got = next(iter(pipeline.train_pipeline(raw, cfg, pens_only)))
    images, got = images.numpy(), got.numpy()
    redrawn = np.array([not np.array_equal(image, square) for image in images])
    assert not redrawn[got < 0].any()  # every non-digit as it was drawn
    assert 0.3 < redrawn[got >= 0].mean() < 0.8  # 55% of the digits get another pen


def _square_batch(n: int) -> np.ndarray:
    square = np.zeros((n, 28, 28, 1), np.float32)
    square[:, 10:18, 10:18] = 255.0  # an 8x8 square centred on the image's centre (13.5, 13.5)
    return square


def _ink_centres(images: np.ndarray) -> np.ndarray:
    """Each image's centre of ink as (row, column)."""
    ink = images[..., 0]
    rows, cols = np.indices(ink.shape[1:])
    total = ink.sum(axis=(1, 2))
    return np.stack([(ink * rows).sum(axis=(1, 2)) / total, (ink * cols).sum(axis=(1, 2)) / total], axis=1)


def test_random_affine_with_no_range_returns_every_image_unchanged():
    square = _square_batch(4)
    layer = augment.RandomAffine(degrees=0, zoom=0, shift=0, seed=1)
    np.testing.assert_array_equal(layer(tf.constant(square), training=True).numpy(), square)


def test_random_affine_shifts_rotates_and_zooms_within_its_ranges():
    square = _square_batch(500)
    shifted = augment.RandomAffine(degrees=0, zoom=0, shift=0.1, seed=1)(tf.constant(square)).numpy()
    moves = _ink_centres(shifted) - 13.5
    assert np.all(np.abs(moves) <= 2.8 + 1e-3)  # 10% of 28 pixels, either way, on each axis
    assert moves.min(axis=0).max() < -2.0 and moves.max(axis=0).min() > 2.0  # both ways, on both axes
    np.testing.assert_allclose(shifted.sum(axis=(1, 2, 3)), square[0].sum(), rtol=1e-4)  # moved, not lost

    rotated = augment.RandomAffine(degrees=10, zoom=0, shift=0, seed=1)(tf.constant(square)).numpy()
    np.testing.assert_allclose(_ink_centres(rotated), 13.5, atol=0.05)  # turned about the centre
    np.testing.assert_allclose(rotated.sum(axis=(1, 2, 3)), square[0].sum(), rtol=0.03)
    corners = rotated[:, 10, 10, 0] / 255  # a corner pixel loses ink as the square turns
    assert corners.min() < 0.5 and corners.max() > 0.95

    zoomed = augment.RandomAffine(degrees=0, zoom=0.1, shift=0, seed=1)(tf.constant(square)).numpy()
    area = zoomed.sum(axis=(1, 2, 3)) / square[0].sum()  # reading 1 +- 10% wider an area scales ink by 1/z^2
    assert np.all(area >= 1 / 1.1**2 - 0.01) and np.all(area <= 1 / 0.9**2 + 0.01)
    assert area.min() < 0.9 and area.max() > 1.1
    np.testing.assert_array_equal(augment.RandomAffine(seed=1)(tf.constant(square), training=False).numpy(), square)


def test_stroke_width_redraws_each_image_with_one_pen_in_the_designed_shares():
    square = np.zeros((2000, 28, 28, 1), np.float32)
    square[:, 10:18, 10:18] = 255.0  # an 8x8 square: its ink area names the pen
    layer = augment.RandomStrokeWidth(seed=1)
    out = layer(tf.constant(square), training=True).numpy()
    sides = np.sqrt((out[..., 0] > 0).sum(axis=(1, 2)))
    # 5x5 dilation: 12x12; 3x3: 10x10; 2x2 ("SAME", one side): 9x9; 2x2 erosion: 7x7; unchanged: 8x8.
    shares = {side: float(np.mean(sides == side)) for side in (12, 10, 9, 7, 8)}
    expected = {12: 0.10, 10: 0.25, 9: 0.10, 7: 0.10, 8: 0.45}
    assert sum(shares.values()) == 1.0
    for side, share in expected.items():
        assert abs(shares[side] - share) < 0.04, shares
    np.testing.assert_array_equal(layer(tf.constant(square), training=False).numpy(), square)


def test_blur_softens_the_designed_share_of_images_and_keeps_their_peak():
    square = np.zeros((2000, 28, 28, 1), np.float32)
    square[:, 10:18, 10:18] = 200.0
    layer = augment.RandomBlur(0.2, seed=1)
    out = layer(tf.constant(square), training=True).numpy()
    blurred = np.abs(out - square).max(axis=(1, 2, 3)) > 1.0
    assert abs(blurred.mean() - 0.2) < 0.03, blurred.mean()
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), 200.0, rtol=1e-5)  # stretched back to the old peak
    assert ((out[blurred] > 0).sum(axis=(1, 2, 3)) > 64).all()  # ink spread beyond the square
    np.testing.assert_array_equal(layer(tf.constant(square), training=False).numpy(), square)


def test_non_digits_are_seeded_pictures_in_mnist_form():
    from mnist_tf.data.non_digits import non_digit_images

    images = non_digit_images(40, seed=3)
    assert images.shape == (40, 28, 28, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, non_digit_images(40, seed=3))
    assert not np.array_equal(images, non_digit_images(40, seed=4))
    assert (images.max(axis=(1, 2, 3)) == 255).all()  # full contrast, light on black
    for image in images[..., 0]:  # fitted to 20x20 as MNIST's digits are (a pixel more where resampling rings)
        rows, cols = np.nonzero(image)
        assert rows.max() - rows.min() < 22 and cols.max() - cols.min() < 22
    ys, xs = np.mgrid[0:28, 0:28]
    mass = images[..., 0].astype(float)
    centre_y = (mass * ys).sum(axis=(1, 2)) / mass.sum(axis=(1, 2))
    centre_x = (mass * xs).sum(axis=(1, 2)) / mass.sum(axis=(1, 2))
    assert np.abs(centre_y - 13.5).max() < 1.5 and np.abs(centre_x - 13.5).max() < 1.5  # centred by mass


def test_a_run_of_digits_draws_each_epoch_from_its_digits_and_non_digits(mock_mnist):
    import dataclasses

    base = dataclasses.replace(config.preset("default"), epochs=1, augment=False)
    plain = pipeline.make_datasets(dataclasses.replace(base, non_digits=0.0), mock_mnist)
    mixed = pipeline.make_datasets(dataclasses.replace(base, non_digits=0.25), mock_mnist)
    assert mixed.train_examples == plain.train_examples  # an epoch costs what it did
    epochs = [[(x, y) for xs, ys in mixed.train.as_numpy_iterator() for x, y in zip(xs, ys)] for _ in range(2)]
    for epoch in epochs:
        labels = np.array([y for _, y in epoch])
        assert len(labels) == plain.train_examples and (labels == -1).any() and (labels >= 0).any()
    first, second = ({x.tobytes() for x, _ in epoch} for epoch in epochs)
    assert first != second  # each epoch a fresh draw


def test_eval_pipeline_keeps_order(mock_mnist):
    raw = sources.load_split("test", mock_mnist)
    assert np.array_equal(_labels(pipeline.eval_pipeline(raw, 10)), _labels(raw.batch(10)))


def test_offline_without_archives_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "download_host_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError) as e:
        sources.load_split("test", sources.Source(data_dir=tmp_path))
    message = str(e.value)
    assert "--manual-dir" in message and sources.MANUAL_DIR_ENV in message
    assert all(name in message for name in sources.ARCHIVES)
    assert "\n" not in message


@pytest.mark.parametrize(
    "archives, prepared, online, expected",
    [
        (4, False, False, "archives"),
        (4, True, True, "archives"),
        (3, False, True, "download"),  # three of the four archives are no archives
        (0, True, False, "download"),  # downloaded and prepared by an earlier test run
        (3, False, False, "skip"),
    ],
)
def test_real_data_tests_use_the_archives_else_the_download_else_skip(
    tmp_path, monkeypatch, archives, prepared, online, expected
):
    import tensorflow_datasets as tfds
    from conftest import choose_real_source

    folder, data_dir = tmp_path / "archives", tmp_path / "tfds"
    folder.mkdir()
    for name in sources.ARCHIVES[:archives]:
        (folder / name).write_bytes(b"")
    probes = []
    monkeypatch.setattr(sources, "download_host_reachable", lambda timeout=3.0: probes.append(1) or online)
    builder = tfds.builder("mnist", data_dir=data_dir)
    monkeypatch.setattr(type(builder), "is_prepared", lambda self: prepared)
    source, why_not = choose_real_source(folder, data_dir)
    if expected == "archives":
        assert source == sources.Source(data_dir=data_dir, manual_dir=folder) and why_not is None
        assert probes == []  # no network probe when the archives are there
    elif expected == "download":
        assert source == sources.Source(data_dir=data_dir, manual_dir=None) and why_not is None
    else:
        assert source is None and str(folder) in why_not and f"{sources.DOWNLOAD_HOST} is unreachable" in why_not
        assert probes == [1]


def test_manual_dir_env_var_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(tmp_path))
    assert sources.Source.from_options(None, None).manual_dir == tmp_path
    assert sources.Source.from_options(None, "/elsewhere").manual_dir.as_posix() == "/elsewhere"


def test_empty_manual_dir_names_the_missing_archives(tmp_path):
    (tmp_path / "archives").mkdir()
    with pytest.raises(UserError, match="lacks train-images-idx3-ubyte.gz, train-labels"):
        sources.load_split("test", sources.Source(data_dir=tmp_path / "tfds", manual_dir=tmp_path / "archives"))


@pytest.mark.skipif(not archives_present(), reason=f"real MNIST archives not found in {ARCHIVES}")
def test_truncated_archive_fails_with_a_clear_error(tmp_path):
    # TFDS's checksum refuses it; its decompressed content, checked next, is cut short.
    manual = tmp_path / "archives"
    shutil.copytree(ARCHIVES, manual)
    labels = manual / "t10k-labels-idx1-ubyte.gz"
    labels.chmod(0o644)
    labels.write_bytes(labels.read_bytes()[:1000])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz is not a whole gzip archive.*truncated") as e:
        sources.load_split("test", sources.Source(data_dir=tmp_path / "tfds", manual_dir=manual))
    assert "\n" not in str(e.value)


def test_person_made_sets_are_real_files_the_same_every_time(tmp_path):
    from helpers import drawn_digits
    from PIL import Image

    from mnist_tf.data import person_made

    digits, labels = np.stack(drawn_digits()), np.array([0, 1, 7])
    first = person_made.write_sets(digits, labels, tmp_path / "a")
    second = person_made.write_sets(digits, labels, tmp_path / "b")
    assert set(first) == set(person_made.SETS) and person_made.NOT_A_DIGIT in first
    for kind in person_made.SETS:
        for (a, label), (b, _) in zip(first[kind], second[kind]):
            assert a.read_bytes() == b.read_bytes(), a  # seeded: the same pictures on every run
            with Image.open(a) as image:
                image.load()
                if kind == "tiny":
                    assert image.size == (48, 48)
            assert label == (-1 if kind == person_made.NOT_A_DIGIT else int(a.stem.split("_")[1]))
    assert "nodigit/0000_none" in (tmp_path / "a" / "labels.csv").read_text()
    with pytest.raises(ValueError, match="unknown person-made set"):
        person_made.render(digits[0], "napkin", np.random.RandomState(0))
