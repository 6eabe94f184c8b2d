import numpy as np
import pytest

from mnist_tf import config
from mnist_tf.model import build_model


# Hand count, seed network: conv 3*3*1*32 + BN 4*32 = 416; conv 3*3*32*64 + BN 4*64 = 18,688;
# dense 14*14*64*128 + BN 4*128 = 1,606,144; logits 128*10 + 10 = 1,290.
@pytest.mark.parametrize(
    "cfg, params",
    [
        (config.SEED, 416 + 18_688 + 1_606_144 + 1_290),
        (config.DEFAULT.replace(dropout=0.0), 416 + 18_688 + 1_606_144 + 1_290),
        # fast: the 64-filter conv runs after a pool, so the dense layer sees 7*7*64 = 3,136 features.
        (config.FAST, 416 + 18_688 + (3_136 * 128 + 512) + 1_290),
    ],
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
