"""The optimizer of a run: its learning-rate schedule over the whole run, and loss scaling for float16."""

from __future__ import annotations

import keras

from mnist_tf.config import Config


def make_schedule(cfg: Config, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate as a function of the step, over the whole run."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return cfg.learning_rate
    if cfg.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    # onecycle: linear warm-up over the first 20% of steps, then cosine decay to zero.
    warmup = max(1, total // 5)
    return keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate / 25,
        decay_steps=max(1, total - warmup),
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(cfg: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer, driven by `make_schedule`."""
    lr = make_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=cfg.momentum)
    elif cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
    if cfg.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
