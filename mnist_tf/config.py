"""Training configuration: one frozen dataclass and the named presets.

A `Config` is validated once, when it is made, so library code can trust it.
Presets are starting points; the CLI overrides individual fields with
`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mnist_tf.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides what a training run does.

    The architecture is `stages` of Conv-BN-ReLU blocks, each stage ending in
    a 2x2 max pool, then `dense_units` Dense-BN-ReLU blocks and a Dense(10)
    layer that returns raw logits.
    """

    # Model.
    stages: tuple[tuple[int, ...], ...] = ((32, 64),)
    dense_units: tuple[int, ...] = (128,)
    dropout: float = 0.25
    bn_momentum: float = 0.9

    # Optimisation.
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    batch_size: int = 128
    epochs: int = 6

    # Data.
    validation_examples: int = 5000
    train_examples: int | None = None
    augment: bool = False

    # Run.
    seed: int = 42
    jit: bool | None = None  # None: on when a GPU is visible (docs/performance.md).
    mixed_precision: str = "off"
    steps_per_execution: int = 1  # Training steps per call into the TF graph.
    deterministic: bool = False

    def __post_init__(self) -> None:
        # JSON round trips give lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "stages", tuple(tuple(s) for s in self.stages))
        object.__setattr__(self, "dense_units", tuple(self.dense_units))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "Config":
        """Returns a copy with `changes` applied; `None` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def save(self, path: Path) -> None:
        from mnist_tf.io import write_json

        write_json(path, self.to_dict(), "the run's config")

    @classmethod
    def load(cls, path: Path) -> "Config":
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _validate(cfg: Config) -> None:
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    check(len(cfg.stages) >= 1, "the model needs at least one stage of conv blocks")
    check(
        all(len(s) >= 1 and all(f >= 1 for f in s) for s in cfg.stages),
        f"every stage needs one or more positive filter counts, got {cfg.stages}",
    )
    # Each stage halves the 28x28 map; past 4 stages it would vanish (28->14->7->3->1).
    check(len(cfg.stages) <= 4, f"at most 4 pooling stages fit a 28x28 image, got {len(cfg.stages)}")
    check(all(u >= 1 for u in cfg.dense_units), f"dense units must be positive, got {cfg.dense_units}")
    check(0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}")
    check(0.0 < cfg.bn_momentum < 1.0, f"BatchNorm momentum must be in (0, 1), got {cfg.bn_momentum}")
    check(cfg.optimizer in OPTIMIZERS, f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    check(cfg.schedule in SCHEDULES, f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    check(
        cfg.mixed_precision in MIXED_PRECISION,
        f"unknown mixed precision {cfg.mixed_precision!r}; choose one of {', '.join(MIXED_PRECISION)}",
    )
    check(0.0 < cfg.learning_rate <= 10.0, f"learning rate must be in (0, 10], got {cfg.learning_rate}")
    check(0.0 <= cfg.momentum < 1.0, f"momentum must be in [0, 1), got {cfg.momentum}")
    check(cfg.weight_decay >= 0.0, f"weight decay must be >= 0, got {cfg.weight_decay}")
    check(1 <= cfg.batch_size <= 65536, f"batch size must be in 1..65536, got {cfg.batch_size}")
    check(1 <= cfg.steps_per_execution <= 1000, f"steps per execution must be in 1..1000, got {cfg.steps_per_execution}")
    check(1 <= cfg.epochs <= 10000, f"epochs must be in 1..10000, got {cfg.epochs}")
    check(0 <= cfg.validation_examples < 60000, f"validation examples must be in 0..59999, got {cfg.validation_examples}")
    if cfg.train_examples is not None:
        available = 60000 - cfg.validation_examples
        check(
            1 <= cfg.train_examples <= available,
            f"train examples must be in 1..{available} (60,000 minus {cfg.validation_examples} held out "
            f"for validation), got {cfg.train_examples}",
        )
    check(cfg.seed >= 0, f"seed must be >= 0, got {cfg.seed}")


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
    batch_size=64,
    epochs=10,
    mixed_precision="auto",
)

# Seconds-scale: three stages of one conv each (16, 32, 64 filters), so the
# widest maps are the cheapest; a large batch and one-cycle schedule over three
# epochs. Command: `mnist-tf train --preset fast`: 99.25% test accuracy after
# about 12 s of fit on 2 cores (median of 3 seeds; docs/performance.md).
FAST = Config(
    stages=((16,), (32,), (64,)),
    dense_units=(128,),
    dropout=0.25,
    optimizer="adam",
    learning_rate=8e-3,
    schedule="onecycle",
    batch_size=512,
    epochs=3,
    mixed_precision="auto",
)

# Two Conv-BN-ReLU blocks per stage (32, 32 | 64, 64), Dense(256), dropout,
# augmentation (pens thicker and thinner, small rotations, shifts and zooms),
# AdamW (weight decay 0.05) with a one-cycle schedule over 24 epochs, `auto`
# precision, trained on all 60,000 training images (no validation split: the
# model is the last epoch, chosen by nothing; `--validation-examples 5000`
# brings a held-out monitor back). Command: `mnist-tf train`: 99.65% test
# accuracy (median of 3 seeds) and 98.7-99.3% on every person-made set
# (docs/performance.md, which also lists what was tried and dropped, and
# docs/person-made.md).
DEFAULT = Config(
    stages=((32, 32), (64, 64)),
    dense_units=(256,),
    dropout=0.25,
    optimizer="adamw",
    learning_rate=3e-3,
    weight_decay=0.05,
    schedule="onecycle",
    batch_size=128,
    epochs=24,
    validation_examples=0,
    augment=True,
    mixed_precision="auto",
)

PRESETS: dict[str, Config] = {"default": DEFAULT, "fast": FAST, "seed": SEED}


def preset(name: str) -> Config:
    """Returns the named preset, or raises `UserError` naming the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
