"""Metrics of any model that maps uint8 images to class probabilities, on one labelled set."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mnist_tf.core.errors import UserError
from mnist_tf.core.types import ProbaFn

CALIBRATION_BINS = 15  # the usual choice since Guo et al. (2017), so figures compare with published ones


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

    def reliability(self, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
        """The top probability against how often it is right, in `bins` equal-width bins of confidence."""
        return reliability(self.probabilities, self.labels, bins)

    def calibration_error(self, bins: int = CALIBRATION_BINS) -> float:
        """Expected calibration error: the mean gap between confidence and accuracy, weighted by bin size."""
        return expected_calibration_error(self.probabilities, self.labels, bins)

    def per_class(self) -> list[dict[str, float]]:
        """Precision, recall, F1 and support for each class."""
        rows = []
        for c in range(len(self.confusion)):
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
            "expected_calibration_error": self.calibration_error(),
            "reliability": self.reliability(),
        }


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Per confidence bin ((k/bins, (k+1)/bins]): how many predictions, their mean top probability, their accuracy."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        n = int(inside.sum())
        rows.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "count": n,
                "confidence": float(confidence[inside].mean()) if n else 0.0,
                "accuracy": float(correct[inside].mean()) if n else 0.0,
            }
        )
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Sum over confidence bins of (share of predictions) x |accuracy - mean confidence|."""
    rows = reliability(probabilities, labels, bins)
    total = max(sum(r["count"] for r in rows), 1)
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows))


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Scores predicted probabilities [N, classes] against integer labels."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    predictions = probabilities.argmax(axis=1)
    classes = probabilities.shape[1]
    if len(labels) and labels.max() >= classes:
        raise UserError(
            f"the data have label {labels.max()} but the model knows {classes} classes: "
            "evaluate it on the data set it was trained on (--dataset)"
        )
    confusion = np.zeros((classes, classes), dtype=np.int64)
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


def in_batches(fn: Callable[[np.ndarray], Any], images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """`fn` (a model's probabilities or logits) run over `images` a batch at a time, as one numpy array."""
    return np.concatenate([np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def evaluate_proba_fn(proba_fn: ProbaFn, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> Evaluation:
    """Runs `proba_fn` over `images` in batches and scores the result."""
    return evaluate_probabilities(in_batches(proba_fn, images, batch_size), labels)


def per_class_table(evaluation: Evaluation, class_names: Sequence[str] | None = None) -> str:
    """A short plain-text table of per-class precision, recall and F1; `class_names` add a column
    when they are not the digits 0-9."""
    named = class_names is not None and list(class_names) != [str(c) for c in range(len(class_names))]
    lines = ["class  precision  recall     f1  support" + ("  name" if named else "")]
    if not named:
        lines[0] = lines[0].replace("class", "digit")
    for row in evaluation.per_class():
        name = f"  {class_names[row['class']]}" if named and row["class"] < len(class_names) else ""
        lines.append(
            f"{row['class']:>5}  {row['precision']:>9.4f}  {row['recall']:>6.4f}  {row['f1']:>5.4f}  {row['support']:>7}"
            + name
        )
    return "\n".join(lines)
