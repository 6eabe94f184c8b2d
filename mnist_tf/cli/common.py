"""What every command shares: the `mnist-tf` group, one-line user errors, notes, the data options."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mnist_tf import __version__, config
from mnist_tf.config import choices
from mnist_tf.core.errors import UserError
from mnist_tf.core.quiet import QUIET_ENV, stderr_closed


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


DATASET_HELP = (
    f"The data: a TensorFlow Datasets name ({', '.join(choices.DATASETS)}) or a folder holding the four IDX "
    "archives (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz) and optionally labels.txt, one class name a line."
)


def data_options(fn: Callable | None = None, *, from_run: bool = False) -> Callable:
    """--dataset, --data-dir and --manual-dir; `from_run`: a run given as --model reuses the ones its train
    was given."""
    if fn is None:
        return functools.partial(data_options, from_run=from_run)
    lent = " Without it, a run given as --model reuses the one its train was given." if from_run else ""
    fn = click.option(
        "--dataset",
        metavar="NAME|DIR",
        default=None if from_run else choices.DEFAULT_DATASET,
        show_default=not from_run,
        help=DATASET_HELP + lent,
    )(fn)
    fn = click.option(
        "--manual-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="MNIST_TF_MANUAL_DIR",
        help="Folder with the TFDS data set's original archives (MNIST's: its four .gz files), for machines "
        "without internet; copies recompressed by a distribution are accepted when their content is known "
        f"(mnist, fashion_mnist) (env: MNIST_TF_MANUAL_DIR).{lent}",
    )(fn)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Where TFDS keeps prepared datasets (default: TFDS's own, ~/tensorflow_datasets).{lent}",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mnist-tf")
@click.option(
    "--verbose",
    is_flag=True,
    help="Show TensorFlow's, absl's, TFDS's and LiteRT's own start-up and progress messages (so does setting "
    "TF_CPP_MIN_LOG_LEVEL).",
)
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Train, evaluate and deploy a convolutional MNIST digit classifier."""
    ctx.obj = {"verbose": verbose}


def start_tensorflow() -> None:
    """Loads TensorFlow for a command, keeping its start-up chatter out of the output.

    Without `--verbose`, and unless the user set TF_CPP_MIN_LOG_LEVEL themselves,
    the lines TensorFlow's libraries print while loading ("Could not find cuda
    drivers", "oneDNN custom operations are on", "failed call to cuInit" on a
    machine with no GPU) and absl's warnings (TFDS's "Variant folder ... has no
    dataset_info.json") are left out; Python warnings and errors still show.
    TFDS's progress bars show on a terminal only.
    """
    context = click.get_current_context(silent=True)
    verbose = bool(context and (context.find_root().obj or {}).get("verbose"))
    users_own = "TF_CPP_MIN_LOG_LEVEL" in os.environ and QUIET_ENV not in os.environ
    quiet = not verbose and not users_own
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ[QUIET_ENV] = "1"
    with stderr_closed() if quiet and "tensorflow" not in sys.modules else contextlib.nullcontext():
        import absl.logging
        import tensorflow  # noqa: F401
        import tensorflow_datasets as tfds
    if quiet:
        absl.logging.set_verbosity(absl.logging.ERROR)
    if not sys.stderr.isatty():
        tfds.disable_progress_bar()
