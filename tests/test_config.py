import dataclasses

import pytest

from mnist_tf import config
from mnist_tf.errors import UserError


def test_seed_preset_is_the_seed_recipe():
    seed = config.preset("seed")
    assert (seed.optimizer, seed.learning_rate, seed.momentum, seed.batch_size, seed.epochs) == ("sgd", 0.01, 0.9, 64, 10)
    assert seed.schedule == "constant" and seed.stages == ((32, 64),) and seed.dense_units == (128,)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(UserError, match="default, fast, seed"):
        config.preset("huge")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch size"),
        ({"learning_rate": 0.0}, "learning rate"),
        ({"dropout": 1.0}, "dropout"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"stages": ()}, "stage"),
        ({"stages": ((32,),) * 5}, "at most 4"),
        ({"train_examples": 60001}, "train examples"),
        ({"bn_momentum": 1.0}, "momentum"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(config.DEFAULT, **change)


def test_replace_ignores_none_and_validates():
    cfg = config.DEFAULT.replace(epochs=None, batch_size=32)
    assert cfg.epochs == config.DEFAULT.epochs and cfg.batch_size == 32


def test_json_round_trip(tmp_path):
    cfg = config.FAST.replace(train_examples=100, augment=True)
    cfg.save(tmp_path / "config.json")
    assert config.Config.load(tmp_path / "config.json") == cfg
