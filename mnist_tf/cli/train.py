"""`mnist-tf train`: options -> a Config -> `train.train_and_evaluate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mnist_tf import __version__, config
from mnist_tf.cli.common import data_options, main, preset_values, start_tensorflow, user_errors
from mnist_tf.config import choices
from mnist_tf.core.errors import UserError


def _duration(text: str) -> float:
    """--time-budget's value in seconds; a usage error names the forms it takes."""
    try:
        return config.parse_duration(text)
    except UserError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option(
    "--preset",
    type=click.Choice(list(config.PRESETS)),
    default="default",
    help="Named starting config; `default` on Fashion-MNIST is a wider network for 20 epochs (docs/datasets.md).",
)
@click.option("--epochs", type=click.IntRange(1, 10000), help="Passes over the training set [preset's].")
@click.option(
    "--batch-size", type=click.IntRange(1, 65536), help="Global batch: examples per step, over all replicas [preset's]."
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(0, 10, min_open=True),
    help="Peak learning rate for the global batch; not scaled with the number of replicas [preset's].",
)
@click.option(
    "--seed",
    type=click.IntRange(0),
    help=f"Seed for weights, shuffling, dropout, augmentation [preset's: {preset_values('seed')}].",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Augment the training images as suits the data: pens, blur, small turns, shifts and zooms for digits, "
    "a mirror for clothes (docs/datasets.md) [preset's].",
)
@click.option("--train-examples", type=click.IntRange(1), help="Train on the first N examples only (quick runs).")
@click.option(
    "--validation-examples",
    type=click.IntRange(0, 59999),
    help=f"Examples held out of train for validation [preset's: {preset_values('validation_examples')}].",
)
@click.option(
    "--jit",
    type=click.Choice(["auto", "on", "off"]),
    is_flag=False,
    flag_value="on",
    help="XLA-compile steps; auto: on with a GPU, on a CPU as measured there (a bare --jit means on) [auto]. "
    "A run may resume with another --jit, --strategy, --deterministic or steps_per_execution.",
)
@click.option("--no-jit", is_flag=True, hidden=True, help="Same as --jit off (kept for old scripts).")
@click.option(
    "--strategy",
    type=click.Choice(choices.STRATEGIES),
    default="auto",
    help="tf.distribute strategy; auto: mirrored over all GPUs when more than one is visible, else default. "
    "multi-worker reads TF_CONFIG; its chief (worker 0) writes the run.",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(choices.MIXED_PRECISION),
    help="Compute in 16-bit floats (weights and logits stay float32); auto: whichever of float32 and bfloat16 "
    "trains faster on this machine, measured once in a few steps and cached "
    f"[preset's: {preset_values('mixed_precision')}].",
)
@click.option(
    "--deterministic/--no-deterministic", default=None, help="Deterministic TF ops: bit-identical reruns, slower [off]."
)
@click.option(
    "--time-budget",
    metavar="DURATION",
    callback=lambda ctx, param, value: None if value is None else _duration(value),
    help="Minutes of training the run may take, e.g. 10m, 90s, 1h: the first steps are timed and the "
    "preset's epochs cut to fit, the schedule with them; the plan is printed first and kept on resume [none].",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set any config field, e.g. --set optimizer=sgd --set stages='[[32],[64]]' --set dense_units='[256]'; "
    "repeatable. Values: JSON lists, numbers, true/false, none where a field takes it. An option such as --epochs "
    f"and a --set of the same field must agree. Fields: {', '.join(config.field_types())}.",
)
@click.option(
    "--run-dir", type=click.Path(path_type=Path), default=None, help="Folder for this run's files [runs/PRESET]."
)
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --run-dir.")
@data_options
@user_errors
def train(
    preset: str,
    run_dir: Path | None,
    overwrite: bool,
    data_dir: Path | None,
    manual_dir: Path | None,
    dataset: str,
    jit: str | None,
    no_jit: bool,
    strategy: str,
    settings: tuple[str, ...],
    **overrides: Any,
) -> None:
    """Train a model on MNIST (or another --dataset), calibrate its probabilities, then evaluate it on the test split.

    Calibration fits one temperature that makes the probabilities mean what they say, on the validation
    split, else on training images the run did not use, else on the last training images (recorded as
    not held out); it is written to calibration.json, and every way of running the model applies it.

    Re-running the same command after an interruption resumes the run.
    """
    from mnist_tf.training import tuning

    options = {name: value for name, value in overrides.items() if value is not None}  # None: not given
    if jit or no_jit:
        options["jit"] = {"auto": None, "on": True, "off": False}["off" if no_jit else jit]
    cfg = config.configure(config.preset(preset, dataset), options, settings)
    run_dir = run_dir or Path("runs") / preset
    click.echo(f"mnist-tf {__version__}: training preset {preset!r} on {dataset} in {run_dir}")
    # oneDNN and the thread pools are fixed when TensorFlow starts: the settings are decided first.
    chosen, tuned = tuning.resolve(cfg, progress=lambda line: click.echo(f"settings: {line}", err=True))
    tuning.before_tensorflow(chosen)
    # No TensorFlow op may run before train_and_evaluate makes the strategy (multi-worker needs that).
    start_tensorflow()
    from mnist_tf.data import sources
    from mnist_tf.jobs import train
    from mnist_tf.training import setup, signals

    source = sources.Source.from_options(data_dir, manual_dir, dataset)
    cfg = tuning.apply(cfg, chosen)
    click.echo("config: " + json.dumps(cfg.to_dict()))
    click.echo(tuning.describe(tuned))
    click.echo("threads: " + json.dumps(setup.set_threads(chosen.intra_op, chosen.inter_op)))
    try:
        with signals.signals_as_interrupts():  # docker stop, Kubernetes and batch schedulers send SIGTERM.
            metrics = train.train_and_evaluate(cfg, run_dir, source, overwrite, strategy, tuning=tuned)
    except KeyboardInterrupt as e:
        stopped = "Stopped by SIGTERM" if isinstance(e, signals.Terminated) else "Interrupted"
        click.echo(f"\n{stopped}. Re-run the same command to resume from the last finished epoch.", err=True)
        sys.exit(getattr(e, "exit_code", 130))
    if metrics is None:
        click.echo(f"worker finished its share; the chief wrote the run to {run_dir}")
        return
    click.echo(
        f"test accuracy {metrics['test_accuracy']:.2%}, test loss {metrics['test_loss']:.4f}, "
        f"{metrics['epochs']} epochs, fit {metrics['train_seconds']:.1f} s "
        f"({metrics['train_images_per_second']:.0f} images/s on {metrics['device']}, "
        f"{metrics['strategy']} strategy, {metrics['replicas']} replica(s))"
    )
    fitted = metrics["calibration"]
    images = "held-out images" if fitted["held_out"] else "training images (none held out)"
    click.echo(
        f"calibration: temperature {fitted['temperature']:.2f} on {fitted['examples']:,} {images}; "
        f"test expected calibration error {fitted['test_ece_before']:.1%} -> {fitted['test_ece_after']:.1%}"
    )
    click.echo(f"wrote {run_dir}/model.keras, calibration.json, metrics.json, history.csv, learning_curves.png, logs/")
