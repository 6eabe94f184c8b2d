import keras
import numpy as np
import pytest

from mnist_tf import config
from mnist_tf.modeling.network import build_model


# Hand count, seed network: conv 3*3*1*32 + BN 4*32 = 416; conv 3*3*32*64 + BN 4*64 = 18,688;
# dense 14*14*64*128 + BN 4*128 = 1,606,144; logits 128*10 + 10 = 1,290.
@pytest.mark.parametrize(
    "cfg, params",
    [
        (config.SEED, 416 + 18_688 + 1_606_144 + 1_290),
        # default: conv 1->32 at 28x28, pool, 32->32, 32->32 at 14x14, pool, 32->64 at 7x7, pool (each conv
        # + BN 4*filters): 3*3*64 = 576 features for Dense(128) + BN; logits 128*10 + 10.
        (
            config.DEFAULT,
            (9 * 32 + 128)
            + (9 * 32 * 32 + 128)
            + (9 * 32 * 32 + 128)
            + (9 * 32 * 64 + 256)
            + (576 * 128 + 512)
            + (128 * 10 + 10),
        ),
        # fast: 1->16 (stride 2), 16->32, pool, 32->48, pool: 3*3*48 = 432 features for Dense(128).
        (
            config.FAST,
            (9 * 16 + 64) + (9 * 16 * 32 + 128) + (9 * 32 * 48 + 192) + (432 * 128 + 512) + (128 * 10 + 10),
        ),
    ],
    ids=["seed", "default", "fast"],
)
def test_parameter_count_is_pinned(cfg, params):
    assert build_model(cfg).count_params() == params


def test_shapes_add_up_through_every_stage():
    model = build_model(config.SEED)
    assert model.get_layer("stage1_block2_relu").output.shape == (None, 28, 28, 64)
    assert model.get_layer("stage1_pool").output.shape == (None, 14, 14, 64)
    # The seed sketch flattened 64*7*7 here; one 2x2 pool of 28x28 maps leaves 14x14.
    assert model.get_layer("flatten").output.shape == (None, 14 * 14 * 64)
    assert model.output.shape == (None, 10)


def test_a_first_stride_of_2_halves_the_input_at_once():
    model = build_model(config.FAST)
    assert model.get_layer("stage1_block1_relu").output.shape == (None, 14, 14, 16)
    assert model.get_layer("stage2_pool").output.shape == (None, 3, 3, 48)
    full_resolution = build_model(config.FAST.replace(first_stride=1))
    assert full_resolution.get_layer("stage1_block1_relu").output.shape == (None, 28, 28, 16)


def test_width_and_depth_are_configurable():
    model = build_model(config.DEFAULT.replace(stages=((8, 8), (16,), (16,)), dense_units=(32, 16)))
    assert model.get_layer("stage3_pool").output.shape == (None, 3, 3, 16)
    assert model.get_layer("fc2_dense").output.shape == (None, 16)


def test_input_is_named_uint8_and_output_is_raw_logits():
    model = build_model(config.SEED)
    assert model.input.name == "image" or model.layers[0].name == "image"
    assert model.input.dtype == "uint8"
    head = model.get_layer("logits")
    assert head is model.layers[-1]
    assert head.activation.__name__ == "linear"
    # Raw logits take negative values; the seed's BN+ReLU head could not.
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    logits = model(images, training=False).numpy()
    assert logits.shape == (16, 10)
    assert (logits < 0).any()


def test_scaling_happens_inside_the_model():
    model = build_model(config.SEED)
    rescale = model.get_layer("rescale")
    x = np.full((1, 28, 28, 1), 255, np.uint8)
    assert float(np.max(rescale(x))) == pytest.approx(1.0)


def test_batchnorm_momentum_comes_from_config():
    model = build_model(config.SEED.replace(bn_momentum=0.8))
    assert model.get_layer("stage1_block1_bn").momentum == pytest.approx(0.8)


@pytest.mark.parametrize("shape", [(16, 7, 7, 5), (32, 6)], ids=["conv-maps", "dense-features"])
def test_fused_batchnorm_trains_like_keras_batchnorm(shape):
    import keras
    import tensorflow as tf

    from mnist_tf.modeling.network import FusedBatchNormalization

    x = tf.random.stateless_normal(shape, seed=(1, 2)) * 3.0 + 1.0
    reference, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    grads = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=y.dtype))
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    np.testing.assert_allclose(fused(x, training=True).numpy(), reference(x, training=True).numpy(), atol=1e-4)
    for ours, theirs in zip(grads[1], grads[0]):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-3, atol=1e-3)
    # Moving statistics: the same mean; the variance is the unbiased batch
    # variance (as in PyTorch and Keras 2), Keras 3's is the biased one.
    n = np.prod(shape[:-1])
    batch_var = tf.math.reduce_variance(x, axis=list(range(len(shape) - 1))).numpy()
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-5)
    expected = 1 + (1 - 0.9**2) * (batch_var * n / (n - 1) - 1)  # two updates from the initial 1
    np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-4)


def test_fused_batchnorm_inference_is_keras_batchnorm():
    import keras
    import tensorflow as tf

    from mnist_tf.modeling.network import FusedBatchNormalization

    x = tf.random.stateless_normal((8, 5, 5, 3), seed=(3, 4))
    fused, reference = FusedBatchNormalization(), keras.layers.BatchNormalization()
    fused.build(x.shape), reference.build(x.shape)
    reference.set_weights([w * 0 + np.float32(i + 0.5) for i, w in enumerate(fused.get_weights())])
    fused.set_weights(reference.get_weights())
    np.testing.assert_allclose(fused(x, training=False).numpy(), reference(x, training=False).numpy(), atol=1e-6)


@pytest.mark.parametrize("precision, compute", [("bfloat16", "bfloat16"), ("float16", "float16")])
def test_mixed_precision_computes_in_16_bits_and_keeps_weights_and_logits_float32(precision, compute):
    import keras

    from mnist_tf.training import setup

    cfg = config.FAST.replace(mixed_precision=precision)
    model = build_model(cfg)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == compute for layer in convs)
    assert all(v.dtype == "float32" for v in model.weights)
    assert model.get_layer("logits").compute_dtype == "float32"
    assert model.get_layer("stage1_block1_conv").output.dtype == compute
    compiled = setup.compile_model(model, cfg, steps_per_epoch=10)
    # float16 needs loss scaling against gradient underflow; bfloat16 has float32's range.
    assert isinstance(compiled.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 32)
    before = model.get_layer("stage1_block1_conv").kernel.numpy().copy()
    # Dynamic loss scaling starts high and skips a step whose scaled float16 gradients
    # overflow, halving the scale; a few steps always get through.
    for _ in range(8):
        logs = compiled.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not np.array_equal(model.get_layer("stage1_block1_conv").kernel.numpy(), before)
    assert model(images, training=False).dtype == "float32"


def test_float32_copy_keeps_the_weights_and_computes_in_float32():
    from mnist_tf.modeling.network import float32_copy

    model = build_model(config.FAST.replace(mixed_precision="bfloat16"))
    copy = float32_copy(model)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers[1:])
    for a, b in zip(model.weights, copy.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    images = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    # bfloat16 keeps 8 bits of mantissa: the logits agree to a few percent.
    ours, reference = copy(images, training=False).numpy(), model(images, training=False).numpy()
    np.testing.assert_allclose(ours, reference, rtol=0.05, atol=0.05)


def test_a_saved_model_with_fused_batchnorm_loads_back(tmp_path):
    from mnist_tf.inference.loading import load_keras

    model = build_model(config.FAST.replace(mixed_precision="bfloat16"))
    model.save(tmp_path / "m.keras")
    loaded = load_keras(tmp_path / "m.keras")
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(loaded(images, training=False).numpy(), model(images, training=False).numpy())
    assert type(loaded.get_layer("stage1_block1_bn")).__name__ == "FusedBatchNormalization"


def test_the_checkpoint_opens_in_plain_keras_in_a_fresh_interpreter(tmp_path):
    import subprocess
    import sys

    from mnist_tf.training.callbacks import LastGoodCheckpoint
    from mnist_tf.training.setup import compile_model

    cfg = config.DEFAULT.replace(mixed_precision="bfloat16")
    assert cfg.label_smoothing > 0  # trained with mnist_tf's own loss, saved with Keras'
    model = compile_model(build_model(cfg), cfg, steps_per_epoch=10)
    callback = LastGoodCheckpoint(tmp_path / "model.keras")
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 0.5})
    images = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    # A new user's first try: plain Keras, no mnist_tf import, no custom objects.
    script = (
        "import sys, keras, numpy as np\n"
        f"model = keras.models.load_model({str(tmp_path / 'model.keras')!r})\n"
        "assert not any(m.startswith('mnist_tf') for m in sys.modules), 'mnist_tf was imported'\n"
        "assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy), model.loss\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, model(np.load({str(tmp_path / 'images.npy')!r}), training=False))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), model(images, training=False).numpy(), atol=1e-2)


def test_a_non_digit_is_trained_towards_even_probabilities_and_left_out_of_accuracy():
    import tensorflow as tf

    from mnist_tf.modeling.losses import NON_DIGIT_WEIGHT, DigitAccuracy, SmoothedSparseCrossentropy

    logits = tf.constant([[2.0, 0.5, -1.0], [0.3, 0.2, 4.0], [1.0, 3.0, 0.0]])
    labels = tf.constant([0, -1, 1])
    loss = SmoothedSparseCrossentropy(0.1, reduction=None)(labels, logits).numpy()
    log_p = tf.nn.log_softmax(logits).numpy()
    assert np.isclose(loss[1], -NON_DIGIT_WEIGHT * log_p[1].mean(), atol=1e-6)  # the even target
    assert np.isclose(loss[0], -(0.9 * log_p[0, 0] + 0.1 * log_p[0].mean()), atol=1e-6)
    accuracy = DigitAccuracy()
    accuracy.update_state(labels, logits)
    assert np.isclose(float(accuracy.result()), 1.0)  # both digits right; the non-digit does not count
    accuracy.update_state(tf.constant([2]), logits[:1])
    assert np.isclose(float(accuracy.result()), 2 / 3)


def test_a_mirror_averaged_model_reads_an_image_and_its_mirror_alike_and_opens_with_plain_keras(tmp_path):
    from mnist_tf.modeling.network import float32_copy, mirror_averaged

    model = build_model(config.FAST)
    averaged = mirror_averaged(model)
    assert len(averaged.weights) == len(model.weights) + 1  # the network's own, shared, and the fixed mirror
    images = np.random.default_rng(2).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    mirrored = images[:, :, ::-1]
    both = (model(images, training=False) + model(mirrored, training=False)) / 2
    np.testing.assert_allclose(averaged(images, training=False), both, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(averaged(mirrored, training=False), both, rtol=1e-5, atol=1e-5)
    assert not np.allclose(model(images, training=False), both, atol=1e-3)  # one reading is not the average
    averaged.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # no mnist_tf class needed
    np.testing.assert_allclose(loaded(images, training=False), both, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float32_copy(loaded)(images, training=False), both, rtol=1e-5, atol=1e-5)
