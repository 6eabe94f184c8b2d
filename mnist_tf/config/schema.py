"""Training configuration: one frozen dataclass, validated when it is made.

A `Config` is validated once, when it is made, so library code can trust it.
`Config()` is the `default` preset (`presets.py`). `configure` applies the CLI's
options and `--set FIELD=VALUE` settings to a preset, each value parsed by its
field's type.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_tf.config.choices import CHOICES
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import write_json

# How a run is computed, not what: XLA, steps per call into the graph and deterministic ops change
# speed (and bit-for-bit repeatability), never the recipe; the time budget is planned once, when a run
# starts, and kept. A run may resume with other values; every other field is the run's identity.
# Mixed precision changes the numerics, so it is identity.
RUNTIME = ("jit", "steps_per_execution", "deterministic", "time_budget", "augment_calls")


class ConfigError(UserError):
    """A config value that is refused; `field` names the field it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides what a training run does.

    The architecture is `stages` of Conv-BN-ReLU blocks, each stage ending in
    a 2x2 max pool, then `dense_units` Dense-BN-ReLU blocks and a Dense(10)
    layer that returns raw logits. The first convolution moves `first_stride`
    pixels at a time: 2 halves the 28x28 input at once, so no layer works at
    full resolution (where the memory traffic of small networks goes).
    """

    # Model.
    stages: tuple[tuple[int, ...], ...] = ((32,), (32, 32), (64,))
    first_stride: int = 1
    dense_units: tuple[int, ...] = (128,)
    dropout: float = 0.1
    bn_momentum: float = 0.9

    # Optimisation.
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    label_smoothing: float = 0.1  # Share of each target spread evenly over the 10 classes.
    schedule: str = "onecycle"
    batch_size: int = 128
    epochs: int = 10

    # Data.
    validation_examples: int = 0
    train_examples: int | None = None
    augment: bool = True
    # Share of training images blurred as if out of focus (`data.augment.RandomBlur`), with `augment`.
    blur: float = 0.15
    # Non-digits (`data.non_digits`) mixed into training, per training image, labelled -1: their target is even
    # over the classes, so the model learns to be unsure of them and a threshold declines them
    # (`core.types.DECLINE_BELOW`). An epoch stays as many images as the training set: each draws them from
    # the digits and non-digits together. Only for data sets of digits (`data.sources.trains_with_non_digits`).
    non_digits: float = 0.25

    # Run.
    seed: int = 42
    mixed_precision: str = "auto"

    # Runtime (RUNTIME): how fast, not what.
    jit: bool | None = None  # None: on when a GPU is visible (docs/performance.md).
    steps_per_execution: int = 1  # Training steps per call into the TF graph.
    deterministic: bool = False
    # Seconds of fit the run may take; None: no budget. The first steps are timed and the epochs (and the
    # schedule's length) planned to end inside it (`training.budget`). A resumed run keeps its plan.
    time_budget: float | None = None
    # Batches augmented side by side; None: as measured on this CPU (`training.tuning`), else half the cores.
    augment_calls: int | None = None

    def __post_init__(self) -> None:
        # JSON round trips give lists (and whole numbers for floats): conform them, so configs compare equal.
        for name, kind in field_types().items():
            object.__setattr__(self, name, _conform(name, getattr(self, name), kind))
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Config:
        """Returns a copy with `changes` applied and validated.

        `None` sets the fields that take it (`train_examples=None`: all examples;
        `jit=None`: auto). A field that cannot be `None` keeps its value, so
        `replace(epochs=args.epochs)` with the option unset changes nothing.
        """
        optional = {name for name, kind in field_types().items() if _optional(kind)[1]}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None or k in optional})

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict(), "the run's config")

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's type, from its annotation (`int | None`, `tuple[int, ...]`, ...)."""
    return typing.get_type_hints(Config)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) for `kind`."""
    args = typing.get_args(kind)
    if type(None) not in args:
        return kind, False
    (rest,) = [a for a in args if a is not type(None)]
    return rest, True


def _items(kind: Any) -> str:
    """What a list of `kind` holds, in words."""
    if typing.get_origin(kind) is tuple:
        return f"lists of {_items(typing.get_args(kind)[0])}"
    return {int: "whole numbers", float: "numbers", bool: "true/false values", str: "strings"}[kind]


def accepts(name: str) -> str:
    """What field `name` takes, in words: 'a whole number, or none', 'one of sgd, adam, adamw', ..."""
    kind, optional = _optional(field_types()[name])
    if name in CHOICES:
        words = f"one of {', '.join(CHOICES[name])}"
    elif typing.get_origin(kind) is tuple:
        example = json.dumps(getattr(Config(), name))
        words = f"a JSON list of {_items(typing.get_args(kind)[0])}, e.g. {example}"
    else:
        words = {int: "a whole number", float: "a finite number", bool: "true or false", str: "a string"}[kind]
    return f"{words}, or none" if optional else words


def _conform(name: str, value: Any, kind: Any) -> Any:
    """`value` as field `name`'s type (lists as tuples, whole numbers as floats); `ConfigError` if it is not one."""

    def conform(value: Any, kind: Any) -> Any:
        kind, optional = _optional(kind)
        if value is None and optional:
            return None
        if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
            return tuple(conform(v, typing.get_args(kind)[0]) for v in value)
        if kind is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):  # bool is an int to Python, never to a config.
            raise TypeError
        if kind is int and isinstance(value, numbers.Integral):
            return int(value)
        if kind is float and isinstance(value, numbers.Real) and math.isfinite(value):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        raise TypeError

    try:
        return conform(value, kind)
    except TypeError:
        raise ConfigError(name, f"{name} takes {accepts(name)}, got {value!r}") from None


def _validate(cfg: Config) -> None:
    def check(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise ConfigError(field, message)

    check(len(cfg.stages) >= 1, "stages", "the model needs at least one stage of conv blocks")
    check(
        all(len(s) >= 1 and all(f >= 1 for f in s) for s in cfg.stages),
        "stages",
        f"every stage needs one or more positive filter counts, got {cfg.stages}",
    )
    check(cfg.first_stride in (1, 2), "first_stride", f"the first stride must be 1 or 2, got {cfg.first_stride}")
    # Each stage halves the map; past 4 stages (3 after a first stride of 2) it would vanish (28->14->7->3->1).
    most = 4 if cfg.first_stride == 1 else 3
    check(
        len(cfg.stages) <= most,
        "stages",
        f"at most {most} pooling stages fit a 28x28 image with a first stride of {cfg.first_stride}, got {len(cfg.stages)}",
    )
    check(all(u >= 1 for u in cfg.dense_units), "dense_units", f"dense units must be positive, got {cfg.dense_units}")
    check(0.0 <= cfg.dropout < 1.0, "dropout", f"dropout must be in [0, 1), got {cfg.dropout}")
    check(0.0 <= cfg.blur <= 1.0, "blur", f"blur must be in [0, 1], got {cfg.blur}")
    check(0.0 <= cfg.non_digits <= 1.0, "non_digits", f"non_digits must be in [0, 1], got {cfg.non_digits}")
    check(
        0.0 <= cfg.label_smoothing < 1.0,
        "label_smoothing",
        f"label smoothing must be in [0, 1), got {cfg.label_smoothing}",
    )
    check(0.0 < cfg.bn_momentum < 1.0, "bn_momentum", f"BatchNorm momentum must be in (0, 1), got {cfg.bn_momentum}")
    for field, choices in CHOICES.items():
        value = getattr(cfg, field)
        check(
            value in choices, field, f"unknown {field.replace('_', ' ')} {value!r}; choose one of {', '.join(choices)}"
        )
    check(
        0.0 < cfg.learning_rate <= 10.0, "learning_rate", f"learning rate must be in (0, 10], got {cfg.learning_rate}"
    )
    check(0.0 <= cfg.momentum < 1.0, "momentum", f"momentum must be in [0, 1), got {cfg.momentum}")
    check(cfg.weight_decay >= 0.0, "weight_decay", f"weight decay must be >= 0, got {cfg.weight_decay}")
    check(1 <= cfg.batch_size <= 65536, "batch_size", f"batch size must be in 1..65536, got {cfg.batch_size}")
    check(
        cfg.augment_calls is None or 1 <= cfg.augment_calls <= 64,
        "augment_calls",
        f"augment calls must be in 1..64 or none, got {cfg.augment_calls}",
    )
    check(
        1 <= cfg.steps_per_execution <= 1000,
        "steps_per_execution",
        f"steps per execution must be in 1..1000, got {cfg.steps_per_execution}",
    )
    check(1 <= cfg.epochs <= 10000, "epochs", f"epochs must be in 1..10000, got {cfg.epochs}")
    check(
        0 <= cfg.validation_examples < 60000,
        "validation_examples",
        f"validation examples must be in 0..59999, got {cfg.validation_examples}",
    )
    if cfg.train_examples is not None:
        available = 60000 - cfg.validation_examples
        check(
            1 <= cfg.train_examples <= available,
            "train_examples",
            f"train examples must be in 1..{available} (60,000 minus {cfg.validation_examples} held out "
            f"for validation), got {cfg.train_examples}",
        )
    check(cfg.seed >= 0, "seed", f"seed must be >= 0, got {cfg.seed}")
    check(
        cfg.time_budget is None or cfg.time_budget > 0,
        "time_budget",
        f"the time budget must be a positive number of seconds, got {cfg.time_budget}",
    )


# --- settings from the command line ---------------------------------------------

BOOLEANS = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}


def parse_setting(text: str) -> tuple[str, Any]:
    """`FIELD=VALUE` as (field, value), the value parsed by the field's type:
    JSON for lists (`[[32], [64]]`), `true`/`false`, numbers, `none` where the field takes it, strings as they are.

    Raises `UserError` naming the field and what it takes.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UserError(f"--set {text}: expected FIELD=VALUE, e.g. --set optimizer=sgd")
    types = field_types()
    if name not in types:
        raise ConfigError(name, f"--set {text}: no config field {name!r}; the fields are {', '.join(types)}")
    kind, optional = _optional(types[name])
    raw = raw.strip()
    try:
        if optional and raw.lower() in ("none", "null"):
            value = None
        elif kind is str:
            value = raw
        elif kind is bool:
            value = BOOLEANS[raw.lower()]
        elif kind is int:
            value = int(raw)
        elif kind is float:
            value = float(raw)
        else:
            value = json.loads(raw)
        return name, _conform(name, value, types[name])
    except (ValueError, KeyError, ConfigError):
        raise ConfigError(name, f"--set {text}: {name} takes {accepts(name)}") from None


def configure(base: Config, options: Mapping[str, Any] | None = None, settings: Sequence[str] = ()) -> Config:
    """`base` with `options` (field: value, from dedicated options such as --epochs) and
    `settings` (`FIELD=VALUE` strings from --set; a repeated field takes its last value) applied.

    An option and a setting that give one field different values are refused. A value that
    fails validation is refused naming its --set, where it came from one.
    """
    options = options or {}
    given: dict[str, tuple[str, Any]] = {}
    for text in settings:
        name, value = parse_setting(text)
        given[name] = (text, value)
    for name, (text, value) in given.items():
        if name in options and options[name] != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(name, f"{flag} and --set {text} disagree: give {name} one way")
    try:
        return dataclasses.replace(base, **{**options, **{name: value for name, (_, value) in given.items()}})
    except ConfigError as e:
        if e.field in given:
            raise ConfigError(e.field, f"--set {given[e.field][0]}: {e}") from None
        raise


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in "10m", "90s", "1h30m", "1.5h" or a plain number of seconds ("600")."""
    match = _DURATION.match(str(text))
    if not match or not any(match.groups()):
        raise UserError(f"time budget {text!r} is not a duration: write it like 10m, 90s, 1h30m or 600")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UserError(f"time budget {text!r} is not positive: give the minutes training may take, e.g. 10m")
    return total
