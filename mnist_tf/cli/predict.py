"""`mnist-tf predict`: `predict.predict` with a model or a server, one line (or JSON) per file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mnist_tf.cli.common import CliError, main, start_tensorflow, user_errors
from mnist_tf.core.errors import UserError


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
    help="Send the images to a server speaking TF Serving's REST or gRPC API (mnist-tf serve or TF Serving), "
    "e.g. http://127.0.0.1:8501 or grpc://127.0.0.1:8500, instead of loading --model.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print a JSON list, one object per image: file, digit, probability, probabilities, "sure" (or error).',
)
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
    """Classify pictures (PNG, JPEG, ...): prints `file: class (probability)`, the class by its name when
    the model's data set names it (Fashion-MNIST's "Sneaker", a folder's labels.txt).

    The probability is calibrated (the temperature train fitted): a 90% answer is right about nine
    times in ten. Below 90% the line says "not sure", e.g. `pic.png: 9 (78.4%, not sure)`, and --json
    gives "sure": false. A model trained with non-digits (the default preset on digits) declines a
    picture that looks like no digit (a letter, a star, a smiley, a scribble): the evidence for every
    class is weak, logsumexp(logits / T) below 3.35, and the line says `pic.png: error: not a digit (it
    looks like none of 0-9): ...`.

    Any picture works: dark ink on paper or light on dark, a photo, a scan, a
    transparent canvas, colour or grey. Each is put in MNIST's form first, whatever
    data set the model was trained on: the ink is found, cropped, fitted to 20x20
    and centred in 28x28 (see --show), as the SavedModel's serving_bytes signature,
    the TFLite preprocessing and the server's page do. That suits digit-like data
    (MNIST, EMNIST, KMNIST); images that fill the frame, as Fashion-MNIST's do,
    reach the model smaller than it was trained on, and a photo with a busy background
    is not cut out: for such models, send 28x28 pixels in their data's own form to the
    SavedModel's serving_default signature (REST "instances"), which takes them as they are.
    Exits with status 1 when any file could not be classified (unreadable,
    nothing found in it, or not a digit); the others are still printed.
    """
    from mnist_tf.inference import predict

    if (model_path is None) == (server is None):
        raise CliError("pass either --model PATH or --server URL")
    if show is not None and show.suffix.lower() != ".png":
        raise UserError(f"--show {show} must name a .png file")
    if model_path is not None:
        start_tensorflow()
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
