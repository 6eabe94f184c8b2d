"""`mnist-tf evaluate`: `evaluate.evaluate_model`, its tables printed."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_tf.cli.common import data_options, main, note, start_tensorflow, user_errors


@main.command(name="evaluate")
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Run dir, .keras, SavedModel version folder or .tflite.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Report folder [a run's evaluation/; beside any other model, never inside an export].",
)
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
    dataset: str | None,
) -> None:
    """Evaluate a model on the test split of its data set (and, with --person-made, on person-made pictures).

    The probabilities scored are the model's calibrated ones (the temperature in the run's calibration.json,
    or in an export's graph); the report records that temperature beside the expected calibration error.
    """
    start_tensorflow()
    from mnist_tf.data import sources
    from mnist_tf.evaluation import metrics
    from mnist_tf.jobs import evaluate
    from mnist_tf.jobs import person_made as people
    from mnist_tf.training import runinfo

    source = runinfo.data_source(model_path, data_dir, manual_dir, note, dataset)
    report = evaluate.evaluate_model(
        model_path,
        source,
        out,
        person_made_examples=person_made_examples if person_made else 0,
        progress=lambda message: click.echo(message, err=True),
    )
    result = report.evaluation
    click.echo(metrics.per_class_table(result, sources.class_names(source)))
    click.echo(f"test accuracy {result.accuracy:.2%}, loss {result.loss:.4f} on {len(result.labels):,} images")
    confidence = float(result.probabilities.max(axis=1).mean())
    click.echo(
        f"expected calibration error {result.calibration_error():.2%} "
        f"(15 bins; mean top probability {confidence:.2%}; temperature {report.temperature:.3g})"
    )
    click.echo(f"wrote {report.out}/metrics.json, confusion_matrix.png, misclassified.png, reliability.png")
    if report.person_made is not None:
        click.echo(people.table(report.person_made))
        click.echo(f"wrote {report.out}/person_made.json and the pictures in {report.out}/person_made/sets")
