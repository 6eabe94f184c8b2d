"""What a run is: the validated `Config`, the presets, and the choices the CLI offers.

`from mnist_tf.config import Config, preset` is the way in; `config.choices`
imports nothing and is what the CLI reads for `--help`.
"""

from mnist_tf.config.presets import DEFAULT, FAST, PRESETS, SEED, preset
from mnist_tf.config.schema import (
    RUNTIME,
    Config,
    ConfigError,
    accepts,
    configure,
    field_types,
    parse_duration,
    parse_setting,
)

__all__ = [
    "DEFAULT",
    "FAST",
    "PRESETS",
    "RUNTIME",
    "SEED",
    "Config",
    "ConfigError",
    "accepts",
    "configure",
    "field_types",
    "parse_duration",
    "parse_setting",
    "preset",
]
