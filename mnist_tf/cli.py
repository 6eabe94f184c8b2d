"""The `mnist-tf` command line: parsing and messages only; the work is in the modules.

TensorFlow is imported inside each command, so `--help` answers at once.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from mnist_tf import __version__
from mnist_tf import config as config_choices
from mnist_tf import names
from mnist_tf.errors import UserError


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
    values = {name: getattr(cfg, field) for name, cfg in config_choices.PRESETS.items()}
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


@main.command()
@click.option("--preset", type=click.Choice(list(config_choices.PRESETS)), default="default", help="Named starting config.")
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
@click.option("--augment/--no-augment", default=None, help="Random shifts, rotations and zooms [preset's].")
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
    help="XLA-compile steps; auto: on with a GPU, off on CPU (a bare --jit means on) [auto]. "
    "A run may resume with another --jit, --strategy, --deterministic or steps_per_execution.",
)
@click.option("--no-jit", is_flag=True, hidden=True, help="Same as --jit off (kept for old scripts).")
@click.option(
    "--strategy",
    type=click.Choice(names.STRATEGIES),
    default="auto",
    help="tf.distribute strategy; auto: mirrored over all GPUs when more than one is visible, else default. "
    "multi-worker reads TF_CONFIG; its chief (worker 0) writes the run.",
)
@click.option(
    "--mixed-precision",
    type=click.Choice(config_choices.MIXED_PRECISION),
    help="Compute in 16-bit floats (weights and logits stay float32); auto: whichever of float32 and bfloat16 "
    "trains faster on this machine, measured once in a few steps and cached "
    f"[preset's: {preset_values('mixed_precision')}].",
)
@click.option(
    "--deterministic/--no-deterministic", default=None, help="Deterministic TF ops: bit-identical reruns, slower [off]."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Set any config field, e.g. --set optimizer=sgd --set stages='[[32],[64]]' --set dense_units='[256]'; "
    "repeatable. Values: JSON lists, numbers, true/false, none where a field takes it. An option such as --epochs "
    f"and a --set of the same field must agree. Fields: {', '.join(config_choices.field_types())}.",
)
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="Folder for this run's files [runs/PRESET].")
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --run-dir.")
@data_options
@user_errors
def train(
    preset: str,
    run_dir: Path | None,
    overwrite: bool,
    data_dir: Path | None,
    manual_dir: Path | None,
    jit: str | None,
    no_jit: bool,
    strategy: str,
    settings: tuple[str, ...],
    **overrides: Any,
) -> None:
    """Train a model on MNIST, then evaluate it on the test split.

    Re-running the same command after an interruption resumes the run.
    """
    # No TensorFlow op may run before train_and_evaluate makes the strategy (multi-worker needs that).
    from mnist_tf import config, data, runlock
    from mnist_tf import train as training

    options = {name: value for name, value in overrides.items() if value is not None}  # None: not given
    if jit or no_jit:
        options["jit"] = {"auto": None, "on": True, "off": False}["off" if no_jit else jit]
    cfg = config.configure(config.preset(preset), options, settings)
    run_dir = run_dir or Path("runs") / preset
    click.echo(f"mnist-tf {__version__}: training preset {preset!r} in {run_dir}")
    click.echo("config: " + json.dumps(cfg.to_dict()))
    click.echo("threads: " + json.dumps(training.set_threads()))
    try:
        with runlock.sigterm_as_interrupt():  # docker stop, Kubernetes and batch schedulers send SIGTERM.
            metrics = training.train_and_evaluate(
                cfg, run_dir, data.Source.from_options(data_dir, manual_dir), overwrite, strategy
            )
    except KeyboardInterrupt as e:
        stopped = "Stopped by SIGTERM" if isinstance(e, runlock.Terminated) else "Interrupted"
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
    click.echo(f"wrote {run_dir}/model.keras, metrics.json, history.csv, learning_curves.png, logs/")


@main.command(name="evaluate")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="Run dir, .keras, SavedModel version folder or .tflite.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder [MODEL's folder/evaluation].")
@click.option(
    "--person-made",
    is_flag=True,
    help="Also score the model on MNIST test digits re-made as people make pictures (paper, photo, pens, "
    "colour, canvas), through predict's path and the SavedModel's serving_bytes signature.",
)
@click.option(
    "--person-made-examples", type=click.IntRange(1, 10000), default=300, help="Test digits per person-made set."
)
@data_options(from_run=True)
@user_errors
def evaluate_command(
    model_path: Path,
    out: Path | None,
    person_made: bool,
    person_made_examples: int,
    data_dir: Path | None,
    manual_dir: Path | None,
) -> None:
    """Evaluate a model on the 10,000 MNIST test images (and, with --person-made, on person-made pictures)."""
    from mnist_tf import evaluate, person_made as people, runinfo

    report = evaluate.evaluate_model(
        model_path,
        runinfo.data_source(model_path, data_dir, manual_dir, note),
        out,
        person_made_examples=person_made_examples if person_made else 0,
        progress=lambda message: click.echo(message, err=True),
    )
    result = report.evaluation
    click.echo(evaluate.per_class_table(result))
    click.echo(f"test accuracy {result.accuracy:.2%}, loss {result.loss:.4f} on {len(result.labels):,} images")
    click.echo(f"wrote {report.out}/metrics.json, confusion_matrix.png, misclassified.png")
    if report.person_made is not None:
        click.echo(people.table(report.person_made))
        click.echo(f"wrote {report.out}/person_made.json and the pictures in {report.out}/person_made/sets")


@main.command(name="export")
@click.option(
    "--model", "model_path", required=True, type=click.Path(path_type=Path), help="Run dir or .keras file to export."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("export"), help="Export folder."
)
@click.option("--version", "version", type=click.IntRange(1), help="SavedModel version number [next free one].")
@click.option("--tflite", is_flag=True, help="Also convert, verify and report the TFLite variants.")
@click.option(
    "--tflite-kind",
    "kinds",
    type=click.Choice(names.TFLITE_KINDS),
    multiple=True,
    help="TFLite variant to make (implies --tflite); repeat for several [all four].",
)
@click.option(
    "--calibration-examples",
    type=click.IntRange(1, 60000),
    default=names.CALIBRATION_EXAMPLES,
    help="Training images that calibrate int8.",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 100),
    default=names.MAX_ACCURACY_DROP_POINTS,
    help="Fail when a TFLite variant's test accuracy is more than this many points below the Keras model's.",
)
@data_options(from_run=True)
@user_errors
def export_command(
    model_path: Path,
    out: Path,
    version: int | None,
    tflite: bool,
    kinds: tuple[str, ...],
    calibration_examples: int,
    max_accuracy_drop: float,
    data_dir: Path | None,
    manual_dir: Path | None,
) -> None:
    """Export a model as a TF Serving SavedModel and verified TFLite variants."""
    from mnist_tf import export, runinfo
    from mnist_tf.tflite import PREPROCESS_FILE, report_table

    def saved_model_written(exported: export.Exported) -> None:
        click.echo(
            f"wrote SavedModel {exported.saved_model} (signatures {names.DEFAULT_SIGNATURE}, {names.BYTES_SIGNATURE}), "
            f"{out}/saved_model/models.config"
        )
        if exported.stray_temporaries:
            click.echo(
                f"note: {', '.join(p.name for p in exported.stray_temporaries)} in {exported.saved_model.parent}: "
                "unfinished versions of an interrupted export, which TF Serving ignores; delete them when no export "
                "is running",
                err=True,
            )

    def tflite_verified(exported: export.Exported) -> None:
        click.echo(report_table(exported.report))
        click.echo(
            f"wrote {', '.join(str(p) for p in exported.tflite.values())}, {out}/tflite/{PREPROCESS_FILE}, "
            f"{out}/tflite/report.json, report.png"
        )

    export.export_model(
        model_path,
        out,
        runinfo.data_source(model_path, data_dir, manual_dir, note),
        version=version,
        tflite_kinds=kinds or (names.TFLITE_KINDS if tflite else ()),  # Naming a --tflite-kind implies --tflite.
        calibration_examples=calibration_examples,
        max_accuracy_drop=max_accuracy_drop,
        on_saved_model=saved_model_written,
        on_tflite=tflite_verified,
    )


@main.command(name="predict")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Run dir, .keras, SavedModel version folder or .tflite.",
)
@click.option(
    "--server",
    metavar="URL",
    help="Send the images to a server speaking TF Serving's REST API (mnist-tf serve or TF Serving), "
    "e.g. http://127.0.0.1:8501, instead of loading --model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per image.")
@click.option(
    "--show",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw each picture beside the 28x28 image the model saw, into this PNG.",
)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def predict_command(
    model_path: Path | None, server: str | None, as_json: bool, show: Path | None, images: tuple[Path, ...]
) -> None:
    """Classify pictures of digits (PNG, JPEG, ...): prints `file: digit (probability)`.

    Any picture works: dark ink on paper or light on dark, a photo, a scan, a
    transparent canvas, colour or grey. Each is put in MNIST's form first: the
    digit is found, cropped, fitted to 20x20 and centred in 28x28 (see --show).
    Exits with status 1 when any file could not be classified (unreadable, or
    no digit in it); the others are still printed.
    """
    from mnist_tf import predict

    if (model_path is None) == (server is None):
        raise CliError("pass either --model PATH or --server URL")
    if show is not None and show.suffix.lower() != ".png":
        raise UserError(f"--show {show} must name a .png file")
    results = predict.predict(images, model=model_path, server=server)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            click.echo(str(r), err=r.error is not None)
    if show is not None:
        click.echo(f"wrote {predict.show(results, show)}", err=as_json)
    if any(r.error is not None for r in results):
        sys.exit(1)


@main.command(name="serve")
@click.option(
    "--model",
    "model_base",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of numbered SavedModel versions, e.g. export/saved_model/mnist; the newest serves.",
)
@click.option("--host", default="127.0.0.1", help="Address to listen on; anything but loopback is reachable by others.")
@click.option("--port", type=click.IntRange(0, 65535), default=8501, help="Port (TF Serving's REST port; 0: any free one).")
@click.option("--max-body-bytes", type=click.IntRange(1), default=16 * 1024 * 1024, help="Largest request body.")
@click.option("--max-instances", type=click.IntRange(1), default=256, help="Most instances (images) per request.")
@click.option("--max-image-pixels", type=click.IntRange(1), default=16_000_000, help="Largest encoded image, in pixels.")
@click.option("--poll-seconds", type=click.FloatRange(0), default=1.0, help="How often to look for a newer version (0: never).")
@click.option("--threads", type=click.IntRange(1, 64), default=2, help="Model calls that run at once.")
@click.option(
    "--max-batch-size",
    type=click.IntRange(1),
    default=32,
    help="Most instances merged into one model call from requests that queue while the model is busy (1: no batching).",
)
@user_errors
def serve_command(
    model_base: Path,
    host: str,
    port: int,
    max_body_bytes: int,
    max_instances: int,
    max_image_pixels: int,
    poll_seconds: float,
    threads: int,
    max_batch_size: int,
) -> None:
    """Serve a model with TF Serving's REST API and a draw-a-digit page.

    A development server: run TF Serving in production; the same clients work against both.
    """
    from mnist_tf.serve.limits import Limits
    from mnist_tf.serve.server import is_loopback, serve

    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: other machines can reach this server; it has no authentication", err=True)

    def ready(url: str, version: int) -> None:
        click.echo(f"serving {model_base} version {version} at {url}/v1/models/mnist, page at {url}/ (Ctrl-C stops)")

    limits = Limits(max_body_bytes, max_instances, max_image_pixels)
    serve(model_base, host, port, limits, poll_seconds, threads, max_batch_size, ready)
    click.echo("stopped")


@main.command(name="benchmark")
@click.option(
    "--part",
    "parts",
    multiple=True,
    type=click.Choice(names.BENCHMARK_PARTS),
    help="What to measure; repeat for several [all five].",
)
@click.option(
    "--preset",
    "presets",
    multiple=True,
    type=click.Choice(list(config_choices.PRESETS)),
    help="Presets to measure; repeat for several [all three].",
)
@click.option("--seeds", type=click.IntRange(1, 20), default=3, help="Training runs per preset (seeds 1..N).")
@click.option("--threads", type=click.IntRange(1), default=os.cpu_count() or 1, help="TF intra-op threads [all cores].")
@click.option(
    "--serve-seconds",
    type=click.FloatRange(1),
    default=20.0,
    help="serve part: seconds of load at each level of concurrent clients (1, 8, 32).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/benchmark"), help="Folder for benchmark.json, benchmark.md and plots.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier benchmark in --out.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="Run dir or .keras file the inference and serve parts time [a model the accuracy part trains].",
)
@data_options(from_run=True)
@user_errors
def benchmark_command(
    parts: tuple[str, ...],
    presets: tuple[str, ...],
    seeds: int,
    threads: int,
    serve_seconds: float,
    out: Path,
    overwrite: bool,
    model_path: Path | None,
    data_dir: Path | None,
    manual_dir: Path | None,
) -> None:
    """Measure training speed, time to accuracy, inference speed, serving under load and memory.

    Prints tables and writes OUT/benchmark.json, OUT/benchmark.md and
    OUT/time_to_accuracy.png. Run it on an otherwise idle machine: all four
    parts with three seeds take about 40 minutes on 2 CPU cores.
    """
    from mnist_tf import benchmark, runinfo

    settings = benchmark.Settings(
        presets=presets or benchmark.Settings.presets,
        seeds=tuple(range(1, seeds + 1)),
        threads=threads,
        serve_seconds=serve_seconds,
    )
    result = benchmark.run_benchmark(
        out,
        runinfo.data_source(model_path, data_dir, manual_dir, note),
        parts or names.BENCHMARK_PARTS,
        settings,
        model=model_path,
        overwrite=overwrite,
        progress=lambda message: click.echo(message, err=True),
    )
    click.echo(benchmark.tables(result))
    click.echo(f"wrote {out}/benchmark.json, benchmark.md" + (", time_to_accuracy.png" if "accuracy" in result else ""))
