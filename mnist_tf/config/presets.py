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
    non_digits=0.0,
    mixed_precision="auto",
)

# Seconds-scale: a first convolution of stride 2 (28x28 -> 14x14, 16 filters)
# so that no layer works at full resolution, Conv32, pool, Conv48, pool
# (1.7 million multiply-adds per image); a large batch and a one-cycle schedule
# over two epochs of all 60,000 training images (none held out), peaking at a
# learning rate of 1.6e-2 (8e-3 gave 99.09% here and 89.83% on Fashion-MNIST).
# Command: `mnist-tf train --preset fast`: 99.15% test accuracy after 13 s of
# fit on 2 cores with oneDNN held to AVX2 (median of 3 seeds; docs/performance.md).
FAST = Config(
    stages=((16, 32), (48,)),
    first_stride=2,
    dense_units=(128,),
    dropout=0.25,
    optimizer="adam",
    learning_rate=1.6e-2,
    weight_decay=0.0,
    label_smoothing=0.0,
    schedule="onecycle",
    batch_size=512,
    epochs=2,
    validation_examples=0,
    augment=False,
    non_digits=0.0,
    mixed_precision="auto",
)

# Multiply-adds where they buy accuracy: one convolution at full resolution (cheap on a single input
# channel), two at 14x14, one at 7x7, three pools (Conv32 | Conv32, Conv32 | Conv64), Dense(128),
# dropout 0.1: 4.8 million multiply-adds per image, 17.4 TFLOP for the whole fit (the old two-stage
# network took 19 million and 138 TFLOP). Augmentation (pens thicker and thinner for the digits, 15% blurred, then
# small rotations, shifts and zooms in one resampling), label smoothing 0.1, AdamW (weight decay 0.05)
# with a one-cycle schedule over 10 epochs, `auto` precision, all 60,000 training images (no validation
# split: the model is the last epoch; `--validation-examples 5000` brings a held-out monitor back) and
# 15,000 non-digits, each epoch 60,000 drawn from them all, so that the model declines what holds no
# digit (docs/design.md, "Not a digit").
# Command: `mnist-tf train`: 99.60% test accuracy (median of 3 seeds; 99.66% without non-digits),
# 190.5 s of fit in `make train` on a 2-core AMD EPYC Zen 4 (docs/performance.md, which lists what was tried;
# docs/person-made.md for pictures people make). `make train` adds `--time-budget 10m`, which cuts epochs on a slower CPU.
DEFAULT = Config()  # the dataclass's own defaults are this recipe

PRESETS: dict[str, Config] = {"default": DEFAULT, "fast": FAST, "seed": SEED}

# The `default` recipe where the data ask for more than digits do. Fashion-MNIST's clothes: the digit network
# stops at 93.4% there (median of 3 seeds); three times its multiply-adds (Conv32 | Conv64-Conv64 | Conv128,
# Dense256) for twice the epochs, the model reading each picture and its mirror image
# (`data.sources.reads_mirrored`), 94.5% (about 10 min of fit on a 2-core AMD EPYC Zen 4;
# docs/performance.md#fashion-mnist). `make train`'s time budget cuts the epochs on a slower CPU.
DEFAULT_FOR: dict[str, Config] = {
    "fashion_mnist": DEFAULT.replace(stages=((32,), (64, 64), (128,)), dense_units=(256,), epochs=20),
}


def preset(name: str, dataset: str | None = None) -> Config:
    """Returns the named preset, for `dataset` (a TFDS name) where its data want another `default`
    (`DEFAULT_FOR`), or raises `UserError` naming the known ones."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return DEFAULT_FOR.get(dataset or "", cfg) if name == "default" else cfg


# Test accuracy of the `default` recipe trained for N epochs (its schedule made for N), as
# `--time-budget` plans it on a slower CPU: medians of three seeds on a 2-core AMD EPYC Zen 4
# (docs/performance.md); between two measured counts `training.budget` interpolates.
DEFAULT_ACCURACY_BY_EPOCHS: dict[int, float] = {5: 0.9949, 10: 0.9960}


def expected_accuracy(cfg: Config) -> dict[int, float] | None:
    """Measured test accuracy by epochs for `cfg`'s recipe: the `default` preset's whatever its epochs,
    seed and runtime settings; None for any other recipe."""
    ignored = {*RUNTIME, "epochs", "seed", "mixed_precision"}
    same = all(
        getattr(cfg, f.name) == getattr(DEFAULT, f.name) for f in dataclasses.fields(Config) if f.name not in ignored
    )
    return DEFAULT_ACCURACY_BY_EPOCHS if same and DEFAULT_ACCURACY_BY_EPOCHS else None
