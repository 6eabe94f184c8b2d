"""The named presets: `default` (which is `Config()`), `fast` and `seed`."""

from __future__ import annotations

import dataclasses

from mnist_tf.config.schema import RUNTIME, Config
from mnist_tf.core.errors import UserError

# The classic MNIST convnet and its recipe, kept as a baseline: SGD lr 0.01 momentum 0.9,
# batch 64, 10 epochs, no augmentation, no dropout, no schedule. It computes in
# whichever of float32 and bfloat16 trains faster on the machine (`auto`,
# mnist_tf/precision.py), a speed-up that leaves the recipe alone. Command:
# `mnist-tf train --preset seed`: 99.06% test accuracy after about 3 min of fit
# on 2 cores (median of 3 seeds; docs/performance.md).
SEED = Config(
    stages=((32, 64),),
    dense_units=(128,),
    dropout=0.0,
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    schedule="constant",
    weight_decay=0.0,
    label_smoothing=0.0,
    batch_size=64,
    epochs=10,
    validation_examples=5000,
    augment=False,
    mixed_precision="auto",
)

# Seconds-scale: a first convolution of stride 2 (28x28 -> 14x14, 32 filters)
# so that no layer works at full resolution, Conv32, pool, Conv64, pool; a
# large batch and a one-cycle schedule over two epochs of all 60,000 training
# images (none held out). Command: `mnist-tf train --preset fast`: 99.16% test
# accuracy after about 10 s of fit on 2 cores (median of 3 seeds; docs/performance.md).
FAST = Config(
    stages=((32, 32), (64,)),
    first_stride=2,
    dense_units=(128,),
    dropout=0.25,
    optimizer="adam",
    learning_rate=8e-3,
    weight_decay=0.0,
    label_smoothing=0.0,
    schedule="onecycle",
    batch_size=512,
    epochs=2,
    validation_examples=0,
    augment=False,
    mixed_precision="auto",
)

# Two Conv-BN-ReLU blocks per stage (32, 32 | 64, 64), Dense(256), dropout,
# augmentation (pens thicker and thinner, then small rotations, shifts and
# zooms in one resampling), label smoothing 0.1, AdamW (weight decay 0.05) with
# a one-cycle schedule over 20 epochs, `auto` precision, trained on all 60,000
# training images (no validation split: the model is the last epoch, chosen by
# nothing; `--validation-examples 5000` brings a held-out monitor back).
# Command: `mnist-tf train`: 99.70% test accuracy (median of 3 seeds), about
# 9 min of fit on 2 cores (docs/performance.md, which also lists what was
# tried and dropped, and docs/person-made.md for pictures people make).
DEFAULT = Config()  # the dataclass's own defaults are this recipe

PRESETS: dict[str, Config] = {"default": DEFAULT, "fast": FAST, "seed": SEED}


def preset(name: str) -> Config:
    """Returns the named preset, or raises `UserError` naming the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# Test accuracy of the `default` recipe trained for N epochs (its schedule made for N), as
# `--time-budget` plans it on a slower CPU: median of measured runs (docs/performance.md).
DEFAULT_ACCURACY_BY_EPOCHS: dict[int, float] = {}


def expected_accuracy(cfg: Config) -> dict[int, float] | None:
    """Measured test accuracy by epochs for `cfg`'s recipe: the `default` preset's whatever its epochs,
    seed and runtime settings; None for any other recipe."""
    ignored = {*RUNTIME, "epochs", "seed", "mixed_precision"}
    same = all(
        getattr(cfg, f.name) == getattr(DEFAULT, f.name) for f in dataclasses.fields(Config) if f.name not in ignored
    )
    return DEFAULT_ACCURACY_BY_EPOCHS if same and DEFAULT_ACCURACY_BY_EPOCHS else None
