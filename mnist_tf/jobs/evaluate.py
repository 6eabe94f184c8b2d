"""`evaluate_model(model, source, out)`: the whole job of `mnist-tf evaluate`: a model in, its report folder out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_tf.core import rundir
from mnist_tf.core.errors import UserError
from mnist_tf.core.files import write_json
from mnist_tf.data import pipeline
from mnist_tf.data.sources import Source
from mnist_tf.evaluation import plots
from mnist_tf.evaluation.metrics import Evaluation, evaluate_proba_fn
from mnist_tf.inference.loading import load_proba_fn, resolve_model_path, temperature_of
from mnist_tf.jobs.person_made import evaluate_person_made
from mnist_tf.training import runlock


@dataclasses.dataclass
class Report:
    """What `evaluate_model` measured and wrote."""

    model: Path  # the model file or folder evaluated
    out: Path  # the report folder
    evaluation: Evaluation  # on the test split
    temperature: float = 1.0  # the temperature the model's probabilities are calibrated with (1.0: not calibrated)
    person_made: dict[str, Any] | None = None  # the person-made scores (`evaluate_person_made`), when asked for


def default_report_dir(model: Path) -> Path:
    """Where a model's report goes without `--out`: never inside an export, which a server loads.

    A run's model.keras: the run dir's evaluation/. A SavedModel version folder
    (`.../mnist/1`): `.../mnist-1-evaluation` beside the model's base folder. Any
    other file (`.../mnist_int8.tflite`): `.../mnist_int8-evaluation` beside it.
    """
    model = Path(model)
    run = rundir.of_model(model)
    if run is not None:
        return run.evaluation
    if model.is_dir():
        return model.parent.parent / f"{model.parent.name}-{model.name}-evaluation"
    return model.parent / f"{model.stem}-evaluation"


def evaluate_model(
    model: str | Path,
    source: Source,
    out: str | Path | None = None,
    *,
    person_made_examples: int = 0,
    progress: Callable[[str], None] = lambda message: None,
) -> Report:
    """Scores a model in any format `inference.loading` loads on the 10,000 test images of
    `source` and writes the report folder `out` (default: `default_report_dir`):
    metrics.json (with the temperature its probabilities are calibrated with),
    confusion_matrix.png and misclassified.png.

    With `person_made_examples` > 0 it also scores the model on that many test
    digits re-made as people make pictures, writing person_made.json and the
    pictures under person_made/sets. A run still training is evaluated at its
    last finished epoch; `progress` says so, and reports the person-made steps.
    """
    resolved = resolve_model_path(model)
    run = rundir.of_model(resolved)
    training = runlock.holder(run.path) if run is not None else None
    if training:
        progress(f"note: {run.path} is still training ({training}): evaluating its last finished epoch")
    proba_fn = load_proba_fn(resolved)
    images, labels = pipeline.arrays("test", source)
    report = Report(
        model=resolved,
        out=Path(out) if out else default_report_dir(resolved),
        evaluation=evaluate_proba_fn(proba_fn, images, labels),
        temperature=temperature_of(resolved),
    )
    try:
        report.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report folder {report.out} ({e.strerror}): pass a writable --out") from None
    recorded = {"model": str(resolved), "temperature": report.temperature, **report.evaluation.to_dict()}
    write_json(report.out / "metrics.json", recorded)
    plots.confusion_matrix(report.evaluation, report.out / "confusion_matrix.png")
    plots.misclassified(report.evaluation, images, report.out / "misclassified.png")
    plots.reliability_diagram(report.evaluation, report.out / "reliability.png")
    if person_made_examples:
        n = person_made_examples
        sets = report.out / "person_made"
        report.person_made = evaluate_person_made(resolved, images[:n], labels[:n], sets, progress=progress)
        write_json(report.out / "person_made.json", report.person_made)
    return report
