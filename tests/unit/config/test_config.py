import dataclasses
import json

import pytest

from mnist_tf import config
from mnist_tf.core.errors import UserError


def test_seed_preset_is_the_seed_recipe():
    seed = config.preset("seed")
    assert (seed.optimizer, seed.learning_rate, seed.momentum, seed.batch_size, seed.epochs) == (
        "sgd",
        0.01,
        0.9,
        64,
        10,
    )
    assert seed.schedule == "constant" and seed.stages == ((32, 64),) and seed.dense_units == (128,)


def test_the_default_preset_on_clothes_is_a_wider_network_trained_twice_as_long():
    clothes = config.preset("default", "fashion_mnist")
    assert clothes.stages == ((32,), (64, 64), (128,)) and clothes.dense_units == (256,) and clothes.epochs == 20
    assert clothes.replace(stages=config.DEFAULT.stages, dense_units=(128,), epochs=10) == config.DEFAULT
    for dataset in (None, "mnist", "kmnist", "emnist/digits", "/data/my-idx"):
        assert config.preset("default", dataset) == config.DEFAULT
    assert config.preset("fast", "fashion_mnist") == config.FAST


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
        ({"first_stride": 3}, "first stride must be 1 or 2"),
        ({"first_stride": 2, "stages": ((32,),) * 4}, "at most 3 pooling stages"),
        ({"train_examples": 60001}, "train examples"),
        ({"bn_momentum": 1.0}, "momentum"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(config.DEFAULT, **change)


def test_replace_sets_none_where_a_field_takes_it_and_keeps_the_rest():
    cfg = config.DEFAULT.replace(epochs=None, batch_size=32)  # epochs cannot be None: an unset option
    assert cfg.epochs == config.DEFAULT.epochs and cfg.batch_size == 32
    few = config.DEFAULT.replace(train_examples=100, jit=True)
    back = few.replace(train_examples=None, jit=None)
    assert (back.train_examples, back.jit) == (None, None) and back == config.DEFAULT
    with pytest.raises(UserError, match="dropout must be in"):
        config.DEFAULT.replace(dropout=2.0)


def as_text(value):
    """A field's value as one would type it after --set NAME=."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true/false, numbers, lists


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(config.Config)])
def test_every_field_is_settable_by_its_type(name):
    values = {getattr(p, name) for p in (config.DEFAULT, config.FAST, config.SEED)}
    values |= {getattr(config.DEFAULT.replace(**{name: v}), name) for v in OTHER.get(name, ())}
    for value in values:
        cfg = config.configure(config.Config(), settings=[f"{name}={as_text(value)}"])
        assert getattr(cfg, name) == value and type(getattr(cfg, name)) is type(value), (name, value)


# Values no preset has, so that every field is set to something other than its default.
OTHER = {
    "train_examples": (100, None),
    "jit": (True, False, None),
    "deterministic": (True,),
    "steps_per_execution": (8,),
    "validation_examples": (59000,),
    "seed": (0,),
    "bn_momentum": (0.5,),
    "weight_decay": (1e-4,),
    "label_smoothing": (0.05,),
    "first_stride": (1, 2),
}


@pytest.mark.parametrize(
    "setting, value",
    [
        ("stages=[[32],[64]]", ((32,), (64,))),
        ("stages = [[8, 8], [16]] ", ((8, 8), (16,))),
        ("dense_units=[256]", (256,)),
        ("dense_units=[]", ()),
        ("learning_rate=3e-3", 0.003),
        ("learning_rate=1", 1.0),
        ("label_smoothing=0.1", 0.1),
        ("augment=false", False),
        ("augment=ON", True),
        ("jit=null", None),
        ("train_examples=None", None),
        ("optimizer=sgd", "sgd"),
    ],
)
def test_settings_parse_by_the_fields_type(setting, value):
    name = setting.partition("=")[0].strip()
    assert config.parse_setting(setting) == (name, value)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("colour=red", ["--set colour=red", "no config field 'colour'", "stages, first_stride, dense_units"]),
        ("epochs", ["--set epochs", "FIELD=VALUE"]),
        ("epochs=1.5", ["--set epochs=1.5", "epochs takes a whole number"]),
        ("epochs=none", ["epochs takes a whole number"]),
        ("epochs=true", ["epochs takes a whole number"]),
        ("stages=[32, 64]", ["stages takes a JSON list of lists of whole numbers, e.g. [[32], [32, 32], [64]]"]),
        ("stages=[[32], [64.5]]", ["stages takes a JSON list of lists"]),
        ("dense_units=256", ["dense_units takes a JSON list of whole numbers, e.g. [128]"]),
        ("dense_units=[true]", ["dense_units takes a JSON list of whole numbers"]),
        ("augment=maybe", ["augment takes true or false"]),
        ("jit=auto", ["jit takes true or false, or none"]),
        ("learning_rate=nan", ["learning_rate takes a finite number"]),
        ("train_examples=lots", ["train_examples takes a whole number, or none"]),
        # Parsed, then refused by the config's own validation, naming the --set.
        ("dropout=1.5", ["--set dropout=1.5", "dropout must be in [0, 1)"]),
        ("label_smoothing=1", ["--set label_smoothing=1", "label smoothing must be in [0, 1)"]),
        ("optimizer=rmsprop", ["--set optimizer=rmsprop", "choose one of sgd, adam, adamw"]),
        ("stages=[[8]]*5", ["stages takes a JSON list"]),
        ("stages=[[8],[8],[8],[8],[8]]", ["--set stages=", "at most 4 pooling stages"]),
        ("train_examples=60001", ["--set train_examples=60001", "train examples must be in 1..60000"]),
    ],
)
def test_bad_settings_name_the_field_and_what_it_takes(setting, words):
    with pytest.raises(UserError) as e:
        config.configure(config.DEFAULT, settings=[setting])
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_options_and_settings_meet_in_one_config():
    cfg = config.configure(
        config.DEFAULT, {"epochs": 3, "jit": None}, ["optimizer=sgd", "epochs=3", "seed=1", "seed=2"]
    )
    assert (cfg.epochs, cfg.optimizer, cfg.seed, cfg.jit) == (3, "sgd", 2, None)  # a repeated --set: the last wins
    with pytest.raises(UserError, match=r"--epochs and --set epochs=4 disagree: give epochs one way"):
        config.configure(config.DEFAULT, {"epochs": 3}, ["epochs=4"])
    with pytest.raises(UserError, match=r"--jit and --set jit=true disagree"):
        config.configure(config.DEFAULT, {"jit": None}, ["jit=true"])  # --jit auto is a value too
    # A combination: --set validation_examples leaves fewer examples than --train-examples asks for.
    with pytest.raises(UserError, match=r"^train examples must be in 1..1000 "):
        config.configure(config.DEFAULT, {"train_examples": 5000}, ["validation_examples=59000"])


def test_a_hand_edited_config_file_with_a_wrong_type_is_refused(tmp_path):
    path = tmp_path / "config.json"
    config.FAST.save(path)
    path.write_text(path.read_text().replace(f'"epochs": {config.FAST.epochs}', '"epochs": "3"'))
    with pytest.raises(UserError, match=r"epochs takes a whole number, got '3'"):
        config.Config.load(path)


def test_json_round_trip(tmp_path):
    cfg = config.FAST.replace(train_examples=100, augment=True)
    cfg.save(tmp_path / "config.json")
    assert config.Config.load(tmp_path / "config.json") == cfg
