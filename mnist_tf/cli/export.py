"""`mnist-tf export`: `export.export_model`, what it wrote printed as it goes."""

from __future__ import annotations

from pathlib import Path

import click

from mnist_tf.cli.common import data_options, main, note, start_tensorflow, user_errors
from mnist_tf.config import choices
from mnist_tf.core import contract


@main.command(name="export")
@click.option(
    "--model", "model_path", required=True, type=click.Path(path_type=Path), help="Run dir or .keras file to export."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("export"), help="Export folder.")
@click.option("--version", "version", type=click.IntRange(1), help="SavedModel version number [next free one].")
@click.option("--tflite", is_flag=True, help="Also convert, verify and report the TFLite variants.")
@click.option(
    "--tflite-kind",
    "kinds",
    type=click.Choice(choices.TFLITE_KINDS),
    multiple=True,
    help="TFLite variant to make (implies --tflite); repeat for several [all four].",
)
@click.option(
    "--calibration-examples",
    type=click.IntRange(1, 60000),
    default=choices.CALIBRATION_EXAMPLES,
    help="Training images that calibrate int8.",
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 100),
    default=choices.MAX_ACCURACY_DROP_POINTS,
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
    dataset: str | None,
) -> None:
    """Export a model as a TF Serving SavedModel and verified TFLite variants.

    Their probabilities are calibrated with the temperature in the run's calibration.json, held in the graphs
    (1 for a model without it); the logits are the network's own.
    """
    start_tensorflow()
    from mnist_tf.export.tflite import PREPROCESS_FILE, report_table
    from mnist_tf.inference.loading import temperature_of
    from mnist_tf.jobs import export
    from mnist_tf.training import runinfo

    def saved_model_written(exported: export.Exported) -> None:
        click.echo(
            f"wrote SavedModel {exported.saved_model} (signatures {contract.DEFAULT_SIGNATURE}, {contract.BYTES_SIGNATURE}; "
            f"probabilities calibrated with temperature {temperature_of(exported.saved_model):.3g}), "
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
        runinfo.data_source(model_path, data_dir, manual_dir, note, dataset),
        version=version,
        tflite_kinds=kinds or (choices.TFLITE_KINDS if tflite else ()),  # Naming a --tflite-kind implies --tflite.
        calibration_examples=calibration_examples,
        max_accuracy_drop=max_accuracy_drop,
        on_saved_model=saved_model_written,
        on_tflite=tflite_verified,
    )
