"""Test-set metrics from any model that maps uint8 images to class probabilities.

`evaluate_model` is the whole job of `mnist-tf evaluate`: a model file in,
its report folder out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_tf.names import NUM_CLASSES

if TYPE_CHECKING:
    from mnist_tf.data import Source

# A probability function: uint8 images [N,28,28,1] -> float probabilities [N,10].
ProbaFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Evaluation:
    """Metrics of one model on one labelled set, plus what plots need."""

    accuracy: float
    loss: float
    confusion: np.ndarray  # [true, predicted] counts
    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def per_class(self) -> list[dict[str, float]]:
        """Precision, recall, F1 and support for each digit."""
        rows = []
        for c in range(NUM_CLASSES):
            tp = self.confusion[c, c]
            predicted = self.confusion[:, c].sum()
            actual = self.confusion[c, :].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / actual if actual else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append(
                {
                    "class": c,
                    "precision": float(precision),
                    "recall": float(recall),
                    "f1": float(f1),
                    "support": int(actual),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "examples": len(self.labels),
            "per_class": self.per_class(),
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Scores predicted probabilities against integer labels."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    predictions = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    # Cross-entropy of the true class; the clip keeps a confident mistake finite.
    true_p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0)
    return Evaluation(
        accuracy=float((predictions == labels).mean()),
        loss=float(-np.log(true_p).mean()),
        confusion=confusion,
        probabilities=probabilities.astype(np.float32),
        labels=labels,
    )


def evaluate(proba_fn: ProbaFn, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> Evaluation:
    """Runs `proba_fn` over `images` in batches and scores the result."""
    probabilities = np.concatenate([proba_fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return evaluate_probabilities(probabilities, labels)


def per_class_table(evaluation: Evaluation) -> str:
    """A short plain-text table of per-class precision, recall and F1."""
    lines = ["digit  precision  recall     f1  support"]
    for row in evaluation.per_class():
        lines.append(
            f"{row['class']:>5}  {row['precision']:>9.4f}  {row['recall']:>6.4f}  {row['f1']:>5.4f}  {row['support']:>7}"
        )
    return "\n".join(lines)


@dataclasses.dataclass
class Report:
    """What `evaluate_model` measured and wrote."""

    model: Path  # the model file or folder evaluated
    out: Path  # the report folder
    evaluation: Evaluation  # on the test split
    person_made: dict[str, Any] | None = None  # the person-made scores (`person_made.evaluate`), when asked for


def evaluate_model(
    model: str | Path,
    source: Source,
    out: str | Path | None = None,
    *,
    person_made_examples: int = 0,
    progress: Callable[[str], None] = lambda message: None,
) -> Report:
    """Scores a model in any format `models` loads on the 10,000 test images of
    `source` and writes the report folder `out` (default: an evaluation/ folder
    beside the model): metrics.json, confusion_matrix.png and misclassified.png.

    With `person_made_examples` > 0 it also scores the model on that many test
    digits re-made as people make pictures, writing person_made.json and the
    pictures under person_made/sets. A run still training is evaluated at its
    last finished epoch; `progress` says so, and reports the person-made steps.
    """
    from mnist_tf import data, person_made, plots, runlock
    from mnist_tf.errors import UserError
    from mnist_tf.io import write_json
    from mnist_tf.models import load_proba_fn, resolve_model_path

    resolved = resolve_model_path(model)
    training = runlock.holder(resolved.parent) if resolved.name == "model.keras" else None
    if training:
        progress(f"note: {resolved.parent} is still training ({training}): evaluating its last finished epoch")
    proba_fn = load_proba_fn(resolved)
    images, labels = data.arrays("test", source)
    report = Report(
        model=resolved,
        out=Path(out) if out else (resolved if resolved.is_dir() else resolved.parent) / "evaluation",
        evaluation=evaluate(proba_fn, images, labels),
    )
    try:
        report.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report folder {report.out} ({e.strerror}): pass a writable --out") from None
    write_json(report.out / "metrics.json", {"model": str(resolved), **report.evaluation.to_dict()})
    plots.confusion_matrix(report.evaluation, report.out / "confusion_matrix.png")
    plots.misclassified(report.evaluation, images, report.out / "misclassified.png")
    if person_made_examples:
        n = person_made_examples
        sets = report.out / "person_made"
        report.person_made = person_made.evaluate(resolved, images[:n], labels[:n], sets, progress=progress)
        write_json(report.out / "person_made.json", report.person_made)
    return report
