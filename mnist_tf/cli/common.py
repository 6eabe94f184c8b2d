"""What every command shares: the `mnist-tf` group, one-line user errors, notes, the data options."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mnist_tf import __version__, config
from mnist_tf.core.errors import UserError


class CliError(click.ClickException):
    """A user error: printed as one `Error: ...` line, exit status 2."""

    exit_code = 2


def user_errors(fn: Callable) -> Callable:
    """Turns `UserError` into a one-line CLI error instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise CliError(str(e)) from None

    return wrapper


def note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def preset_values(field: str) -> str:
    """A `Config` field in every preset, for option help: `42` when they agree, else `default 0, fast 5000, ...`."""
    values = {name: getattr(cfg, field) for name, cfg in config.PRESETS.items()}
    if len(set(values.values())) == 1:
        return str(next(iter(values.values())))
    return ", ".join(f"{name} {value}" for name, value in values.items())


def data_options(fn: Callable | None = None, *, from_run: bool = False) -> Callable:
    """--data-dir and --manual-dir; `from_run`: a run given as --model reuses the ones its train was given."""
    if fn is None:
        return functools.partial(data_options, from_run=from_run)
    lent = " Without it, a run given as --model reuses the one its train was given." if from_run else ""
    fn = click.option(
        "--manual-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="MNIST_TF_MANUAL_DIR",
        help="Folder with the four original MNIST .gz archives, for machines without internet "
        f"(env: MNIST_TF_MANUAL_DIR).{lent}",
    )(fn)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Where TFDS keeps prepared datasets (default: TFDS's own, ~/tensorflow_datasets).{lent}",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mnist-tf")
def main() -> None:
    """Train, evaluate and deploy a convolutional MNIST digit classifier."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
